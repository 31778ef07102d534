//! The CPU time of this process, for benches that compare clients by the CPU they cost.

use std::time::Duration;

/// The CPU time used so far by every thread of this process, the server's included (from
/// `/proc/self/task/*/schedstat`, in nanoseconds).
pub fn cpu_time() -> Duration {
    let mut ns = 0;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}
