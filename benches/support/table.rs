//! A table of criterion's estimates of this run: each run's mean, optionally as requests per
//! second, and its ratio to the baseline named on its row. Needs `mod ratios` next to it (from
//! `support/ratios.rs`).
#![allow(dead_code)]

use super::ratios;

/// One row: `run` compared with `baseline`, both of criterion group `group`, plus a note.
pub struct Row<'a> {
    pub run: &'a str,
    pub baseline: &'a str,
    pub note: String,
}

/// What the ratio column divides.
#[derive(Clone, Copy)]
pub enum Ratio {
    /// The run's mean time over the baseline's (above 1: slower than the baseline).
    Time,
    /// The run's requests per second over the baseline's, one request per iteration (below 1:
    /// fewer than the baseline).
    Rate,
}

/// Prints `rows` of `group`: the mean per iteration in `unit`s of `scale` ns, requests per
/// second if `ratio` is [`Ratio::Rate`], the ratio, the baseline, and the notes if any row has
/// one. Rows whose estimates are missing (a filtered run) are left out.
pub fn print(title: &str, group: &str, rows: &[Row<'_>], unit: &str, scale: f64, ratio: Ratio) {
    let rate = matches!(ratio, Ratio::Rate);
    let notes = rows.iter().any(|row| !row.note.is_empty());
    let mut header = format!("{:<34} {:>12}", "run", format!("mean ({unit})"));
    if rate {
        header += &format!(" {:>12}", "req/s");
    }
    header += &format!(
        " {:>12}  {}",
        if rate { "req/s ratio" } else { "time ratio" },
        if notes {
            format!("{:<28} note", "baseline")
        } else {
            "baseline".to_owned()
        }
    );
    println!("\n{title}\n{header}");
    for row in rows {
        let (Some(m), Some(b)) = (
            ratios::mean(group, row.run),
            ratios::mean(group, row.baseline),
        ) else {
            continue;
        };
        let mut line = format!("{:<34} {:>12.3}", row.run, m / scale);
        if rate {
            line += &format!(" {:>12.0}", 1e9 / m);
        }
        let r = if rate { b / m } else { m / b };
        if notes {
            line += &format!(" {r:>12.3}  {:<28} {}", row.baseline, row.note);
        } else {
            line += &format!(" {r:>12.3}  {}", row.baseline);
        }
        println!("{line}");
    }
}
