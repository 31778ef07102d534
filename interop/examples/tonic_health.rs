//! A tonic-generated gRPC client over a persistent HTTP/2 connection.
//!
//! Starts a gRPC health server (from `tonic-health`) on 127.0.0.1, asks it for the health of the
//! `orders` service every 200 ms with the generated `HealthClient`, then moves the server to
//! another port (the new address is published first, then the old server shuts down with
//! GOAWAY). The client follows by itself. Ends after about three seconds.
//!
//! ```text
//! cargo run -p tower-persistent-interop --example tonic_health
//! ```

#[path = "../tests/support/grpc.rs"]
mod grpc;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grpc::HealthServer;
use tokio::time::{Instant, sleep_until, timeout};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Status;
use tonic_health::pb::health_client::HealthClient;
use tower::{ServiceBuilder, service_fn};
use tower_persistent::transport::{HttpConnection, HttpConnector};
use tower_persistent::{Event, PersistentLayer};

#[tokio::main]
async fn main() {
    let start = Instant::now();
    let stamp = move || format!("[{:5.3}s]", start.elapsed().as_secs_f64());

    let first = HealthServer::start(ServingStatus::Serving).await;
    println!("{} health server A on {}", stamp(), first.address);
    let published = Arc::new(Mutex::new(first.address));

    let discovery = published.clone();
    let get_address = service_fn(move |()| {
        let address = *discovery.lock().unwrap();
        async move { Ok::<_, std::io::Error>(address) }
    });
    let layer = PersistentLayer::new("orders", get_address)
        .retry_delay(|| Duration::from_millis(200))
        .on_event(
            move |event: Event<SocketAddr, HttpConnection<tonic::body::Body>>| async move {
                let what = match event {
                    Event::Connected(conn) => format!("connected to {}", conn.peer_addr()),
                    Event::FailedToConnect(error) => format!("failed to connect: {}", error.text()),
                    other => format!("{other:?}"),
                };
                println!("{} EVENT {what}", stamp());
            },
        );
    let channel = ServiceBuilder::new()
        .layer(layer)
        .service(HttpConnector::http2());
    let mut client = HealthClient::new(channel.clone());

    // The server in use; dropping a server's handle would stop it.
    let mut serving = first;
    let mut answered = 0;
    for round in 1..=15 {
        let tick = Instant::now();
        if round == 6 {
            let second = HealthServer::start(ServingStatus::NotServing).await;
            *published.lock().unwrap() = second.address;
            println!(
                "{} health server B on {}, published; A shuts down",
                stamp(),
                second.address
            );
            std::mem::replace(&mut serving, second).stop().await;
        }
        let request = HealthCheckRequest {
            service: "orders".into(),
        };
        match timeout(Duration::from_secs(2), client.check(request)).await {
            Ok(Ok(response)) => {
                answered += 1;
                let status = Status::try_from(response.into_inner().status)
                    .map(|s| s.as_str_name().to_owned())
                    .unwrap_or_else(|_| "unknown".into());
                println!("{}       check {round}: orders is {status}", stamp());
            }
            Ok(Err(status)) => println!("{}       check {round} failed: {status}", stamp()),
            Err(_) => println!("{}       check {round} timed out", stamp()),
        }
        sleep_until(tick + Duration::from_millis(200)).await;
    }
    channel.close().await;
    serving.stop().await;
    println!("\n{answered} of 15 health checks answered");
}
