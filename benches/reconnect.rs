//! Reconnecting after the server drops a long-lived connection, over HTTP/1.1 and HTTP/2: a
//! `Persistent` handle against an ideal hand-written hyper client, in one run.
//!
//! The server is hyper_util's `server::conn::auto` on 127.0.0.1, which can shut down every
//! open connection on command (`support/loopback.rs`). One iteration: the client is connected
//! and idle, its connection older than its retry delay (`IDLE`, 3 ms of idleness, untimed); at T0
//! the server drops the connection (the socket is shut down in both directions, so the client
//! has its FIN when the call returns) and at once the client issues `GET /`; the iteration
//! ends when the response body has been read. The clients, each with a server of its own:
//!
//! - `ideal` (the baseline): one hyper connection held by hand
//!   (`hyper::client::conn::http1::handshake` / `http2` over a `TcpStream` with `TCP_NODELAY`,
//!   the connection future spawned). At T0 it awaits the end of its connection task (that is
//!   how it notices the drop), then connects, shakes hands and sends the request on the new
//!   connection. It knows the drop is coming, so it never sends on the dead connection.
//! - `persistent`: `Persistent` over `HttpConnector::http1()` / `http2()`, with
//!   `retry_delay(|| 1 ms)` (a connection older than the delay is replaced at once) and
//!   `discovery::Fixed`; at T0 the request is sent with `client.clone().oneshot(request)`,
//!   whose `poll_ready` waits for a new connection: the HTTP connection's idle probe finds the
//!   end of stream in the socket at T0, so nothing is sent on the old connection, which is
//!   replaced as its task ends. Should the request
//!   fail on the old connection all the same, it is sent again at once, inside the iteration's
//!   time, as a caller with `tower::retry` would, and the failures are counted (the `note`
//!   column, warm-up included; 0 since the idle probe).
//! - `persistent_after_notice` (to tell the costs apart, not a target): the same `Persistent`,
//!   but at T0 it first awaits the old connection's `close_finished()` (the end of the
//!   connection's task, as the ideal client does), then sends with `oneshot`. No request
//!   reaches the dead connection; what is left is the reconnection itself.
//!
//! The table at the end gives each run's mean per iteration, from criterion's estimates of this
//! run, and its ratio to the ideal client of the same HTTP version (`run / ideal`, above 1 is
//! slower). With `RECONNECT_PHASES=1`, one more pass after criterion's (not measured by it)
//! prints when each step happens after T0, for both clients: the persistent client's events,
//! its failed requests and their errors, and how long `tokio::time::sleep_until(now)` takes.
//!
//! With `RECONNECT_INTERLEAVED=<rounds>`, one more pass after criterion's runs the three clients
//! of each HTTP version in turn, `rounds` times, one iteration each per round (2,000 rounds take
//! about 40 s; `RECONNECT_ROUND=<n>` for `n` iterations per client and round), and prints each client's median and mean time per iteration over all its
//! iterations, with their ratios to the ideal client's, and the CPU time the whole process
//! (server included) spent per iteration: a check of criterion's figures, in which the runs
//! follow one another and drift on a shared machine can favour one.
//! With `RECONNECT_ISOLATED=<rounds>`, one more pass does the same with each client on a
//! runtime of its own and the servers on another (see `isolated`), so that no client's
//! iteration shares worker threads with what another client left behind, or with the servers'
//! tasks (2,000 rounds take about 25 s per HTTP version). It also prints how many times the
//! client's worker threads parked (went to sleep) per iteration, idle wait included, from
//! tokio's runtime metrics: a count of the wake-ups each client costs, which the machine's
//! noise does not blur as it blurs the times.
//! `RECONNECT_ONLY=ideal,persistent,persistent_after_notice` keeps only the clients named there
//! (for a profiler, or either pass), and `RECONNECT_VERSIONS=http1` (or `http2`) only that HTTP
//! version in the extra passes.
//!
//! The whole bench takes about 65 s (50 s more with `RECONNECT_PHASES=1`).
//!
//! ```text
//! cargo bench -p tower-persistent-benches --bench reconnect
//! RECONNECT_PHASES=1 cargo bench -p tower-persistent-benches --bench reconnect -- none
//! RECONNECT_INTERLEAVED=2000 cargo bench -p tower-persistent-benches --bench reconnect -- none
//! RECONNECT_ISOLATED=2000 cargo bench -p tower-persistent-benches --bench reconnect -- none
//! ```

