//! Retry policies, anti-flap and the connect timeout.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder, service_fn};
use tower_persistent::backoff::{Exponential, InvalidPolicy, RetryPolicy};
use tower_persistent::{
    Closable, ClosableService, Event, MAX_RETRY_DELAY, MIN_RETRY_DELAY, PersistentLayer,
};

const S: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The window `[lo, hi]` of an exponential delay `n` (the module docs' formula).
fn window(e: &Exponential, n: i32) -> (Duration, Duration) {
    let base = (e.initial.as_secs_f64() * e.multiplier.powi(n)).min(e.max.as_secs_f64());
    let hi = (base * (1.0 + e.jitter)).min(e.max.as_secs_f64());
    let lo = hi * (1.0 - e.jitter) / (1.0 + e.jitter);
    // One nanosecond of slack for the float round trip.
    (
        Duration::from_secs_f64(lo).saturating_sub(Duration::from_nanos(1)),
        Duration::from_secs_f64(hi) + Duration::from_nanos(1),
    )
}

// gRPC's exponential backoff: 1 s ×1.6 ±20 % up to 120 s; jittered from the first delay on, and
// still jittered at the cap without ever exceeding it.
#[test]
fn exponential_is_jittered_from_the_first_delay_to_the_cap() {
    let grpc = Exponential::grpc();
    let policy = RetryPolicy::exponential(grpc).unwrap();
    let mut firsts = Vec::new();
    let mut capped = Vec::new();
    for _ in 0..300 {
        for (n, delay) in policy.delays().take(25).enumerate() {
            let (lo, hi) = window(&grpc, n as i32);
            assert!(
                lo <= delay && delay <= hi,
                "attempt {n}: {delay:?} not in [{lo:?}, {hi:?}]"
            );
            assert!(delay <= grpc.max);
            if n == 0 {
                firsts.push(delay);
            }
            if n == 24 {
                capped.push(delay);
            }
        }
    }
    firsts.sort();
    firsts.dedup();
    assert!(firsts.len() > 250, "the first retry is not jittered");
    assert!(firsts[0] < ms(900) && *firsts.last().unwrap() > ms(1100));
    // At the cap the delays spread over [80 s, 120 s].
    let lowest = *capped.iter().min().unwrap();
    let highest = *capped.iter().max().unwrap();
    assert!(lowest < Duration::from_secs(90), "{lowest:?}");
    assert!(highest > Duration::from_secs(110), "{highest:?}");
}

// Full jitter stays within [1 ms, min(max, base · 2ⁿ)]; decorrelated jitter within
// [base, min(max, 3 · previous)].
#[test]
fn full_and_decorrelated_jitter_stay_in_their_bounds() {
    let (base, max) = (ms(100), Duration::from_secs(10));
    let full = RetryPolicy::full_jitter(base, max).unwrap();
    for (n, delay) in full.delays().take(10_000).enumerate() {
        let ceiling = base.saturating_mul(1 << n.min(20)).min(max);
        assert!(
            MIN_RETRY_DELAY <= delay && delay <= ceiling,
            "{n}: {delay:?}"
        );
    }
    let decorrelated = RetryPolicy::decorrelated_jitter(base, max).unwrap();
    let mut previous = base;
    for delay in decorrelated.delays().take(10_000) {
        assert!(
            base <= delay && delay <= max.min(previous * 3),
            "{delay:?} after {previous:?}"
        );
        previous = delay;
    }
}

// Parameters that leave jitter no room are accepted and give exact delays, as the docs say: a
// decorrelated jitter whose maximum equals its base, and a jitter of 0.
#[test]
fn parameters_without_room_for_jitter_give_exact_delays() {
    let two = Duration::from_secs(2);
    let decorrelated = RetryPolicy::decorrelated_jitter(two, two).unwrap();
    assert!(decorrelated.delays().take(100).all(|d| d == two));
    let constant = RetryPolicy::constant(two, 0.0).unwrap();
    assert!(constant.delays().take(100).all(|d| d == two));
}

// No policy overflows or panics: a million attempts each, within [1 ms, 1 h]; an exponential
// policy capped at one hour runs through a century of outage.
#[test]
fn a_million_attempts_and_a_century_of_outage() {
    let policies = [
        RetryPolicy::default(),
        RetryPolicy::exponential(Exponential::grpc()).unwrap(),
        RetryPolicy::exponential(Exponential {
            initial: Duration::from_nanos(1),
            multiplier: 1e300,
            jitter: 1.0,
            max: Duration::MAX,
        })
        .unwrap(),
        RetryPolicy::full_jitter(Duration::from_nanos(1), Duration::MAX).unwrap(),
        RetryPolicy::decorrelated_jitter(Duration::from_secs(1), Duration::MAX).unwrap(),
        RetryPolicy::from_fn(|n| Duration::from_secs(u64::from(n)).saturating_mul(u32::MAX)),
        RetryPolicy::constant(Duration::ZERO, 0.0).unwrap(),
    ];
    for policy in &policies {
        let mut count = 0u32;
        for delay in policy.delays().take(1_000_000) {
            assert!(
                (MIN_RETRY_DELAY..=MAX_RETRY_DELAY).contains(&delay),
                "{policy:?}: {delay:?}"
            );
            count += 1;
        }
        assert_eq!(count, 1_000_000);
    }

    let hourly = RetryPolicy::exponential(Exponential {
        max: MAX_RETRY_DELAY,
        ..Exponential::grpc()
    })
    .unwrap();
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    let mut outage = Duration::ZERO;
    let mut attempts = 0u64;
    for delay in hourly.delays() {
        outage += delay;
        attempts += 1;
        if outage >= century {
            break;
        }
    }
    // Mostly capped delays drawn from [40 min, 60 min].
    assert!(
        (876_000..1_320_000).contains(&attempts),
        "{attempts} attempts"
    );
}

// Invalid parameters are rejected with a clear error.
#[test]
fn invalid_parameters_are_rejected() {
    let message = |r: Result<RetryPolicy, InvalidPolicy>| r.unwrap_err().to_string();
    assert_eq!(
        message(RetryPolicy::constant(S, 1.5)),
        "invalid retry policy: jitter must be within [0, 1], got 1.5"
    );
    assert_eq!(
        message(RetryPolicy::constant(S, -0.1)),
        "invalid retry policy: jitter must be within [0, 1], got -0.1"
    );
    assert_eq!(
        message(RetryPolicy::constant(S, f64::NAN)),
        "invalid retry policy: jitter must be within [0, 1], got NaN"
    );
    let grpc = Exponential::grpc();
    for multiplier in [0.5, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(
            message(RetryPolicy::exponential(Exponential { multiplier, ..grpc })),
            format!(
                "invalid retry policy: multiplier must be a finite number of at least 1, got {multiplier}"
            )
        );
    }
    assert_eq!(
        message(RetryPolicy::exponential(Exponential {
            initial: Duration::ZERO,
            ..grpc
        })),
        "invalid retry policy: initial must be above zero"
    );
    assert_eq!(
        message(RetryPolicy::exponential(Exponential {
            max: ms(500),
            ..grpc
        })),
        "invalid retry policy: max (500ms) must not be below initial (1s)"
    );
    assert_eq!(
        message(RetryPolicy::full_jitter(Duration::ZERO, S)),
        "invalid retry policy: base must be above zero"
    );
    assert_eq!(
        message(RetryPolicy::decorrelated_jitter(S, ms(1))),
        "invalid retry policy: max (1ms) must not be below base (1s)"
    );
}

/// Starts of attempts of a persistent connection whose lookups always fail, on the paused clock.
async fn attempt_times(policy: RetryPolicy, attempts: usize) -> Vec<Duration> {
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let recorder = times.clone();
    let lookup = service_fn(move |()| {
        recorder.lock().unwrap().push(start.elapsed());
        std::future::ready(Err::<&'static str, _>(std::io::Error::other("down")))
    });
    let p = PersistentLayer::new("test", lookup)
        .retry_policy(policy)
        .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
    // Bounded: each wait reports one attempt (the check below fails if they do not come).
    for _ in 0..attempts * 2 {
        if times.lock().unwrap().len() >= attempts {
            break;
        }
        let _ = p.connected_or_failed_to_connect().await;
    }
    assert!(times.lock().unwrap().len() >= attempts);
    p.close().await;
    times.lock().unwrap().clone()
}

// Through the connection loop, the starts of attempts follow the exponential windows.
#[tokio::test(start_paused = true)]
async fn the_loop_follows_the_exponential_policy() {
    let grpc = Exponential::grpc();
    let times = attempt_times(RetryPolicy::exponential(grpc).unwrap(), 16).await;
    for (n, gap) in times.windows(2).map(|w| w[1] - w[0]).enumerate() {
        let (lo, hi) = window(&grpc, n as i32);
        assert!(
            lo <= gap && gap <= hi,
            "gap {n}: {gap:?} not in [{lo:?}, {hi:?}]"
        );
    }
}

// A jitter set with `jitter` applies whatever the order of the calls: before or after
// `retry_delay` or `retry_policy`, over a policy that came with a jitter of its own, or after
// one (full jitter) that has none.
#[tokio::test(start_paused = true)]
async fn the_jitter_applies_whatever_the_order_of_the_calls() {
    type Configure = fn(
        PersistentLayer<Lookup, &'static str, Conn>,
    ) -> PersistentLayer<Lookup, &'static str, Conn>;
    let orders: [(&str, Configure, [u64; 4]); 5] = [
        (
            "retry_policy(full jitter), jitter, retry_delay",
            |l| {
                l.retry_policy(RetryPolicy::full_jitter(S, 2 * S).unwrap())
                    .jitter(0.0)
                    .retry_delay(|| S)
            },
            [0, 1000, 2000, 3000],
        ),
        (
            "jitter, retry_delay",
            |l| l.jitter(0.0).retry_delay(|| S),
            [0, 1000, 2000, 3000],
        ),
        (
            "jitter, retry_policy(constant ±50 %)",
            |l| {
                l.jitter(0.0)
                    .retry_policy(RetryPolicy::constant(S, 0.5).unwrap())
            },
            [0, 1000, 2000, 3000],
        ),
        (
            "retry_policy(constant ±50 %), jitter",
            |l| {
                l.retry_policy(RetryPolicy::constant(S, 0.5).unwrap())
                    .jitter(0.0)
            },
            [0, 1000, 2000, 3000],
        ),
        (
            "jitter, retry_policy(gRPC's exponential)",
            |l| {
                l.jitter(0.0)
                    .retry_policy(RetryPolicy::exponential(Exponential::grpc()).unwrap())
            },
            [0, 1000, 2600, 5160],
        ),
    ];
    for (order, configure, expected) in orders {
        let start = Instant::now();
        let lookup = Script::new(start, [], Step::Err("down"));
        let p = configure(PersistentLayer::new("jitter", Lookup(lookup.clone())))
            .layer(Connect::new(Script::new(start, [], Step::Ok(""))));
        for _ in 0..expected.len() * 2 {
            if lookup.calls().len() >= expected.len() {
                break;
            }
            let _ = p.connected_or_failed_to_connect().await;
        }
        p.close().await;
        assert_eq!(lookup.calls()[..], expected, "{order}");
    }
}

/// A connector whose connections are closed as soon as they are made.
fn flapping_connector(
    start: Instant,
    log: Arc<Mutex<Vec<u64>>>,
) -> impl tower::Service<
    &'static str,
    Response = Conn,
    Error = std::io::Error,
    Future = std::future::Ready<std::io::Result<Conn>>,
> + Clone
+ Send
+ 'static {
    service_fn(move |_: &'static str| {
        let mut log = log.lock().unwrap();
        log.push(support::ms(start));
        let conn = ClosableService::new(Echo::new(log.len(), "a"));
        drop(conn.close());
        std::future::ready(Ok(conn))
    })
}

