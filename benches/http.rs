//! A request over loopback HTTP/1.1 and HTTP/2: through a `Persistent` handle, against the bare
//! `HttpConnection` it wraps and against hyper-util's pooled client, in one run. Shows what the
//! persistent connection costs next to real I/O.
//!
//! Each iteration sends `GET /` to a hyper server on 127.0.0.1 and reads the body.
//!
//! ```text
//! cargo bench --bench http
//! ```

#[path = "support/ratios.rs"]
mod ratios;
#[path = "../tests/support/web.rs"]
mod web;

use std::hint::black_box;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Runtime;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_persistent::PersistentLayer;
use tower_persistent::transport::HttpConnector;

const GROUP: &str = "http_get";

fn request(address: SocketAddr) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://{address}/"))
        .body(Empty::new())
        .unwrap()
}

/// Measures `iters` sequential requests with `send` per sample.
fn measure<S, B>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    name: &str,
    address: SocketAddr,
    svc: S,
) where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<B>> + Clone + 'static,
    S::Error: std::fmt::Debug,
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    c.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.to_async(rt).iter_custom(|iters| {
            let svc = svc.clone();
            async move {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    let response = svc.clone().oneshot(request(address)).await.unwrap();
                    black_box(response.into_body().collect().await.unwrap().to_bytes());
                }
                start.elapsed()
            }
        })
    });
}

fn main() {
    // Estimates that criterion wrote before this run are not this run's.
    ratios::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default().configure_from_args();
    let server = rt.block_on(web::HttpServer::start("bench")).unwrap();
    let address = server.address;
    let get_address = service_fn(move |()| async move { Ok::<_, std::io::Error>(address) });

    {
        let _guard = rt.enter();
        let mut group = c.benchmark_group(GROUP);
        for (version, connector) in [
            ("http1", HttpConnector::http1()),
            ("http2", HttpConnector::http2()),
        ] {
            let bare = rt.block_on(connector.clone().oneshot(address)).unwrap();
            measure(
                &mut group,
                &rt,
                &format!("{version}_bare_connection"),
                address,
                bare,
            );
            let persistent = ServiceBuilder::new()
                .layer(PersistentLayer::new("bench", get_address))
                .service(connector);
            measure(
                &mut group,
                &rt,
                &format!("{version}_persistent"),
                address,
                persistent,
            );
        }
        let pooled = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        measure(
            &mut group,
            &rt,
            "http1_hyper_util_pooled_client",
            address,
            pooled,
        );
        group.finish();
    }
    c.final_summary();
    print_ratios();
}

/// Prints each run's mean and its ratio to the bare connection of the same version.
fn print_ratios() {
    ratios::print(
        GROUP,
        &[
            ("http1_bare_connection", "http1_bare_connection"),
            ("http1_persistent", "http1_bare_connection"),
            ("http1_hyper_util_pooled_client", "http1_bare_connection"),
            ("http2_bare_connection", "http2_bare_connection"),
            ("http2_persistent", "http2_bare_connection"),
        ],
        "µs",
        1000.0,
    );
}
