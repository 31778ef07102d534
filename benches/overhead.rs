//! The cost of a request through a connected `Persistent` handle, against the bare inner
//! service, tower's `Reconnect` and tower's `Buffer` over the same service, in one run.
//!
//! Each iteration is `ready().await` then `call(..).await` on a service that answers at once.
//! After the measurements, the ratios to the bare service are printed (from criterion's own
//! estimates), so that the figures of one run compare like with like.
//!
//! ```text
//! cargo bench --bench overhead
//! ```

#[path = "support/ratios.rs"]
mod ratios;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};

use criterion::{BenchmarkId, Criterion};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tower::buffer::Buffer;
use tower::reconnect::Reconnect;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_persistent::{Closable, ClosableService, PersistentLayer};

/// The trivial inner service: answers `n + 1` at once.
#[derive(Clone, Copy)]
struct Inner;

impl Service<u64> for Inner {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, n: u64) -> Self::Future {
        ready(Ok(n + 1))
    }
}

/// `Inner` as a connection with a hand-written `Closable` impl.
#[derive(Clone)]
struct Direct {
    inner: Inner,
    closed: CancellationToken,
}

impl Service<u64> for Direct {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, n: u64) -> Self::Future {
        self.inner.call(n)
    }
}

impl Closable for Direct {
    fn close(&self) -> impl Future<Output = ()> + Send {
        self.closed.cancel();
        ready(())
    }

    fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    fn close_finished(&self) -> impl Future<Output = ()> + Send {
        self.closed.clone().cancelled_owned()
    }
}

async fn one_request<S>(svc: &mut S, n: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    svc.ready().await.unwrap().call(n).await.unwrap()
}

const GROUP: &str = "ready_and_call";
const BASELINE: &str = "bare";
const RUNS: [&str; 5] = [
    BASELINE,
    "persistent",
    "persistent_closable_service",
    "reconnect",
    "buffer",
];

fn bench(c: &mut Criterion, rt: &Runtime) {
    let _guard = rt.enter();
    let get_address = service_fn(|()| ready(Ok::<_, Infallible>(())));

    let bare = Inner;
    let persistent = PersistentLayer::new("bench", get_address).layer(service_fn(|()| {
        ready(Ok::<_, Infallible>(Direct {
            inner: Inner,
            closed: CancellationToken::new(),
        }))
    }));
    let persistent_closable = PersistentLayer::new("bench", get_address).layer(service_fn(|()| {
        ready(Ok::<_, Infallible>(ClosableService::new(Inner)))
    }));
    let mut reconnect = Reconnect::new(service_fn(|()| ready(Ok::<_, Infallible>(Inner))), ());
    let mut buffer = Buffer::new(Inner, 1024);
    rt.block_on(async {
        persistent.connected().await.unwrap();
        persistent_closable.connected().await.unwrap();
        // Reconnect connects on its first poll_ready.
        one_request(&mut reconnect, 0).await;
        one_request(&mut buffer, 0).await;
    });

    let mut group = c.benchmark_group(GROUP);
    measure(&mut group, rt, BASELINE, bare);
    measure(&mut group, rt, "persistent", persistent);
    measure(
        &mut group,
        rt,
        "persistent_closable_service",
        persistent_closable,
    );
    measure(&mut group, rt, "reconnect", reconnect);
    measure(&mut group, rt, "buffer", buffer);
    group.finish();
}

/// Measures `iters` sequential requests on `svc` per sample.
fn measure<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    name: &str,
    svc: S,
) where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    // Taken out for each sample and put back, so that no borrow is held across an await.
    let svc = std::cell::Cell::new(Some(svc));
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.to_async(rt).iter_custom(|iters| {
            let svc = &svc;
            async move {
                let mut taken = svc.take().expect("samples run one at a time");
                let start = std::time::Instant::now();
                for n in 0..iters {
                    black_box(one_request(&mut taken, black_box(n)).await);
                }
                let elapsed = start.elapsed();
                svc.set(Some(taken));
                elapsed
            }
        })
    });
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &rt);
    c.final_summary();
    print_ratios();
}

/// Prints each run's mean time and its ratio to the bare service, from criterion's estimates.
fn print_ratios() {
    let rows: Vec<(&str, &str)> = RUNS.iter().map(|run| (*run, BASELINE)).collect();
    ratios::print(GROUP, &rows, "ns", 1.0);
}
