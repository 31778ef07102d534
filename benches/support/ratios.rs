//! Reads criterion's estimates of this run and prints each run's mean with its ratio to a
//! baseline run of the same group.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

/// When this run began (see [`start`]).
static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// Marks the beginning of this run, first thing in `main`: estimates that criterion wrote
/// before it (of a benchmark that this run's filter left out, written by an earlier run) are
/// not this run's, and [`mean`] gives none for them.
pub fn start() {
    STARTED.get_or_init(SystemTime::now);
}

/// The mean, in nanoseconds, criterion estimated for `run` of `group` in this run; `None` if
/// this run did not measure it (or [`start`] was not called).
pub fn mean(group: &str, run: &str) -> Option<f64> {
    let started = *STARTED.get()?;
    // Criterion writes under the target directory, which holds this binary in
    // `<target>/<profile>/deps/`.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.parent()?.to_path_buf())
        })?;
    let file = target
        .join("criterion")
        .join(group)
        .join(run)
        .join("new/estimates.json");
    if std::fs::metadata(&file).ok()?.modified().ok()? < started {
        return None;
    }
    let json = std::fs::read_to_string(file).ok()?;
    let after = &json[json.find("\"mean\"")?..];
    let after = &after[after.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = after.find([',', '}'])?;
    after[..end].trim().parse().ok()
}

#[allow(dead_code)]
/// Prints a table of `(run, baseline)` pairs: the run's mean (in `unit`s of `scale` ns) and its
/// ratio to the baseline's mean.
pub fn print(group: &str, rows: &[(&str, &str)], unit: &str, scale: f64) {
    println!(
        "\n{:<34} {:>12} {:>8}",
        "run",
        format!("mean ({unit})"),
        "ratio"
    );
    for (run, base) in rows {
        if let (Some(m), Some(b)) = (mean(group, run), mean(group, base)) {
            println!("{run:<34} {:>12.2} {:>8.3}", m / scale, m / b);
        }
    }
}

/// Prints each of `runs` (those measured in this run) with its mean in ns, its difference to
/// `base` in ns, and its ratio to `other`.
#[allow(dead_code)]
pub fn print_against(group: &str, runs: &[&str], base: &str, other: &str) {
    println!(
        "{:<32} {:>10} {:>12} {:>12}",
        "run",
        "mean (ns)",
        format!("- {base}"),
        format!("/ {other}")
    );
    let (b, o) = (mean(group, base), mean(group, other));
    for run in runs {
        if let Some(m) = mean(group, run) {
            println!(
                "{run:<32} {m:>10.2} {:>12} {:>12}",
                b.map_or("-".into(), |b| format!("{:+.2}", m - b)),
                o.map_or("-".into(), |o| format!("{:.3}", m / o)),
            );
        }
    }
}