// Anti-flap: connections that die at once do not reset the backoff, so the delays keep growing;
// with the reset after every connection, the same server gets a connection every second.
#[tokio::test(start_paused = true)]
async fn backoff_resets_only_after_a_stable_connection() {
    let doubling = RetryPolicy::exponential(Exponential {
        initial: S,
        multiplier: 2.0,
        jitter: 0.0,
        max: Duration::from_secs(60),
    })
    .unwrap();
    for (reset_after, expected) in [
        (None, vec![0, 1000, 3000, 7000, 15_000, 31_000, 63_000]),
        (
            Some(Duration::ZERO),
            (0..=63).map(|s| s * 1000).collect::<Vec<u64>>(),
        ),
    ] {
        let start = Instant::now();
        let connects = Arc::new(Mutex::new(Vec::new()));
        let mut layer = PersistentLayer::new("flap", Lookup(Script::new(start, [], Step::Ok("a"))))
            .retry_policy(doubling.clone());
        if let Some(after) = reset_after {
            layer = layer.backoff_reset_after(after);
        }
        let p = layer.layer(flapping_connector(start, connects.clone()));
        until(start, 63_500).await;
        p.close().await;
        assert_eq!(
            *connects.lock().unwrap(),
            expected,
            "reset after {reset_after:?}"
        );
    }
}

