//! gRPC status codes through `grpc::GrpcChannel`: the errors of the persistent connection reach
//! a tonic-generated client with the code a gRPC client gives for the same situation, and a
//! balanced, buffered client is spawnable.

#[path = "support/grpc.rs"]
mod grpc;
#[path = "../../tests/support/line.rs"]
mod line;

use std::net::SocketAddr;
use std::time::Duration;

use grpc::HealthServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tonic::Code;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::Layer;
use tower::buffer::Buffer;
use tower_persistent::discovery::Fixed;
use tower_persistent::grpc::{Balanced, GrpcChannel};
use tower_persistent::transport::{HttpConnection, HttpConnector};
use tower_persistent::{Persistent, PersistentLayer};

const LIMIT: Duration = Duration::from_secs(20);

type Channel = GrpcChannel<SocketAddr, HttpConnection<tonic::body::Body>>;

fn persistent(
    address: SocketAddr,
    configure: impl FnOnce(
        PersistentLayer<Fixed<SocketAddr>, SocketAddr, HttpConnection<tonic::body::Body>>,
    ) -> PersistentLayer<
        Fixed<SocketAddr>,
        SocketAddr,
        HttpConnection<tonic::body::Body>,
    >,
) -> Persistent<SocketAddr, HttpConnection<tonic::body::Body>> {
    configure(
        PersistentLayer::new("health", Fixed::new(address)).retry_delay(|| Duration::from_secs(5)),
    )
    .layer(HttpConnector::http2())
}

async fn check(client: &mut HealthClient<Channel>) -> Result<(), tonic::Status> {
    let request = HealthCheckRequest {
        service: "orders".into(),
    };
    timeout(LIMIT, client.check(request))
        .await
        .expect("the check hung")
        .map(drop)
}

/// A port with nobody listening (kept bound until the process ends, so that no other test's
/// listener is given it meanwhile).
async fn nobody() -> SocketAddr {
    line::closed_port().await
}

// No connection while failing fast, and a closed handle: UNAVAILABLE, as a gRPC client says.
#[tokio::test]
async fn no_connection_and_closed_are_unavailable() {
    let p = persistent(nobody().await, |layer| layer.fail_fast(true));
    let mut client = HealthClient::new(GrpcChannel::new(p.clone()));
    let status = check(&mut client).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "persistent connection is unavailable");

    p.close().await;
    let status = check(&mut client).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "persistent connection is closed");
}

// Waiting longer than the ready timeout for a connection: DEADLINE_EXCEEDED.
#[tokio::test]
async fn the_ready_timeout_is_deadline_exceeded() {
    let p = persistent(nobody().await, |layer| {
        layer.ready_timeout(Duration::from_millis(200))
    });
    let mut client = HealthClient::new(GrpcChannel::new(p.clone()));
    let status = check(&mut client).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "no connection was ready within 200ms");
    p.close().await;
}

// The connection lost mid-request (the server answers the HTTP/2 preface, takes the request,
// and drops the connection): UNAVAILABLE.
#[tokio::test]
async fn a_connection_lost_mid_request_is_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        // An empty SETTINGS frame, then the ACK of the client's.
        socket
            .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        socket
            .write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0])
            .await
            .unwrap();
        // Read the client's preface, then its frames until the request's HEADERS; then drop
        // the connection without answering.
        let mut preface = [0u8; 24];
        socket.read_exact(&mut preface).await.unwrap();
        assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let mut headers_seen = false;
        for _ in 0..16 {
            let mut head = [0u8; 9];
            socket.read_exact(&mut head).await.unwrap();
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; length];
            socket.read_exact(&mut payload).await.unwrap();
            // Frame type 1: HEADERS.
            if head[3] == 1 {
                headers_seen = true;
                break;
            }
        }
        assert!(headers_seen, "no request came");
        drop(socket);
    });
    let p = persistent(address, |layer| layer);
    let mut client = HealthClient::new(GrpcChannel::new(p.clone()));
    let status = check(&mut client).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    server.await.unwrap();
    p.close().await;
}

/// A server that answers the HTTP/2 handshake and resets every stream it is sent with
/// `reason`.
async fn resetting_server(reason: h2::Reason) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_, mut respond))) = connection.accept().await {
                    respond.send_reset(reason);
                }
            });
        }
    });
    address
}

