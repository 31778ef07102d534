//! Ports of 127.0.0.1 for servers started as child processes (etcd, nginx), which must be told
//! their port before they listen.
//!
//! A port found free by binding port 0 and letting it go comes from the kernel's ephemeral
//! range, where anything may take it again before the child binds it: another test's listener
//! bound to port 0, or the source port of an outgoing connection (an etcd member connecting to
//! its peers while the others start). The ports given here lie below that range, where the
//! kernel never hands out a port by itself, and no port is given twice in one process.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU32, Ordering};

/// How many ports below the ephemeral range are used.
const SPAN: u32 = 8_000;

/// The next candidate, as an offset into the span; seeded once per process.
static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// The lowest port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A port of 127.0.0.1 that nothing listens on, below the ephemeral range, not given before by
/// this process.
///
/// # Panics
///
/// If every port of the span is taken.
pub fn listen_port() -> u16 {
    let end = ephemeral_start().clamp(1_024 + SPAN, 65_536);
    let start = end - SPAN;
    // Processes started together begin at different places of the span.
    let seed = (std::process::id().wrapping_mul(7_919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or(0))
        % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = (start + offset) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port of 127.0.0.1 in {start}..{end}");
}
