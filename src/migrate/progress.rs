//! Progress of a pass: an `indicatif` bar (rows, rate, time left) when
//! stderr is a terminal, otherwise one plain line at most every two
//! seconds and one at the end, so logs of a long run stay readable.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Reports rows done for one pass over one column.
pub struct Progress {
    label: String,
    total: u64,
    bar: Option<ProgressBar>,
    plain: Mutex<Plain>,
}

struct Plain {
    done: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// Starts reporting a pass of `total` rows (an estimate: rows may be
    /// added while it runs).
    pub fn new(label: String, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} rows, {per_sec}, {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label.clone());
            bar
        });
        let now = Instant::now();
        Progress {
            label,
            total,
            bar,
            plain: Mutex::new(Plain {
                done: 0,
                started: now,
                last_line: now,
            }),
        }
    }

    /// Counts `n` more rows done.
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            if bar.position() + n > bar.length().unwrap_or(0) {
                bar.set_length(bar.position() + n);
            }
            bar.inc(n);
            return;
        }
        let Ok(mut p) = self.plain.lock() else { return };
        p.done += n;
        if p.last_line.elapsed() >= Duration::from_secs(2) {
            p.last_line = Instant::now();
            eprintln!("{}", self.line(&p));
        }
    }

    /// Ends the report normally; returns rows per second.
    pub fn finish(&self) -> f64 {
        if let Some(bar) = &self.bar {
            bar.finish();
            let secs = bar.elapsed().as_secs_f64();
            return rate(bar.position(), secs);
        }
        let Ok(p) = self.plain.lock() else { return 0.0 };
        eprintln!("{} (done)", self.line(&p));
        rate(p.done, p.started.elapsed().as_secs_f64())
    }

    /// Ends the report after a failure or interruption.
    pub fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }

    fn line(&self, p: &Plain) -> String {
        let secs = p.started.elapsed().as_secs_f64();
        let r = rate(p.done, secs);
        let left = if r > 0.0 && self.total > p.done {
            format!(", about {:.0}s left", (self.total - p.done) as f64 / r)
        } else {
            String::new()
        };
        format!(
            "{}: {}/{} rows, {:.0} rows/s{left}",
            self.label, p.done, self.total, r
        )
    }
}

fn rate(rows: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        rows as f64 / secs
    } else {
        0.0
    }
}
