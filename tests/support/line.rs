//! A line protocol over TCP, for integration tests and the examples: the client sends one line
//! per request and the server answers one line, `"<server name>: <request>"`.
//!
//! [`LineConn`] is a real connection: a task owns the socket, requests reach it over a channel,
//! and the connection is closed when the peer closes the socket (noticed even while idle), on an
//! I/O error, or when [`Closable::close`] is called.
#![allow(dead_code, unreachable_pub)]

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::Service;
use tower_persistent::Closable;

type Request = (String, oneshot::Sender<io::Result<String>>);

/// A client connection of the line protocol.
#[derive(Clone)]
pub struct LineConn {
    pub peer: SocketAddr,
    requests: mpsc::UnboundedSender<Request>,
    /// Cancelled to ask the socket task to stop.
    close: CancellationToken,
    /// Cancelled by the socket task when it has stopped and the socket is closed.
    finished: CancellationToken,
}

impl fmt::Debug for LineConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LineConn({})", self.peer)
    }
}

impl LineConn {
    /// Dials `address` and starts the socket task.
    pub async fn connect(address: SocketAddr) -> io::Result<LineConn> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (requests, receiver) = mpsc::unbounded_channel();
        let conn = LineConn {
            peer: address,
            requests,
            close: CancellationToken::new(),
            finished: CancellationToken::new(),
        };
        let (close, finished) = (conn.close.clone(), conn.finished.clone());
        tokio::spawn(async move {
            let _finished = finished.drop_guard();
            serve_socket(stream, receiver, close).await;
        });
        Ok(conn)
    }
}

async fn serve_socket(
    stream: TcpStream,
    mut requests: mpsc::UnboundedReceiver<Request>,
    close: CancellationToken,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    loop {
        tokio::select! {
            _ = close.cancelled() => break,
            request = requests.recv() => {
                let Some((line, reply)) = request else { break };
                let answer = async {
                    write.write_all(format!("{line}\n").as_bytes()).await?;
                    lines
                        .next_line()
                        .await?
                        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"))
                }
                .await;
                let failed = answer.is_err();
                let _ = reply.send(answer);
                if failed {
                    break;
                }
            }
            // Idle: a line or the end of the stream means the server went away.
            _ = lines.next_line() => break,
        }
    }
    // Requests still queued fail rather than hang.
    requests.close();
    while let Ok((_, reply)) = requests.try_recv() {
        let _ = reply.send(Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "connection closed",
        )));
    }
}

impl Closable for LineConn {
    fn close(&self) -> impl Future<Output = ()> + Send {
        self.close.cancel();
        self.finished.clone().cancelled_owned()
    }

    fn is_closed(&self) -> bool {
        self.close.is_cancelled() || self.finished.is_cancelled()
    }

    fn close_finished(&self) -> impl Future<Output = ()> + Send {
        self.finished.clone().cancelled_owned()
    }
}

impl Service<String> for LineConn {
    type Response = String;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<String>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_closed() {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "connection closed",
            )))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, line: String) -> Self::Future {
        let (reply, answer) = oneshot::channel();
        let sent = self.requests.send((line, reply));
        Box::pin(async move {
            sent.map_err(|_| io::Error::new(io::ErrorKind::NotConnected, "connection closed"))?;
            answer
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::NotConnected, "connection closed"))?
        })
    }
}

/// A line-protocol server on 127.0.0.1 that answers `"<name>: <line>"`; stopping it (or dropping
/// it) closes the listener and every connection.
pub struct LineServer {
    pub name: &'static str,
    pub address: SocketAddr,
    tasks: JoinSet<()>,
    /// Connections accepted so far.
    accepted: tokio::sync::watch::Receiver<usize>,
    /// Connections whose client closed them (the end of stream read), so far.
    ended: tokio::sync::watch::Receiver<usize>,
}

impl LineServer {
    /// Starts a server on a free port of 127.0.0.1.
    pub async fn start(name: &'static str) -> io::Result<LineServer> {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts a server on `address`.
    pub async fn start_on(name: &'static str, address: SocketAddr) -> io::Result<LineServer> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let (count, accepted) = tokio::sync::watch::channel(0);
        let (ends, ended) = tokio::sync::watch::channel(0);
        let ends = std::sync::Arc::new(ends);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // Dropped with this task: aborts every connection.
            let mut sockets = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    break;
                };
                count.send_modify(|n| *n += 1);
                let ends = ends.clone();
                sockets.spawn(async move {
                    answer(name, socket).await;
                    ends.send_modify(|n| *n += 1);
                });
            }
        });
        Ok(LineServer {
            name,
            address,
            tasks,
            accepted,
            ended,
        })
    }

    /// How many connections were accepted.
    pub fn accepted(&self) -> usize {
        *self.accepted.borrow()
    }

    /// Waits until `n` connections have been closed by their client; false if they have not
    /// within `limit`.
    pub async fn ended(&self, n: usize, limit: std::time::Duration) -> bool {
        let mut ended = self.ended.clone();
        tokio::time::timeout(limit, ended.wait_for(|ended| *ended >= n))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// Stops listening and closes every connection.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn answer(name: &'static str, socket: TcpStream) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if write
            .write_all(format!("{name}: {line}\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
}

/// A port of 127.0.0.1 with no listener behind it: connecting to it is refused.
///
/// The port stays bound, without listening and without `SO_REUSEADDR`, until the process ends,
/// so that no other test's listener can be given it in the meantime.
pub async fn closed_port() -> SocketAddr {
    static KEPT: std::sync::Mutex<Vec<tokio::net::TcpSocket>> = std::sync::Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = socket.local_addr().unwrap();
    KEPT.lock().unwrap().push(socket);
    address
}
