//! A TCP proxy on 127.0.0.1 for the tests: delivers every byte, each way, a set delay after it
//! was read (a slow peer), and cuts every connection through it on demand (a peer's crash or
//! a network cut), taking new ones after.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// A proxy to one target; its tasks end when it is dropped.
pub struct Proxy {
    address: SocketAddr,
    /// Bumped by `cut`; every connection's tasks end when it moves, or when it is dropped.
    cuts: watch::Sender<u64>,
    accepted: watch::Receiver<u64>,
}

impl Proxy {
    /// Starts a proxy to `target` that delivers bytes `delay` after reading them.
    pub async fn start(target: SocketAddr, delay: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (cuts, cut) = watch::channel(0);
        let (count, accepted) = watch::channel(0);
        let mut stop = cut.clone();
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => return,
                    },
                    changed = stop.changed() => match changed {
                        Ok(()) => continue,
                        Err(_) => return,
                    },
                };
                count.send_modify(|n| *n += 1);
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, delay, cut.clone()));
                tokio::spawn(pipe(server_read, client_write, delay, cut.clone()));
            }
        });
        Proxy {
            address,
            cuts,
            accepted,
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every connection through the proxy now (with a reset, should bytes be left
    /// unread); the proxy takes new ones.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// How many connections the proxy has accepted.
    pub fn accepted(&self) -> u64 {
        *self.accepted.borrow()
    }

    /// Waits until the proxy has accepted `n` connections in all.
    pub async fn until_accepted(&self, n: u64) {
        let mut accepted = self.accepted.clone();
        accepted.wait_for(|&accepted| accepted >= n).await.unwrap();
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read, until either end closes or the
/// connection is cut.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    mut cut: watch::Receiver<u64>,
) {
    cut.mark_unchanged();
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut writes_cut = cut.clone();
    let writes = tokio::spawn(async move {
        let deliver = async {
            while let Some((at, bytes)) = receiver.recv().await {
                tokio::time::sleep_until(at).await;
                if to.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = to.shutdown().await;
        };
        tokio::select! {
            () = deliver => {}
            _ = writes_cut.changed() => {}
        }
    });
    let mut buffer = vec![0; 64 * 1024];
    loop {
        tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(read @ 1..) => {
                    let _ = sender.send((Instant::now() + delay, buffer[..read].to_vec()));
                }
                _ => break,
            },
            _ = cut.changed() => {
                writes.abort();
                return;
            }
        }
    }
    drop(sender);
    // The writes go on until delivered, or until a cut.
    let _ = writes.await;
}