#[path = "support/cpu.rs"]
mod cpu;
#[path = "support/loopback.rs"]
mod loopback;
#[allow(dead_code)]
#[path = "support/ratios.rs"]
mod ratios;
#[path = "support/table.rs"]
mod table;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpu::cpu_time;
use criterion::{BenchmarkId, Criterion, SamplingMode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use loopback::{BODY, Protocols, Server};
use table::{Ratio, Row};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tower::{ServiceBuilder, ServiceExt};
use tower_persistent::discovery::Fixed;
use tower_persistent::transport::{HttpConnection, HttpConnector};
use tower_persistent::{BoxError, Closable, Event, Persistent, PersistentLayer};

const GROUP: &str = "reconnect";

/// The persistent connection's retry delay.
const RETRY_DELAY: Duration = Duration::from_millis(1);

/// How long the connection stays idle before T0 (untimed): more than the retry delay with its
/// jitter (1.3 ms at most) and tokio's 1 ms timer resolution, so that the persistent connection
/// is old enough to be replaced at once.
const IDLE: Duration = Duration::from_millis(3);

/// A request failing more often than this in one iteration means something is wrong.
const MAX_TRIES: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    Http1,
    Http2,
}

impl Version {
    fn name(self) -> &'static str {
        match self {
            Version::Http1 => "http1",
            Version::Http2 => "http2",
        }
    }
}

/// `GET /` as every client sends it: for HTTP/1.1 in origin form with a `Host` header, for
/// HTTP/2 with scheme and authority (so that no client rewrites it).
fn request(version: Version, address: SocketAddr) -> http::Request<Empty<Bytes>> {
    match version {
        Version::Http1 => http::Request::get("/")
            .header(http::header::HOST, address.to_string())
            .body(Empty::new())
            .unwrap(),
        Version::Http2 => http::Request::get(format!("http://{address}/"))
            .body(Empty::new())
            .unwrap(),
    }
}

/// Reads a response body to its end; panics on an error or an unexpected body.
async fn read_body<B>(body: B)
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let bytes = body.collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], BODY);
}

// ---------------------------------------------------------------------------------------------
// The persistent client.

type Conn = HttpConnection<Empty<Bytes>>;
type Client = Persistent<SocketAddr, Conn>;

/// The persistent client of the bench, on `address`. With `phases`, its events are recorded
/// with the time they were delivered.
fn persistent(version: Version, address: SocketAddr, phases: Option<Arc<Phases>>) -> Client {
    let connector = match version {
        Version::Http1 => HttpConnector::http1(),
        Version::Http2 => HttpConnector::http2(),
    };
    let mut layer = PersistentLayer::new("bench", Fixed::new(address)).retry_delay(|| RETRY_DELAY);
    if let Some(phases) = phases {
        layer = layer.on_event(move |event: Event<SocketAddr, Conn>| {
            phases.record(&event);
            std::future::ready(())
        });
    }
    ServiceBuilder::new().layer(layer).service(connector)
}

/// When the persistent client sends its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendAt {
    /// At T0.
    AtOnce,
    /// Once the old connection's `close_finished()` resolved.
    AfterNotice,
}

impl SendAt {
    fn run(self, version: Version) -> String {
        match self {
            SendAt::AtOnce => format!("{}_persistent", version.name()),
            SendAt::AfterNotice => format!("{}_persistent_after_notice", version.name()),
        }
    }
}

