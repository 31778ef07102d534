//! HTTP/2 requests per second over one loopback connection, at concurrency 1 and 64: a
//! `Persistent` handle against bare hyper (the baseline), hyper-util's pooled client and tonic's
//! `Channel`, in one run.
//!
//! The server is hyper_util's `server::conn::auto`, HTTP/2 only with prior knowledge (h2c), on
//! 127.0.0.1, answering `GET /` with a 13-byte body (`support/loopback.rs`). It runs on the
//! same multi-thread tokio runtime as the clients (2 workers). Each client holds one connection
//! to it, made before the measurements:
//!
//! - `bare_hyper` (the baseline): `hyper::client::conn::http2::SendRequest` over a `TcpStream`
//!   with `TCP_NODELAY`, its connection future spawned; `ready()` then `send_request()`.
//! - `persistent`: `Persistent` over `HttpConnector::http2()` with `discovery::Fixed`.
//! - `hyper_util_pooled`: hyper-util's legacy `Client` with `http2_only(true)`, over its
//!   `HttpConnector` with `TCP_NODELAY` set as the others have it (HTTP/2 shares one pooled
//!   connection).
//! - `tonic_channel`: tonic's `Channel` (`Endpoint::from_shared("http://127.0.0.1:PORT")`,
//!   connected), used as a tower `Service<http::Request<tonic::body::Body>>` sending the same
//!   plain `GET /`.
//!
//! Every client is cloned once per task, and each request is `ready()` then `call()` (bare
//! hyper: `ready()` then `send_request()`) of `GET http://127.0.0.1:PORT/`, whose response
//! body is read to its end. For concurrency `c`, a batch of criterion's `iters` requests is split
//! over `c` tasks spawned together; the batch's time is from the first spawn to the last task's
//! end. The table at the end gives, from criterion's estimates of this run, the mean time per
//! request, the requests per second, and the ratio of each client's requests per second to
//! bare hyper's at the same concurrency (below 1 is fewer). The last line counts the
//! connections the server accepted (one per client expected, `http_connection` included).
//!
//! The whole bench takes about 80 s.
//!
//! With `THROUGHPUT_INTERLEAVED=<rounds>`, one more pass after criterion's (not measured by it)
//! runs the clients in turn, `rounds` times (2,000 requests at concurrency 1, 10,000 at 64, per
//! client and round; 20 rounds take about 30 s), and prints each client's median and mean time
//! per request and the CPU time the process spent per request, with their ratios to bare
//! hyper's: a check of criterion's figures, in which the runs follow one another and drift on
//! a shared machine can favour one. It also prints how many times the runtime's workers parked
//! (went to sleep) per request, from tokio's runtime metrics: a count of wake-ups, which the
//! machine's noise does not blur.
//! `THROUGHPUT_ONLY=bare_hyper,persistent` keeps only the clients named (for a profiler).
//! The interleaved pass has one more client, `http_connection`: the crate's `HttpConnection`
//! over HTTP/2 alone (made with `HttpConnector::http2()`), without `Persistent` over it, to
//! tell the transport's cost from the persistent connection's.
//! `THROUGHPUT_CONCURRENCY=<n>` runs the interleaved pass at that concurrency alone (1 or 64,
//! or any other);
//! `THROUGHPUT_WORKERS=<n>` gives the runtime `n` workers instead of 2 (with 1, every task
//! runs on one thread: what is left of a difference is work, not hops between threads).
//!
//! ```text
//! cargo bench -p tower-persistent-benches --bench throughput
//! THROUGHPUT_INTERLEAVED=20 cargo bench -p tower-persistent-benches --bench throughput -- none
//! THROUGHPUT_CONCURRENCY=1 THROUGHPUT_INTERLEAVED=200 cargo bench -p tower-persistent-benches --bench throughput -- none
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

use std::hint::black_box;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpu::cpu_time;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, measurement::WallTime};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::client::legacy::connect::HttpConnector as LegacyConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use loopback::{BODY, Protocols, Server};
use table::{Ratio, Row};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_persistent::PersistentLayer;
use tower_persistent::discovery::Fixed;
use tower_persistent::transport::HttpConnector;

const GROUP: &str = "h2_throughput";

const CONCURRENCY: [u64; 2] = [1, 64];

/// The clients, in the table's order; the first is the baseline.
const CLIENTS: [&str; 4] = [
    "bare_hyper",
    "persistent",
    "hyper_util_pooled",
    "tonic_channel",
];

/// Reads a response body to its end and checks its length.
async fn drain<B>(mut body: B)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            len += black_box(data).len();
        }
    }
    assert_eq!(len, BODY.len());
}

/// A client as one task uses it: sends `GET /` and reads the response body to its end.
trait Get: Clone + Send + 'static {
    fn get(&mut self) -> impl Future<Output = ()> + Send;
}

/// Bare hyper: an HTTP/2 `SendRequest`.
#[derive(Clone)]
struct Bare {
    send: http2::SendRequest<Empty<Bytes>>,
    uri: http::Uri,
}

