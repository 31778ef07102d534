//! Memory and time per idle persistent connection, at 10,000 and 100,000 connections, with a
//! counting allocator, against two baselines made in the same process:
//!
//! - `task + connection`: one spawned task per connection that holds the connection and waits
//!   for a cancellation token, the least a connection kept by a background task can cost;
//! - `Reconnect`: tower's `Reconnect` over the same connector, connected (no task, no events,
//!   no discovery).
//!
//! Each connection is a `ClosableService` over a trivial service, made by a connector that
//! answers at once; each persistent connection has one handle and is connected (idle). Bytes
//! are those held once all are made, divided by their count (the handles' own bytes included).
//! Creating a persistent connection is applying the layer and awaiting `connected()`; closing
//! is `close()` awaited. On a current-thread runtime, all `n` are made, then awaited, and all
//! `n` closes are begun, then awaited: the times are the work per connection, amortised. (One
//! connection made or closed and awaited at a time, from outside a multi-threaded runtime
//! (`block_on`), adds a wake-up of the calling thread by a worker per step, tokio's own cost:
//! 20 to 40 µs on this machine, as a oneshot's round trip to a task there.) Three rounds; the
//! table gives the minimum and the median.
//!
//! ```text
//! cargo bench -p tower-persistent-benches --bench memory
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::ready;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tower::reconnect::Reconnect;
use tower::{Layer, ServiceExt, service_fn};
use tower_persistent::{ClosableService, PersistentLayer};

/// Counts the bytes allocated and not yet freed.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn held() -> isize {
    HELD.load(Ordering::Relaxed)
}

type Conn =
    ClosableService<tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, Infallible>>>>;

fn conn() -> Conn {
    fn answer(n: u64) -> std::future::Ready<Result<u64, Infallible>> {
        ready(Ok(n))
    }
    ClosableService::new(service_fn(answer as fn(u64) -> _))
}

/// One round's figures for `n` connections of one kind.
#[derive(Clone, Copy)]
struct Figures {
    bytes: f64,
    create: Duration,
    close: Duration,
}

async fn persistent(n: usize) -> Figures {
    let layer = PersistentLayer::new("memory", service_fn(|()| ready(Ok::<_, Infallible>(()))));
    let before = held();
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        handles.push(layer.layer(service_fn(|()| ready(Ok::<_, Infallible>(conn())))));
    }
    for handle in &handles {
        handle.connected().await.unwrap();
    }
    let create = start.elapsed() / n as u32;
    tokio::task::yield_now().await;
    let bytes = (held() - before) as f64 / n as f64;
    let start = Instant::now();
    let closing: Vec<_> = handles.iter().map(|h| h.close()).collect();
    for close in closing {
        close.await;
    }
    let close = start.elapsed() / n as u32;
    drop(handles);
    Figures {
        bytes,
        create,
        close,
    }
}

async fn task_and_connection(n: usize) -> Figures {
    let stop = CancellationToken::new();
    let before = held();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let stop = stop.clone();
        let conn = conn();
        tasks.push(tokio::spawn(async move {
            stop.cancelled().await;
            drop(conn);
        }));
    }
    tokio::task::yield_now().await;
    let create = start.elapsed() / n as u32;
    let bytes = (held() - before) as f64 / n as f64;
    let start = Instant::now();
    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    let close = start.elapsed() / n as u32;
    Figures {
        bytes,
        create,
        close,
    }
}

async fn reconnect(n: usize) -> Figures {
    fn make(_: ()) -> std::future::Ready<Result<Conn, Infallible>> {
        ready(Ok(conn()))
    }
    let before = held();
    let start = Instant::now();
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let mut r = Reconnect::new(service_fn(make as fn(()) -> _), ());
        // Connected on its first poll_ready.
        r.ready().await.unwrap();
        all.push(r);
    }
    let create = start.elapsed() / n as u32;
    let bytes = (held() - before) as f64 / n as f64;
    let start = Instant::now();
    drop(all);
    let close = start.elapsed() / n as u32;
    Figures {
        bytes,
        create,
        close,
    }
}

/// The minimum and the median of three figures.
fn min_median(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[0], values[values.len() / 2])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "\n{:<18} {:>8} {:>22} {:>22} {:>22}",
        "kind", "count", "bytes (min, median)", "create µs (min, med)", "close µs (min, med)"
    );
    for n in [10_000, 100_000] {
        let mut rows: Vec<(&str, Vec<Figures>)> = Vec::new();
        for _ in 0..3 {
            let runs = rt.block_on(async {
                [
                    ("task + connection", task_and_connection(n).await),
                    ("Reconnect", reconnect(n).await),
                    ("Persistent", persistent(n).await),
                ]
            });
            for (name, figures) in runs {
                match rows.iter_mut().find(|(r, _)| *r == name) {
                    Some((_, all)) => all.push(figures),
                    None => rows.push((name, vec![figures])),
                }
            }
        }
        let baseline = min_median(rows[0].1.iter().map(|f| f.bytes).collect()).1;
        for (name, all) in &rows {
            let bytes = min_median(all.iter().map(|f| f.bytes).collect());
            let create = min_median(all.iter().map(|f| f.create.as_secs_f64() * 1e6).collect());
            let close = min_median(all.iter().map(|f| f.close.as_secs_f64() * 1e6).collect());
            println!(
                "{name:<18} {n:>8} {:>22} {:>22} {:>22}",
                format!(
                    "{:.0}, {:.0} ({:.2}×)",
                    bytes.0,
                    bytes.1,
                    bytes.1 / baseline
                ),
                format!("{:.2}, {:.2}", create.0, create.1),
                format!("{:.2}, {:.2}", close.0, close.1),
            );
        }
    }
}