/// Failed requests and iterations of each persistent run, warm-up included.
struct Counts {
    failed: AtomicU64,
    iterations: AtomicU64,
}

static COUNTS: [Counts; 4] = [const {
    Counts {
        failed: AtomicU64::new(0),
        iterations: AtomicU64::new(0),
    }
}; 4];

fn counts(version: Version, send: SendAt) -> &'static Counts {
    &COUNTS[(version as usize) * 2 + send as usize]
}

/// What one iteration of the persistent client saw.
struct Outcome {
    /// From T0 to the end of the body.
    elapsed: Duration,
    /// From T0 to the response head.
    head: Duration,
    /// Requests that failed, and when the first did.
    failed: u64,
    first_failure: Option<Duration>,
    /// When the old connection's `close_finished()` resolved (`AfterNotice` only).
    noticed: Option<Duration>,
}

/// One iteration of the persistent client from T0: drops the server's connections, sends the
/// request (again if it failed on the dead connection), reads the body. `on_error` sees each
/// failure.
async fn persistent_iteration(
    client: &Client,
    server: &Server,
    version: Version,
    send: SendAt,
    mut on_error: impl FnMut(&BoxError),
) -> Outcome {
    // Untimed: the connection that is about to be dropped, to wait for its end.
    let old =
        (send == SendAt::AfterNotice).then(|| client.current_connection().expect("connected"));
    let start = Instant::now();
    let dropped = server.drop_all();
    let mut noticed = None;
    if let Some(old) = old {
        old.close_finished().await;
        noticed = Some(start.elapsed());
    }
    let mut failed = 0;
    let mut first_failure = None;
    let response = loop {
        match client
            .clone()
            .oneshot(request(version, server.address))
            .await
        {
            Ok(response) => break response,
            Err(error) => {
                failed += 1;
                first_failure.get_or_insert_with(|| start.elapsed());
                on_error(&error);
                assert!(failed < MAX_TRIES, "request failed {failed} times: {error}");
            }
        }
    };
    let head = start.elapsed();
    read_body(response.into_body()).await;
    let elapsed = start.elapsed();
    assert_eq!(dropped, 1, "the server should have had one connection open");
    Outcome {
        elapsed,
        head,
        failed,
        first_failure,
        noticed,
    }
}

/// Connected, and the server has served (so accepted and registered) the connection.
async fn persistent_warm(client: &Client, version: Version, address: SocketAddr) {
    let response = client
        .clone()
        .oneshot(request(version, address))
        .await
        .unwrap();
    read_body(response.into_body()).await;
}

/// Measures `iters` iterations of the persistent client.
async fn persistent_batch(
    client: Client,
    server: Arc<Server>,
    version: Version,
    send: SendAt,
    iters: u64,
) -> Duration {
    persistent_warm(&client, version, server.address).await;
    let mut total = Duration::ZERO;
    let mut failed = 0;
    for _ in 0..iters {
        tokio::time::sleep(IDLE).await;
        let outcome = persistent_iteration(&client, &server, version, send, |_| {}).await;
        total += outcome.elapsed;
        failed += outcome.failed;
    }
    let counts = counts(version, send);
    counts.failed.fetch_add(failed, Ordering::Relaxed);
    counts.iterations.fetch_add(iters, Ordering::Relaxed);
    total
}

// ---------------------------------------------------------------------------------------------
// The ideal client.

/// The ideal client: one hyper connection, held by hand.
struct Ideal {
    sender: Sender,
    /// The task driving hyper's connection; it ends when the connection does.
    task: JoinHandle<()>,
}