impl Get for Bare {
    async fn get(&mut self) {
        let request = http::Request::get(self.uri.clone())
            .body(Empty::new())
            .unwrap();
        self.send.ready().await.unwrap();
        let response = self.send.send_request(request).await.unwrap();
        drain(response.into_body()).await;
    }
}

/// Any tower service of HTTP requests with body `B`.
struct Tower<S, B> {
    svc: S,
    uri: http::Uri,
    body: fn() -> B,
}

impl<S: Clone, B> Clone for Tower<S, B> {
    fn clone(&self) -> Self {
        Tower {
            svc: self.svc.clone(),
            uri: self.uri.clone(),
            body: self.body,
        }
    }
}

impl<S, B, R> Get for Tower<S, B>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    B: Send + 'static,
    R: hyper::body::Body<Data = Bytes> + Unpin + Send,
    R::Error: std::fmt::Debug,
{
    async fn get(&mut self) {
        let request = http::Request::get(self.uri.clone())
            .body((self.body)())
            .unwrap();
        let svc = self.svc.ready().await.unwrap();
        let response = svc.call(request).await.unwrap();
        drain(response.into_body()).await;
    }
}

/// Sends `iters` requests split over `concurrency` tasks spawned together; returns the time
/// from the first spawn to the last task's end.
async fn batch<C: Get>(client: C, iters: u64, concurrency: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| iters / concurrency + u64::from(i < iters % concurrency))
        .filter(|&n| n > 0)
        .map(|n| {
            let mut client = client.clone();
            tokio::spawn(async move {
                for _ in 0..n {
                    client.get().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

/// Measures batches of `iters` requests split over `concurrency` tasks.
fn measure<C: Get>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    name: &str,
    concurrency: u64,
    client: &C,
) {
    let run = format!("c{concurrency}_{name}");
    group.bench_function(BenchmarkId::from_parameter(run), |b| {
        b.to_async(rt)
            .iter_custom(|iters| batch(client.clone(), iters, concurrency))
    });
}

/// Connects bare hyper: TCP with `TCP_NODELAY`, the HTTP/2 handshake, the connection spawned.
async fn bare(address: SocketAddr, uri: http::Uri) -> Bare {
    let stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (send, conn) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Bare { send, uri }
}

fn main() {
    // Estimates that criterion wrote before this run are not this run's.
    ratios::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::env::var("THROUGHPUT_WORKERS")
                .ok()
                .and_then(|w| w.parse().ok())
                .filter(|&w| w > 0)
                .unwrap_or(2),
        )
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default().configure_from_args();
    let server = rt.block_on(Server::start(Protocols::Http2Only)).unwrap();
    let address = server.address;
    let uri: http::Uri = format!("http://{address}/").parse().unwrap();

    let bare = rt.block_on(bare(address, uri.clone()));
    let persistent = {
        let _guard = rt.enter();
        ServiceBuilder::new()
            .layer(PersistentLayer::new("bench", Fixed::new(address)))
            .service(HttpConnector::<Empty<Bytes>>::http2())
    };
    rt.block_on(persistent.connected()).unwrap();
    let persistent = Tower {
        svc: persistent,
        uri: uri.clone(),
        body: Empty::new,
    };
    // The interleaved pass's `http_connection`: the crate's HTTP/2 connection alone, without
    // `Persistent` over it.
    let http_connection = {
        let mut connector = HttpConnector::<Empty<Bytes>>::http2();
        let conn = rt.block_on(async { connector.call(address).await.unwrap() });
        Tower {
            svc: conn,
            uri: uri.clone(),
            body: Empty::new,
        }
    };
    let pooled = {
        let mut http = LegacyConnector::new();
        http.set_nodelay(true);
        let client = LegacyClient::builder(TokioExecutor::new())
            .http2_only(true)
            .build::<_, Empty<Bytes>>(http);
        Tower {
            svc: client,
            uri: uri.clone(),
            body: Empty::new,
        }
    };
    let channel = rt
        .block_on(
            tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                .unwrap()
                .connect(),
        )
        .unwrap();
    let channel = Tower {
        svc: channel,
        uri: uri.clone(),
        body: tonic::body::Body::empty,
    };
    // One request each before the measurements: the pooled client connects now.
    rt.block_on(async {
        bare.clone().get().await;
        persistent.clone().get().await;
        pooled.clone().get().await;
        channel.clone().get().await;
    });

    {
        let mut group = c.benchmark_group(GROUP);
        // The same number of requests in every sample, so that each has enough for 64 tasks.
        group.sampling_mode(SamplingMode::Flat);
        for concurrency in CONCURRENCY {
            measure(&mut group, &rt, CLIENTS[0], concurrency, &bare);
            measure(&mut group, &rt, CLIENTS[1], concurrency, &persistent);
            measure(&mut group, &rt, CLIENTS[2], concurrency, &pooled);
            measure(&mut group, &rt, CLIENTS[3], concurrency, &channel);
        }
        group.finish();
    }
    c.final_summary();

    let names: Vec<(String, String)> = CONCURRENCY
        .iter()
        .flat_map(|c| {
            CLIENTS
                .iter()
                .map(move |client| (format!("c{c}_{client}"), format!("c{c}_{}", CLIENTS[0])))
        })
        .collect();
    let rows: Vec<Row<'_>> = names
        .iter()
        .map(|(run, baseline)| Row {
            run,
            baseline,
            note: String::new(),
        })
        .collect();
    table::print(
        "HTTP/2 over one loopback connection: mean per request, requests per second, and their \
         ratio to bare hyper's",
        GROUP,
        &rows,
        "µs",
        1000.0,
        Ratio::Rate,
    );
    println!(
        "the server accepted {} connections (one per client expected, http_connection included) and \
         answered {} requests",
        server.accepted(),
        server.requests()
    );

    if let Some(rounds) = std::env::var("THROUGHPUT_INTERLEAVED")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&r| r > 0)
    {
        let only = std::env::var("THROUGHPUT_ONLY").ok();
        let clients: Vec<(&str, Batch)> = [
            (CLIENTS[0], batcher(&bare)),
            (CLIENTS[1], batcher(&persistent)),
            (CLIENTS[2], batcher(&pooled)),
            (CLIENTS[3], batcher(&channel)),
            ("http_connection", batcher(&http_connection)),
        ]
        .into_iter()
        .filter(|(name, _)| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|n| n == *name))
        })
        .collect();
        interleaved(&rt, &clients, rounds);
    }
}

