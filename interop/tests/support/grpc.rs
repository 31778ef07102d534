//! A gRPC server with `tonic-health`'s health service on 127.0.0.1, for the tonic test and
//! example.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

/// A health server reporting one status for the service `orders`.
pub struct HealthServer {
    pub address: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl HealthServer {
    /// Starts on a free port of 127.0.0.1, reporting `status` for `orders`.
    pub async fn start(status: ServingStatus) -> HealthServer {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("orders", status).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _reporter = reporter;
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        HealthServer {
            address,
            stop,
            task,
        }
    }

    /// Graceful shutdown (GOAWAY), then waits (at most 20 s) for the server to end.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the health server did not stop")
            .unwrap();
    }
}
