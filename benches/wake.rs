//! Waking the waiters when a connection arrives, against tokio's own `watch` channel waking the
//! same number of tasks, in one run: 1, 100 and 10,000 tasks on a 2-worker runtime.
//!
//! - `persistent_ready`: tasks parked in `poll_ready` of their own clone (`ready().await`);
//! - `persistent_connected`: tasks parked in `connected()`;
//! - `watch` (the baseline): tasks parked in `watch::Receiver::changed()`.
//!
//! One iteration parks the tasks (not timed), then times from the trigger (the address lookup
//! let through, so that the driver connects; or `watch::Sender::send`) until every task has
//! finished. The ratio of each to `watch` is printed from criterion's estimates.
//!
//! ```text
//! cargo bench -p tower-persistent-benches --bench wake
//! ```

#[path = "support/ratios.rs"]
mod ratios;

use std::convert::Infallible;
use std::future::ready;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::{Layer, ServiceExt, service_fn};
use tower_persistent::{ClosableService, PersistentLayer};

const GROUP: &str = "wake";
const COUNTS: [usize; 3] = [1, 100, 10_000];

/// Waits until `parked` reaches `n`, then a little more for the last ones to reach their
/// await (not timed).
async fn settle(parked: &AtomicUsize, n: usize) {
    for _ in 0..10_000 {
        if parked.load(Ordering::SeqCst) >= n {
            break;
        }
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
}

/// One round with persistent connection waiters; `connected` picks `connected()` over
/// `ready()`. Returns the time from the trigger until every task finished.
async fn persistent(n: usize, connected: bool) -> Duration {
    let gate = CancellationToken::new();
    let lookup = {
        let gate = gate.clone();
        service_fn(move |()| {
            let gate = gate.clone();
            async move {
                gate.cancelled().await;
                Ok::<_, Infallible>(())
            }
        })
    };
    let p = PersistentLayer::new("wake", lookup).layer(service_fn(|()| {
        ready(Ok::<_, Infallible>(ClosableService::new(service_fn(
            |n: u64| ready(Ok::<_, Infallible>(n)),
        ))))
    }));
    let parked = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (mut handle, parked) = (p.clone(), parked.clone());
        tasks.spawn(async move {
            parked.fetch_add(1, Ordering::SeqCst);
            if connected {
                handle.connected().await.unwrap();
            } else {
                ServiceExt::<u64>::ready(&mut handle).await.unwrap();
            }
        });
    }
    settle(&parked, n).await;
    let start = Instant::now();
    gate.cancel();
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let elapsed = start.elapsed();
    p.close().await;
    elapsed
}

/// One round with tasks waiting on a `watch` channel.
async fn watch(n: usize) -> Duration {
    let (sender, receiver) = tokio::sync::watch::channel(0u64);
    let parked = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (mut receiver, parked) = (receiver.clone(), parked.clone());
        tasks.spawn(async move {
            parked.fetch_add(1, Ordering::SeqCst);
            receiver.changed().await.unwrap();
        });
    }
    settle(&parked, n).await;
    let start = Instant::now();
    sender.send(1).unwrap();
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let elapsed = start.elapsed();
    drop(receiver);
    elapsed
}

fn main() {
    // Estimates that criterion wrote before this run are not this run's.
    ratios::start();
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .configure_from_args();
    let mut group = c.benchmark_group(GROUP);
    for n in COUNTS {
        group.bench_function(BenchmarkId::new("watch", n), |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += watch(n).await;
                }
                total
            })
        });
        for (name, connected) in [("persistent_ready", false), ("persistent_connected", true)] {
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.to_async(&rt).iter_custom(|iters| async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += persistent(n, connected).await;
                    }
                    total
                })
            });
        }
    }
    group.finish();
    c.final_summary();

    for n in COUNTS {
        let (watch, ready_run, connected_run) = (
            format!("watch/{n}"),
            format!("persistent_ready/{n}"),
            format!("persistent_connected/{n}"),
        );
        println!("\n{n} waiters:");
        ratios::print(
            GROUP,
            &[
                (watch.as_str(), watch.as_str()),
                (ready_run.as_str(), watch.as_str()),
                (connected_run.as_str(), watch.as_str()),
            ],
            "µs",
            1e3,
        );
    }
}
