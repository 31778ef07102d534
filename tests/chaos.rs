//! A chaos test over real sockets on 127.0.0.1: 64 clients share one persistent HTTP/1.1 (then
//! HTTP/2) connection to three replicas published in a catalog, while a seeded chaos loop kills
//! replicas abruptly, stops them gracefully, black-holes them and restarts them on new ports.
//!
//! Every request is bounded by a timeout and recorded (start, end, outcome); every answer carries
//! an id the server assigned and recorded. Afterwards: no request outlived its timeout, every
//! answer received is the one a server sent for that very request, none twice, every answer a
//! server sent is accounted for, every request succeeds once healthy replicas are back, and
//! closing leaves no file descriptor and no task behind.
//!
//! The seed is fixed (`SEED`); `CHAOS_SEED=<n>` replays another. Failures print the seed. It
//! fixes every choice of the chaos; which replica the client happens to be on when the chaos
//! aims at it depends on timing.
#![cfg(feature = "hyper")]

#[path = "support/temp.rs"]
mod temp;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_persistent::discovery::{Catalog, Publication};
use tower_persistent::transport::{HttpConnection, HttpConnector};
use tower_persistent::{BoxError, Event, Persistent, PersistentLayer};

/// The chaos seed; `CHAOS_SEED` (decimal or `0x` hex) overrides it.
const SEED: u64 = 0xc4a0_5eed;
const REPLICAS: usize = 3;
const CLIENTS: usize = 64;
/// Every request is bounded by this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How far past its timeout a request may end (scheduling on a busy machine).
const MARGIN: Duration = Duration::from_millis(200);
/// How long the chaos lasts.
const CHAOS: Duration = Duration::from_secs(8);
/// After healthy replicas are back, requests starting later than this must all succeed...
const SETTLE: Duration = Duration::from_secs(1);
/// ...and the clients go on for this long after it.
const CHECKED: Duration = Duration::from_secs(1);
/// A bound for every other wait (starting, stopping, closing, joining).
const LIMIT: Duration = Duration::from_secs(5);
/// A graceful stop that takes longer is cut short (the connections are dropped).
const STOP_LIMIT: Duration = Duration::from_secs(2);
/// One scenario (HTTP/1.1 or HTTP/2) must finish within this.
const SCENARIO_LIMIT: Duration = Duration::from_secs(24);
/// How long file descriptors and tasks may take to be released after a scenario.
const RELEASE_LIMIT: Duration = Duration::from_secs(2);
/// The whole test; past it a watchdog thread fails the process (a deadlock would stop tokio's
/// timers too).
const WATCHDOG: Duration = Duration::from_secs(58);
/// Bounds on every loop that time alone bounds.
const MAX_REQUESTS_PER_CLIENT: usize = 200_000;
const MAX_CHAOS_STEPS: usize = 200;

type Body = Empty<Bytes>;
type Conn = HttpConnection<Body>;
type Client = Persistent<SocketAddr, Conn>;
/// Every answer a server produced: (id, the path of the request it answered).
type Sent = Arc<Mutex<Vec<(String, String)>>>;

// Through kills, graceful stops, black holes and restarts of three replicas, over HTTP/1.1 and
// HTTP/2: no request outlives its timeout, answers are neither invented, duplicated nor lost,
// all requests succeed 1 s after healthy replicas are back, and closing leaks no fd, no task.
#[test]
fn chaos_loses_nothing_and_leaks_nothing() {
    let seed = seed();
    // Captured by the test harness and shown with any failure.
    println!("chaos seed: {seed:#x} (replay with CHAOS_SEED={seed:#x})");
    let done = watchdog(WATCHDOG, seed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The runtime's own descriptors (epoll, waker, signal pipe) are part of the baseline.
    let fds = open_fds().len();
    runtime.block_on(async {
        let tasks = alive_tasks();
        for (label, connector) in [
            ("http1", HttpConnector::<Body>::http1()),
            ("http2", HttpConnector::<Body>::http2()),
        ] {
            let started = Instant::now();
            timeout(SCENARIO_LIMIT, scenario(label, connector, seed))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "[{label} seed={seed:#x}] the scenario took longer than {SCENARIO_LIMIT:?}"
                    )
                });
            let released = Instant::now();
            let fds_released = settle(|| open_fds().len() == fds).await;
            let tasks_released = settle(|| alive_tasks() == tasks).await;
            let now_fds = open_fds();
            let now_tasks = alive_tasks();
            assert!(
                fds_released,
                "[{label} seed={seed:#x}] file descriptors leaked: {fds} before, {} after \
                 {RELEASE_LIMIT:?}: {now_fds:?}",
                now_fds.len()
            );
            assert!(
                tasks_released,
                "[{label} seed={seed:#x}] tasks leaked: {tasks} alive before, {now_tasks} after \
                 {RELEASE_LIMIT:?}"
            );
            println!(
                "[{label}] scenario {:?}, fds and tasks released in {:?}",
                released - started,
                released.elapsed()
            );
        }
    });
    drop(runtime);
    let _ = done.send(());
}

