//! Instructions per request, counted by valgrind's callgrind: exact and repeatable on a shared
//! machine, where times are not. For each service (the bare inner service, `Persistent` over a
//! hand-written connection and over `ClosableService`, tower's `Reconnect`) and each loop (a
//! tight `poll_ready` + `call` + poll without a runtime; `ready().await` + `call().await` on a
//! current-thread runtime, as `benches/overhead.rs`), the loop runs under callgrind twice, for
//! `N` and `2N` requests, counting only inside the loop's function; the difference divided by
//! `N` is the cost of one request, setup and loop entry cancelled out. A second family does the
//! same over an inner service written as the README writes one (`service_fn` over an async
//! block), under `ClosableService`, against its own bare service and `Reconnect`; a third over
//! `Inner` with `io::Error` errors (`InnerIoError`).
//!
//! ```text
//! cargo bench --bench instructions        # needs valgrind (Debian's package)
//! ```

#[path = "support/services.rs"]
mod services;

use std::hint::black_box;
use std::process::Command;

use services::*;
use tower::{Service, ServiceExt};

const N: u64 = 20_000;
/// Each family: its services, the first the bare inner service and the last tower's
/// `Reconnect` over it, the baselines of the others.
const FAMILIES: [&[&str]; 3] = [
    // `Inner`: a hand-written service whose future is `Ready`.
    &[
        "bare",
        // The bare service with a `BoxError` error type: the floor of every other one here.
        "bare_box_error",
        "persistent",
        "persistent_closable_service",
        "reconnect",
    ],
    // `fn_inner`: `service_fn` over an async block, as the README writes one.
    &["fn_bare", "fn_persistent_closable_service", "fn_reconnect"],
    // `InnerIoError`: `Inner` with `io::Error` errors, whose error path wrappers must keep.
    &["io_bare", "io_persistent_closable_service", "io_reconnect"],
];
const LOOPS: [&str; 3] = ["tight", "barrier", "async"];

#[inline(never)]
fn measured_tight_loop<S>(svc: &mut S, n: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let mut cx = noop_context();
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(tight_round(svc, &mut cx, black_box(i)));
    }
    sum
}

/// `measured_tight_loop` with a barrier between `poll_ready` and `call` (`tight_round_barrier`).
#[inline(never)]
fn measured_barrier_loop<S>(svc: &mut S, n: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let mut cx = noop_context();
    let mut sum = 0u64;
    for i in 0..n {
        // A xor, where the tight loop adds: for the bare service the two loops are otherwise
        // the same code, which the compiler then keeps once, under the other's name.
        sum ^= tight_round_barrier(svc, &mut cx, i);
    }
    sum
}

#[inline(never)]
fn measured_async_loop<S>(rt: &tokio::runtime::Runtime, svc: &mut S, n: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let mut sum = 0u64;
        for i in 0..n {
            let answer = svc.ready().await.unwrap().call(black_box(i)).await.unwrap();
            sum = sum.wrapping_add(answer);
        }
        sum
    })
}

/// Runs `n` requests of `service` in `kind` of loop.
fn child(service: &str, kind: &str, n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    fn run<S>(rt: &tokio::runtime::Runtime, kind: &str, mut svc: S, n: u64)
    where
        S: Service<u64, Response = u64>,
        S::Error: std::fmt::Debug,
    {
        // One request first: connections are made and slow paths taken outside the count.
        rt.block_on(async { svc.ready().await.unwrap().call(0).await.unwrap() });
        let sum = match kind {
            "tight" => measured_tight_loop(&mut svc, n),
            "barrier" => measured_barrier_loop(&mut svc, n),
            _ => measured_async_loop(rt, &mut svc, n),
        };
        black_box(sum);
    }
    match service {
        "bare" => run(&rt, kind, Inner, n),
        "bare_box_error" => run(&rt, kind, InnerBoxError, n),
        "persistent" => run(&rt, kind, persistent(), n),
        "persistent_closable_service" => run(&rt, kind, persistent_closable(), n),
        "reconnect" => run(&rt, kind, reconnect(), n),
        "fn_bare" => run(&rt, kind, fn_inner(), n),
        "fn_persistent_closable_service" => run(&rt, kind, fn_persistent_closable(), n),
        "fn_reconnect" => run(&rt, kind, fn_reconnect(), n),
        "io_bare" => run(&rt, kind, InnerIoError, n),
        "io_persistent_closable_service" => {
            run(&rt, kind, persistent_closable_over(InnerIoError), n)
        }
        "io_reconnect" => run(&rt, kind, io_error_reconnect(), n),
        other => panic!("unknown service {other}"),
    }
}

/// The instructions callgrind counted inside the loop's function for `n` requests.
fn count(service: &str, kind: &str, n: u64) -> Option<u64> {
    let out = std::env::temp_dir().join(format!(
        "tower-persistent-callgrind-{}-{service}-{kind}-{n}",
        std::process::id()
    ));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--collect-atstart=no")
        .arg(format!("--toggle-collect=*measured_{kind}_loop*"))
        .arg(std::env::current_exe().ok()?)
        .env("INSTRUCTIONS_CHILD", format!("{service} {kind} {n}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    let text = std::fs::read_to_string(&out).ok();
    let _ = std::fs::remove_file(&out);
    if !status.success() {
        return None;
    }
    text?
        .lines()
        .find_map(|line| line.strip_prefix("totals:"))
        .and_then(|total| total.trim().parse().ok())
}

fn main() {
    if let Ok(spec) = std::env::var("INSTRUCTIONS_CHILD") {
        let mut parts = spec.split(' ');
        let (service, kind, n) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap().parse().unwrap(),
        );
        child(service, kind, n);
        return;
    }
    // `cargo bench` passes `--bench`; with `--list` or a filter of its own it wants nothing run.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("instructions: valgrind is not installed (apt-get install valgrind); skipped");
        return;
    }
    println!(
        "\n{:<30} {:>6} {:>14} {:>10} {:>12}",
        "service", "loop", "instr/request", "- bare", "/ reconnect"
    );
    for kind in LOOPS {
        let per_request = |service: &str| -> Option<f64> {
            let one = count(service, kind, N)?;
            let two = count(service, kind, 2 * N)?;
            Some(two.saturating_sub(one) as f64 / N as f64)
        };
        for family in FAMILIES {
            let figures: Vec<(&str, Option<f64>)> =
                family.iter().map(|s| (*s, per_request(s))).collect();
            let bare = figures[0].1;
            let reconnect = figures[figures.len() - 1].1;
            for (service, figure) in &figures {
                match figure {
                    Some(f) => println!(
                        "{service:<30} {kind:>6} {f:>14.1} {:>10} {:>12}",
                        bare.map_or("-".into(), |b| format!("{:+.1}", f - b)),
                        reconnect.map_or("-".into(), |r| format!("{:.3}", f / r)),
                    ),
                    None => println!("{service:<30} {kind:>6} {:>14}", "failed"),
                }
            }
        }
    }
}
