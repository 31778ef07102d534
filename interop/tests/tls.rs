//! TLS over real sockets on 127.0.0.1, with certificates made at test time (rcgen): HTTP/1.1 and
//! HTTP/2 with ALPN, the server's certificate checked against the name of the address, the IP
//! dialed or a name of the configuration; a tonic health check over TLS; a wrong name, an
//! unknown issuer, a server that speaks another protocol and one that stops mid-handshake, each
//! a `FailedToConnect` that says why.

#[path = "../../tests/support/web.rs"]
mod web;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Empty;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::{Layer, ServiceExt};
use tower_persistent::PersistentLayer;
use tower_persistent::discovery::Fixed;
use tower_persistent::grpc::GrpcChannel;
use tower_persistent::transport::{HttpConnection, HttpConnector, TlsConfig};
use web::{get, serve_one, text};

/// Every wait of these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(20);

type Body = Empty<Bytes>;

/// The text of the first attempt's failure of a client of `address` through `connector`.
async fn failure<A, M>(address: A, connector: M) -> String
where
    A: Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static,
    M: tower::Service<A, Response = HttpConnection<Body>> + Send + 'static,
    M::Error: Into<tower_persistent::BoxError>,
    M::Future: Send,
{
    let client = PersistentLayer::new("web", Fixed::new(address))
        .retry_delay(|| Duration::from_secs(60))
        .layer(connector);
    let error = timeout(LIMIT, client.connected_or_failed_to_connect())
        .await
        .expect("the attempt hung")
        .expect_err("the attempt succeeded");
    client.close().await;
    error.text()
}

/// A certificate authority of the test's own and a server certificate it issued for `names`.
struct Pki {
    roots: RootCertStore,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl Pki {
    fn new(names: &[&str]) -> Pki {
        Self::issued(names, false)
    }

    /// As [`Pki::new`], the server certificate valid in 2019 only: expired.
    fn expired(names: &[&str]) -> Pki {
        Self::issued(names, true)
    }

    fn issued(names: &[&str], expired: bool) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Each authority a name of its own: one with another's name would be found as the
        // issuer, and its signature fail.
        static AUTHORITIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = AUTHORITIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("tower-persistent test authority {n}"),
        );
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut leaf = CertificateParams::new(names).unwrap();
        if expired {
            leaf.not_before = rcgen::date_time_ymd(2019, 1, 1);
            leaf.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let leaf = leaf.signed_by(&key, &issuer).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        Pki {
            roots,
            chain: vec![leaf.der().clone()],
            key: key.serialize_der(),
        }
    }

    /// What a client that trusts this authority uses.
    fn client(&self) -> TlsConfig {
        TlsConfig::with_roots(self.roots.clone())
    }

    /// A server configuration offering `alpn`.
    fn acceptor(&self, alpn: &[&[u8]]) -> TlsAcceptor {
        self.acceptor_with(alpn, false)
    }

    /// A server configuration offering `alpn`, that requires a client certificate (issued by
    /// this authority) if `client_auth`.
    fn acceptor_with(&self, alpn: &[&[u8]], client_auth: bool) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(self.roots.clone()),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(
                self.chain.clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone())),
            )
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsAcceptor::from(Arc::new(config))
    }
}

