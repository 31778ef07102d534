//! Integration over real TCP sockets on 127.0.0.1: a line-protocol server that dies, moves to
//! another port published through discovery, and comes back.

mod support;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::line::{LineConn, LineServer, closed_port};
use tokio::time::timeout;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_persistent::{Closable, Event, Persistent, PersistentLayer};

/// Every wait of these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(20);

type P = Persistent<SocketAddr, LineConn>;

/// A persistent line connection whose address is read from `published` before every attempt;
/// its events are described into the returned log.
fn client(published: Arc<Mutex<SocketAddr>>) -> (P, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let recorder = log.clone();
    let get_address = service_fn(move |()| {
        let address = *published.lock().unwrap();
        async move { Ok::<_, io::Error>(address) }
    });
    let layer = PersistentLayer::new("line", get_address)
        .retry_delay(|| Duration::from_millis(50))
        .on_event(move |event: Event<SocketAddr, LineConn>| {
            let line = match &event {
                Event::ObtainedAddress(a) => format!("ObtainedAddress({})", a.port()),
                Event::FailedToConnect(e) => format!("FailedToConnect({})", e.is_connect()),
                Event::Connected(c) => format!("Connected({})", c.peer.port()),
                other => format!("{other:?}"),
            };
            recorder.lock().unwrap().push(line);
            async {}
        });
    let p = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(LineConn::connect));
    (p, log)
}

async fn ask(p: &P, line: &str) -> io::Result<String> {
    timeout(LIMIT, p.clone().oneshot(line.to_owned()))
        .await
        .expect("request timed out")
        .map_err(io::Error::other)
}

/// Waits until the client's current connection is to `address`.
async fn connected_to(p: &P, address: SocketAddr) {
    timeout(LIMIT, async {
        loop {
            let conn = p.connected().await.unwrap();
            if conn.peer == address {
                return;
            }
            conn.close_finished().await;
        }
    })
    .await
    .expect("never connected to the new address");
}

// Requests flow; the server dies and comes back on another port published through discovery;
// the client reconnects by itself and requests resume there.
#[tokio::test]
async fn reconnects_to_a_server_that_moved() {
    let alpha = LineServer::start("alpha").await.unwrap();
    let published = Arc::new(Mutex::new(alpha.address));
    let (p, log) = client(published.clone());

    assert_eq!(ask(&p, "one").await.unwrap(), "alpha: one");
    assert_eq!(ask(&p, "two").await.unwrap(), "alpha: two");
    let first = p.current_connection().unwrap();

    // Discovery now points where nothing listens, and alpha dies.
    let alpha_port = alpha.address.port();
    let nowhere = closed_port().await;
    *published.lock().unwrap() = nowhere;
    alpha.stop().await;
    timeout(LIMIT, first.close_finished())
        .await
        .expect("death unnoticed");
    let failure = timeout(LIMIT, p.connected_or_failed_to_connect())
        .await
        .unwrap()
        .unwrap_err();
    assert!(failure.is_connect(), "{failure}");

    // Beta comes up elsewhere and is published.
    let beta = LineServer::start("beta").await.unwrap();
    *published.lock().unwrap() = beta.address;
    assert_eq!(ask(&p, "three").await.unwrap(), "beta: three");
    connected_to(&p, beta.address).await;

    let events = log.lock().unwrap().clone();
    assert_eq!(
        events[..4],
        [
            "AttemptingToConnect".to_owned(),
            format!("ObtainedAddress({alpha_port})"),
            format!("Connected({alpha_port})"),
            "Disconnected".to_owned(),
        ]
    );
    // Then one round: the dead port (once, deduplicated), failures, then beta.
    let round = &events[4..];
    assert_eq!(round[0], "AttemptingToConnect");
    assert_eq!(round[1], format!("ObtainedAddress({})", nowhere.port()));
    assert_eq!(round[2], "FailedToConnect(true)");
    let beta_port = beta.address.port();
    assert_eq!(
        round[round.len() - 2..],
        [
            format!("ObtainedAddress({beta_port})"),
            format!("Connected({beta_port})"),
        ]
    );
    assert_eq!(
        round
            .iter()
            .filter(|e| e.starts_with("FailedToConnect"))
            .count(),
        1,
        "the same error is reported once per round: {round:?}"
    );

    p.close().await;
    beta.stop().await;
}

// The server restarts on the same port: the client comes back to it. The port lies below the
// ephemeral range, so that nothing else (another test's listener, an outgoing connection) is
// given it while the server is down.
#[tokio::test]
async fn reconnects_to_a_restarted_server() {
    let address = SocketAddr::from(([127, 0, 0, 1], support::ports::listen_port()));
    let first = LineServer::start_on("first", address).await.unwrap();
    let (p, _) = client(Arc::new(Mutex::new(address)));
    assert_eq!(ask(&p, "a").await.unwrap(), "first: a");
    let old = p.current_connection().unwrap();

    first.stop().await;
    // The idle connection notices that the server went away.
    timeout(LIMIT, old.close_finished())
        .await
        .expect("death unnoticed");
    let second = LineServer::start_on("second", address).await.unwrap();
    // The request waits in poll_ready until the new connection is up.
    assert_eq!(ask(&p, "b").await.unwrap(), "second: b");
    assert_eq!(second.accepted(), 1);
    p.close().await;
}

// Closing the persistent connection closes the socket: the server sees it go.
#[tokio::test]
async fn close_closes_the_socket() {
    let server = LineServer::start("s").await.unwrap();
    let (p, log) = client(Arc::new(Mutex::new(server.address)));
    assert_eq!(ask(&p, "x").await.unwrap(), "s: x");
    let conn = p.current_connection().unwrap();

    timeout(LIMIT, p.close()).await.expect("close hung");
    assert!(conn.is_closed());
    assert!(conn.clone().ready().await.is_err());
    let mut handle = p.clone();
    let error = timeout(LIMIT, std::future::poll_fn(|cx| handle.poll_ready(cx)))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.to_string(), "persistent connection is closed");
    assert_eq!(log.lock().unwrap().last().unwrap(), "Disconnected");
    assert_eq!(server.accepted(), 1);
    assert!(
        server.ended(1, LIMIT).await,
        "the server did not see the socket close"
    );
    server.stop().await;
}

// Many concurrent callers share the one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_connection() {
    let server = LineServer::start("s").await.unwrap();
    let (p, _) = client(Arc::new(Mutex::new(server.address)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let p = p.clone();
        tasks.spawn(async move {
            for j in 0..10 {
                let line = format!("{i}-{j}");
                assert_eq!(ask(&p, &line).await.unwrap(), format!("s: {line}"));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(server.accepted(), 1);
    p.close().await;
    server.stop().await;
}