enum Sender {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

impl Ideal {
    /// Connects (TCP with `TCP_NODELAY`), shakes hands and spawns the connection future.
    async fn connect(version: Version, address: SocketAddr) -> Ideal {
        let stream = TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let io = TokioIo::new(stream);
        let (sender, task) = match version {
            Version::Http1 => {
                let (sender, conn) = http1::handshake(io).await.unwrap();
                let task = tokio::spawn(async move {
                    let _ = conn.await;
                });
                (Sender::Http1(sender), task)
            }
            Version::Http2 => {
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .handshake(io)
                    .await
                    .unwrap();
                let task = tokio::spawn(async move {
                    let _ = conn.await;
                });
                (Sender::Http2(sender), task)
            }
        };
        Ideal { sender, task }
    }

    /// Sends `request` and reads the response; returns when the head arrived.
    async fn get(&mut self, request: http::Request<Empty<Bytes>>) -> Instant {
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await.unwrap();
                sender.send_request(request).await.unwrap()
            }
            Sender::Http2(sender) => {
                sender.ready().await.unwrap();
                sender.send_request(request).await.unwrap()
            }
        };
        let head = Instant::now();
        read_body(response.into_body()).await;
        head
    }
}

/// The times from T0 of one iteration of the ideal client.
struct IdealOutcome {
    noticed: Duration,
    connected: Duration,
    head: Duration,
    elapsed: Duration,
}

/// One iteration of the ideal client from T0: drops the server's connections, awaits the end of
/// the connection task, connects again and sends the request on the new connection.
async fn ideal_iteration(client: &mut Ideal, server: &Server, version: Version) -> IdealOutcome {
    let address = server.address;
    let start = Instant::now();
    let dropped = server.drop_all();
    // Notices the drop: its connection task ends.
    (&mut client.task).await.unwrap();
    let noticed = start.elapsed();
    *client = Ideal::connect(version, address).await;
    let connected = start.elapsed();
    let head = client.get(request(version, address)).await - start;
    let elapsed = start.elapsed();
    assert_eq!(dropped, 1, "the server should have had one connection open");
    IdealOutcome {
        noticed,
        connected,
        head,
        elapsed,
    }
}

/// Measures `iters` iterations of the ideal client, whose connection `ideal` holds from one
/// batch to the next.
async fn ideal_batch(
    ideal: Arc<Mutex<Option<Ideal>>>,
    server: Arc<Server>,
    version: Version,
    iters: u64,
) -> Duration {
    let mut client = ideal.lock().unwrap().take().expect("an ideal client");
    // The server has served (so accepted and registered) the connection.
    client.get(request(version, server.address)).await;
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        tokio::time::sleep(IDLE).await;
        total += ideal_iteration(&mut client, &server, version).await.elapsed;
    }
    *ideal.lock().unwrap() = Some(client);
    total
}

// ---------------------------------------------------------------------------------------------

fn main() {
    // Estimates that criterion wrote before this run are not this run's.
    ratios::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default().configure_from_args();
    {
        let mut group = c.benchmark_group(GROUP);
        // Each iteration also idles for IDLE, untimed, and criterion plans a run's iterations by
        // their whole time: about 2,500 iterations per run.
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(25)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(10));
        for version in [Version::Http1, Version::Http2] {
            let server = Arc::new(rt.block_on(Server::start(Protocols::Auto)).unwrap());
            let ideal = rt.block_on(Ideal::connect(version, server.address));
            let ideal = Arc::new(Mutex::new(Some(ideal)));
            group.bench_function(
                BenchmarkId::from_parameter(format!("{}_ideal", version.name())),
                |b| {
                    b.to_async(&rt).iter_custom(|iters| {
                        let batch = ideal_batch(ideal.clone(), server.clone(), version, iters);
                        // On a worker, as the connections' tasks.
                        async move { tokio::spawn(batch).await.unwrap() }
                    })
                },
            );
            drop(ideal);

            for send in [SendAt::AtOnce, SendAt::AfterNotice] {
                let server = Arc::new(rt.block_on(Server::start(Protocols::Auto)).unwrap());
                let client = {
                    let _guard = rt.enter();
                    persistent(version, server.address, None)
                };
                group.bench_function(BenchmarkId::from_parameter(send.run(version)), |b| {
                    b.to_async(&rt).iter_custom(|iters| {
                        let batch =
                            persistent_batch(client.clone(), server.clone(), version, send, iters);
                        async move { tokio::spawn(batch).await.unwrap() }
                    })
                });
                rt.block_on(client.close());
            }
        }
        group.finish();
    }
    c.final_summary();
    print_table();

    if let Some(rounds) = rounds_from("RECONNECT_INTERLEAVED") {
        for version in versions() {
            rt.block_on(rt.spawn(interleaved(version, rounds))).unwrap();
        }
    }

    if let Some(rounds) = rounds_from("RECONNECT_ISOLATED") {
        for version in versions() {
            isolated(version, rounds);
        }
    }

    if std::env::var_os("RECONNECT_PHASES").is_some_and(|v| v != "0") {
        for version in versions() {
            rt.block_on(rt.spawn(print_phases(version))).unwrap();
        }
        rt.block_on(rt.spawn(print_sleep_until_now())).unwrap();
    }
}