/// The seed: `SEED`, or `CHAOS_SEED` from the environment.
fn seed() -> u64 {
    match std::env::var("CHAOS_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("CHAOS_SEED={text} is not a u64"))
        }
        Err(_) => SEED,
    }
}

/// Fails the process if `done` is not signalled within `limit`.
fn watchdog(limit: Duration, seed: u64) -> mpsc::Sender<()> {
    let (done, wait) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
            eprintln!(
                "chaos test (seed {seed:#x}): watchdog fired after {limit:?}: something hangs"
            );
            std::process::exit(101);
        }
    });
    done
}

/// The open file descriptors of this process, with what they point to.
fn open_fds() -> Vec<String> {
    let entries = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd is readable");
    entries
        .filter_map(Result::ok)
        .map(|entry| {
            let target = std::fs::read_link(entry.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            format!("{}->{target}", entry.file_name().to_string_lossy())
        })
        .collect()
}

/// The tasks alive in the current runtime.
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Polls `done` every 10 ms for up to `RELEASE_LIMIT`; whether it came true.
async fn settle(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + RELEASE_LIMIT;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits `future` for at most `LIMIT`, or fails saying what hung.
async fn within<T>(ctx: &str, what: &str, future: impl Future<Output = T>) -> T {
    timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("{ctx} {what} took longer than {LIMIT:?}"))
}

// --- The replicas ---

/// A replica's HTTP server (HTTP/1.1 and HTTP/2 on one port). Each answer's body is a fresh id,
/// `<name>-<n>`, recorded in `sent` before it is handed to hyper.
struct Server {
    name: String,
    address: SocketAddr,
    /// Black-holed: new connections are held without a byte read or written, and the connections
    /// being served freeze (their reads and writes never complete).
    frozen: Arc<AtomicBool>,
    graceful: CancellationToken,
    /// The accept loop, which owns the listener and every connection.
    tasks: JoinSet<()>,
}

impl Server {
    async fn start(name: String, sent: Sent) -> io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let frozen = Arc::new(AtomicBool::new(false));
        let graceful = CancellationToken::new();
        let mut tasks = JoinSet::new();
        {
            let (name, frozen, graceful) = (name.clone(), frozen.clone(), graceful.clone());
            let answered = Arc::new(AtomicUsize::new(0));
            tasks.spawn(async move {
                // Dropped with this task (a kill): aborts every connection.
                let mut connections = JoinSet::new();
                let mut held = Vec::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { break };
                            if frozen.load(Ordering::SeqCst) {
                                held.push(socket);
                                continue;
                            }
                            let io = Freezable { inner: socket, frozen: frozen.clone() };
                            connections.spawn(serve(
                                io,
                                name.clone(),
                                answered.clone(),
                                sent.clone(),
                                graceful.clone(),
                            ));
                        }
                        // Reap the connections that ended.
                        Some(_) = connections.join_next(), if !connections.is_empty() => {}
                        _ = graceful.cancelled() => break,
                    }
                }
                // Stopping gracefully: no new connections; those open finish what they do.
                drop((listener, held));
                while connections.join_next().await.is_some() {}
            });
        }
        Ok(Server {
            name,
            address,
            frozen,
            graceful,
            tasks,
        })
    }

    fn black_hole(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Stops at once: the listener and every connection are dropped.
    async fn kill(mut self) {
        self.tasks.shutdown().await;
    }

    /// Stops gracefully (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY, requests in flight are
    /// answered), cut short after `STOP_LIMIT`; whether it finished in time.
    async fn stop(mut self) -> bool {
        self.graceful.cancel();
        let drained = timeout(STOP_LIMIT, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        self.tasks.shutdown().await;
        drained
    }
}

async fn serve(
    io: Freezable,
    name: String,
    answered: Arc<AtomicUsize>,
    sent: Sent,
    graceful: CancellationToken,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let id = format!("{name}-{}", answered.fetch_add(1, Ordering::SeqCst) + 1);
        let key = request.uri().path().to_owned();
        sent.lock().unwrap().push((id.clone(), key));
        async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(id)))) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = graceful.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// A server's socket that freezes for good once `frozen` is set: every read and write then stays
