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
//! - `async_one_site`: the same, through a request function called from one place only;
//! - `async_io_error`: `async_one_site` over a service whose error is an `io::Error`
//!   (`InnerIoError`; the others' is `Infallible`), whose error path a wrapper with `BoxError`
//!   errors must keep: `bare` is that service, `persistent` the handle over
//!   `ClosableService` over it, `reconnect` tower's `Reconnect` over it.
//!
//! The async loop's request function (`one_request`) is also called to warm each service up:
//! with two call sites the compiler inlines it into the loop only if it is small, which it is
//! for the bare service and for no service whose error is a `BoxError` (the unwrap of each
//! result is then a test and a panic path): `bare_box_error`, the bare service with that error
//! type and nothing else, is the floor of any such service there. `async_one_site` measures
//! each service with the request function inlined (one call site: `one_request_one_site`),
//! as a request function called from one place in a program is.
//!
//! The service answers at once. After each group's measurements, each run's mean is printed
//! with its difference to the bare service and its ratio to `Reconnect`, from criterion's own
//! estimates, so that the figures of one run compare like with like. Criterion measures one
//! service after another, a few seconds each, and on a shared machine the load from elsewhere
//! changes between them; so each group then runs interleaved rounds, each a batch of every
//! service one after another, and prints the medians over the rounds of each service's time,
//! of its difference to the bare service within a round and of its ratio to `Reconnect` within
//! a round. Instruction counts, which a shared machine does not blur at all, are in
//! `benches/instructions.rs`.
//!
//! ```text
//! cargo bench -p tower-persistent-benches --bench overhead
//! ```

#[path = "support/ratios.rs"]
mod ratios;
#[path = "support/services.rs"]
mod services;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use services::*;
use tokio::runtime::Runtime;
use tower::buffer::Buffer;
use tower::{Service, ServiceExt};

const TIGHT: &str = "tight";
const TIGHT_BARRIER: &str = "tight_barrier";
const ASYNC: &str = "async";
const ASYNC_ONE_SITE: &str = "async_one_site";
const ASYNC_IO_ERROR: &str = "async_io_error";

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

/// Defines `$name`, which times `iters` requests of `svc` in the tight loop, each a `$round`
/// (`tight_round`, or `tight_round_barrier` with a barrier between `poll_ready` and `call`).
/// Criterion's samples and the interleaved rounds both run it.
macro_rules! tight_loop {
    ($name:ident, $round:ident) => {
        #[inline(never)]
        fn $name<S>(svc: &mut S, iters: u64) -> Duration
        where
            S: Service<u64, Response = u64>,
            S::Error: std::fmt::Debug,
        {
            let mut cx = noop_context();
            let start = Instant::now();
            for n in 0..iters {
                black_box($round(svc, &mut cx, black_box(n)));
            }
            start.elapsed()
        }
    };
}

tight_loop!(tight, tight_round);
tight_loop!(tight_barrier, tight_round_barrier);

/// Defines `$name`, which times `iters` sequential requests of `svc` in the async loop, each
/// through the request function `$request` (a function of its own per group, so that each
/// group's request function has the call sites it is meant to have: this loop, and for
/// `one_request` the warm-up too). The service is moved into the loop's future for the batch
/// and put back after, so that no borrow is held across an await.
macro_rules! async_loop {
    ($name:ident, $request:ident) => {
        #[inline(never)]
        fn $name<S>(rt: &Runtime, svc: &mut Option<S>, iters: u64) -> Duration
        where
            S: Service<u64, Response = u64>,
            S::Error: std::fmt::Debug,
        {
            rt.block_on(async {
                let mut taken = svc.take().expect("batches run one at a time");
                let start = Instant::now();
                for n in 0..iters {
                    black_box($request(&mut taken, black_box(n)).await);
                }
                let elapsed = start.elapsed();
                *svc = Some(taken);
                elapsed
            })
        }
    };
}

