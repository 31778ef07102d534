//! `PersistentLayer::pair`: the handle and the driver's future, driven by whoever holds it.

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, RawWaker, RawWakerVTable, Waker};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use support::*;
use tokio::time::Instant;
use tower_persistent::{Closed, Persistent, PersistentLayer};

/// A `pair()` whose lookup answers `"a"` at once (returned, for its calls) and whose connector
/// connects at once; with a `recorder`, its events are recorded.
fn paired(
    start: Instant,
    recorder: Option<&Recorder>,
) -> (
    Script,
    Persistent<&'static str, Conn>,
    impl Future<Output = ()> + Send + 'static,
) {
    let lookup = Script::new(start, [], Step::Ok("a"));
    let mut layer = PersistentLayer::new("pair", Lookup(lookup.clone()));
    if let Some(recorder) = recorder {
        layer = layer.on_event(recorder.handler());
    }
    let (p, driver) = layer.pair(Connect::new(Script::new(start, [], Step::Ok(""))));
    (lookup, p, driver)
}

// Nothing happens until the driver's future is polled; then the loop runs as under layer(),
// and the future ends once closing finished.
#[tokio::test(start_paused = true)]
async fn the_loop_runs_where_the_future_is_polled() {
    let start = Instant::now();
    let recorder = Recorder::new(start);
    let (lookup, p, driver) = paired(start, Some(&recorder));
    until(start, 5000).await;
    assert!(lookup.calls().is_empty(), "not polled: no attempt");
    assert!(p.current_connection().is_none());

    let driver = tokio::spawn(driver);
    p.connected().await.unwrap();
    assert_eq!(
        recorder.log(),
        timeline(&[
            (5000, "AttemptingToConnect"),
            (5000, "ObtainedAddress(\"a\")"),
            (5000, "Connected(1)"),
        ])
    );
    p.close().await;
    driver.await.unwrap();
    assert_eq!(recorder.events().last().unwrap(), "Disconnected");
}

// Dropping the driver's future, polled or not, ends the persistent connection: every handle
// sees it closed at once.
#[tokio::test(start_paused = true)]
async fn dropping_the_driver_closes_the_handles() {
    let start = Instant::now();
    let (p, driver) = PersistentLayer::new("pair", Lookup(Script::new(start, [], Step::Ok("a"))))
        .retry_delay(|| Duration::from_secs(1))
        .pair(Connect::new(Script::new(start, [], Step::Ok(""))));
    let waiting = tokio::spawn(p.connected());
    drop(driver);
    assert!(p.is_closed());
    assert!(matches!(waiting.await.unwrap(), Err(Closed { .. })));
    assert_eq!(p.close().now_or_never(), Some(()));
}

// Closing begun before the driver is ever polled finishes without it, as there is nothing to
// close: `close()` resolves at once (a driver kept but never spawned does not hold it up), the
// events end with none delivered, and the driver, polled afterwards, ends at its first poll
// without an attempt. The same when the last handle is dropped instead.
#[tokio::test(start_paused = true)]
async fn closing_before_the_driver_is_ever_polled_finishes_without_it() {
    let start = Instant::now();
    let recorder = Recorder::new(start);
    let (lookup, p, driver) = paired(start, Some(&recorder));
    let events = p.events();
    assert_eq!(p.close().now_or_never(), Some(()));
    assert_eq!(p.close_finished().now_or_never(), Some(()));
    assert!(p.state().is_closed());
    assert!(matches!(
        p.connected().now_or_never(),
        Some(Err(Closed { .. }))
    ));
    assert_eq!(
        events.collect::<Vec<_>>().now_or_never().map(|e| e.len()),
        Some(0)
    );
    assert_eq!(driver.now_or_never(), Some(()));
    assert!(lookup.calls().is_empty(), "no attempt");
    assert!(recorder.log().is_empty(), "no event");

    let (lookup, p, driver) = paired(start, None);
    let finished = p.close_finished();
    drop(p);
    assert_eq!(finished.now_or_never(), Some(()));
    assert_eq!(driver.now_or_never(), Some(()));
    assert!(lookup.calls().is_empty(), "no attempt");
}

