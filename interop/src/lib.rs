//! tower-persistent's heavier tests and examples (against tonic, against nginx, property tests),
//! and its recipes: the stacks a production client builds on a persistent connection, each one
//! a doc test that compiles and runs against a server on 127.0.0.1.
//!
//! # A tonic client with a timeout, a concurrency limit and retries
//!
//! `tower::retry` cannot sit under a tonic client (its request body is not `Clone`), so retries
//! go around the call, at the message level; the timeout and the concurrency limit sit between
//! the client and the channel. Where each timeout sits matters:
//!
//! - a request's own deadline, tonic's `Request::set_timeout` (sent to the server as
//!   `grpc-timeout`), is kept by `GrpcChannel` from the call on: `DEADLINE_EXCEEDED` when no
//!   response head has come by then (tonic's `Channel` says `CANCELLED` there);
//! - `tower::timeout` (here: `TimeoutLayer`) bounds every call once the service is ready, put
//!   above the channel, but tonic reports its error as `UNKNOWN` (`request timed out`);
//! - [`ready_timeout`](tower_persistent::PersistentLayer::ready_timeout) bounds the wait for a
//!   ready connection, which `tower::timeout` does not see (with wait-for-ready, a request can
//!   otherwise wait for a connection far past its timeout); it answers `DEADLINE_EXCEEDED`;
//! - [`fail_fast`](tower_persistent::PersistentLayer::fail_fast) instead answers `UNAVAILABLE` at
//!   once while the connection is down, which a retry loop can act on.
//!
//! ```
//! # #[path = "../tests/support/grpc.rs"] mod grpc;
//! use std::time::Duration;
//! use tonic_health::ServingStatus;
//! use tonic_health::pb::HealthCheckRequest;
//! use tonic_health::pb::health_client::HealthClient;
//! use tower::{Layer, ServiceBuilder};
//! use tower_persistent::PersistentLayer;
//! use tower_persistent::discovery::Fixed;
//! use tower_persistent::grpc::GrpcChannel;
//! use tower_persistent::transport::HttpConnector;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! # let server = grpc::HealthServer::start(ServingStatus::Serving).await;
//! let persistent = PersistentLayer::new("orders", Fixed::new(server.address))
//!     .ready_timeout(Duration::from_secs(2))
//!     .layer(HttpConnector::<tonic::body::Body>::http2());
//! let channel = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(1))
//!     .concurrency_limit(64)
//!     .service(GrpcChannel::new(persistent.clone()));
//! let mut client = HealthClient::new(channel);
//!
//! // Retries at the message level: the request is made again for each try.
//! let mut tries = 0;
//! let response = loop {
//!     tries += 1;
//!     let request = HealthCheckRequest { service: "orders".into() };
//!     match client.check(request).await {
//!         Ok(response) => break response,
//!         Err(status) if tries < 3 && status.code() == tonic::Code::Unavailable => {
//!             tokio::time::sleep(Duration::from_millis(100)).await;
//!         }
//!         Err(status) => panic!("{status}"),
//!     }
//! };
//! assert_eq!(response.into_inner().status, ServingStatus::Serving as i32);
//! persistent.close().await;
//! # server.stop().await;
//! # }
//! ```
//!
//! # p2c over replicas, behind a buffer, in a task of its own
//!
//! One persistent connection per replica, fail-fast on, balanced by tower's p2c
//! ([`grpc::Balanced`](tower_persistent::grpc::Balanced)), which weighs a replica with no
//! connection more than any connected one; a `Buffer` in front makes the client cheap to clone,
//! and the whole stack can be moved into `tokio::spawn`.
//!
//! ```
//! # #[path = "../tests/support/grpc.rs"] mod grpc;
//! use tonic_health::ServingStatus;
//! use tonic_health::pb::HealthCheckRequest;
//! use tonic_health::pb::health_client::HealthClient;
//! use tower::Layer;
//! use tower::buffer::Buffer;
//! use tower_persistent::PersistentLayer;
//! use tower_persistent::discovery::Fixed;
//! use tower_persistent::grpc::{Balanced, GrpcChannel};
//! use tower_persistent::transport::HttpConnector;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! # let servers = [
//! #     grpc::HealthServer::start(ServingStatus::Serving).await,
//! #     grpc::HealthServer::start(ServingStatus::Serving).await,
//! # ];
//! let replicas: Vec<_> = servers
//!     .iter()
//!     .map(|server| {
//!         let persistent = PersistentLayer::new("orders", Fixed::new(server.address))
//!             .fail_fast(true)
//!             .layer(HttpConnector::<tonic::body::Body>::http2());
//!         GrpcChannel::new(persistent)
//!     })
//!     .collect();
//! let client = HealthClient::new(Buffer::new(Balanced::new(replicas.clone()), 1024));
//! let task = tokio::spawn(async move {
//!     let mut client = client;
//!     for _ in 0..10 {
//!         let request = HealthCheckRequest { service: "orders".into() };
//!         client.check(request).await.unwrap();
//!     }
//! });
//! task.await.unwrap();
//! for replica in &replicas {
//!     replica.get_ref().close().await;
//! }
//! # for server in servers { server.stop().await; }
//! # }
//! ```
//!
//! # A boxed, cloneable service
//!
//! To hold a persistent connection in a struct without its type parameters, box it with tower's
//! `BoxCloneService` (the handle is `Clone`, `Send` and `'static`).
//!
//! ```
//! use std::convert::Infallible;
//! use tower::util::BoxCloneService;
//! use tower::{Layer, ServiceExt, service_fn};
//! use tower_persistent::{BoxError, ClosableService, PersistentLayer};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let persistent = PersistentLayer::new("echo", service_fn(|()| async { Ok::<_, Infallible>(()) }))
//!     .layer(service_fn(|()| async {
//!         Ok::<_, Infallible>(ClosableService::new(service_fn(|s: String| async move {
//!             Ok::<_, Infallible>(s)
//!         })))
//!     }));
//! let boxed: BoxCloneService<String, String, BoxError> = BoxCloneService::new(persistent.clone());
//! assert_eq!(boxed.clone().oneshot("hi".to_owned()).await.unwrap(), "hi");
//! persistent.close().await;
//! # }
//! ```