async_loop!(async_loop, one_request);
async_loop!(async_loop_one_site, one_request_one_site);
async_loop!(async_loop_io_error, one_request_io_error);

/// `one_request`, called from `async_loop_io_error` alone.
async fn one_request_io_error<S>(svc: &mut S, n: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    svc.ready().await.unwrap().call(n).await.unwrap()
}

/// A first request, which connects the service (warm-up, off the measured loops' functions).
#[inline(never)]
async fn connect_once<S>(svc: &mut S)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    svc.ready().await.unwrap().call(0).await.unwrap();
}

/// One service of a group: its name and its batch, which times a given number of requests.
struct Run<'a> {
    name: &'static str,
    batch: Box<dyn FnMut(u64) -> Duration + 'a>,
}

impl<'a> Run<'a> {
    fn new(name: &'static str, batch: impl FnMut(u64) -> Duration + 'a) -> Self {
        Run {
            name,
            batch: Box::new(batch),
        }
    }
}

/// Interleaved rounds per group, and requests per batch in them.
const ROUNDS: usize = 101;
const BATCH: u64 = 200_000;

/// Measures `runs` as criterion group `group`, then in `ROUNDS` interleaved rounds (after one
/// not recorded): each round times one batch of every run, one after another, in an order
/// shuffled for each round (so that no run always follows the same one), so that a burst of
/// load from elsewhere on the machine falls on the runs of one round alike.
/// Prints criterion's means against `bare` and `reconnect`, then the rounds' medians: of each
/// run's time per request, of its difference to `bare` within a round and of its ratio to
/// `reconnect` within a round. The rounds are skipped when criterion did not measure the
/// group in this run (a filter, `--list`, `--test`).
fn measure(c: &mut Criterion, group: &str, runs: &mut [Run<'_>]) {
    let mut g = c.benchmark_group(group);
    for run in runs.iter_mut() {
        g.bench_function(BenchmarkId::from_parameter(run.name), |b| {
            b.iter_custom(|iters| (run.batch)(iters))
        });
    }
    g.finish();
    let names: Vec<&str> = runs.iter().map(|run| run.name).collect();
    println!("\n{group} loop, criterion's means:");
    ratios::print_against(group, &names, "bare", "reconnect");
    if ratios::mean(group, "bare").is_none() {
        return;
    }
    for run in runs.iter_mut() {
        (run.batch)(BATCH);
    }
    let mut per_request = vec![Vec::with_capacity(ROUNDS); runs.len()];
    let mut order: Vec<usize> = (0..runs.len()).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..ROUNDS {
        shuffle(&mut order, &mut seed);
        for &i in &order {
            let elapsed = (runs[i].batch)(BATCH);
            per_request[i].push(elapsed.as_secs_f64() * 1e9 / BATCH as f64);
        }
    }
    let index = |name: &str| names.iter().position(|n| *n == name);
    let (bare, reconnect) = (index("bare"), index("reconnect"));
    println!(
        "{group} loop, {ROUNDS} interleaved rounds of {BATCH} requests each, medians:\n\
         {:<32} {:>10} {:>12} {:>12}",
        "run", "ns", "- bare", "/ reconnect"
    );
    for (i, name) in names.iter().enumerate() {
        let against = |j: Option<usize>, f: fn(f64, f64) -> f64| {
            j.map(|j| {
                median(
                    (0..ROUNDS)
                        .map(|r| f(per_request[i][r], per_request[j][r]))
                        .collect(),
                )
            })
        };
        println!(
            "{name:<32} {:>10.2} {:>12} {:>12}",
            median(per_request[i].clone()),
            against(bare, |a, b| a - b).map_or("-".into(), |d| format!("{d:+.2}")),
            against(reconnect, |a, b| a / b).map_or("-".into(), |r| format!("{r:.3}")),
        );
    }
}

/// Shuffles `order` (Fisher-Yates over a xorshift generator whose state is `seed`).
fn shuffle(order: &mut [usize], seed: &mut u64) {
    for i in (1..order.len()).rev() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        order.swap(i, (*seed % (i as u64 + 1)) as usize);
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

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

    let (mut p0, mut pc0) = (p.clone(), pc.clone());
    measure(
        &mut c,
        TIGHT,
        &mut [
            Run::new("bare", |i| tight(&mut Inner, i)),
            Run::new("persistent", |i| tight(&mut p0, i)),
            Run::new("persistent_closable_service", |i| tight(&mut pc0, i)),
            Run::new("reconnect", |i| tight(&mut r, i)),
        ],
    );
    // Fresh handles: readiness is per handle.
    let (mut p0, mut pc0) = (p.clone(), pc.clone());
    let mut r = reconnect();
    rt.block_on(one_request(&mut r, 0));
    measure(
        &mut c,
        TIGHT_BARRIER,
        &mut [
            Run::new("bare", |i| tight_barrier(&mut Inner, i)),
            Run::new("persistent", |i| tight_barrier(&mut p0, i)),
            Run::new("persistent_closable_service", |i| {
                tight_barrier(&mut pc0, i)
            }),
            Run::new("reconnect", |i| tight_barrier(&mut r, i)),
        ],
    );
    let mut r = reconnect();
    rt.block_on(one_request(&mut r, 0));

    // Fresh handles again for the second async group: the `Persistent` clones are made ready
    // by their first request in the loop, `Reconnect` once by `one_request` (whose call sites
    // stay the same two).
    let (p1, pc1) = (p.clone(), pc.clone());
    let mut r1 = reconnect();
    rt.block_on(one_request(&mut r1, 0));

    let rt = &rt;
    let (mut bare, mut boxed) = (Some(Inner), Some(boxed));
    let (mut p, mut pc, mut r, mut buffer) = (Some(p), Some(pc), Some(r), Some(buffer));
    measure(
        &mut c,
        ASYNC,
        &mut [
            Run::new("bare", |i| async_loop(rt, &mut bare, i)),
            Run::new("bare_box_error", |i| async_loop(rt, &mut boxed, i)),
            Run::new("persistent", |i| async_loop(rt, &mut p, i)),
            Run::new("persistent_closable_service", |i| {
                async_loop(rt, &mut pc, i)
            }),
            Run::new("reconnect", |i| async_loop(rt, &mut r, i)),
            Run::new("buffer", |i| async_loop(rt, &mut buffer, i)),
        ],
    );

    let (mut bare, mut boxed) = (Some(Inner), Some(InnerBoxError));
    let (mut p1, mut pc1, mut r1) = (Some(p1), Some(pc1), Some(r1));
    measure(
        &mut c,
        ASYNC_ONE_SITE,
        &mut [
            Run::new("bare", |i| async_loop_one_site(rt, &mut bare, i)),
            Run::new("bare_box_error", |i| async_loop_one_site(rt, &mut boxed, i)),
            Run::new("persistent", |i| async_loop_one_site(rt, &mut p1, i)),
            Run::new("persistent_closable_service", |i| {
                async_loop_one_site(rt, &mut pc1, i)
            }),
            Run::new("reconnect", |i| async_loop_one_site(rt, &mut r1, i)),
        ],
    );

    // The same loop over a service that can fail (an `io::Error`), each service connected
    // first by a request through a function of its own, so that the loop's stays inlined.
    let mut pe = persistent_closable_over(InnerIoError);
    let mut re = io_error_reconnect();
    rt.block_on(async {
        connect_once(&mut pe).await;
        connect_once(&mut re).await;
    });
    let (mut bare, mut pe, mut re) = (Some(InnerIoError), Some(pe), Some(re));
    measure(
        &mut c,
        ASYNC_IO_ERROR,
        &mut [
            Run::new("bare", |i| async_loop_io_error(rt, &mut bare, i)),
            Run::new("persistent", |i| async_loop_io_error(rt, &mut pe, i)),
            Run::new("reconnect", |i| async_loop_io_error(rt, &mut re, i)),
        ],
    );
    c.final_summary();
}
