//! The ready-made address lookups: fixed, round robin, DNS, and the service catalog.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use support::line::{LineConn, LineServer, closed_port};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_persistent::discovery::{Catalog, Dns, Fixed, RoundRobin};
use tower_persistent::{Event, PersistentLayer};

async fn answers<S>(lookup: &S, n: usize) -> Vec<S::Response>
where
    S: Service<()> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(lookup.clone().oneshot(()).await.unwrap());
    }
    out
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// A fixed lookup always answers its address.
#[tokio::test]
async fn fixed_answers_its_address() {
    let fixed = Fixed::new(addr("127.0.0.1:1"));
    assert_eq!(answers(&fixed, 3).await, [addr("127.0.0.1:1"); 3]);
}

// A round robin answers its addresses in turn, clones sharing the turn; an empty list errs.
#[tokio::test]
async fn round_robin_rotates() {
    let list = RoundRobin::new(["a", "b", "c"]);
    assert_eq!(answers(&list, 7).await, ["a", "b", "c", "a", "b", "c", "a"]);
    let empty = RoundRobin::<&str>::new([]);
    let error = empty.oneshot(()).await.unwrap_err();
    assert_eq!(error.to_string(), "the address list is empty");
}

// DNS resolves again at every call and rotates among the (sorted) results. Whitespace around
// the name (a line's end, read from a file) is no part of it.
#[tokio::test]
async fn dns_resolves_and_rotates() {
    let numeric = Dns::new("127.0.0.1:8080");
    assert_eq!(answers(&numeric, 2).await, [addr("127.0.0.1:8080"); 2]);
    let line = Dns::new(" 127.0.0.1:8080\n");
    assert_eq!(answers(&line, 1).await, [addr("127.0.0.1:8080")]);

    let expected: BTreeSet<SocketAddr> = tokio::net::lookup_host("localhost:9090")
        .await
        .unwrap()
        .collect();
    let n = expected.len();
    let localhost = Dns::new("localhost:9090");
    let got = answers(&localhost, 2 * n).await;
    let sorted: Vec<SocketAddr> = expected.iter().copied().collect();
    assert_eq!(got, [sorted.clone(), sorted].concat());
    assert!(got.iter().all(|a| a.ip().is_loopback() && a.port() == 9090));

    let error = Dns::new("no port here").oneshot(()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot resolve no port here (a name and a port: host:port)"
    );
    assert!(std::error::Error::source(&error).is_some());
    // A name without a port says so.
    let error = Dns::new("localhost").oneshot(()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot resolve localhost (a name and a port: host:port)"
    );
}

// An IPv6 address without its brackets names no port for sure (`::1:8080` is an IPv6 address
// too): refused, as the HTTP connector refuses it; with its brackets, resolved.
#[tokio::test]
async fn dns_refuses_an_ipv6_address_without_brackets() {
    for name in ["::1:8080", "fe80::1:443", " ::1:8080\n"] {
        let error = Dns::new(name).oneshot(()).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "cannot resolve {} (an IPv6 address takes brackets before its port: [host]:port)",
                name.trim()
            )
        );
    }
    let bracketed = Dns::new("[::1]:8080").oneshot(()).await.unwrap();
    assert_eq!(
        bracketed,
        "[::1]:8080".parse::<std::net::SocketAddr>().unwrap()
    );
}

// Port 0 is no port to connect to: the lookup fails, saying so, rather than each connect.
#[tokio::test]
async fn dns_refuses_port_zero() {
    for name in ["127.0.0.1:0", "localhost:0", "[::1]:0"] {
        let error = Dns::new(name).oneshot(()).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("cannot connect to port 0 ({name})")
        );
    }
}

// A value of any size gives an error of bounded size: the first 260 bytes and the length.
#[tokio::test]
async fn dns_errors_show_a_long_name_cut() {
    // (Byte 260 falls inside a two-byte character: the cut is before it.)
    let long = format!("a{}", "é".repeat(50_000));
    let error = Dns::new(long).oneshot(()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "cannot resolve a{}... (100001 bytes) (a name and a port: host:port)",
            "é".repeat(129)
        )
    );
    // (No port: refused before any lookup.)
    let error = Dns::new("a".repeat(300)).oneshot(()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "cannot resolve {}... (300 bytes) (a name and a port: host:port)",
            "a".repeat(260)
        )
    );
}