/// An HTTP server over TLS on 127.0.0.1 (HTTP/1.1 and HTTP/2, chosen by ALPN), answering
/// `"t <path>"`; it records the protocol each handshake agreed on, and serves until dropped.
struct TlsServer {
    address: SocketAddr,
    agreed: Arc<Mutex<Vec<String>>>,
    /// A duplicate of each accepted socket, to end its stream without TLS's close_notify.
    sockets: Arc<Mutex<Vec<std::net::TcpStream>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsServer {
    async fn start(acceptor: TlsAcceptor) -> TlsServer {
        Self::start_on("127.0.0.1:0", acceptor).await
    }

    /// Listening on `address` (`[::1]:0` for IPv6).
    async fn start_on(address: &str, acceptor: TlsAcceptor) -> TlsServer {
        let listener = TcpListener::bind(address).await.unwrap();
        let address = listener.local_addr().unwrap();
        let agreed = Arc::new(Mutex::new(Vec::new()));
        let record = agreed.clone();
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let duplicates = sockets.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                let socket = socket.into_std().unwrap();
                duplicates.lock().unwrap().push(socket.try_clone().unwrap());
                let socket = TcpStream::from_std(socket).unwrap();
                let acceptor = acceptor.clone();
                let record = record.clone();
                connections.spawn(async move {
                    // A failed handshake ends this connection only.
                    if let Ok(stream) = acceptor.accept(socket).await {
                        let alpn = stream.get_ref().1.alpn_protocol().unwrap_or(b"none");
                        record
                            .lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(alpn).into_owned());
                        serve_one("t", stream).await;
                    }
                });
            }
        });
        TlsServer {
            address,
            agreed,
            sockets,
            task,
        }
    }

    fn agreed(&self) -> Vec<String> {
        self.agreed.lock().unwrap().clone()
    }

    /// Ends the stream of every connection accepted so far without TLS's close_notify (TCP's
    /// end of stream alone, as a server that drops its TLS stream sends).
    fn end_without_close_notify(&self) {
        for socket in self.sockets.lock().unwrap().iter() {
            socket.shutdown(std::net::Shutdown::Write).unwrap();
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// HTTP/1.1 and HTTP/2 over TLS: the certificate is checked against the address's name or IP,
// ALPN offers the connector's version, and requests carry the right authority.
#[tokio::test]
async fn http1_and_http2_over_tls_checked_against_the_address() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let server = TlsServer::start(pki.acceptor(&[b"h2", b"http/1.1"])).await;
    let port = server.address.port();

    // A name: the certificate is checked against its host, `localhost`.
    for connector in [HttpConnector::<Body>::http1(), HttpConnector::http2()] {
        let client = PersistentLayer::new("web", Fixed::new(format!("localhost:{port}")))
            .layer(connector.tls(pki.client()));
        let response = timeout(LIMIT, client.clone().oneshot(get("/x")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(text(response).await, "t /x");
        assert!(client.current_connection().unwrap().is_tls());
        client.close().await;
    }
    // A socket address: checked against the IP dialed.
    let client = PersistentLayer::new("web", Fixed::new(server.address))
        .layer(HttpConnector::<Body>::http2().tls(pki.client()));
    let response = timeout(LIMIT, client.clone().oneshot(get("/y")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(response).await, "t /y");
    client.close().await;
    // ALPN offered one version each time, and the server agreed to it.
    assert_eq!(server.agreed(), ["http/1.1", "h2", "h2"]);
}

/// Waits for the events that say that the connection ended and was replaced at once, `events`
/// giving first the last event before (`connected`): bounded by `LIMIT`, far shorter than the
/// retry delay of the tests that call it.
async fn replaced_at_once(
    events: &mut tower_persistent::Events<String, HttpConnection<Body>>,
    address: &str,
) {
    let seen = timeout(LIMIT, async {
        let mut seen = Vec::new();
        while seen.len() < 5 {
            seen.push(events.next().await.unwrap().to_string());
        }
        seen
    })
    .await
    .expect("not replaced at once");
    let obtained = format!("obtained address {address:?}");
    assert_eq!(
        seen,
        [
            "connected",
            "disconnected",
            "attempting to connect",
            &obtained,
            "connected"
        ]
    );
}

// A server that ends an HTTP/1.1 connection after serving without TLS's close_notify (the
// socket's end alone, as a server that drops its TLS stream on its idle timeout does): rustls
// reports an unexpected end, which is an end of stream all the same (RFC 9110 §9.8: no message
// was in progress). The connection served and the server ended it: replaced at once, as over
// TCP, not after the retry delay (60 s here, three times the limit of the wait).
#[tokio::test]
async fn an_http1_end_without_close_notify_after_serving_is_replaced_at_once() {
    let pki = Pki::new(&["localhost"]);
    let server = TlsServer::start(pki.acceptor(&[b"http/1.1"])).await;
    let address = format!("localhost:{}", server.address.port());
    let client = PersistentLayer::new("web", Fixed::new(address.clone()))
        .retry_delay(|| Duration::from_secs(60))
        .layer(HttpConnector::<Body>::http1().tls(pki.client()));
    let response = timeout(LIMIT, client.clone().oneshot(get("/a")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(response).await, "t /a");
    // Its first event is the last one so far.
    let mut events = client.events();

    server.end_without_close_notify();
    replaced_at_once(&mut events, &address).await;
    let response = timeout(LIMIT, client.clone().oneshot(get("/b")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(response).await, "t /b");
    client.close().await;
}

/// Reads from `stream` up to the end of a request's head; false if the stream ended first.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

// A server that closes an HTTP/1.1 connection after serving, just as a request comes (on its
// idle timeout, say): its close_notify and end of stream reach the client, then the reset for
// the request it did not read, before the client's tasks run again. hyper reads the end
// (the request fails: the server never answered it), then its shutdown of the stream (TLS's
// own close_notify) fails on the reset socket. The connection served and the server ended it:
// replaced at once, as when the end comes alone and as over TCP, not after the retry delay
// (an hour here). (It once waited the delay: the shutdown's error made the end one with an
// error.)
#[tokio::test]
async fn a_server_closing_as_a_request_comes_after_serving_is_replaced_at_once() {
    let pki = Pki::new(&["localhost"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("localhost:{}", listener.local_addr().unwrap().port());
    let acceptor = pki.acceptor(&[b"http/1.1"]);
    let server = tokio::spawn(async move {
        // Requests answered, over all connections.
        let mut served = 0;
        while let Ok((socket, _)) = listener.accept().await {
            // A reset when the socket is dropped.
            #[allow(deprecated)]
            socket.set_linger(Some(Duration::ZERO)).unwrap();
            let Ok(mut stream) = acceptor.accept(socket).await else {
                continue;
            };
            while read_head(&mut stream).await {
                served += 1;
                if served == 2 {
                    // The second request: close_notify and the end of stream, then the reset,
                    // in this one step of the task.
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                    break;
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if tokio::io::AsyncWriteExt::write_all(&mut stream, answer)
                    .await
                    .is_err()
                    || tokio::io::AsyncWriteExt::flush(&mut stream).await.is_err()
                {
                    break;
                }
            }
        }
    });
    let client = PersistentLayer::new("web", Fixed::new(address.clone()))
        .retry_delay(|| Duration::from_secs(3600))
        .layer(HttpConnector::<Body>::http1().tls(pki.client()));
    let response = timeout(LIMIT, client.clone().oneshot(get("/served")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(response).await, "ok");
    // Its first event is the last one so far.
    let mut events = client.events();
    let error = timeout(LIMIT, client.clone().oneshot(get("/raced")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "connection closed before message completed"
    );
    replaced_at_once(&mut events, &address).await;
    let response = timeout(LIMIT, client.clone().oneshot(get("/next")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(response).await, "ok");
    client.close().await;
    server.abort();
}

// A server that ends each HTTP/1.1 connection without close_notify right behind a complete
// answer (no `Connection: close`): the end reaches the client with the answer, most often
// before the caller has read it (hyper reads on, and rustls reports the unexpected end while
// the response is still the caller's to read). The answer was complete (its length given), so
// it is the end of stream that it would be over TCP: each connection served and the server
// ended it, replaced at once (not after the retry delay, an hour here).
#[tokio::test]
async fn an_http1_end_without_close_notify_right_behind_an_answer_is_replaced_at_once() {
    let pki = Pki::new(&["localhost"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("localhost:{}", listener.local_addr().unwrap().port());
    let acceptor = pki.acceptor(&[b"http/1.1"]);
    let server = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((socket, _)) = listener.accept().await {
            let socket = socket.into_std().unwrap();
            let duplicate = socket.try_clone().unwrap();
            let acceptor = acceptor.clone();
            connections.spawn(async move {
                let socket = TcpStream::from_std(socket).unwrap();
                let Ok(mut stream) = acceptor.accept(socket).await else {
                    return;
                };
                if read_head(&mut stream).await {
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    tokio::io::AsyncWriteExt::write_all(&mut stream, answer)
                        .await
                        .unwrap();
                    tokio::io::AsyncWriteExt::flush(&mut stream).await.unwrap();
                    duplicate.shutdown(std::net::Shutdown::Write).unwrap();
                    // Holds the stream until the client's end.
                    let mut buf = [0u8; 64];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                }
            });
        }
    });
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let client = PersistentLayer::new("web", Fixed::new(address.clone()))
        .retry_delay(|| Duration::from_secs(3600))
        .on_event(
            move |event: tower_persistent::Event<String, HttpConnection<Body>>| {
                log.lock().unwrap().push(event.name());
                async {}
            },
        )
        .layer(HttpConnector::<Body>::http1().tls(pki.client()));
    for _ in 0..3 {
        let response = timeout(LIMIT, client.clone().oneshot(get("/")))
            .await
            .expect("the request waited for the retry delay")
            .unwrap();
        assert_eq!(text(response).await, "ok");
    }
    let round = ["attempting_to_connect", "obtained_address", "connected"];
    let expected = [
        &round[..],
        &["disconnected"],
        &round[..],
        &["disconnected"],
        &round[..],
    ]
    .concat();
    assert_eq!(events.lock().unwrap()[..expected.len()], expected[..]);
    client.close().await;
    server.abort();
}

// The same end is judged as TCP's end of stream is, where a message is in progress or the
// protocol has its own goodbye: not a close in good order (the next connection meets the retry
// delay) when an HTTP/1.1 request's body is still being sent (a server that answers early, then
// closes), nor for HTTP/2 without GOAWAY, idle after serving.
#[tokio::test]
async fn an_end_without_close_notify_is_judged_as_over_tcp() {
    use http_body_util::channel::Channel;
    use tower_persistent::Closable;

    let pki = Pki::new(&["localhost"]);
    // HTTP/1.1: the server answers `413` to the request head and ends the stream while the
    // request's body, never finished, is being sent.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = pki.acceptor(&[b"http/1.1"]);
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let socket = socket.into_std().unwrap();
        let duplicate = socket.try_clone().unwrap();
        let mut stream = acceptor
            .accept(TcpStream::from_std(socket).unwrap())
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "the client closed before its request head");
            head.extend_from_slice(&buf[..n]);
        }
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n",
        )
        .await
        .unwrap();
        tokio::io::AsyncWriteExt::flush(&mut stream).await.unwrap();
        duplicate.shutdown(std::net::Shutdown::Write).unwrap();
        // Reads on (the client's writes succeed) until the client's end.
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let conn = HttpConnector::<Channel<Bytes>>::http1()
        .tls(pki.client())
        .oneshot(format!("localhost:{port}"))
        .await
        .unwrap();
    let (mut body, request_body) = Channel::<Bytes>::new(1);
    let request = http::Request::post("/upload").body(request_body).unwrap();
    let sending = tokio::spawn(conn.clone().oneshot(request));
    body.send_data(Bytes::from_static(b"first part"))
        .await
        .unwrap();
    // The body stays unfinished until the connection has ended.
    timeout(LIMIT, conn.close_finished())
        .await
        .expect("the connection did not end");
    drop(body);
    let _answer_or_error = timeout(LIMIT, sending).await.unwrap().unwrap();
    assert!(
        !conn.closed_gracefully(),
        "http/1.1, a request body in progress"
    );
    timeout(LIMIT, server).await.unwrap().unwrap();

    // HTTP/2: served, idle, then the end without close_notify and without GOAWAY.
    let server = TlsServer::start(pki.acceptor(&[b"h2"])).await;
    let conn = HttpConnector::<Body>::http2()
        .tls(pki.client())
        .oneshot(format!("localhost:{}", server.address.port()))
        .await
        .unwrap();
    let response = timeout(LIMIT, conn.clone().oneshot(get("/a")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(response).await, "t /a");
    server.end_without_close_notify();
    timeout(LIMIT, conn.close_finished())
        .await
        .expect("the connection did not end");
    assert!(!conn.closed_gracefully(), "http/2, no GOAWAY");
}

// Over HTTP/1.1, the same end in the middle of a response's body cuts the body short: reading
// it fails with rustls's error as its cause, and the connection did not close in good order
// (the next one meets the retry delay), as after TCP's end of stream in a body.
#[tokio::test]
async fn an_end_without_close_notify_in_a_body_fails_the_body() {
    use http_body_util::BodyExt;
    use std::error::Error as _;
    use tower_persistent::Closable;

    let pki = Pki::new(&["localhost"]);
    let server = TlsServer::start(pki.acceptor(&[b"http/1.1"])).await;
    let client = PersistentLayer::new(
        "web",
        Fixed::new(format!("localhost:{}", server.address.port())),
    )
    .retry_delay(|| Duration::from_secs(60))
    .layer(HttpConnector::<Body>::http1().tls(pki.client()));
    let response = timeout(LIMIT, client.clone().oneshot(get("/stall-body")))
        .await
        .unwrap()
        .unwrap();
    let conn = client.current_connection().unwrap();
    let mut body = response.into_body();
    let first = timeout(LIMIT, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "t /stall-body");

    server.end_without_close_notify();
    let error = timeout(LIMIT, body.collect())
        .await
        .unwrap()
        .expect_err("the body was cut short");
    assert_eq!(error.to_string(), "error reading a body from connection");
    let cause = error
        .source()
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .unwrap_or_else(|| panic!("no I/O error as the cause: {error:?}"));
    assert_eq!(cause.kind(), std::io::ErrorKind::UnexpectedEof, "{cause}");
    assert_eq!(
        cause.to_string(),
        "peer closed connection without sending TLS close_notify: \
         https://docs.rs/rustls/latest/rustls/manual/_03_howto/index.html#unexpected-eof"
    );
    timeout(LIMIT, conn.close_finished()).await.unwrap();
    assert!(!conn.closed_gracefully());
    client.close().await;
}

// The requests' authority: the name with its port, the IP address dialed with its port (IPv6
// in brackets), or the configured server name with the port dialed.
#[tokio::test]
async fn the_authority_of_requests_over_tls() {
    let pki = Pki::new(&["localhost", "127.0.0.1", "::1", "orders.internal"]);
    let v4 = TlsServer::start(pki.acceptor(&[b"http/1.1"])).await;
    let v6 = TlsServer::start_on("[::1]:0", pki.acceptor(&[b"http/1.1"])).await;
    let host = |address: SocketAddr, tls: TlsConfig| async move {
        let client = PersistentLayer::new("web", Fixed::new(address))
            .layer(HttpConnector::<Body>::http1().tls(tls));
        let response = timeout(LIMIT, client.clone().oneshot(get("/host")))
            .await
            .unwrap()
            .unwrap();
        let answer = text(response).await;
        client.close().await;
        answer
    };
    assert_eq!(
        host(v4.address, pki.client()).await,
        format!("t host {}", v4.address)
    );
    assert_eq!(
        host(v6.address, pki.client()).await,
        format!("t host [::1]:{}", v6.address.port())
    );
    let named = pki.client().server_name("orders.internal").unwrap();
    assert_eq!(
        host(v6.address, named).await,
        format!("t host orders.internal:{}", v6.address.port())
    );
}

// A configured server name is the one checked; a certificate for another name, or an invalid
// name, is refused with a clear error.
#[tokio::test]
async fn a_name_from_the_configuration_and_a_wrong_name() {
    let pki = Pki::new(&["replica-3.orders.internal"]);
    let server = TlsServer::start(pki.acceptor(&[b"h2"])).await;

    // The address is an IP; the configuration names the server.
    let named = pki
        .client()
        .server_name("replica-3.orders.internal")
        .unwrap();
    let client = PersistentLayer::new("web", Fixed::new(server.address))
        .layer(HttpConnector::<Body>::http2().tls(named));
    let response = timeout(LIMIT, client.clone().oneshot(get("/x")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(response).await, "t /x");
    client.close().await;

    // Checked against the IP dialed, the certificate does not match.
    let text = failure(
        server.address,
        HttpConnector::<Body>::http2().tls(pki.client()),
    )
    .await;
    assert_eq!(
        text,
        "connect failed: tls handshake failed: with 127.0.0.1: invalid peer certificate: \
         certificate not valid for name \"127.0.0.1\"; certificate is only valid for \
         DnsName(\"replica-3.orders.internal\")"
    );

    // A name that cannot be a server name is refused when configured.
    let refused = pki.client().server_name("not a name").unwrap_err();
    assert_eq!(
        refused.to_string(),
        "invalid tls server name \"not a name\""
    );
    // The parse error is the source, not repeated in the message.
    let why = std::error::Error::source(&refused).expect("a source");
    assert_eq!(why.to_string(), "invalid dns name");
}

// Over a stream of yours, the crate cannot tell the server's name: the connector's authority is
// the name checked, and the requests' host.
#[tokio::test]
async fn over_a_stream_of_yours_the_authority_is_the_name() {
    let pki = Pki::new(&["replica-3.orders.internal"]);
    let server = TlsServer::start(pki.acceptor(&[b"http/1.1"])).await;
    let tcp = tower::service_fn(|address: SocketAddr| TcpStream::connect(address));
    let connector = HttpConnector::<Body>::http1()
        .authority("replica-3.orders.internal".parse().unwrap())
        .tls(pki.client())
        .over(tcp);
    let client = PersistentLayer::new("web", Fixed::new(server.address)).layer(connector);
    let response = timeout(LIMIT, client.clone().oneshot(get("/host")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(response).await, "t host replica-3.orders.internal");
    client.close().await;

    // Without it, there is no name to check the certificate against.
    let tcp = tower::service_fn(|address: SocketAddr| TcpStream::connect(address));
    let text = failure(
        server.address,
        HttpConnector::<Body>::http1().tls(pki.client()).over(tcp),
    )
    .await;
    assert_eq!(
        text,
        "connect failed: no server name to check the certificate against (give one with \
         TlsConfig::server_name or HttpConnector::authority): the peer is stream"
    );
}

// A certificate from an unknown issuer fails the attempt, with the platform's roots too.
#[tokio::test]
async fn an_unknown_issuer_and_the_platform_roots() {
    let pki = Pki::new(&["localhost"]);
    let server = TlsServer::start(pki.acceptor(&[b"http/1.1"])).await;
    let port = server.address.port();
    let stranger = Pki::new(&["localhost"]);
    // The platform's roots do not know the test's authority either.
    let platform = TlsConfig::platform_roots().expect("this machine has root certificates");
    for roots in [stranger.client(), platform] {
        let connector = HttpConnector::<Body>::http1().tls(roots);
        assert_eq!(
            failure(format!("localhost:{port}"), connector).await,
            "connect failed: tls handshake failed: with localhost: invalid peer certificate: \
             UnknownIssuer"
        );
    }
    assert!(server.agreed().is_empty());
}

// An expired server certificate: each attempt of a round fails with the same text (rustls says
// when it checked the certificate; that time is left out), so the round reports it once.
#[tokio::test]
async fn an_expired_certificate_fails_every_attempt_of_a_round_with_one_text() {
    let pki = Pki::expired(&["localhost"]);
    let server = TlsServer::start(pki.acceptor(&[b"http/1.1"])).await;
    let failures = Arc::new(Mutex::new(Vec::new()));
    let record = failures.clone();
    let client = PersistentLayer::new(
        "web",
        Fixed::new(format!("localhost:{}", server.address.port())),
    )
    .retry_delay(|| Duration::from_millis(400))
    .jitter(0.0)
    .on_event(
        move |event: tower_persistent::Event<String, HttpConnection<Body>>| {
            if let tower_persistent::Event::FailedToConnect(error) = &event {
                record.lock().unwrap().push(error.text());
            }
            async {}
        },
    )
    .layer(HttpConnector::<Body>::http1().tls(pki.client()));
    // Five attempts over 1.6 s: rustls's time of the check, in seconds, differs among them.
    timeout(LIMIT, async {
        loop {
            if let tower_persistent::State::Connecting { attempt, .. } =
                client.state_changed().await
                && attempt >= 5
            {
                break;
            }
        }
    })
    .await
    .expect("five attempts");
    client.close().await;
    let failures = failures.lock().unwrap().clone();
    assert_eq!(
        failures,
        [
            "connect failed: tls handshake failed: with localhost: invalid peer certificate: \
          certificate expired: not valid after 1577836800 (UNIX)"
        ]
    );
}

// A server that requires a client certificate, which the client does not have: over TLS 1.3
// the client has finished its side of the handshake when the server's alert comes, as the
// HTTP/2 connect waits for the server's preface. The attempt fails with the alert as its cause.
#[tokio::test]
async fn a_server_requiring_a_client_certificate_fails_the_http2_connect_with_its_alert() {
    let pki = Pki::new(&["localhost"]);
    let server = TlsServer::start(pki.acceptor_with(&[b"h2"], true)).await;
    let connector = HttpConnector::<Body>::http2().tls(pki.client());
    assert_eq!(
        failure(format!("localhost:{}", server.address.port()), connector).await,
        "connect failed: the connection ended during the http/2 handshake: connection error: \
         received fatal alert: CertificateRequired"
    );
}

// A server whose ALPN has none of the connector's version, or that answers in cleartext, fails
// the handshake with a clear error.
#[tokio::test]
async fn a_server_that_speaks_another_protocol_or_plain_http() {
    let pki = Pki::new(&["127.0.0.1"]);
    // HTTP/1.1 only, for a client that speaks HTTP/2 only.
    let server = TlsServer::start(pki.acceptor(&[b"http/1.1"])).await;
    let text = failure(
        server.address,
        HttpConnector::<Body>::http2().tls(pki.client()),
    )
    .await;
    assert_eq!(
        text,
        "connect failed: tls handshake failed: with 127.0.0.1: received fatal alert: \
         NoApplicationProtocol"
    );

    // A server that answers in cleartext.
    let plain = web::HttpServer::start("p").await.unwrap();
    let text = failure(
        plain.address,
        HttpConnector::<Body>::http1().tls(pki.client()),
    )
    .await;
    assert!(
        text.starts_with("connect failed: tls handshake failed: with 127.0.0.1: "),
        "{text}"
    );
}

// A server that reads the ClientHello and says nothing is cut off by the connect timeout.
#[tokio::test]
async fn a_server_that_stops_mid_handshake_is_timed_out() {
    let pki = Pki::new(&["127.0.0.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    // Reads the ClientHello, then says nothing, holding the socket.
    let (hello_tx, hello_rx) = tokio::sync::oneshot::channel::<usize>();
    let server = tokio::spawn(async move {
        let (mut socket, _): (TcpStream, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 4096];
        let n = socket.read(&mut hello).await.unwrap();
        let _ = hello_tx.send(n);
        std::future::pending::<()>().await;
    });
    let connector = HttpConnector::<Body>::http1()
        .connect_timeout(Duration::from_millis(300))
        .tls(pki.client());
    assert_eq!(
        failure(address, connector).await,
        "connect failed: connect timed out after 300ms"
    );
    // The handshake had begun: the server had the ClientHello (a TLS handshake record).
    assert!(hello_rx.await.unwrap() > 5);
    server.abort();
}

/// A TLS stream, as tonic's server takes its connections.
struct Tls(TlsStream<TcpStream>);

impl tonic::transport::server::Connected for Tls {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for Tls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

// A tonic health check runs over a persistent HTTP/2 connection with TLS.
#[tokio::test]
async fn a_tonic_health_check_over_tls() {
    let pki = Pki::new(&["health.orders.internal"]);
    let acceptor = pki.acceptor(&[b"h2"]);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("orders", ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = async_stream(listener, acceptor);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );

    let persistent = PersistentLayer::new("health", Fixed::new(address)).layer(
        HttpConnector::<tonic::body::Body>::http2()
            .tls(pki.client().server_name("health.orders.internal").unwrap()),
    );
    let mut client = HealthClient::new(GrpcChannel::new(persistent.clone()));
    for _ in 0..3 {
        let response = timeout(
            LIMIT,
            client.check(HealthCheckRequest {
                service: "orders".into(),
            }),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(response.into_inner().status, ServingStatus::Serving as i32);
    }
    let connection = persistent.current_connection().unwrap();
    assert!(connection.is_tls() && connection.is_http2());
    persistent.close().await;
    server.abort();
}

/// The TLS connections of `listener`, as a stream for tonic's server; a failed handshake is
/// skipped.
fn async_stream(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> impl futures_util::Stream<Item = std::io::Result<Tls>> {
    futures_util::stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
        loop {
            let (socket, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => return Some((Err(error), (listener, acceptor))),
            };
            if let Ok(stream) = acceptor.accept(socket).await {
                return Some((Ok(Tls(stream)), (listener, acceptor)));
            }
        }
    })
}