// With a real server that accepts and closes at once, the anti-flap keeps the connections few.
#[tokio::test]
async fn accept_and_close_server_causes_no_reconnection_storm() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let server = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    let policy = RetryPolicy::exponential(Exponential {
        initial: ms(20),
        multiplier: 2.0,
        jitter: 0.0,
        max: ms(320),
    })
    .unwrap();
    let mut counts = Vec::new();
    for reset_after in [S, Duration::ZERO] {
        accepted.store(0, std::sync::atomic::Ordering::SeqCst);
        let p = ServiceBuilder::new()
            .layer(
                PersistentLayer::new(
                    "flap",
                    service_fn(move |()| async move { Ok::<_, std::io::Error>(address) }),
                )
                .retry_policy(policy.clone())
                .backoff_reset_after(reset_after),
            )
            .service(service_fn(support::line::LineConn::connect));
        tokio::time::sleep(ms(1500)).await;
        p.close().await;
        counts.push(accepted.load(std::sync::atomic::Ordering::SeqCst));
    }
    server.abort();
    // Attempts start at 0, 20, 60, 140, 300, 620, 940, 1260 ms: 8 at most with anti-flap; every
    // 20 ms without it.
    assert!(counts[0] <= 8, "with anti-flap: {counts:?}");
    assert!(counts[1] >= 3 * counts[0], "without anti-flap: {counts:?}");
}

