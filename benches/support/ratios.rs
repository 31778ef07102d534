//! Reads criterion's estimates of this run and prints each run's mean with its ratio to a
//! baseline run of the same group.

use std::path::PathBuf;

/// The mean, in nanoseconds, criterion estimated for `run` of `group` in this run.
pub fn mean(group: &str, run: &str) -> Option<f64> {
    // Criterion writes under the target directory, which holds this binary in
    // `<target>/<profile>/deps/`.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.parent()?.to_path_buf())
        })?;
    let dir = target.join("criterion").join(group);
    let json = std::fs::read_to_string(dir.join(run).join("new/estimates.json")).ok()?;
    let after = &json[json.find("\"mean\"")?..];
    let after = &after[after.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = after.find([',', '}'])?;
    after[..end].trim().parse().ok()
}

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
