//! A hyper server on 127.0.0.1 for the reconnect and throughput benches: `hyper_util`'s
//! `server::conn::auto` (HTTP/1.1 and HTTP/2 with prior knowledge on one port, or HTTP/2 only),
//! answering every request with a small body, and able to drop every open connection at once.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::ready;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// The body of every response.
pub const BODY: &[u8] = b"hello, world\n";

/// Which protocols the server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1, and HTTP/2 with prior knowledge (told apart by the client's preface).
    Auto,
    /// HTTP/2 with prior knowledge (h2c) only.
    Http2Only,
}

/// A connection the server holds open.
struct Open {
    /// A duplicate of the socket's descriptor, to shut it down from outside its task.
    socket: std::net::TcpStream,
    /// The task serving it.
    task: AbortHandle,
}

/// A hyper server on 127.0.0.1; stops (and drops its connections) when dropped.
pub struct Server {
    pub address: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<Open>>>,
    accept_task: AbortHandle,
}

impl Server {
    /// Binds 127.0.0.1 on a free port and serves on the current runtime.
    pub async fn start(protocols: Protocols) -> std::io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(Mutex::new(Vec::new()));
        let accept_task = {
            let accepted = accepted.clone();
            let requests = requests.clone();
            let open = open.clone();
            tokio::spawn(async move {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                if protocols == Protocols::Http2Only {
                    builder = builder.http2_only();
                }
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let _ = socket.set_nodelay(true);
                    let Ok(dup) = socket.as_fd().try_clone_to_owned() else {
                        continue;
                    };
                    let requests = requests.clone();
                    let service = hyper::service::service_fn(move |_: hyper::Request<Incoming>| {
                        requests.fetch_add(1, Ordering::Relaxed);
                        ready(Ok::<_, Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(BODY),
                        ))))
                    });
                    let builder = builder.clone();
                    let task = tokio::spawn(async move {
                        let _ = builder
                            .serve_connection(TokioIo::new(socket), service)
                            .await;
                    });
                    let mut open = open.lock().unwrap();
                    // Forget connections that ended by themselves.
                    open.retain(|o: &Open| !o.task.is_finished());
                    open.push(Open {
                        socket: std::net::TcpStream::from(dup),
                        task: task.abort_handle(),
                    });
                }
            })
            .abort_handle()
        };
        Ok(Server {
            address,
            accepted,
            requests,
            open,
            accept_task,
        })
    }

    /// Drops every open connection at once: each socket is shut down in both directions
    /// before this returns (the client is sent a FIN, the server reads no more), and the task
    /// serving it is aborted. Returns how many connections were open.
    pub fn drop_all(&self) -> usize {
        let open = std::mem::take(&mut *self.open.lock().unwrap());
        for o in &open {
            let _ = o.socket.shutdown(Shutdown::Both);
            o.task.abort();
        }
        open.len()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.drop_all();
    }
}
