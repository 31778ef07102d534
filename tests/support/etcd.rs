//! A local etcd cluster for the tests, the example and the bench: members started as child
//! processes of Debian's `etcd` on 127.0.0.1, each with its data in a temporary directory,
//! killed when the cluster is dropped.
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::ports::{listen_port, start_on_free_ports};
use super::temp::TempDir;

/// How to get etcd, for messages.
pub const INSTALL: &str =
    "etcd is not installed: apt-get install etcd-server (Debian's package; .ci/run installs it)";

/// The etcd binary, if installed.
pub fn etcd_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/bin".into(), "/usr/local/bin".into()])
        .map(|dir: PathBuf| dir.join("etcd"))
        .find(|path| path.is_file())
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A cluster of etcd members on 127.0.0.1.
pub struct Cluster {
    binary: PathBuf,
    dir: TempDir,
    members: Vec<Member>,
    initial: String,
}

impl Cluster {
    /// Starts `size` members and waits (about 30 s at most for each) until each reports itself
    /// healthy.
    ///
    /// The ports are chosen below the kernel's ephemeral range (see `ports`). Should a member
    /// still find its port taken, the cluster is started again on new ports, at most
    /// `ports::STARTS` times in all; any other failure is returned at once.
    pub async fn start(binary: &Path, size: usize) -> io::Result<Cluster> {
        start_on_free_ports(|| Cluster::start_once(binary, size)).await
    }

    /// One start; on failure, the error and whether a member found its port taken (any
    /// member's log says so: the one waited for may only have lost its quorum).
    async fn start_once(binary: &Path, size: usize) -> Result<Cluster, (io::Error, bool)> {
        let mut cluster = Cluster::spawn_all(binary, size).map_err(|e| (e, false))?;
        for i in 0..size {
            if let Err(error) = cluster.wait_healthy(i).await {
                let port_taken = (0..size).any(|m| {
                    cluster
                        .log(m)
                        .to_ascii_lowercase()
                        .contains("address already in use")
                });
                return Err((error, port_taken));
            }
        }
        Ok(cluster)
    }

    /// Everything `member`'s etcd wrote so far.
    fn log(&self, member: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("{}.log", self.members[member].name)),
        )
        .unwrap_or_default()
    }

    fn spawn_all(binary: &Path, size: usize) -> io::Result<Cluster> {
        let dir = TempDir::new("etcd")?;
        let mut members = Vec::new();
        for i in 0..size {
            members.push(Member {
                name: format!("m{i}"),
                client: listen_port(),
                peer: listen_port(),
                child: None,
            });
        }
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            binary: binary.to_owned(),
            dir,
            members,
            initial,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> io::Result<()> {
        let member = &self.members[i];
        let data = self.dir.path().join(&member.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", member.name)))?;
        let client = format!("http://127.0.0.1:{}", member.client);
        let peer = format!("http://127.0.0.1:{}", member.peer);
        let child = Command::new(&self.binary)
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", "tower-persistent"])
            .args(["--initial-cluster-state", "new"])
            // Quick elections, so that losing a member costs little time.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// The client endpoints of the members, `127.0.0.1:port`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect()
    }

    /// Waits (at most 30 s, and one health check of 2 s at most beyond) until member `i`
    /// answers `/health` with `"health":"true"`; fails at once if the member exits.
    pub async fn wait_healthy(&mut self, i: usize) -> io::Result<()> {
        let port = self.members[i].client;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut exited = None;
        while tokio::time::Instant::now() < deadline {
            if healthy(port).await {
                return Ok(());
            }
            if let Some(child) = self.members[i].child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                exited = Some(status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = self.log(i);
        let what = match exited {
            Some(status) => format!("exited ({status})"),
            None => "did not become healthy".to_owned(),
        };
        Err(io::Error::other(format!(
            "etcd member {} {what}; its log ends with:\n{}",
            self.members[i].name,
            log.lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )))
    }

    /// Kills member `i` at once (SIGKILL), as a machine that dies.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill().await;
        }
    }

    /// Kills every member.
    pub async fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i).await;
        }
    }

    /// Starts member `i` again on its data and ports.
    pub fn restart(&mut self, i: usize) -> io::Result<()> {
        self.spawn(i)
    }
}

/// Whether the member at `port` says it is healthy.
impl Cluster {
    /// The value of the Prometheus counter or gauge `name` that member `i` reports on its
    /// client port's `/metrics`; `None` if it does not answer within 2 s or has no such line.
    pub async fn metric(&self, i: usize, name: &str) -> Option<f64> {
        let port = self.members[i].client;
        let ask = async {
            let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
            socket
                .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .await?;
            let mut answer = String::new();
            socket.read_to_string(&mut answer).await?;
            io::Result::Ok(answer)
        };
        let answer = tokio::time::timeout(Duration::from_secs(2), ask)
            .await
            .ok()?
            .ok()?;
        answer.lines().find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.trim().parse().ok())?
        })
    }
}

async fn healthy(port: u16) -> bool {
    let ask = async {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
        socket
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await?;
        io::Result::Ok(answer.contains("\"health\":\"true\""))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), ask).await,
        Ok(Ok(true))
    )
}
