//! The cost of a request through a connected `Persistent` handle, against the bare inner
//! service, tower's `Reconnect` and (in the async loop) tower's `Buffer` over the same service,
//! in one run. Four loops:
//!
//! - `tight`: `poll_ready`, `call` and one poll of the response, with a no-op waker and no
//!   runtime, as a caller that drives the service by hand;
//! - `tight_barrier`: the same with the request passed through `black_box` between
//!   `poll_ready` and `call`, so that `call` cannot use what the compiler knows from
//!   `poll_ready`;
//! - `async`: `ready().await` then `call(..).await` on a current-thread tokio runtime;
//! - `async_one_site`: the same, through a request function called from one place only.
//!
//! The async loop's request function (`one_request`) is also called to warm each service up:
//! with two call sites the compiler inlines it into the loop only if it is small, which it is
//! for the bare service and for no service whose error is a `BoxError` (the unwrap of each
//! result is then a test and a panic path): `bare_box_error`, the bare service with that error
//! type and nothing else, is the floor of any such service there. `async_one_site` measures
//! each service with the request function inlined (one call site: `one_request_one_site`),
//! as a request function called from one place in a program is.
//!
//! The service answers at once. After the measurements, each run's mean is printed with its
//! difference to the bare service and its ratio to `Reconnect`, from criterion's own estimates,
//! so that the figures of one run compare like with like. Instruction counts, which a shared
//! machine does not blur, are in `benches/instructions.rs`.
//!
//! ```text
//! cargo bench -p tower-persistent-benches --bench overhead
//! ```

#[path = "support/ratios.rs"]
mod ratios;
#[path = "support/services.rs"]
mod services;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion};
use services::*;
use tokio::runtime::Runtime;
use tower::buffer::Buffer;
use tower::{Service, ServiceExt};

const TIGHT: &str = "tight";
const TIGHT_BARRIER: &str = "tight_barrier";
const ASYNC: &str = "async";
const ASYNC_ONE_SITE: &str = "async_one_site";

async fn one_request<S>(svc: &mut S, n: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    svc.ready().await.unwrap().call(n).await.unwrap()
}

/// `one_request`, called from `async_loop_one_site` alone.
async fn one_request_one_site<S>(svc: &mut S, n: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    svc.ready().await.unwrap().call(n).await.unwrap()
}

/// Defines `$name`, which measures `iters` requests of `svc` per sample in the tight loop, each
/// a `$round` (`tight_round`, or `tight_round_barrier` with a barrier between `poll_ready` and
/// `call`).
macro_rules! tight_loop {
    ($name:ident, $round:ident) => {
        fn $name<S>(
            group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
            name: &str,
            mut svc: S,
        ) where
            S: Service<u64, Response = u64>,
            S::Error: std::fmt::Debug,
        {
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|iters| {
                    let mut cx = noop_context();
                    let start = std::time::Instant::now();
                    for n in 0..iters {
                        black_box($round(&mut svc, &mut cx, black_box(n)));
                    }
                    start.elapsed()
                })
            });
        }
    };
}

tight_loop!(tight, tight_round);
tight_loop!(tight_barrier, tight_round_barrier);

/// Defines `$name`, which measures `iters` sequential requests of `svc` per sample in the async
/// loop, each through the request function `$request` (a function of its own per group, so
/// that each group's request function has the call sites it is meant to have).
macro_rules! async_loop {
    ($name:ident, $request:ident) => {
        fn $name<S>(
            group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
            rt: &Runtime,
            name: &str,
            svc: S,
        ) where
            S: Service<u64, Response = u64>,
            S::Error: std::fmt::Debug,
        {
            // Taken out for each sample and put back, so that no borrow is held across an
            // await.
            let svc = std::cell::Cell::new(Some(svc));
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.to_async(rt).iter_custom(|iters| {
                    let svc = &svc;
                    async move {
                        let mut taken = svc.take().expect("samples run one at a time");
                        let start = std::time::Instant::now();
                        for n in 0..iters {
                            black_box($request(&mut taken, black_box(n)).await);
                        }
                        let elapsed = start.elapsed();
                        svc.set(Some(taken));
                        elapsed
                    }
                })
            });
        }
    };
}

async_loop!(async_loop, one_request);
async_loop!(async_loop_one_site, one_request_one_site);

fn main() {
    // Estimates that criterion wrote before this run are not this run's.
    ratios::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut c = Criterion::default().configure_from_args();

    // Each service connected (and its slow path taken) before it is measured.
    let warm = |svc: &mut dyn FnMut()| svc();
    let mut p = persistent();
    let mut pc = persistent_closable();
    let mut r = reconnect();
    let mut buffer = Buffer::new(Inner, 1024);
    let mut boxed = InnerBoxError;
    warm(&mut || {
        rt.block_on(async {
            one_request(&mut boxed, 0).await;
            one_request(&mut p, 0).await;
            one_request(&mut pc, 0).await;
            one_request(&mut r, 0).await;
            one_request(&mut buffer, 0).await;
        })
    });

    let mut group = c.benchmark_group(TIGHT);
    tight(&mut group, "bare", Inner);
    tight(&mut group, "persistent", p.clone());
    tight(&mut group, "persistent_closable_service", pc.clone());
    tight(&mut group, "reconnect", r);
    group.finish();
    let mut r = reconnect();
    rt.block_on(one_request(&mut r, 0));
    let mut group = c.benchmark_group(TIGHT_BARRIER);
    tight_barrier(&mut group, "bare", Inner);
    tight_barrier(&mut group, "persistent", p.clone());
    tight_barrier(&mut group, "persistent_closable_service", pc.clone());
    tight_barrier(&mut group, "reconnect", r);
    group.finish();
    // Fresh handles: readiness is per handle.
    let mut r = reconnect();
    rt.block_on(one_request(&mut r, 0));

    // Fresh handles again for the second async group, made ready once each by `one_request`
    // (whose call sites stay the same two).
    let (p1, pc1) = (p.clone(), pc.clone());
    let mut r1 = reconnect();
    rt.block_on(one_request(&mut r1, 0));

    let mut group = c.benchmark_group(ASYNC);
    async_loop(&mut group, &rt, "bare", Inner);
    async_loop(&mut group, &rt, "bare_box_error", boxed);
    async_loop(&mut group, &rt, "persistent", p);
    async_loop(&mut group, &rt, "persistent_closable_service", pc);
    async_loop(&mut group, &rt, "reconnect", r);
    async_loop(&mut group, &rt, "buffer", buffer);
    group.finish();

    let mut group = c.benchmark_group(ASYNC_ONE_SITE);
    async_loop_one_site(&mut group, &rt, "bare", Inner);
    async_loop_one_site(&mut group, &rt, "bare_box_error", InnerBoxError);
    async_loop_one_site(&mut group, &rt, "persistent", p1);
    async_loop_one_site(&mut group, &rt, "persistent_closable_service", pc1);
    async_loop_one_site(&mut group, &rt, "reconnect", r1);
    group.finish();
    c.final_summary();

    for group in [TIGHT, TIGHT_BARRIER, ASYNC, ASYNC_ONE_SITE] {
        println!("\n{group} loop:");
        ratios::print_against(
            group,
            &[
                "bare",
                "bare_box_error",
                "persistent",
                "persistent_closable_service",
                "reconnect",
                "buffer",
            ],
            "bare",
            "reconnect",
        );
    }
}
