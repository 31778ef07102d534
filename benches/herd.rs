//! The thundering herd, measured: 10,000 persistent connections to one server that is down for
//! 30 s and then accepts at a bounded rate (500 connections per 100 ms), for each retry policy,
//! next to un-jittered baselines. Runs on tokio's paused clock, so the times are exact and the
//! run takes seconds.
//!
//! Prints a Markdown table (peak connection attempts per 100 ms after the first 100 ms, when every
//! client makes its first attempt; attempts per client; time until all are connected again once
//! the server is up) and writes a plot of the attempts per 100 ms over time to
//! `docs/herd.svg`.
//!
//! ```text
//! cargo bench --bench herd
//! ```

use std::convert::Infallible;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plotters::prelude::*;
use tokio::time::Instant;
use tower::{Layer, service_fn};
use tower_persistent::backoff::{Exponential, RetryPolicy};
use tower_persistent::{ClosableService, PersistentLayer};

const CLIENTS: usize = 10_000;
const DOWN_FOR: Duration = Duration::from_secs(30);
/// The server accepts at most this many connections per bucket once it is up.
const ACCEPTS_PER_BUCKET: u32 = 500;
const BUCKET: Duration = Duration::from_millis(100);
/// The simulation gives up after this much paused time.
const HORIZON: Duration = Duration::from_secs(4 * 3600);

/// The server as the clients see it.
struct Server {
    start: Instant,
    /// Connection attempts per bucket.
    attempts: Vec<u32>,
    /// Accepted connections per bucket.
    accepted: Vec<u32>,
    connected: usize,
    all_connected_at: Option<Duration>,
}

impl Server {
    fn attempt(&mut self) -> io::Result<()> {
        let elapsed = self.start.elapsed();
        let bucket = (elapsed.as_millis() / BUCKET.as_millis()) as usize;
        if self.attempts.len() <= bucket {
            self.attempts.resize(bucket + 1, 0);
            self.accepted.resize(bucket + 1, 0);
        }
        self.attempts[bucket] += 1;
        if elapsed < DOWN_FOR {
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "down"));
        }
        if self.accepted[bucket] >= ACCEPTS_PER_BUCKET {
            return Err(io::Error::other("overloaded"));
        }
        self.accepted[bucket] += 1;
        self.connected += 1;
        if self.connected == CLIENTS {
            self.all_connected_at = Some(elapsed);
        }
        Ok(())
    }
}

struct Outcome {
    name: &'static str,
    attempts: Vec<u32>,
    peak: u32,
    per_client: f64,
    recovered_after: Option<Duration>,
}

/// Runs the herd with `policy` on a fresh paused runtime.
fn run(name: &'static str, policy: RetryPolicy) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let server = Arc::new(Mutex::new(Server {
            start: Instant::now(),
            attempts: Vec::new(),
            accepted: Vec::new(),
            connected: 0,
            all_connected_at: None,
        }));
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let server = server.clone();
                PersistentLayer::new(
                    "herd",
                    service_fn(|()| std::future::ready(Ok::<_, Infallible>(()))),
                )
                .retry_policy(policy.clone())
                .layer(service_fn(move |()| {
                    let result = server.lock().unwrap().attempt().map(|()| {
                        ClosableService::new(service_fn(|()| {
                            std::future::ready(Ok::<_, Infallible>(()))
                        }))
                    });
                    std::future::ready(result)
                }))
            })
            .collect();
        let start = server.lock().unwrap().start;
        while server.lock().unwrap().all_connected_at.is_none() && start.elapsed() < HORIZON {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        for handle in &handles {
            handle.close().await;
        }
        let server = server.lock().unwrap();
        let total: u64 = server.attempts.iter().map(|&n| u64::from(n)).sum();
        Outcome {
            name,
            attempts: server.attempts.clone(),
            // Every client's first attempt falls in the first bucket; the herd is in the retries.
            peak: server.attempts.iter().skip(1).copied().max().unwrap_or(0),
            per_client: total as f64 / CLIENTS as f64,
            recovered_after: server.all_connected_at.map(|t| t - DOWN_FOR),
        }
    })
}

fn main() {
    let exponential = Exponential::grpc();
    let policies = [
        (
            "constant 10 s, no jitter (baseline)",
            RetryPolicy::constant(Duration::from_secs(10), 0.0).unwrap(),
        ),
        ("constant 10 s ±30 % (default)", RetryPolicy::default()),
        (
            "exponential gRPC, no jitter (baseline)",
            RetryPolicy::exponential(Exponential {
                jitter: 0.0,
                ..exponential
            })
            .unwrap(),
        ),
        (
            "exponential gRPC ±20 %",
            RetryPolicy::exponential(exponential).unwrap(),
        ),
        (
            "full jitter 1 s..120 s",
            RetryPolicy::full_jitter(Duration::from_secs(1), Duration::from_secs(120)).unwrap(),
        ),
        (
            "decorrelated jitter 1 s..120 s",
            RetryPolicy::decorrelated_jitter(Duration::from_secs(1), Duration::from_secs(120))
                .unwrap(),
        ),
    ];
    let outcomes: Vec<Outcome> = policies
        .into_iter()
        .map(|(name, policy)| run(name, policy))
        .collect();

    println!(
        "{CLIENTS} clients; the server is down for {} s, then accepts {ACCEPTS_PER_BUCKET} per 100 ms.\n",
        DOWN_FOR.as_secs()
    );
    println!(
        "| policy | peak retries per 100 ms | attempts per client | all connected again after the server is up |"
    );
    println!("|---|---:|---:|---:|");
    for o in &outcomes {
        let recovered = o
            .recovered_after
            .map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| format!("not within {} h", HORIZON.as_secs() / 3600));
        println!(
            "| {} | {} | {:.1} | {} |",
            o.name, o.peak, o.per_client, recovered
        );
    }

    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/herd.svg");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    plot(&outcomes, &path).expect("the plot");
    println!("\nplot: {}", path.display());
}

/// Attempts per 100 ms over the first three minutes, one line per policy.
fn plot(outcomes: &[Outcome], path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let seconds = 180.0;
    let buckets = (seconds / BUCKET.as_secs_f64()) as usize;
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let peak = outcomes.iter().map(|o| o.peak).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{CLIENTS} clients, server down for 30 s then 500 accepts / 100 ms"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..seconds, (1f64..f64::from(peak) * 1.5).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("connection attempts per 100 ms")
        .draw()?;
    let colors = [BLACK, RED, BLUE, GREEN, MAGENTA, CYAN];
    for (outcome, color) in outcomes.iter().zip(colors) {
        let points = (0..buckets).map(|b| {
            let n = outcome.attempts.get(b).copied().unwrap_or(0);
            (b as f64 * BUCKET.as_secs_f64(), f64::from(n.max(1)))
        });
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(1)))?
            .label(outcome.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