/// Prints each run's mean and its ratio to the ideal client of its HTTP version.
fn print_table() {
    let mut rows = Vec::new();
    for version in [Version::Http1, Version::Http2] {
        let ideal = format!("{}_ideal", version.name());
        rows.push((ideal.clone(), ideal.clone(), String::new()));
        for send in [SendAt::AtOnce, SendAt::AfterNotice] {
            let counts = counts(version, send);
            let note = format!(
                "{} requests failed on the dead connection in {} iterations",
                counts.failed.load(Ordering::Relaxed),
                counts.iterations.load(Ordering::Relaxed)
            );
            rows.push((send.run(version), ideal.clone(), note));
        }
    }
    let rows: Vec<Row<'_>> = rows
        .iter()
        .map(|(run, baseline, note)| Row {
            run,
            baseline,
            note: note.clone(),
        })
        .collect();
    table::print(
        "Reconnect after the server drops an idle connection: mean per iteration (T0 to the body's \
         end), and its ratio to the ideal client",
        GROUP,
        &rows,
        "µs",
        1000.0,
        Ratio::Time,
    );
}

// ---------------------------------------------------------------------------------------------
// RECONNECT_INTERLEAVED=<rounds>: the clients in turn.

/// Iterations per client and round: one, so that the clients take turns at every iteration
/// and drift of the machine's speed weighs on all alike.
const ROUND: usize = 1;

/// The number of rounds the variable `name` asks for, if it names one or more.
fn rounds_from(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&r| r > 0)
}

/// Whether the client `name` runs: `RECONNECT_ONLY` names it, or is not set.
fn runs(name: &str) -> bool {
    std::env::var("RECONNECT_ONLY")
        .ok()
        .is_none_or(|only| only.split(',').any(|n| n == name))
}

/// The HTTP versions the extra passes run: `RECONNECT_VERSIONS=http1,http2` (both by default).
fn versions() -> Vec<Version> {
    let only = std::env::var("RECONNECT_VERSIONS").ok();
    [Version::Http1, Version::Http2]
        .into_iter()
        .filter(|v| {
            only.as_deref()
                .is_none_or(|only| only.split(',').any(|n| n == v.name()))
        })
        .collect()
}

/// A duration in microseconds.
fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Iterations per client and round: `RECONNECT_ROUND`, else [`ROUND`].
fn round() -> usize {
    std::env::var("RECONNECT_ROUND")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUND)
        .max(1)
}

