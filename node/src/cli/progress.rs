//! Progress on long work, one helper for every command: an indicatif bar on
//! stderr when stderr is a terminal, otherwise (CI, a pipe, a log file) a
//! plain line on stderr every few seconds, such as
//! `vdf eval: 120,000,000 of 200,000,000 steps (60%), 6 s`.
//!
//! Work that ends within the first interval prints nothing when not on a
//! terminal, so quick scripted runs keep a quiet stderr. The interval is 5 s,
//! or `MONTANA_PROGRESS_SECS` (at least 0.1) for logs that want more or less.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::number::group;

/// Below this many steps an evaluation is too short to need progress.
pub const MIN_STEPS: u64 = 20_000_000;
/// Environment variable: seconds between plain progress lines.
pub const ENV_PROGRESS_SECS: &str = "MONTANA_PROGRESS_SECS";
const DEFAULT_EVERY: Duration = Duration::from_secs(5);

/// The interval between plain lines.
fn plain_every() -> Duration {
    std::env::var(ENV_PROGRESS_SECS)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite())
        .map(|s| Duration::from_secs_f64(s.clamp(0.1, 3600.0)))
        .unwrap_or(DEFAULT_EVERY)
}

/// Progress of one piece of work: `total` units (0 when unknown).
pub struct Meter {
    bar: Option<ProgressBar>,
    plain: Option<Plain>,
}

struct Plain {
    what: String,
    unit: &'static str,
    total: AtomicU64,
    pos: AtomicU64,
    started: Instant,
    every: Duration,
    last: Mutex<Instant>,
    message: Mutex<String>,
}

impl Meter {
    /// Progress of `what` (a command name), `total` `unit`s.
    pub fn new(what: &str, total: u64, unit: &'static str) -> Meter {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total.max(1));
            let template = format!(
                "{what}: [{{bar:20}}] {{percent:>3}}% \
                 {{human_pos}}/{{human_len}} {unit}, eta {{eta}} {{wide_msg}}"
            );
            bar.set_style(
                ProgressStyle::with_template(&template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            return Meter {
                bar: Some(bar),
                plain: None,
            };
        }
        let now = Instant::now();
        Meter {
            bar: None,
            plain: Some(Plain {
                what: what.to_string(),
                unit,
                total: AtomicU64::new(total),
                pos: AtomicU64::new(0),
                started: now,
                every: plain_every(),
                last: Mutex::new(now),
                message: Mutex::new(String::new()),
            }),
        }
    }

    /// A meter for an evaluation of `total` steps, or a silent one when the
    /// work is short.
    pub fn steps(what: &str, total: u64) -> Meter {
        if total < MIN_STEPS {
            Meter::hidden()
        } else {
            Meter::new(what, total, "steps")
        }
    }

    /// A meter that shows nothing.
    pub fn hidden() -> Meter {
        Meter {
            bar: None,
            plain: None,
        }
    }

    pub fn set_position(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
        if let Some(p) = &self.plain {
            p.pos.store(pos, Ordering::Relaxed);
            p.maybe_print();
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        if let Some(p) = &self.plain {
            p.pos.fetch_add(n, Ordering::Relaxed);
            p.maybe_print();
        }
    }

    /// What is being done now (a backend, a measurement).
    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Some(b) = &self.bar {
            b.set_message(msg.clone());
        }
        if let Some(p) = &self.plain {
            *p.message.lock().unwrap_or_else(|e| e.into_inner()) = msg;
            p.maybe_print();
        }
    }

    /// Removes the bar (plain lines need nothing).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Plain {
    fn maybe_print(&self) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() < self.every {
            return;
        }
        *last = Instant::now();
        let pos = self.pos.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let mut line = if total > 0 {
            format!(
                "{}: {} of {} {} ({}%)",
                self.what,
                group(pos.min(total)),
                group(total),
                self.unit,
                pos.min(total) * 100 / total
            )
        } else {
            format!("{}: {} {}", self.what, group(pos), self.unit)
        };
        line += &format!(", {} s", self.started.elapsed().as_secs());
        let msg = self.message.lock().unwrap_or_else(|e| e.into_inner());
        if !msg.is_empty() {
            line += &format!(", {msg}");
        }
        eprintln!("{line}");
    }
}
