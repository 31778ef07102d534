//! A tonic-generated gRPC client (the health service of `tonic-health`) over a persistent
//! HTTP/2 connection: requests keep succeeding across a server restart on another address.
#[path = "support/grpc.rs"]
mod grpc;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grpc::HealthServer;
use tokio::time::timeout;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Status;
use tonic_health::pb::health_client::HealthClient;
use tower::{ServiceBuilder, service_fn};
use tower_persistent::transport::{HttpConnection, HttpConnector};
use tower_persistent::{Closable, Event, Persistent, PersistentLayer};

const LIMIT: Duration = Duration::from_secs(20);

type Conn = HttpConnection<tonic::body::Body>;

async fn check(client: &mut HealthClient<Persistent<SocketAddr, Conn>>) -> Status {
    let request = HealthCheckRequest {
        service: "orders".into(),
    };
    let response = timeout(LIMIT, client.check(request))
        .await
        .expect("check timed out")
        .expect("check failed");
    Status::try_from(response.into_inner().status).unwrap()
}

// The generated client runs over the persistent connection, and its requests keep succeeding
// when the server restarts on another address published through discovery.
#[tokio::test]
async fn health_checks_survive_a_restart_on_another_address() {
    let first = HealthServer::start(ServingStatus::Serving).await;
    let published = Arc::new(Mutex::new(first.address));
    let events = Arc::new(Mutex::new(Vec::new()));

    let discovery = published.clone();
    let get_address = service_fn(move |()| {
        let address = *discovery.lock().unwrap();
        async move { Ok::<_, std::io::Error>(address) }
    });
    let log = events.clone();
    let layer = PersistentLayer::new("orders", get_address)
        .retry_delay(|| Duration::from_millis(50))
        .on_event(move |event: Event<SocketAddr, Conn>| {
            log.lock().unwrap().push(event.name());
            async {}
        });
    let channel = ServiceBuilder::new()
        .layer(layer)
        .service(HttpConnector::http2());
    let mut client = HealthClient::new(channel.clone());

    for _ in 0..3 {
        assert_eq!(check(&mut client).await, Status::Serving);
    }
    let old = channel.current_connection().unwrap();

    // The replacement comes up elsewhere and is published; the old server shuts down.
    let second = HealthServer::start(ServingStatus::NotServing).await;
    *published.lock().unwrap() = second.address;
    first.stop().await;
    timeout(LIMIT, old.close_finished())
        .await
        .expect("GOAWAY unnoticed");

    for _ in 0..3 {
        assert_eq!(check(&mut client).await, Status::NotServing);
    }
    assert_eq!(
        channel.current_connection().unwrap().peer_addr(),
        second.address
    );
    assert_eq!(
        *events.lock().unwrap(),
        [
            "attempting_to_connect",
            "obtained_address",
            "connected",
            "disconnected",
            "attempting_to_connect",
            "obtained_address",
            "connected",
        ]
    );
    channel.close().await;
    second.stop().await;
}
