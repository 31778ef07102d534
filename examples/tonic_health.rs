//! A tonic-generated gRPC client over a persistent HTTP/2 connection.
//!
//! Starts a gRPC health server (from `tonic-health`) on 127.0.0.1, asks it for the health of the
//! `orders` service every 200 ms with the generated `HealthClient`, then moves the server to
//! another port (the new address is published first, then the old server shuts down with
//! GOAWAY). The client follows by itself. Ends after about three seconds.
//!
//! ```text
//! cargo run --example tonic_health
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Status;
use tonic_health::pb::health_client::HealthClient;
use tower::{ServiceBuilder, service_fn};
use tower_persistent::hyper::{HttpConnection, HttpConnector};
use tower_persistent::{Event, PersistentLayer};

/// Starts a health server reporting `status` for `orders`; send on the returned sender to stop
/// it gracefully.
async fn serve(
    status: ServingStatus,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("orders", status).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _reporter = reporter;
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await;
    });
    (address, stop, task)
}

#[tokio::main]
async fn main() {
    let start = Instant::now();
    let stamp = move || format!("[{:5.3}s]", start.elapsed().as_secs_f64());

    let (first, stop_first, first_task) = serve(ServingStatus::Serving).await;
    println!("{} health server A on {first}", stamp());
    let published = Arc::new(Mutex::new(first));

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

    let mut moved = Some((stop_first, first_task));
    // Server B's stop handle lives to the end: dropping it would stop B.
    let mut second_server = None;
    let mut answered = 0;
    for round in 1..=15 {
        let tick = Instant::now();
        if round == 6 {
            if let Some((stop, task)) = moved.take() {
                let (second, stop_second, task_second) = serve(ServingStatus::NotServing).await;
                second_server = Some((stop_second, task_second));
                *published.lock().unwrap() = second;
                println!(
                    "{} health server B on {second}, published; A shuts down",
                    stamp()
                );
                let _ = stop.send(());
                let _ = task.await;
            }
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
    if let Some((stop, task)) = second_server {
        let _ = stop.send(());
        let _ = task.await;
    }
    println!("\n{answered} of 15 health checks answered");
}
