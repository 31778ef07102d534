//! Failover across replicas found in a service catalog, over HTTP with hyper.
//!
//! Three replica HTTP servers start on 127.0.0.1 and publish their addresses into a catalog (a
//! temporary directory, one file per replica). A client with a persistent connection sends a
//! request every 100 ms and prints, with timestamps, every event of the connection and which
//! replica answered. Four times, two seconds apart (at 2, 4, 6 and 8 s), the replica the client
//! is using dies (by turns: killed outright, which leaves a stale catalog entry, or shut down
//! cleanly, which withdraws it) and comes back a second later on a new port. The demo ends by
//! itself after twelve seconds with a summary.
//!
//! A request written just as its replica dies fails (it may have reached the server: the
//! persistent connection never sends a request again). These requests are `GET`s, which may be
//! sent again: a `tower::retry` policy does that once, for a request whose connection died
//! under it, and the demo says so.
//!
//! ```text
//! cargo run --example failover
//! ```

#[path = "../tests/support/temp.rs"]
mod temp;
#[path = "../tests/support/web.rs"]
mod web;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::time::{Instant, sleep_until, timeout};
use tower::retry::{Policy, RetryLayer};
use tower::{ServiceBuilder, ServiceExt};
use tower_persistent::discovery::{Catalog, Publication};
use tower_persistent::transport::{HttpConnection, HttpConnector};
use tower_persistent::{Event, PersistentLayer};
use web::HttpServer;

const NAMES: [&str; 3] = ["replica-1", "replica-2", "replica-3"];

type Request = http::Request<Empty<Bytes>>;

/// How many requests were sent again.
static SENT_AGAIN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Sends a `GET` again, once, if its connection died under it (hyper's error for a request
/// written, or about to be, on a connection that then ended).
#[derive(Clone)]
struct SendAgainOnce {
    sent_again: bool,
}

impl<T> Policy<Request, T, tower_persistent::BoxError> for SendAgainOnce {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        request: &mut Request,
        result: &mut Result<T, tower_persistent::BoxError>,
    ) -> Option<Self::Future> {
        let Err(error) = result else { return None };
        let died_under = error
            .downcast_ref::<hyper::Error>()
            .is_some_and(|e| e.is_incomplete_message() || e.is_canceled());
        if self.sent_again || request.method() != http::Method::GET || !died_under {
            return None;
        }
        self.sent_again = true;
        SENT_AGAIN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        println!(
            "                 {} failed ({error}): its connection died under it; sent again",
            request.uri()
        );
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, request: &Request) -> Option<Request> {
        http::Request::builder()
            .method(request.method().clone())
            .uri(request.uri().clone())
            .body(Empty::new())
            .ok()
    }
}

/// A running replica and its catalog entry.
struct Replica {
    server: HttpServer,
    entry: Publication,
}

async fn start_replica(catalog: &std::path::Path, name: &'static str) -> Replica {
    let server = HttpServer::start(name).await.expect("start a replica");
    let entry = Catalog::publish(catalog, name, server.address)
        .await
        .expect("publish a replica");
    Replica { server, entry }
}

#[tokio::main]
async fn main() {
    let start = Instant::now();
    let stamp = move || format!("[{:6.3}s]", start.elapsed().as_secs_f64());
    let catalog = temp::TempDir::new("failover").expect("a temporary directory");

    println!("A persistent connection keeps one connection to a service whose address it looks up");
    println!("before every attempt (here: in a catalog of replicas). When the connection dies it");
    println!("reconnects, to whichever replica the catalog names next, and reports every step.\n");

    let mut replicas = BTreeMap::new();
    for name in NAMES {
        let replica = start_replica(catalog.path(), name).await;
        println!(
            "{} {name} listens on {} and publishes itself",
            stamp(),
            replica.server.address
        );
        replicas.insert(name, replica);
    }

    let layer = PersistentLayer::new("replicas", Catalog::new(catalog.path()))
        .retry_delay(|| Duration::from_millis(300))
        .on_event(
            move |event: Event<SocketAddr, HttpConnection<Empty<Bytes>>>| async move {
                // Events display as the logs say them; the connection's peer is added.
                let what = match &event {
                    Event::ObtainedAddress(address) => format!("catalog answered {address}"),
                    Event::Connected(conn) => format!("connected to {}", conn.peer_addr()),
                    other => other.to_string(),
                };
                println!("{} EVENT {what}", stamp());
            },
        );
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(HttpConnector::http1().connect_timeout(Duration::from_secs(1)));

    let (mut sent, mut answered, mut failed) = (0u32, 0u32, 0u32);
    let mut last_answer = start;
    let mut longest_gap = Duration::ZERO;
    // name of the replica that is down, when it comes back
    let mut down: Option<(&'static str, Instant)> = None;
    let mut next_failure = start + Duration::from_secs(2);
    let mut failures = 0;
    let end = start + Duration::from_secs(12);

    while Instant::now() < end {
        let tick = Instant::now();

        if let Some((name, back_at)) = down {
            if tick >= back_at {
                let replica = start_replica(catalog.path(), name).await;
                println!(
                    "{} {name} is back on {} and publishes itself",
                    stamp(),
                    replica.server.address
                );
                replicas.insert(name, replica);
                down = None;
            }
        }
        if down.is_none() && tick >= next_failure && failures < 4 {
            let serving = client.current_connection().map(|c| c.peer_addr());
            let victim = replicas
                .iter()
                .find(|(_, r)| Some(r.server.address) == serving)
                .map(|(name, _)| *name);
            if let Some(name) = victim {
                let replica = replicas.remove(name).expect("a running replica");
                if failures % 2 == 0 {
                    replica.entry.abandon();
                    replica.server.kill().await;
                    println!(
                        "{} {name} is killed; its catalog entry stays behind, stale",
                        stamp()
                    );
                } else {
                    replica.entry.withdraw().await.expect("withdraw");
                    replica.server.stop().await;
                    println!(
                        "{} {name} shuts down cleanly and withdraws from the catalog",
                        stamp()
                    );
                }
                failures += 1;
                down = Some((name, tick + Duration::from_secs(1)));
                next_failure = tick + Duration::from_secs(2);
            }
        }

        sent += 1;
        let request = http::Request::get(format!("/request-{sent}"))
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        let outcome = timeout(Duration::from_millis(1000), async {
            let response = ServiceBuilder::new()
                .layer(RetryLayer::new(SendAgainOnce { sent_again: false }))
                .service(client.clone())
                .oneshot(request)
                .await?;
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, tower_persistent::BoxError>(String::from_utf8_lossy(&body).into_owned())
        })
        .await;
        match outcome {
            Ok(Ok(body)) => {
                answered += 1;
                let now = Instant::now();
                longest_gap = longest_gap.max(now - last_answer);
                last_answer = now;
                let replica = body.split(' ').next().unwrap_or("?");
                println!("{}       request {sent:3} answered by {replica}", stamp());
            }
            Ok(Err(error)) => {
                failed += 1;
                println!("{}       request {sent:3} failed: {error}", stamp());
            }
            Err(_) => {
                failed += 1;
                println!("{}       request {sent:3}: no answer within 1 s", stamp());
            }
        }
        sleep_until(tick + Duration::from_millis(100)).await;
    }

    client.close().await;
    for (_, replica) in replicas {
        replica.server.stop().await;
    }
    println!();
    println!("requests sent:                 {sent}");
    println!("answered:                      {answered}");
    println!("failed:                        {failed}");
    println!(
        "sent again (died under):       {}",
        SENT_AGAIN.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "longest gap without an answer: {} ms",
        longest_gap.as_millis()
    );
}