/// pending (the task is never woken by it again; a kill drops it).
struct Freezable {
    inner: TcpStream,
    frozen: Arc<AtomicBool>,
}

impl Freezable {
    fn frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }
}

impl AsyncRead for Freezable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.frozen() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Freezable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.frozen() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.frozen() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.frozen() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a replica is.
enum Replica {
    Healthy(Server, Publication),
    BlackHoled(Server, Publication),
    Down,
}

/// The replicas, their catalog, and what the chaos did to them.
struct Cluster {
    ctx: String,
    dir: temp::TempDir,
    sent: Sent,
    replicas: Vec<Replica>,
    /// Incarnations started so far (the next server's generation).
    generation: usize,
    /// Entries of killed replicas left in the catalog.
    stale: Vec<PathBuf>,
    /// What happened, with times since the start of the scenario.
    log: Vec<String>,
    start: Instant,
    /// Graceful stops that had to be cut short.
    stops_cut_short: usize,
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Kill,
    Stop,
    BlackHole,
    Restart,
}

impl Cluster {
    async fn new(ctx: &str) -> Cluster {
        let mut cluster = Cluster {
            ctx: ctx.to_owned(),
            dir: temp::TempDir::new("chaos").unwrap(),
            sent: Sent::default(),
            replicas: (0..REPLICAS).map(|_| Replica::Down).collect(),
            generation: 0,
            stale: Vec::new(),
            log: Vec::new(),
            start: Instant::now(),
            stops_cut_short: 0,
        };
        for i in 0..REPLICAS {
            cluster.restart(i).await;
        }
        cluster
    }