// A name a lookup could never find, or that is not one file name, is refused before anything
// is written; a write that fails leaves no temporary file behind.
#[tokio::test]
async fn catalog_refuses_names_it_could_not_find() {
    let dir = support::temp::TempDir::new("catalog-names").unwrap();
    let too_long = "x".repeat(251);
    for name in [
        "",
        ".",
        "..",
        ".hidden",
        "a/b",
        "../escape",
        "/tmp/abs",
        "nul\0byte",
        &too_long,
    ] {
        let error = Catalog::publish(dir.path(), name, addr("127.0.0.1:1"))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{name:?}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot publish a catalog entry named {name:?}: ")),
            "{error}"
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // The longest name allowed is published, and found.
    let longest = Catalog::publish(dir.path(), &"x".repeat(250), addr("127.0.0.1:1"))
        .await
        .unwrap();
    assert_eq!(
        Catalog::new(dir.path()).oneshot(()).await.unwrap(),
        addr("127.0.0.1:1")
    );
    longest.withdraw().await.unwrap();

    // A directory where the entry would go: the rename fails, and the temporary file goes.
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    std::fs::write(dir.path().join("taken").join("inside"), "x").unwrap();
    Catalog::publish(dir.path(), "taken", addr("127.0.0.1:1"))
        .await
        .unwrap_err();
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["taken"]);
}

// The catalog answers published replicas in name order and in turn; entries that are hidden or
// not addresses are passed over; withdrawn and dropped entries are gone, abandoned ones stay.
#[tokio::test]
async fn catalog_publishes_rotates_and_withdraws() {
    let dir = support::temp::TempDir::new("catalog").unwrap();
    let catalog = Catalog::new(dir.path());
    let error = catalog.clone().oneshot(()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("no replica published in {}", dir.path().display())
    );

    let b = Catalog::publish(dir.path(), "b", addr("127.0.0.1:2"))
        .await
        .unwrap();
    let a = Catalog::publish(dir.path(), "a", addr("127.0.0.1:1"))
        .await
        .unwrap();
    let c = Catalog::publish(dir.path(), "c", addr("127.0.0.1:3"))
        .await
        .unwrap();
    std::fs::write(dir.path().join(".d.tmp"), "127.0.0.1:4").unwrap();
    std::fs::write(dir.path().join("junk"), "not an address").unwrap();
    let ports: Vec<u16> = answers(&catalog, 4)
        .await
        .iter()
        .map(|a| a.port())
        .collect();
    assert_eq!(ports, [1, 2, 3, 1]);

    b.withdraw().await.unwrap();
    drop(c);
    let ports: Vec<u16> = answers(&catalog, 2)
        .await
        .iter()
        .map(|a| a.port())
        .collect();
    assert_eq!(ports, [1, 1]);

    let path = a.path().to_owned();
    a.abandon();
    assert!(path.exists(), "an abandoned entry stays, stale");

    let missing = Catalog::new(dir.path().join("missing"));
    let error = missing.oneshot(()).await.unwrap_err();
    assert!(
        error.to_string().starts_with("cannot read the catalog "),
        "{error}"
    );
}

// The turn goes on after the replica answered last, by name, when replicas are published or
// withdrawn between lookups: none is answered twice in a row, none skipped.
#[tokio::test]
async fn catalog_turn_goes_on_after_the_last_answered_as_the_list_changes() {
    let dir = support::temp::TempDir::new("catalog-turn").unwrap();
    let catalog = Catalog::new(dir.path());
    let port = async || catalog.clone().oneshot(()).await.unwrap().port();
    let a = Catalog::publish(dir.path(), "a", addr("127.0.0.1:1"))
        .await
        .unwrap();
    let _b = Catalog::publish(dir.path(), "b", addr("127.0.0.1:2"))
        .await
        .unwrap();
    let _c = Catalog::publish(dir.path(), "c", addr("127.0.0.1:3"))
        .await
        .unwrap();
    assert_eq!([port().await, port().await], [1, 2]);
    // Withdrawn before its turn came again: `c` follows `b`, then `b` again.
    a.withdraw().await.unwrap();
    assert_eq!([port().await, port().await], [3, 2]);
    // Published before `b`: after `b` comes `c`, then the new one, first by name.
    let _zero = Catalog::publish(dir.path(), "0", addr("127.0.0.1:9"))
        .await
        .unwrap();
    assert_eq!(
        [port().await, port().await, port().await, port().await],
        [3, 9, 2, 3]
    );
}

