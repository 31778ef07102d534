//! Callers of `connected_or_failed_to_connect` that give up cost nothing once dropped (alone in
//! its binary: it counts the bytes the whole process holds).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use support::*;
use tokio::time::Instant;
use tower::Layer;
use tower_persistent::PersistentLayer;

/// Counts the bytes allocated and not yet freed.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// 200,000 callers that wait for the next attempt's outcome during a long wait, then give up,
// leave nothing behind; a caller that stayed still gets the outcome.
#[tokio::test(start_paused = true)]
async fn dropped_outcome_waiters_hold_nothing() {
    let start = Instant::now();
    let lookup = Script::new(start, [Step::Err("down")], Step::Err("still down"));
    let p = PersistentLayer::new("test", Lookup(lookup))
        .retry_delay(|| Duration::from_secs(3600))
        .jitter(0.0)
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
    until(start, 1).await;
    let staying = tokio::spawn(p.connected_or_failed_to_connect());
    tokio::task::yield_now().await;

    let before = HELD.load(Ordering::SeqCst);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..200_000 {
        let mut waiting = pin!(p.connected_or_failed_to_connect());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
    }
    let after = HELD.load(Ordering::SeqCst);
    assert!(
        after - before < 4096,
        "{} bytes held after 200,000 dropped waiters",
        after - before
    );

    let outcome = staying.await.unwrap();
    assert_eq!(
        outcome.unwrap_err().text(),
        "address lookup failed: still down"
    );
    assert_eq!(ms(start), 3_600_000);
}