    fn healthy(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| matches!(r, Replica::Healthy(..)))
            .count()
    }

    fn note(&mut self, line: String) {
        let at = self.start.elapsed().as_millis();
        self.log.push(format!("{at:>6} ms {line}"));
    }

    /// A new server for replica `i` on a new port, published; then the old one, if any, is
    /// stopped (gracefully if healthy, killed if black-holed) and withdrawn.
    async fn restart(&mut self, i: usize) {
        self.generation += 1;
        let name = format!("r{i}g{}", self.generation);
        let ctx = self.ctx.clone();
        let server = within(
            &ctx,
            "starting a server",
            Server::start(name.clone(), self.sent.clone()),
        )
        .await
        .unwrap();
        let publication = within(
            &ctx,
            "publishing",
            Catalog::publish(self.dir.path(), &name, server.address),
        )
        .await
        .unwrap();
        let address = server.address;
        let old = std::mem::replace(&mut self.replicas[i], Replica::Healthy(server, publication));
        let old_name = match old {
            Replica::Healthy(old, publication) => {
                let name = old.name.clone();
                within(&ctx, "withdrawing", publication.withdraw())
                    .await
                    .unwrap();
                if !within(&ctx, "stopping", old.stop()).await {
                    self.stops_cut_short += 1;
                }
                name
            }
            Replica::BlackHoled(old, publication) => {
                let name = old.name.clone();
                within(&ctx, "withdrawing", publication.withdraw())
                    .await
                    .unwrap();
                within(&ctx, "killing", old.kill()).await;
                name
            }
            Replica::Down => "-".into(),
        };
        self.note(format!(
            "restart   replica {i}: {old_name} -> {name} on {address}"
        ));
    }

    /// Kills replica `i` abruptly, leaving its catalog entry stale or withdrawing it.
    async fn kill(&mut self, i: usize, leave_stale: bool) {
        let ctx = self.ctx.clone();
        let (Replica::Healthy(server, publication) | Replica::BlackHoled(server, publication)) =
            std::mem::replace(&mut self.replicas[i], Replica::Down)
        else {
            return;
        };
        let name = server.name.clone();
        within(&ctx, "killing", server.kill()).await;
        if leave_stale {
            self.stale.push(publication.path().to_owned());
            publication.abandon();
        } else {
            within(&ctx, "withdrawing", publication.withdraw())
                .await
                .unwrap();
        }
        let entry = if leave_stale {
            "left stale"
        } else {
            "withdrawn"
        };
        self.note(format!("kill      replica {i}: {name}, entry {entry}"));
    }

    /// Stops healthy replica `i` gracefully and withdraws it.
    async fn stop(&mut self, i: usize) {
        let ctx = self.ctx.clone();
        let Replica::Healthy(server, publication) =
            std::mem::replace(&mut self.replicas[i], Replica::Down)
        else {
            unreachable!("only a healthy replica is stopped");
        };
        let name = server.name.clone();
        within(&ctx, "withdrawing", publication.withdraw())
            .await
            .unwrap();
        let drained = within(&ctx, "stopping", server.stop()).await;
        if !drained {
            self.stops_cut_short += 1;
        }
        let how = if drained { "" } else { " (cut short)" };
        self.note(format!("stop      replica {i}: {name}{how}"));
    }

    /// Black-holes healthy replica `i`; its entry stays published.
    fn black_hole(&mut self, i: usize) {
        let Replica::Healthy(server, publication) =
            std::mem::replace(&mut self.replicas[i], Replica::Down)
        else {
            unreachable!("only a healthy replica is black-holed");
        };
        server.black_hole();
        let name = server.name.clone();
        self.replicas[i] = Replica::BlackHoled(server, publication);
        self.note(format!("blackhole replica {i}: {name}"));
    }

    /// One chaos step: a replica and an action, chosen by `rng`. The last healthy replica is
    /// taken down only now and then (a short full outage); otherwise another one is restarted.
    /// Half the time it is the healthy replica the client is connected to (`current`), if any.
    async fn step(&mut self, rng: &mut StdRng, current: Option<SocketAddr>) {
        let target = self.replicas.iter().position(|r| match r {
            Replica::Healthy(server, _) => Some(server.address) == current,
            _ => false,
        });
        let mut i = match target {
            Some(i) if rng.random_bool(0.5) => i,
            _ => rng.random_range(0..REPLICAS),
        };
        // A black hole mostly stays a while, long enough for requests to time out on it.
        if matches!(self.replicas[i], Replica::BlackHoled(..)) && rng.random_bool(0.75) {
            i = (i + rng.random_range(1..REPLICAS)) % REPLICAS;
        }
        let mut action = match rng.random_range(0..10) {
            0..=2 => Action::Kill,
            3..=4 => Action::Stop,
            5..=7 => Action::BlackHole,
            _ => Action::Restart,
        };
        match (&self.replicas[i], action) {
            (Replica::Down, _) => action = Action::Restart,
            (Replica::BlackHoled(..), Action::Stop | Action::BlackHole) => action = Action::Kill,
            (Replica::Healthy(..), Action::Kill | Action::Stop | Action::BlackHole)
                if self.healthy() == 1 && !rng.random_bool(0.15) =>
            {
                // Keep this one; bring another back instead.
                i = (i + rng.random_range(1..REPLICAS)) % REPLICAS;
                action = Action::Restart;
            }
            _ => {}
        }
        match action {
            Action::Kill => {
                let leave_stale = rng.random_bool(0.5);
                self.kill(i, leave_stale).await;
            }
            Action::Stop => self.stop(i).await,
            Action::BlackHole => self.black_hole(i),
            Action::Restart => self.restart(i).await,
        }
    }

    /// Three healthy replicas again: black-holed ones are withdrawn and killed, down ones
    /// restarted, stale entries removed (their ports could be taken by anyone by now).
    async fn restore(&mut self) {
        for i in 0..REPLICAS {
            if !matches!(self.replicas[i], Replica::Healthy(..)) {
                self.restart(i).await;
            }
        }
        for path in std::mem::take(&mut self.stale) {
            let ctx = self.ctx.clone();
            let _ = within(&ctx, "removing a stale entry", tokio::fs::remove_file(path)).await;
        }
        self.note("restored: three healthy replicas, no stale entry".into());
    }

    /// Kills every replica; the answers the servers sent.
    async fn shut_down(mut self) -> (Vec<(String, String)>, Vec<String>, usize) {
        for i in 0..REPLICAS {
            self.kill(i, false).await;
        }
        let sent = std::mem::take(&mut *self.sent.lock().unwrap());
        (sent, self.log, self.stops_cut_short)
    }
}