// A driver moved from one task to another, both polled at one place of an executor (a worker's
// slot: the waker a poll borrows points at the slot, and its clones are wakers of the task
// polled there, as `will_wake` allows): once it runs in the second task, closing wakes that
// task, not the first. (The driver remembers which waker it registered by the clone it keeps:
// the borrowed one's address stands for another task once the slot moves on.)
#[test]
fn a_driver_moved_to_another_task_is_woken_there() {
    // Polled by hand outside any task, in the runtime's context.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let start = Instant::now();
    let (p, driver) = PersistentLayer::new("pair", Lookup(Script::new(start, [], Step::Ok("a"))))
        .pair(Connect::new(Script::new(start, [], Step::Ok(""))));
    let mut driver = Box::pin(driver);
    let a = Arc::new(AtomicUsize::new(0));
    let b = Arc::new(AtomicUsize::new(0));
    let place = Place(Mutex::new(a.clone()));
    // One poll of the driver at `place`, which must leave it waiting.
    let mut poll_at = |place: &Place| {
        let waker = place.waker();
        assert!(
            driver
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
    };

    // Task A polls the driver until it is connected and waits.
    for _ in 0..20 {
        poll_at(&place);
        if p.current_connection().is_some() {
            break;
        }
    }
    assert!(p.current_connection().is_some());

    // The driver moves to task B, polled at the same place.
    *place.0.lock().unwrap() = b.clone();
    poll_at(&place);
    let (a0, b0) = (a.load(Ordering::SeqCst), b.load(Ordering::SeqCst));
    let _closing = p.close();
    assert_eq!(a.load(Ordering::SeqCst), a0, "A no longer polls the driver");
    assert_eq!(b.load(Ordering::SeqCst), b0 + 1, "B polls it now");
}

/// A place where an executor polls its tasks, naming the task polled there now.
struct Place(Mutex<Arc<AtomicUsize>>);

impl Place {
    /// The waker a poll at this place borrows: it points at the place; its clones are wakers of
    /// the task there (each counts its wake-ups).
    fn waker(&self) -> Waker {
        // SAFETY: the vtable's functions take the pointer as a `Place`, which outlives every
        // borrowed waker of the test (clones are task wakers of their own).
        unsafe { Waker::from_raw(RawWaker::new(self as *const Place as *const (), &PLACE)) }
    }
}

static PLACE: RawWakerVTable = RawWakerVTable::new(place_clone, place_wake, place_wake, noop);
static TASK: RawWakerVTable =
    RawWakerVTable::new(task_clone, task_wake, task_wake_by_ref, task_drop);

unsafe fn place_clone(place: *const ()) -> RawWaker {
    // SAFETY: see `Place::waker`.
    let place = unsafe { &*(place as *const Place) };
    let task = place.0.lock().unwrap().clone();
    RawWaker::new(Arc::into_raw(task) as *const (), &TASK)
}

unsafe fn place_wake(place: *const ()) {
    // SAFETY: see `Place::waker`.
    let place = unsafe { &*(place as *const Place) };
    place.0.lock().unwrap().fetch_add(1, Ordering::SeqCst);
}

unsafe fn noop(_: *const ()) {}

// A task's waker: an `Arc<AtomicUsize>` counting its wake-ups, one strong count per waker.
unsafe fn task_clone(task: *const ()) -> RawWaker {
    // SAFETY: `task` came from `Arc::into_raw` and its waker holds a count.
    unsafe { Arc::increment_strong_count(task as *const AtomicUsize) };
    RawWaker::new(task, &TASK)
}

unsafe fn task_wake(task: *const ()) {
    // SAFETY: as in `task_clone`; the waker's count is given back.
    let task = unsafe { Arc::from_raw(task as *const AtomicUsize) };
    task.fetch_add(1, Ordering::SeqCst);
}

unsafe fn task_wake_by_ref(task: *const ()) {
    // SAFETY: as in `task_clone`.
    let task = unsafe { &*(task as *const AtomicUsize) };
    task.fetch_add(1, Ordering::SeqCst);
}

unsafe fn task_drop(task: *const ()) {
    // SAFETY: as in `task_wake`.
    drop(unsafe { Arc::from_raw(task as *const AtomicUsize) });
}