// A stream reset by the server before its response: the status gRPC gives its HTTP/2 error
// code, the same as tonic's own `Channel` gives (not UNAVAILABLE for all: a client would retry
// a request the server may have processed), but for `FRAME_SIZE_ERROR`, which gRPC maps to
// INTERNAL and tonic's `Channel` to UNKNOWN.
#[tokio::test]
async fn a_stream_reset_has_the_status_of_its_error_code() {
    use h2::Reason;
    for (reason, code, tonic_code) in [
        (Reason::CANCEL, Code::Cancelled, Code::Cancelled),
        (Reason::INTERNAL_ERROR, Code::Internal, Code::Internal),
        (Reason::FRAME_SIZE_ERROR, Code::Internal, Code::Unknown),
        (
            Reason::ENHANCE_YOUR_CALM,
            Code::ResourceExhausted,
            Code::ResourceExhausted,
        ),
        (
            Reason::INADEQUATE_SECURITY,
            Code::PermissionDenied,
            Code::PermissionDenied,
        ),
        (Reason::REFUSED_STREAM, Code::Unavailable, Code::Unavailable),
    ] {
        let address = resetting_server(reason).await;
        let p = persistent(address, |layer| layer);
        let mut client = HealthClient::new(GrpcChannel::new(p.clone()));
        let status = check(&mut client).await.unwrap_err();
        assert_eq!(status.code(), code, "{reason:?}: {status:?}");
        p.close().await;

        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy();
        let tonic_status = timeout(
            LIMIT,
            HealthClient::new(channel).check(HealthCheckRequest {
                service: "orders".into(),
            }),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert_eq!(
            tonic_status.code(),
            tonic_code,
            "tonic's Channel, {reason:?}: {tonic_status:?}"
        );
    }
}

// A request with a deadline (tonic's `Request::set_timeout`, sent as `grpc-timeout`) to a server
// that takes it and never answers: DEADLINE_EXCEEDED once the deadline has passed, and the
// server sees the stream cancelled. (tonic's own `Channel` gives CANCELLED, "Timeout expired".)
#[tokio::test]
async fn a_request_past_its_grpc_timeout_is_deadline_exceeded() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (reset_tx, reset_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut connection = h2::server::handshake(socket).await.unwrap();
        let (_, mut respond) = connection.accept().await.unwrap().unwrap();
        // Drives the connection on, and waits for the client to reset the stream.
        tokio::spawn(async move { while connection.accept().await.is_some() {} });
        let reason = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
        let _ = reset_tx.send(reason.map_err(|e| e.to_string()));
    });
    let p = persistent(address, |layer| layer);
    let mut client = HealthClient::new(GrpcChannel::new(p.clone()));
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: "orders".into(),
    });
    request.set_timeout(Duration::from_millis(300));
    let start = tokio::time::Instant::now();
    let status = timeout(LIMIT, client.check(request))
        .await
        .expect("the check hung")
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "no response within the request's grpc-timeout (300ms)"
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
    let reset = timeout(LIMIT, reset_rx).await.unwrap().unwrap();
    assert_eq!(reset, Ok(h2::Reason::CANCEL));
    p.close().await;
}

// A client over a buffer over the p2c balancer over one GrpcChannel per replica is spawnable,
// and its checks succeed while one replica of three is down.
#[tokio::test]
async fn a_balanced_buffered_client_is_spawnable() {
    let up = [
        HealthServer::start(ServingStatus::Serving).await,
        HealthServer::start(ServingStatus::Serving).await,
    ];
    let replicas: Vec<Channel> = vec![
        GrpcChannel::new(persistent(up[0].address, |layer| layer.fail_fast(true))),
        GrpcChannel::new(persistent(nobody().await, |layer| layer.fail_fast(true))),
        GrpcChannel::new(persistent(up[1].address, |layer| layer.fail_fast(true))),
    ];
    for replica in [&replicas[0], &replicas[2]] {
        timeout(LIMIT, replica.get_ref().connected())
            .await
            .unwrap()
            .unwrap();
    }
    // The replica that is down has failed its first attempt: it fails fast.
    let _ = timeout(
        LIMIT,
        replicas[1].get_ref().connected_or_failed_to_connect(),
    )
    .await;
    let client = HealthClient::new(Buffer::new(Balanced::new(replicas.clone()), 64));
    let checks = tokio::spawn(async move {
        let mut client = client;
        for _ in 0..50 {
            let request = HealthCheckRequest {
                service: "orders".into(),
            };
            client.check(request).await.unwrap();
        }
    });
    timeout(LIMIT, checks).await.unwrap().unwrap();
    for replica in &replicas {
        replica.get_ref().close().await;
    }
    for server in up {
        server.stop().await;
    }
}

/// The texts of `status`'s source chain, in order (bounded).
fn chain_of(status: &tonic::Status) -> Vec<String> {
    let mut texts = Vec::new();
    let mut source = std::error::Error::source(status);
    while let Some(error) = source.filter(|_| texts.len() < 16) {
        texts.push(error.to_string());
        source = error.source();
    }
    texts
}

// Through the balancer, a replica's error reaches the client as it would through the replica's
// channel alone: the same status and the same chain of sources (it was once wrapped a second
// time, each text of the chain twice over).
#[tokio::test]
async fn a_balanced_error_is_the_replica_s_own() {
    let p = persistent(nobody().await, |layer| layer.fail_fast(true));
    let _ = timeout(LIMIT, p.connected_or_failed_to_connect()).await;
    let mut alone = HealthClient::new(GrpcChannel::new(p.clone()));
    let mut balanced = HealthClient::new(Balanced::new([GrpcChannel::new(p.clone())]));
    let alone = check(&mut alone).await.unwrap_err();
    let request = HealthCheckRequest {
        service: "orders".into(),
    };
    let balanced = timeout(LIMIT, balanced.check(request))
        .await
        .expect("the check hung")
        .unwrap_err();
    assert_eq!(balanced.code(), Code::Unavailable, "{balanced:?}");
    assert_eq!(balanced.message(), "persistent connection is unavailable");
    assert_eq!(chain_of(&balanced), chain_of(&alone));
    p.close().await;
}