// --- The clients ---

/// What became of one request.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// The id in the answer.
    Answered(String),
    /// The error, with its sources.
    Failed(String),
    TimedOut,
}

#[derive(Debug)]
struct Record {
    /// The request's path, `/<client>/<n>`: unique in the scenario.
    key: String,
    start: Instant,
    end: Instant,
    outcome: Outcome,
}

fn get(path: &str) -> http::Request<Body> {
    http::Request::get(path).body(Empty::new()).unwrap()
}

/// An error with its sources, `: `-separated.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    for source in std::iter::successors(error.source(), |e| (*e).source()).take(8) {
        text.push_str(": ");
        text.push_str(&source.to_string());
    }
    text
}

/// One request through this client's own handle; the id answered.
async fn request(client: &mut Client, key: &str) -> Result<String, BoxError> {
    let ready = ServiceExt::<http::Request<Body>>::ready(client).await?;
    let response = ready.call(get(key)).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status != http::StatusCode::OK {
        return Err(format!("status {status}").into());
    }
    Ok(String::from_utf8(body.to_vec())?)
}

/// Sends requests one after another until `stop`, each under `REQUEST_TIMEOUT`.
async fn client_loop(n: usize, mut client: Client, stop: CancellationToken) -> Vec<Record> {
    let mut records = Vec::new();
    for i in 0..MAX_REQUESTS_PER_CLIENT {
        if stop.is_cancelled() {
            break;
        }
        let key = format!("/{n}/{i}");
        let start = Instant::now();
        let outcome = match timeout(REQUEST_TIMEOUT, request(&mut client, &key)).await {
            Ok(Ok(id)) => Outcome::Answered(id),
            Ok(Err(error)) => Outcome::Failed(chain(&*error)),
            Err(_) => Outcome::TimedOut,
        };
        let end = Instant::now();
        let failed = matches!(outcome, Outcome::Failed(_));
        records.push(Record {
            key,
            start,
            end,
            outcome,
        });
        if failed {
            // No hot loop on a connection that fails at once.
            sleep(Duration::from_millis(10)).await;
        }
    }
    records
}

// --- The scenario ---