// An attempt's lookup and connect share one deadline (20 s by default), never shorter than the
// attempt's delay; a timed-out attempt says so, and its events are exactly these.
#[tokio::test(start_paused = true)]
async fn connect_timeout_bounds_an_attempt() {
    // (connect timeout, delay, lookup steps, connect steps, ms of the address if obtained, ms
    // of the failure, its text)
    type Case = (
        Option<Duration>,
        Duration,
        Vec<Step>,
        Vec<Step>,
        Option<u64>,
        u64,
        &'static str,
    );
    let cases: [Case; 4] = [
        // The default: 20 s for a lookup that hangs.
        (
            None,
            Duration::from_secs(10),
            vec![Step::Hang],
            vec![],
            None,
            20_000,
            "20s",
        ),
        // Configured: 5 s, the lookup taking 2 s of it and the connect hanging.
        (
            Some(Duration::from_secs(5)),
            S,
            vec![Step::After(Duration::from_secs(2), Box::new(Step::Ok("a")))],
            vec![Step::Hang],
            Some(2000),
            5000,
            "5s",
        ),
        // Never shorter than the delay: 1 s configured, 3 s delay.
        (
            Some(S),
            Duration::from_secs(3),
            vec![Step::Hang],
            vec![],
            None,
            3000,
            // (The error names the connect timeout.)
            "1s",
        ),
        // Exact fit.
        (Some(S), S, vec![], vec![Step::Hang], Some(0), 1000, "1s"),
    ];
    for (timeout, delay, lookup, connect, obtained, failed_at, text) in cases {
        let start = Instant::now();
        let recorder = Recorder::new(start);
        let lookup = Script::new(start, lookup, Step::Ok("a"));
        let connect = Connect::new(Script::new(start, connect, Step::Ok("")));
        let mut layer = PersistentLayer::new("test", Lookup(lookup.clone()))
            .retry_delay(move || delay)
            .jitter(0.0)
            .on_event(recorder.handler());
        if let Some(timeout) = timeout {
            layer = layer.connect_timeout(timeout);
        }
        let p = layer.layer(connect.clone());
        let failure = p.connected_or_failed_to_connect().await.unwrap_err();
        assert!(failure.is_timeout());
        // The step that ran out of time is named: the lookup, if no address came.
        let step = if obtained.is_none() {
            " in its address lookup"
        } else {
            ""
        };
        assert_eq!(
            failure.text(),
            format!(
                "connection attempt timed out{step} (connect timeout {text}, or the attempt's \
                 retry delay if longer)"
            )
        );
        assert_eq!(support::ms(start), failed_at);
        let failed = (
            failed_at,
            format!(
                "FailedToConnect(connection attempt timed out{step} (connect timeout {text}, or \
                 the attempt's retry delay if longer))"
            ),
        );
        let mut expected = vec![(0, "AttemptingToConnect".to_owned())];
        expected.extend(obtained.map(|at| (at, "ObtainedAddress(\"a\")".to_owned())));
        expected.push(failed);
        // The next attempt may have begun by now (at the failure, when the delay is that long).
        let log = recorder.log();
        assert_eq!(log[..expected.len().min(log.len())], expected, "{log:?}");
        p.close().await;
    }
}

// A slow ObtainedAddress handler does not eat the connect's time.
#[tokio::test(start_paused = true)]
async fn handler_time_is_not_counted_against_the_attempt() {
    let start = Instant::now();
    let connect = Connect::new(Script::new(
        start,
        [Step::After(Duration::from_secs(4), Box::new(Step::Ok("")))],
        Step::Ok(""),
    ));
    let p = PersistentLayer::new("test", Lookup(Script::new(start, [], Step::Ok("a"))))
        .connect_timeout(Duration::from_secs(5))
        .retry_delay(|| S)
        .on_event(|event: Event<&'static str, Conn>| async move {
            if let Event::ObtainedAddress(_) = event {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        })
        .layer(connect);
    p.connected().await.unwrap();
    assert_eq!(support::ms(start), 14_000);
}
