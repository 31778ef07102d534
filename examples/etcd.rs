//! Discovery through etcd: replicas register under a key prefix with a lease; a client with a
//! persistent connection finds them there, and moves on when one dies.
//!
//! The example starts its own 3-member etcd cluster on 127.0.0.1 (Debian's `etcd`, data in a
//! temporary directory) and three replica HTTP servers, each publishing its address under
//! `/services/orders/` with a lease of 2 s. A client sends a request every 200 ms and prints
//! every event and which replica answered. The replica in use is killed outright (its lease is
//! no longer kept alive, its key expires); then an etcd member is killed; then a replica shuts
//! down cleanly (its key goes at once). It ends by itself after about ten seconds.
//!
//! ```text
//! apt-get install etcd-server        # Debian's etcd (the example runs its own members)
//! cargo run --example etcd --features etcd
//! ```

#[path = "../tests/support/etcd.rs"]
mod etcd;
#[path = "../tests/support/ports.rs"]
mod ports;
#[path = "../tests/support/temp.rs"]
mod temp;
#[path = "../tests/support/web.rs"]
mod web;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use etcd::{Cluster, INSTALL, etcd_binary};
use futures_util::StreamExt;
use http_body_util::Empty;
use tokio::time::{Instant, sleep, timeout};
use tower::{Layer, ServiceExt};
use tower_persistent::discovery::{Etcd, Publication};
use tower_persistent::transport::{HttpConnection, HttpConnector};
use tower_persistent::{Event, Persistent, PersistentLayer};
use web::{HttpServer, get, text};

type Client = Persistent<SocketAddr, HttpConnection<Empty<Bytes>>>;

#[tokio::main]
async fn main() {
    let Some(binary) = etcd_binary() else {
        eprintln!("{INSTALL}");
        std::process::exit(2);
    };
    let start = Instant::now();
    let stamp = move || format!("[{:6.3}s]", start.elapsed().as_secs_f64());

    let mut cluster = Cluster::start(&binary, 3).await.expect("start etcd");
    let endpoints = cluster.endpoints();
    println!("{} etcd cluster up: {}", stamp(), endpoints.join(", "));
    let discovery = Etcd::connect(&endpoints, "/services/orders/")
        .await
        .expect("an etcd client")
        .timeout(Duration::from_millis(500))
        .addresses::<SocketAddr>();

    let mut replicas = Vec::new();
    for name in ["replica-1", "replica-2", "replica-3"] {
        let server = HttpServer::start(name).await.expect("start a replica");
        let entry = discovery
            .publish(name, server.address, Duration::from_secs(2))
            .await
            .expect("publish a replica");
        println!(
            "{} {name} at {} published as {}",
            stamp(),
            server.address,
            entry.path().display()
        );
        replicas.push(Some((server, entry)));
    }

    let client: Client = PersistentLayer::new("orders", discovery.clone())
        .retry_delay(|| Duration::from_millis(100))
        .layer(HttpConnector::http1());
    let mut events = client.events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match &event {
                Event::Connected(conn) => {
                    println!("{} event: connected to {}", stamp(), conn.peer())
                }
                other => println!("{} event: {other}", stamp()),
            }
        }
    });

    let ask = |client: Client| async move {
        match timeout(Duration::from_secs(2), client.oneshot(get("/"))).await {
            Ok(Ok(response)) => text(response).await,
            Ok(Err(error)) => format!("failed: {error}"),
            Err(_) => "timed out".to_owned(),
        }
    };
    // Takes the replica the client is connected to out of `replicas`.
    let take_serving = |replicas: &mut Vec<Option<(HttpServer, Publication)>>, client: &Client| {
        let current = client.current_connection().map(|c| c.peer_addr())?;
        let i = replicas
            .iter()
            .position(|r| r.as_ref().map(|(s, _)| s.address) == Some(current))?;
        replicas[i].take()
    };

    for step in 0..50 {
        let answer = ask(client.clone()).await;
        println!("{} request {step:2}: {answer}", stamp());
        match step {
            5 => {
                if let Some((server, entry)) = take_serving(&mut replicas, &client) {
                    println!(
                        "{} killing {} outright: its lease will expire",
                        stamp(),
                        server.name
                    );
                    server.kill().await;
                    entry.abandon();
                }
            }
            20 => {
                println!("{} killing etcd member m0", stamp());
                cluster.kill(0).await;
            }
            30 => {
                if let Some((server, entry)) = take_serving(&mut replicas, &client) {
                    println!(
                        "{} {} shuts down cleanly: withdrawn at once",
                        stamp(),
                        server.name
                    );
                    entry.withdraw().await.expect("withdraw");
                    server.stop().await;
                }
            }
            _ => {}
        }
        sleep(Duration::from_millis(200)).await;
    }
    client.close().await;
    println!("{} done", stamp());
}