/// Runs the chaos against a persistent connection over `connector`, then checks what every
/// request and every server saw. Panics on any violation, printing the seed.
async fn scenario(label: &str, connector: HttpConnector<Body>, seed: u64) {
    let ctx = format!("[{label} seed={seed:#x}]");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::new(&ctx).await;
    let t0 = cluster.start;

    // Every event counted by name, every failed attempt by its text.
    let events: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let counts = events.clone();
    let layer = PersistentLayer::new("chaos", Catalog::new(cluster.dir.path()))
        .retry_delay(|| Duration::from_millis(50))
        .connect_timeout(Duration::from_secs(1))
        .close_timeout(Duration::from_secs(3))
        .on_event(move |event: Event<SocketAddr, Conn>| {
            let name = match &event {
                Event::FailedToConnect(e) => format!("failed_to_connect: {}", e.text()),
                other => other.name().to_owned(),
            };
            *counts.lock().unwrap().entry(name).or_default() += 1;
            async {}
        });
    // A black-holed HTTP/2 replica never greets: the attempt gives up after 500 ms. A frozen
    // HTTP/2 connection stops answering PINGs: it is dropped within 1.5 s.
    let connector = connector
        .connect_timeout(Duration::from_millis(500))
        .close_timeout(Duration::from_secs(1))
        .http2_keep_alive(Duration::from_millis(500), Duration::from_secs(1));
    let persistent: Client = ServiceBuilder::new().layer(layer).service(connector);

    let stop = CancellationToken::new();
    let mut clients = JoinSet::new();
    for n in 0..CLIENTS {
        clients.spawn(client_loop(n, persistent.clone(), stop.clone()));
    }

    // The chaos.
    let chaos_start = Instant::now();
    let mut steps = 0;
    while chaos_start.elapsed() < CHAOS && steps < MAX_CHAOS_STEPS {
        sleep(Duration::from_millis(rng.random_range(100..=400))).await;
        let current = persistent.current_connection().map(|c| c.peer_addr());
        cluster.step(&mut rng, current).await;
        steps += 1;
    }
    let chaos_end = Instant::now();
    cluster.restore().await;
    let restored = Instant::now();

    sleep(SETTLE + CHECKED).await;
    stop.cancel();
    let mut records = Vec::new();
    within(&ctx, "stopping the clients", async {
        while let Some(done) = clients.join_next().await {
            records.extend(done.unwrap_or_else(|e| panic!("{ctx} a client panicked: {e}")));
        }
    })
    .await;
    within(
        &ctx,
        "closing the persistent connection",
        persistent.close(),
    )
    .await;
    drop(persistent);
    let (sent, log, stops_cut_short) = cluster.shut_down().await;

    // --- What the clients and the servers saw ---
    let mut violations = Vec::new();
    let mut answered = 0;
    let mut failed = 0;
    let mut timed_out = 0;
    for record in &records {
        match &record.outcome {
            Outcome::Answered(_) => answered += 1,
            Outcome::Failed(_) => failed += 1,
            Outcome::TimedOut => timed_out += 1,
        }
    }

    // 1. No request outlives its timeout by more than the margin.
    let longest = records
        .iter()
        .map(|r| r.end - r.start)
        .max()
        .unwrap_or_default();
    let overdue: Vec<_> = records
        .iter()
        .filter(|r| r.end - r.start > REQUEST_TIMEOUT + MARGIN)
        .collect();
    if !overdue.is_empty() {
        violations.push(format!(
            "{} requests outlived their {REQUEST_TIMEOUT:?} timeout by more than {MARGIN:?} \
             (longest {longest:?}), e.g. {:?}",
            overdue.len(),
            overdue
                .iter()
                .take(3)
                .map(|r| (&r.key, r.end - r.start, &r.outcome))
                .collect::<Vec<_>>()
        ));
    }

    // 2. Answers received are answers sent, none twice, none lost.
    //
    // Each request has a unique path, which the server records with the id it answers. So:
    // - every id a client received was sent by a server, for that very request;
    // - no id is received twice, and no request reaches a server twice (nothing is retried);
    // - "none lost": every answer a server produced is accounted for by its own request, which
    //   either received exactly that answer, or failed or timed out. A server records an answer
    //   before hyper writes it, and a kill, a freeze or a client timeout may come in between;
    //   whether the bytes were written whole cannot be told from here, so such answers are
    //   counted (below, "sent, not received") rather than forbidden.
    let mut sent_for: HashMap<&str, &str> = HashMap::new(); // id -> path
    let mut answered_by: HashMap<&str, &str> = HashMap::new(); // path -> id
    for (id, key) in &sent {
        if sent_for.insert(id, key).is_some() {
            violations.push(format!("the servers sent id {id} twice"));
        }
        if let Some(first) = answered_by.insert(key, id) {
            violations.push(format!(
                "request {key} reached a server twice: answered {first} and {id}"
            ));
        }
    }
    let by_key: HashMap<&str, &Outcome> = records
        .iter()
        .map(|r| (r.key.as_str(), &r.outcome))
        .collect();
    let mut received = HashSet::new();
    for record in &records {
        if let Outcome::Answered(id) = &record.outcome {
            match sent_for.get(id.as_str()) {
                None => violations.push(format!(
                    "request {} received {id:?}, which no server sent",
                    record.key
                )),
                Some(key) if *key != record.key => violations.push(format!(
                    "request {} received {id}, which answered request {key}",
                    record.key
                )),
                Some(_) => {}
            }
            if !received.insert(id.as_str()) {
                violations.push(format!("id {id} was received twice"));
            }
        }
    }
    let mut not_received = (0, 0);
    for (id, key) in &sent {
        match by_key.get(key.as_str()) {
            None => violations.push(format!("{id} answered {key}, a request no client made")),
            Some(Outcome::Answered(got)) if got != id => {} // reported above
            Some(Outcome::Answered(_)) => {}
            Some(Outcome::Failed(_)) => not_received.0 += 1,
            Some(Outcome::TimedOut) => not_received.1 += 1,
        }
    }

    // 3. Once healthy replicas are back, every request that starts after SETTLE succeeds.
    let checked_from = restored + SETTLE;
    let late: Vec<&Record> = records.iter().filter(|r| r.start > checked_from).collect();
    let late_failures: Vec<_> = late
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Answered(_)))
        .collect();
    if late.is_empty() {
        violations.push(format!(
            "no request started in the {CHECKED:?} checked after restoring"
        ));
    }
    if !late_failures.is_empty() {
        violations.push(format!(
            "{} of {} requests started more than {SETTLE:?} after healthy replicas were back \
             did not succeed, e.g. {:?}",
            late_failures.len(),
            late.len(),
            late_failures
                .iter()
                .take(5)
                .map(|r| (&r.key, r.start - restored, &r.outcome))
                .collect::<Vec<_>>()
        ));
    }

    // Failures and timeouts during the chaos are expected and only counted: a kill fails the
    // requests in flight; a graceful HTTP/2 stop (GOAWAY) makes hyper fail requests it never
    // sent ("operation was canceled: connection closed", "http2 error: connection error
    // received: not a result of an error", or "connection is closed" for one called for as
    // hyper's connection ended); a frozen server leaves those it took pending until their
    // timeout.
    //
    // Each error: how often, how many of those requests a server answered all the same, and
    // when (ms since the start, to match with the chaos log).
    let mut errors: BTreeMap<&str, (usize, usize, Vec<u128>)> = BTreeMap::new();
    for record in &records {
        if let Outcome::Failed(e) = &record.outcome {
            let entry = errors.entry(e.as_str()).or_default();
            entry.0 += 1;
            entry.1 += usize::from(answered_by.contains_key(record.key.as_str()));
            let at = (record.end - t0).as_millis() / 10 * 10;
            if entry.2.len() < 12 && !entry.2.iter().any(|t| at.abs_diff(*t) < 100) {
                entry.2.push(at);
            }
        }
    }
    let mut top_errors: Vec<_> = errors.into_iter().collect();
    top_errors.sort_by_key(|(_, (n, _, _))| std::cmp::Reverse(*n));
    let top_errors: Vec<String> = top_errors
        .iter()
        .take(12)
        .map(|(text, (n, seen, at))| {
            format!("{n:>5} ({seen} answered by a server) {text:?} at {at:?} ms")
        })
        .collect();
    let summary = format!(
        "{ctx} chaos {:?} ({steps} steps), restored {:?} after it, then {:?} more\n\
         requests {}: answered {answered}, failed {failed}, timed out {timed_out}; \
         {} checked after restoring; longest {longest:?}\n\
         servers sent {} answers; sent, not received: {} to failed requests, {} to timed-out ones\n\
         graceful stops cut short: {stops_cut_short}\n\
         events: {:#?}\n\
         errors:\n{}\n\
         chaos log:\n{}",
        chaos_end - chaos_start,
        restored - chaos_end,
        SETTLE + CHECKED,
        records.len(),
        late.len(),
        sent.len(),
        not_received.0,
        not_received.1,
        events.lock().unwrap(),
        top_errors.join("\n"),
        log.join("\n"),
    );
    println!("{summary}");
    assert!(
        violations.is_empty(),
        "{ctx} {} violations (the first 20):\n{}\n\n{summary}",
        violations.len(),
        violations[..violations.len().min(20)].join("\n")
    );
}