// Entries whose names are not UTF-8, and would read the same with their bytes replaced, are two
// entries, each answered in its turn.
#[cfg(unix)]
#[tokio::test]
async fn catalog_names_that_are_not_utf8_stay_apart() {
    use std::os::unix::ffi::OsStrExt;
    let dir = support::temp::TempDir::new("catalog-bytes").unwrap();
    for (name, port) in [(&b"r\xff"[..], 1), (&b"r\xfe"[..], 2), (&b"s"[..], 3)] {
        let path = dir.path().join(std::ffi::OsStr::from_bytes(name));
        std::fs::write(path, format!("127.0.0.1:{port}")).unwrap();
    }
    let catalog = Catalog::new(dir.path());
    let ports: Vec<u16> = answers(&catalog, 6)
        .await
        .iter()
        .map(|a| a.port())
        .collect();
    assert_eq!(ports, [2, 1, 3, 2, 1, 3]);
}

// Catalog entries that are not regular files (a FIFO, whose read would block, a link to a
// device that never ends, a directory), or that are longer than an entry can be, are passed
// over unread: the lookup answers the one replica at once.
#[cfg(unix)]
#[tokio::test]
async fn catalog_passes_over_what_is_not_an_entry() {
    let dir = support::temp::TempDir::new("catalog-odd").unwrap();
    let fifo = dir.path().join("a-fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("b-zero")).unwrap();
    std::fs::create_dir(dir.path().join("c-dir")).unwrap();
    let long = format!("127.0.0.1:9{}", " ".repeat(2000));
    std::fs::write(dir.path().join("d-long"), long).unwrap();
    let _e = Catalog::publish(dir.path(), "e", addr("127.0.0.1:5"))
        .await
        .unwrap();
    let catalog = Catalog::new(dir.path());
    let ports: Vec<u16> = tokio::time::timeout(Duration::from_secs(5), answers(&catalog, 3))
        .await
        .expect("the lookup hung")
        .iter()
        .map(|a| a.port())
        .collect();
    assert_eq!(ports, [5, 5, 5]);
}

// A catalog entry that cannot be read (here a link to itself, which no user may follow; as a
// file of another user's without read access for others is) is passed over; when no replica
// could be read, the lookup's error names it, with why, instead of saying none is published.
#[cfg(unix)]
#[tokio::test]
async fn catalog_entries_that_cannot_be_read_are_named_when_nothing_could_be() {
    let dir = support::temp::TempDir::new("catalog-unread").unwrap();
    std::os::unix::fs::symlink("a-loop", dir.path().join("a-loop")).unwrap();
    let catalog = Catalog::new(dir.path());
    let error = catalog.clone().oneshot(()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "no replica in the catalog {} could be read (the entry a-loop could not)",
            dir.path().display()
        )
    );
    let source = std::error::Error::source(&error).expect("why it could not be read");
    let io = source.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(io.raw_os_error(), Some(libc_eloop()));
    // With a replica that can be read, it is the answer, every time.
    let _b = Catalog::publish(dir.path(), "b", addr("127.0.0.1:2"))
        .await
        .unwrap();
    let ports: Vec<u16> = answers(&catalog, 2)
        .await
        .iter()
        .map(|a| a.port())
        .collect();
    assert_eq!(ports, [2, 2]);
}

/// `ELOOP`, the error of a link that leads back to itself (40 on Linux, 62 on the BSDs).
#[cfg(unix)]
fn libc_eloop() -> i32 {
    if cfg!(target_os = "linux") { 40 } else { 62 }
}

// A catalog entry swapped between a regular file and a FIFO while lookups run (each renamed into
// place, as a publisher does): no lookup ever blocks in the open of the FIFO, which the check of
// the path found a regular file a moment before. (Before, one blocked within a second or two,
// and its thread of the blocking pool for good.)
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_entry_swapped_for_a_fifo_never_blocks_a_lookup() {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = support::temp::TempDir::new("catalog-swap").unwrap();
    // Names that begin with a dot are not entries.
    let stage = dir.path().join(".stage");
    std::fs::create_dir(&stage).unwrap();
    let fifos: Vec<_> = (0..8).map(|i| stage.join(format!("fifo-{i}"))).collect();
    let made = std::process::Command::new("mkfifo")
        .args(&fifos)
        .status()
        .unwrap();
    assert!(made.success());
    let _good = Catalog::publish(dir.path(), "good", addr("127.0.0.1:7"))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, fifos) = (stop.clone(), fifos.clone());
        let (stage, swap) = (stage.clone(), dir.path().join("swap"));
        std::thread::spawn(move || {
            // Bounded, as the lookups below are.
            for i in 0..2_000_000usize {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let next = stage.join("next");
                if i % 2 == 0 {
                    std::fs::write(&next, "127.0.0.1:8").unwrap();
                } else {
                    std::fs::hard_link(&fifos[i / 2 % fifos.len()], &next).unwrap();
                }
                std::fs::rename(&next, &swap).unwrap();
            }
        })
    };
    let catalog = Catalog::new(dir.path());
    let mut blocked = 0;
    let started = std::time::Instant::now();
    for _ in 0..20_000 {
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
        let lookup = catalog.clone().oneshot(());
        if tokio::time::timeout(Duration::from_secs(2), lookup)
            .await
            .is_err()
        {
            blocked += 1;
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    swapper.join().unwrap();
    // A reader blocked in a FIFO's open is let go by a writer's open (which, nonblocking, fails
    // at once where no reader waits).
    for fifo in &fifos {
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo);
    }
    assert_eq!(blocked, 0, "a lookup blocked in the open of a FIFO");
}