/// Runs the three clients of `version` in turn, `rounds` times, `ROUND` iterations each per
/// round, and prints for each client the median and mean of all its iterations' times, and
/// their ratios to the ideal client's.
async fn interleaved(version: Version, rounds: usize) {
    let servers = [
        Server::start(Protocols::Auto).await.unwrap(),
        Server::start(Protocols::Auto).await.unwrap(),
        Server::start(Protocols::Auto).await.unwrap(),
    ];
    let mut ideal = Ideal::connect(version, servers[0].address).await;
    ideal.get(request(version, servers[0].address)).await;
    let clients = [
        persistent(version, servers[1].address, None),
        persistent(version, servers[2].address, None),
    ];
    for (client, server) in clients.iter().zip(&servers[1..]) {
        persistent_warm(client, version, server.address).await;
    }
    let sends = [SendAt::AtOnce, SendAt::AfterNotice];
    // Per client, every iteration's time (µs).
    let mut times: [Vec<f64>; 3] = Default::default();
    // Per client, the CPU time of the process over its iterations (µs), idle waits included.
    let mut cpu = [0.0; 3];
    for _ in 0..rounds {
        let before = cpu_time();
        for _ in 0..if runs("ideal") { round() } else { 0 } {
            tokio::time::sleep(IDLE).await;
            times[0].push(us(ideal_iteration(&mut ideal, &servers[0], version)
                .await
                .elapsed));
        }
        cpu[0] += us(cpu_time() - before);
        for i in 0..2 {
            let before = cpu_time();
            let name = ["persistent", "persistent_after_notice"][i];
            for _ in 0..if runs(name) { round() } else { 0 } {
                tokio::time::sleep(IDLE).await;
                let outcome =
                    persistent_iteration(&clients[i], &servers[i + 1], version, sends[i], |_| {})
                        .await;
                times[i + 1].push(us(outcome.elapsed));
            }
            cpu[i + 1] += us(cpu_time() - before);
        }
    }
    for client in &clients {
        client.close().await;
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v.iter().sum::<f64>() / v.len() as f64)
    };
    println!(
        "{} interleaved, {rounds} rounds of {} iterations per client:",
        version.name(),
        round()
    );
    if times[0].is_empty() {
        times[0].push(f64::NAN);
    }
    let (ideal_median, ideal_mean) = stats(&mut times[0]);
    for (i, name) in ["ideal", "persistent", "persistent_after_notice"]
        .into_iter()
        .enumerate()
    {
        if times[i].is_empty() {
            continue;
        }
        let (median, mean) = stats(&mut times[i]);
        let per = (rounds * round()) as f64;
        println!(
            "  {:<34} median {median:>7.1} µs ({:.3} × ideal), mean {mean:>7.1} µs ({:.3} × \
             ideal), CPU {:>6.1} µs per iteration ({:+.1} µs)",
            format!("{}_{name}", version.name()),
            median / ideal_median,
            mean / ideal_mean,
            cpu[i] / per,
            (cpu[i] - cpu[0]) / per,
        );
    }
}

/// Runs `future` on a worker of `runtime`, from outside any runtime, and returns its output.
fn run_on<F>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime.block_on(runtime.spawn(future)).unwrap()
}

