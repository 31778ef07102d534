//! Ports of 127.0.0.1 for servers started as child processes (etcd, nginx), which must be told
//! their port before they listen.
//!
//! A port found free by binding port 0 and letting it go comes from the kernel's ephemeral
//! range, where anything may take it again before the child binds it: another test's listener
//! bound to port 0, or the source port of an outgoing connection (an etcd member connecting to
//! its peers while the others start). The ports given here lie below that range, where the
//! kernel never hands out a port by itself (or above it, where there is no room below), and no
//! port is given twice in one process. Another process may still take one (two test runs at
//! once): the servers that start children start them again on a new port when theirs is
//! taken.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU32, Ordering};

/// How many times a server started as a child process is started, on new ports each time,
/// when it finds its port taken.
pub const STARTS: usize = 3;

/// Runs `start` until it succeeds, fails for another reason than a port taken (it returns
/// `Err((error, false))`), or has run [`STARTS`] times; the last error is returned.
pub async fn start_on_free_ports<T, E, F>(mut start: impl FnMut() -> F) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, (E, bool)>>,
{
    let mut tries = 1;
    loop {
        match start().await {
            Ok(started) => return Ok(started),
            Err((_, true)) if tries < STARTS => tries += 1,
            Err((error, _)) => return Err(error),
        }
    }
}

/// How many ports are used, at most.
const SPAN: u32 = 8_000;

/// The lowest port used: below it lie the well-known ports.
const LOWEST: u32 = 1_024;

/// The next candidate, as an offset into the span; seeded once per process.
static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// The kernel's ephemeral range, first and last port (Linux's default when it cannot be read).
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| {
            let mut bounds = range.split_whitespace().map(|b| b.parse::<u32>().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .filter(|(first, last)| first <= last && *last <= 65_535)
        .unwrap_or((32_768, 60_999))
}

/// The ports used: `SPAN` of them (or fewer if there is less room) below the ephemeral range,
/// or else above it; worked out once per process.
///
/// # Panics
///
/// If fewer than 100 ports lie outside the ephemeral range on either side.
fn span() -> (u32, u32) {
    static SPAN_USED: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *SPAN_USED.get_or_init(find_span)
}

fn find_span() -> (u32, u32) {
    let (first, last) = ephemeral_range();
    let below = first.saturating_sub(LOWEST);
    let above = 65_535 - last;
    let range = if below >= above {
        (first - below.min(SPAN), first)
    } else {
        (last + 1, last + 1 + above.min(SPAN))
    };
    assert!(
        range.1 - range.0 >= 100,
        "no room for test ports outside the ephemeral range {first}-{last} \
         (/proc/sys/net/ipv4/ip_local_port_range)"
    );
    range
}

/// A port of 127.0.0.1 that nothing listens on, outside the ephemeral range, not given before
/// by this process.
///
/// # Panics
///
/// If every port of the span is taken, or there is no span (see `span`).
pub fn listen_port() -> u16 {
    let (start, end) = span();
    let size = end - start;
    // Processes started together begin at different places of the span.
    let seed = (std::process::id().wrapping_mul(7_919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or(0))
        % size;
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..size {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % size;
        let port = u16::try_from(start + offset).expect("the span lies within the ports");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port of 127.0.0.1 in {start}..{end}");
}
