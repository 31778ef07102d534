//! The happy path allocates nothing: a handle ready on the current connection costs no
//! allocation per `poll_ready` + `call`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use tower::{Layer, Service, service_fn};
use tower_persistent::{ClosableService, PersistentLayer};

/// Counts the allocations made on threads that asked for it.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// A thousand `poll_ready` + `call` + response on a connected handle allocate nothing.
#[tokio::test]
async fn ready_handle_does_not_allocate() {
    let conn = ClosableService::new(service_fn(|n: u64| {
        std::future::ready(Ok::<_, Infallible>(n + 1))
    }));
    let mut p = PersistentLayer::new("alloc", service_fn(|()| async { Ok::<_, io::Error>(()) }))
        .layer(service_fn(move |()| {
            let conn = conn.clone();
            async move { Ok::<_, io::Error>(conn) }
        }));
    p.connected().await.unwrap();

    let mut cx = Context::from_waker(Waker::noop());
    let mut round = |n: u64| {
        assert!(matches!(p.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let response = pin!(p.call(n));
        match response.poll(&mut cx) {
            Poll::Ready(Ok(m)) => assert_eq!(m, n + 1),
            _ => panic!("the response is ready at once"),
        }
    };
    // The first request fetches the connection (a slow path that may allocate).
    round(0);

    COUNTING.with(|c| c.set(true));
    for n in 1..=1000 {
        round(n);
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 0);
}