/// As [`interleaved`], but each client on a runtime of its own (two workers, as the shared
/// one), and the three servers on one more (one worker): what one client's runtime does or
/// leaves behind shares no worker with the next client's iteration, and the servers' tasks
/// share none with the clients. Each iteration is spawned on its client's runtime from the
/// main thread, which waits for it; it is timed inside, from T0, as in the other passes. The
/// parks of each client's workers (`RuntimeMetrics::worker_park_count`) are counted over each
/// whole iteration.
fn isolated(version: Version, rounds: usize) {
    let runtime = |workers| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap()
    };
    let server_runtime = runtime(1);
    let servers: Vec<Arc<Server>> = (0..3)
        .map(|_| Arc::new(run_on(&server_runtime, Server::start(Protocols::Auto)).unwrap()))
        .collect();
    let runtimes: Vec<_> = (0..3).map(|_| runtime(2)).collect();
    let address = servers[0].address;
    let mut ideal = Some(run_on(&runtimes[0], async move {
        let mut ideal = Ideal::connect(version, address).await;
        ideal.get(request(version, address)).await;
        ideal
    }));
    let clients: Vec<Client> = (0..2)
        .map(|i| {
            let _guard = runtimes[i + 1].enter();
            persistent(version, servers[i + 1].address, None)
        })
        .collect();
    for (i, client) in clients.iter().enumerate() {
        let (client, address) = (client.clone(), servers[i + 1].address);
        run_on(&runtimes[i + 1], async move {
            persistent_warm(&client, version, address).await
        });
    }
    let sends = [SendAt::AtOnce, SendAt::AfterNotice];
    let names = ["ideal", "persistent", "persistent_after_notice"];
    let mut times: [Vec<f64>; 3] = Default::default();
    // How many times the client's workers parked (slept), over each whole iteration (the idle
    // wait included): a count of the wake-ups it costs, which the machine's noise does not blur.
    let parks = |runtime: &tokio::runtime::Runtime| {
        let metrics = runtime.metrics();
        (0..metrics.num_workers())
            .map(|w| metrics.worker_park_count(w))
            .sum::<u64>()
    };
    let mut parked = [0u64; 3];
    for _ in 0..rounds {
        for _ in 0..if runs(names[0]) { round() } else { 0 } {
            let (mut client, server) = (ideal.take().unwrap(), servers[0].clone());
            let before = parks(&runtimes[0]);
            let (client, elapsed) = run_on(&runtimes[0], async move {
                tokio::time::sleep(IDLE).await;
                let outcome = ideal_iteration(&mut client, &server, version).await;
                (client, outcome.elapsed)
            });
            ideal = Some(client);
            parked[0] += parks(&runtimes[0]) - before;
            times[0].push(us(elapsed));
        }
        for i in 0..2 {
            for _ in 0..if runs(names[i + 1]) { round() } else { 0 } {
                let (client, server, send) = (clients[i].clone(), servers[i + 1].clone(), sends[i]);
                let before = parks(&runtimes[i + 1]);
                let elapsed = run_on(&runtimes[i + 1], async move {
                    tokio::time::sleep(IDLE).await;
                    persistent_iteration(&client, &server, version, send, |_| {})
                        .await
                        .elapsed
                });
                parked[i + 1] += parks(&runtimes[i + 1]) - before;
                times[i + 1].push(us(elapsed));
            }
        }
    }
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        run_on(&runtimes[i + 1], async move { client.close().await });
    }
    println!(
        "{} isolated, {rounds} rounds of {} iterations per client, a runtime each:",
        version.name(),
        round()
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let ideal_median = median(&mut times[0]);
    for ((name, times), parked) in names.into_iter().zip(&mut times).zip(parked) {
        if times.is_empty() {
            continue;
        }
        let iterations = times.len() as f64;
        let median = median(times);
        println!(
            "  {:<34} median {median:>7.1} µs ({:.3} × ideal), {:.2} worker parks per iteration",
            format!("{}_{name}", version.name()),
            median / ideal_median,
            parked as f64 / iterations,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// RECONNECT_PHASES=1: when each step happens.

/// The persistent client's events, with the time each was delivered.
#[derive(Default)]
struct Phases {
    events: Mutex<Vec<(Instant, &'static str)>>,
}

impl Phases {
    fn record(&self, event: &Event<SocketAddr, Conn>) {
        let now = Instant::now();
        self.events.lock().unwrap().push((now, event.name()));
    }

    /// The time from `start` to the first event `name` recorded after it.
    fn since(&self, start: Instant, name: &str) -> Option<Duration> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(at, n)| *at >= start && *n == name)
            .map(|(at, _)| *at - start)
    }
}

/// Sums of durations from T0, to print their means.
#[derive(Default)]
struct Means(Vec<(&'static str, Duration, u32)>);

impl Means {
    fn add(&mut self, name: &'static str, d: Option<Duration>) {
        let Some(d) = d else { return };
        match self.0.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, sum, count)) => {
                *sum += d;
                *count += 1;
            }
            None => self.0.push((name, d, 1)),
        }
    }

    fn print(&self, title: &str) {
        println!("{title}");
        for (name, sum, count) in &self.0 {
            println!(
                "  {name:<40} {:>9.1} µs after T0 (mean of {count})",
                sum.as_secs_f64() * 1e6 / f64::from(*count)
            );
        }
    }
}

/// The errors of failed requests, by text (sources included), with their counts.
#[derive(Default)]
struct Errors(Vec<(String, u32)>);

impl Errors {
    fn note(&mut self, error: &BoxError) {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        match self.0.iter_mut().find(|(t, _)| *t == text) {
            Some((_, count)) => *count += 1,
            None => self.0.push((text, 1)),
        }
    }

    fn print(&self) {
        for (text, count) in &self.0 {
            println!("  failed {count} times with: {text}");
        }
    }
}

/// Runs iterations of each client outside criterion, with timestamps, and prints the mean time
/// from T0 to each step.
async fn print_phases(version: Version) {
    const N: u32 = 2000;
    for send in [SendAt::AtOnce, SendAt::AfterNotice] {
        let server = Server::start(Protocols::Auto).await.unwrap();
        let phases = Arc::new(Phases::default());
        let client = persistent(version, server.address, Some(phases.clone()));
        persistent_warm(&client, version, server.address).await;
        let mut means = Means::default();
        let (mut failed_iterations, mut most_failed) = (0, 0);
        let mut errors = Errors::default();
        for _ in 0..N {
            tokio::time::sleep(IDLE).await;
            phases.events.lock().unwrap().clear();
            let start = Instant::now();
            let outcome =
                persistent_iteration(&client, &server, version, send, |e| errors.note(e)).await;
            if outcome.failed > 0 {
                failed_iterations += 1;
            }
            most_failed = most_failed.max(outcome.failed);
            means.add("first request failed (if it did)", outcome.first_failure);
            means.add("old connection's close_finished()", outcome.noticed);
            for name in [
                "disconnected",
                "attempting_to_connect",
                "obtained_address",
                "connected",
            ] {
                means.add(name, phases.since(start, name));
            }
            means.add("response head", Some(outcome.head));
            means.add("body read (end)", Some(outcome.elapsed));
        }
        client.close().await;
        means.print(&format!(
            "{}, {N} iterations, {failed_iterations} with a failed request (at most \
             {most_failed} in one):",
            send.run(version)
        ));
        errors.print();
    }

    let server = Server::start(Protocols::Auto).await.unwrap();
    let mut ideal = Ideal::connect(version, server.address).await;
    ideal.get(request(version, server.address)).await;
    let mut means = Means::default();
    for _ in 0..N {
        tokio::time::sleep(IDLE).await;
        let outcome = ideal_iteration(&mut ideal, &server, version).await;
        means.add("connection task ended", Some(outcome.noticed));
        means.add("connected and shook hands", Some(outcome.connected));
        means.add("response head", Some(outcome.head));
        means.add("body read (end)", Some(outcome.elapsed));
    }
    means.print(&format!("{}_ideal, {N} iterations:", version.name()));
}

/// Prints how long `tokio::time::sleep_until(Instant::now())` takes on this runtime: a wait
/// until a deadline that is not yet past by the timer's count ends at its next 1 ms tick.
async fn print_sleep_until_now() {
    const N: u32 = 1000;
    let start = Instant::now();
    for _ in 0..N {
        tokio::time::sleep_until(tokio::time::Instant::now()).await;
    }
    println!(
        "tokio::time::sleep_until(Instant::now()) takes {:.1} µs on this runtime (mean of {N})",
        start.elapsed().as_secs_f64() * 1e6 / f64::from(N)
    );
}