// With a stale entry in the catalog, the persistent connection fails on it once and moves on to
// a live replica.
#[tokio::test]
async fn persistent_connection_moves_past_a_stale_catalog_entry() {
    let dir = support::temp::TempDir::new("catalog").unwrap();
    let stale = closed_port().await;
    Catalog::publish(dir.path(), "a-stale", stale)
        .await
        .unwrap()
        .abandon();
    let live = LineServer::start("live").await.unwrap();
    let _entry = Catalog::publish(dir.path(), "b-live", live.address)
        .await
        .unwrap();

    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = log.clone();
    let layer = PersistentLayer::new("line", Catalog::new(dir.path()))
        .retry_delay(|| Duration::from_millis(20))
        .on_event(move |event: Event<SocketAddr, LineConn>| {
            recorder.lock().unwrap().push(match &event {
                Event::ObtainedAddress(a) => format!("ObtainedAddress({})", a.port()),
                Event::FailedToConnect(e) => format!("FailedToConnect({})", e.is_connect()),
                other => format!("{other:?}"),
            });
            async {}
        });
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(LineConn::connect));
    let answer = tokio::time::timeout(Duration::from_secs(20), client.clone().oneshot("hi".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, "live: hi");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "AttemptingToConnect".to_owned(),
            format!("ObtainedAddress({})", stale.port()),
            "FailedToConnect(true)".to_owned(),
            format!("ObtainedAddress({})", live.address.port()),
            "Connected(..)".to_owned(),
        ]
    );
    client.close().await;
    live.stop().await;
}

// Addresses pushed through a watch channel: the first connects; a new one is taken at the next
// attempt (the live connection is left alone); withdrawn, attempts fail with a clear error.
#[tokio::test(start_paused = true)]
async fn watch_follows_the_addresses_pushed() {
    use support::{Connect, Recorder, Script, Step, ms, timeline, until};
    use tokio::time::Instant;
    use tower::Layer;
    use tower_persistent::discovery::Watch;

    let start = Instant::now();
    let recorder = Recorder::new(start);
    let (publish, lookup) = Watch::channel(Some("a"));
    let connect = Connect::new(Script::new(start, [], Step::Ok("")));
    let p = PersistentLayer::new("watch", lookup)
        .retry_delay(|| Duration::from_secs(1))
        .jitter(0.0)
        .on_event(recorder.handler())
        .layer(connect.clone());
    assert_eq!(p.connected().await.unwrap().get_ref().address, "a");

    until(start, 5000).await;
    publish.send_replace(Some("b"));
    until(start, 6000).await;
    assert_eq!(p.current_connection().unwrap().get_ref().address, "a");
    publish.send_replace(None);
    tower_persistent::Closable::close(&connect.conn(1)).await;
    until(start, 7500).await;
    publish.send_replace(Some("b"));
    assert_eq!(p.connected().await.unwrap().get_ref().address, "b");
    assert_eq!(ms(start), 8000);
    assert_eq!(
        recorder.log(),
        timeline(&[
            (0, "AttemptingToConnect"),
            (0, "ObtainedAddress(\"a\")"),
            (0, "Connected(1)"),
            (6000, "Disconnected"),
            (6000, "AttemptingToConnect"),
            (
                6000,
                "FailedToConnect(address lookup failed: no address published)"
            ),
            (8000, "ObtainedAddress(\"b\")"),
            (8000, "Connected(2)"),
        ])
    );
    p.close().await;
}
