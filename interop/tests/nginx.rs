//! Against a server no one here wrote: nginx (Debian's package) on 127.0.0.1. Requests flow,
//! nginx is stopped and started again on another port published through discovery, and requests
//! resume.
//!
//! `.ci/run` installs nginx. Without it the test fails in CI (`CI` set) and is reported as
//! ignored elsewhere (`build.rs` tells).
#[path = "../../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use support::ports::{listen_port, start_on_free_ports};
use support::web::{get, text};
use tokio::process::{Child, Command};
use tokio::time::timeout;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_persistent::transport::{HttpConnection, HttpConnector};
use tower_persistent::{Closable, Event, Persistent, PersistentLayer};

const LIMIT: Duration = Duration::from_secs(20);

/// The nginx binary, if installed.
fn nginx_binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()]);
    candidates
        .map(|dir| dir.join("nginx"))
        .find(|path| path.is_file())
}

/// An nginx in the foreground, with its own configuration and prefix in a temporary directory.
struct Nginx {
    child: Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx on a port of its own; again on a new port (at most `ports::STARTS` times in all)
    /// if another process took the port first.
    async fn start(binary: &Path, name: &str) -> Nginx {
        start_on_free_ports(|| async {
            Nginx::start_once(binary, name).await.map_err(|log| {
                let taken = log.contains("Address already in use");
                (log, taken)
            })
        })
        .await
        .unwrap_or_else(|log| panic!("{log}"))
    }

    /// One start: nginx, or what went wrong with its error log.
    async fn start_once(binary: &Path, name: &str) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().unwrap();
        let address = SocketAddr::from(([127, 0, 0, 1], listen_port()));
        let prefix = dir.path().display();
        let config = format!(
            r#"daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {address};
        location / {{ return 200 "{name} $uri"; }}
    }}
}}
"#
        );
        let config_path = dir.path().join("nginx.conf");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx starts");
        let error_log =
            || std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        // Ready once it has written its pid file, which it does after binding its port (so
        // that another process's listener on the port is not taken for nginx), and accepts
        // connections. Bounded: 200 tries, 25 ms apart; an nginx that exits (its port taken,
        // say, after about 2 s of its own retries) is a failure at once.
        for _ in 0..200 {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!(
                    "nginx exited ({status}) instead of listening on {address}: {}",
                    error_log()
                ));
            }
            if dir.path().join("nginx.pid").is_file()
                && tokio::net::TcpStream::connect(address).await.is_ok()
            {
                return Ok(Nginx {
                    child,
                    address,
                    _dir: dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!(
            "nginx did not listen on {address}: {}",
            error_log()
        ))
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

type Conn = HttpConnection<Empty<Bytes>>;

async fn ask(client: &Persistent<SocketAddr, Conn>, path: &str) -> String {
    let response = timeout(LIMIT, client.clone().oneshot(get(path)))
        .await
        .expect("request timed out")
        .expect("request failed");
    assert_eq!(response.status(), 200);
    text(response).await
}

// Requests flow through nginx; nginx stops and starts again on another port published through
// discovery; requests resume there.
#[tokio::test]
#[cfg_attr(
    not(nginx),
    ignore = "nginx is not installed (apt-get install nginx-light; .ci/run installs it)"
)]
async fn requests_resume_after_nginx_moves() {
    let Some(binary) = nginx_binary() else {
        panic!("nginx is not installed: .ci/run installs it (apt-get install nginx-light)");
    };
    let first = Nginx::start(&binary, "first").await;
    let published = Arc::new(Mutex::new(first.address));
    let events = Arc::new(Mutex::new(Vec::new()));

    let discovery = published.clone();
    let log = events.clone();
    let layer = PersistentLayer::new(
        "nginx",
        service_fn(move |()| {
            let address = *discovery.lock().unwrap();
            async move { Ok::<_, std::io::Error>(address) }
        }),
    )
    .retry_delay(|| Duration::from_millis(50))
    .on_event(move |event: Event<SocketAddr, Conn>| {
        log.lock().unwrap().push(event.name());
        async {}
    });
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(HttpConnector::http1());

    for i in 0..5 {
        assert_eq!(
            ask(&client, &format!("/a{i}")).await,
            format!("first /a{i}")
        );
    }
    let conn = client.current_connection().unwrap();

    let second = Nginx::start(&binary, "second").await;
    *published.lock().unwrap() = second.address;
    first.stop().await;
    timeout(LIMIT, conn.close_finished())
        .await
        .expect("nginx's exit unnoticed");

    for i in 0..5 {
        assert_eq!(
            ask(&client, &format!("/b{i}")).await,
            format!("second /b{i}")
        );
    }
    assert_eq!(
        client.current_connection().unwrap().peer_addr(),
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
    client.close().await;
    second.stop().await;
}