// ---------------------------------------------------------------------------------------------
// THROUGHPUT_INTERLEAVED=<rounds>: the clients in turn, with the CPU time they cost.

/// How many times the runtime's workers have parked (gone to sleep) so far.
fn parks(rt: &Runtime) -> u64 {
    let metrics = rt.metrics();
    (0..metrics.num_workers())
        .map(|w| metrics.worker_park_count(w))
        .sum()
}

/// A client's batch: `(iters, concurrency)` to the time it took.
type Batch = Box<dyn Fn(u64, u64) -> Pin<Box<dyn Future<Output = Duration> + Send>>>;

fn batcher<C: Get>(client: &C) -> Batch {
    let client = client.clone();
    Box::new(move |iters, concurrency| Box::pin(batch(client.clone(), iters, concurrency)))
}

/// Runs `rounds` rounds in which every client sends one batch at each concurrency, starting
/// with a different client each round, so that drift and neighbours on a shared machine weigh
/// on all alike. Prints each client's median and mean time per request and the process's CPU
/// time per request (client and server), with their ratios to the first client's (times as
/// requests per second: below 1 is fewer; CPU as is: above 1 is more).
fn interleaved(rt: &Runtime, clients: &[(&str, Batch)], rounds: usize) {
    let concurrencies: Vec<u64> = match std::env::var("THROUGHPUT_CONCURRENCY") {
        Ok(c) => vec![
            c.parse()
                .ok()
                .filter(|&c| c > 0)
                .expect("THROUGHPUT_CONCURRENCY: a number of tasks, 1 or more"),
        ],
        Err(_) => CONCURRENCY.to_vec(),
    };
    for concurrency in concurrencies {
        let iters = if concurrency == 1 { 2_000 } else { 10_000 };
        let mut walls = vec![Vec::new(); clients.len()];
        let mut cpus = vec![Duration::ZERO; clients.len()];
        let mut parked = vec![0u64; clients.len()];
        for round in 0..rounds {
            for k in 0..clients.len() {
                let i = (k + round) % clients.len();
                let cpu = cpu_time();
                let before = parks(rt);
                let wall = rt.block_on((clients[i].1)(iters, concurrency));
                parked[i] += parks(rt) - before;
                cpus[i] += cpu_time() - cpu;
                walls[i].push(wall.as_secs_f64() * 1e9 / iters as f64);
            }
        }
        let requests = (rounds as u64 * iters) as f64;
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let means: Vec<f64> = walls
            .iter()
            .map(|v| v.iter().sum::<f64>() / v.len() as f64)
            .collect();
        let medians: Vec<f64> = walls.iter_mut().map(median).collect();
        let cpu: Vec<f64> = cpus
            .iter()
            .map(|c| c.as_secs_f64() * 1e9 / requests)
            .collect();
        println!(
            "\nconcurrency {concurrency}, {rounds} interleaved rounds of {iters} requests per \
             client:\n{:<20} {:>15} {:>10} {:>12} {:>13} {:>11} {:>13} {:>10} {:>10}",
            "client",
            "median (µs/req)",
            "req/s",
            "req/s ratio",
            "mean (µs/req)",
            "mean ratio",
            "CPU (µs/req)",
            "CPU ratio",
            "parks/req"
        );
        for (i, (name, _)) in clients.iter().enumerate() {
            println!(
                "{name:<20} {:>15.3} {:>10.0} {:>12.3} {:>13.3} {:>11.3} {:>13.3} {:>10.3} {:>10.3}",
                medians[i] / 1e3,
                1e9 / medians[i],
                medians[0] / medians[i],
                means[i] / 1e3,
                means[0] / means[i],
                cpu[i] / 1e3,
                cpu[i] / cpu[0],
                parked[i] as f64 / requests,
            );
        }
    }
}
