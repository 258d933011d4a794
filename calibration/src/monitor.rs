//! The live-rate monitor: is the node still as fast as calibration said?
//!
//! The node feeds it its evaluation rate and the share of each window it
//! spent verifying. Calibration measured a margin for each: the eval margin
//! `1 - D / (rate x window)` and the verify margin `1 - share / 25%`. Drift
//! is a live value that has used up its calibrated margin, i.e. the rate
//! fell (or the share grew) past the point where the host stops keeping up:
//! the sign that it will start to lag. Live values are the median of the
//! last few samples so one slow window (a GC pause, a noisy neighbour) does
//! not raise an alarm. A change of health is logged once (warn on drift,
//! info on recovery) and every call returns the current status.
//!
//! A host whose calibration says it cannot evaluate in time (a follower)
//! does not propose, so its eval rate is not monitored.

use std::collections::VecDeque;

use serde::Serialize;

use crate::measure::median;
use crate::network::NetworkParams;
use crate::verdict::{Verdict, FOLLOW_SHARE};

/// Default number of recent samples whose median is the live value.
pub const DEFAULT_SAMPLES: usize = 3;

/// The health of one monitored quantity.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Health {
    /// Nothing fed yet.
    NoData,
    /// Not monitored (eval on a host that does not evaluate in time).
    NotMonitored,
    /// Within the calibrated margin.
    Ok {
        live_margin: f64,
        calibrated_margin: f64,
    },
    /// The calibrated margin is used up.
    Drift {
        live_margin: f64,
        calibrated_margin: f64,
    },
}

impl Health {
    pub fn is_drift(&self) -> bool {
        matches!(self, Health::Drift { .. })
    }
}

/// Both quantities' health.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MonitorStatus {
    pub eval: Health,
    pub verify: Health,
}

impl MonitorStatus {
    pub fn is_drift(&self) -> bool {
        self.eval.is_drift() || self.verify.is_drift()
    }
}

/// Compares live rates with a calibration; see the module docs.
#[derive(Clone, Debug)]
pub struct RateMonitor {
    d: f64,
    window_secs: f64,
    /// Calibrated eval margin, `None` when eval is not monitored.
    eval_margin: Option<f64>,
    verify_margin: f64,
    samples: usize,
    eval: VecDeque<f64>,
    verify: VecDeque<f64>,
    last: MonitorStatus,
}

impl RateMonitor {
    /// A monitor for a calibration's verdict.
    pub fn new(params: &NetworkParams, verdict: &Verdict) -> Self {
        let verify_margin = verdict
            .window_verify_secs
            .map_or(0.0, |v| 1.0 - v / params.window_secs / FOLLOW_SHARE);
        RateMonitor {
            d: params.d as f64,
            window_secs: params.window_secs,
            eval_margin: verdict.margin.filter(|_| verdict.can_evaluate),
            verify_margin,
            samples: DEFAULT_SAMPLES,
            eval: VecDeque::new(),
            verify: VecDeque::new(),
            last: MonitorStatus {
                eval: Health::NoData,
                verify: Health::NoData,
            },
        }
    }

    /// Uses the median of the last `n` samples (1: react to every sample).
    pub fn with_samples(mut self, n: usize) -> Self {
        self.samples = n.max(1);
        self
    }

    fn push(q: &mut VecDeque<f64>, n: usize, x: f64) {
        q.push_back(x);
        while q.len() > n {
            q.pop_front();
        }
    }

    /// Feeds a measured evaluation rate (steps per second).
    pub fn record_eval_rate(&mut self, hashes_per_sec: f64) -> MonitorStatus {
        if hashes_per_sec.is_finite() && hashes_per_sec >= 0.0 {
            Self::push(&mut self.eval, self.samples, hashes_per_sec);
        }
        self.update()
    }

    /// Feeds the share of a window spent verifying (seconds verifying /
    /// window seconds).
    pub fn record_verify_share(&mut self, share: f64) -> MonitorStatus {
        if share.is_finite() && share >= 0.0 {
            Self::push(&mut self.verify, self.samples, share);
        }
        self.update()
    }

    /// The current status, without feeding anything.
    pub fn status(&self) -> MonitorStatus {
        self.last
    }

    fn eval_health(&self) -> Health {
        let Some(calibrated_margin) = self.eval_margin else {
            return Health::NotMonitored;
        };
        if self.eval.is_empty() {
            return Health::NoData;
        }
        let rate = median(&self.eval.iter().copied().collect::<Vec<_>>());
        let live_margin = if rate > 0.0 {
            1.0 - self.d / (rate * self.window_secs)
        } else {
            f64::NEG_INFINITY
        };
        classify(live_margin, calibrated_margin)
    }

    fn verify_health(&self) -> Health {
        if self.verify.is_empty() {
            return Health::NoData;
        }
        let share = median(&self.verify.iter().copied().collect::<Vec<_>>());
        classify(1.0 - share / FOLLOW_SHARE, self.verify_margin)
    }

    fn update(&mut self) -> MonitorStatus {
        let now = MonitorStatus {
            eval: self.eval_health(),
            verify: self.verify_health(),
        };
        log_change("eval rate", self.last.eval, now.eval);
        log_change("verify share", self.last.verify, now.verify);
        self.last = now;
        now
    }
}

/// Drift once the live margin is below zero: the calibrated margin is gone.
fn classify(live_margin: f64, calibrated_margin: f64) -> Health {
    if live_margin < 0.0 {
        Health::Drift {
            live_margin,
            calibrated_margin,
        }
    } else {
        Health::Ok {
            live_margin,
            calibrated_margin,
        }
    }
}

fn log_change(what: &str, before: Health, now: Health) {
    match (before.is_drift(), now) {
        (
            false,
            Health::Drift {
                live_margin,
                calibrated_margin,
            },
        ) => tracing::warn!(
            live_margin,
            calibrated_margin,
            "{what} drifted past the calibrated margin: the node will lag; re-run montana calibrate"
        ),
        (true, Health::Ok { live_margin, .. }) => {
            tracing::info!(live_margin, "{what} is back within the calibrated margin")
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::decide;
    use montana_vdf::HashSuite;

    /// D = 6000 over a 60 s window: the limit eval rate is 100 steps/s. A
    /// calibrated rate of 125/s evaluates in 48 s: margin 20%. Verifying at
    /// 1000/s takes 6 s, a 10% share: verify margin 60%.
    fn monitor() -> RateMonitor {
        let p = NetworkParams::new(HashSuite::Sha256, 6000, 10, 60.0).unwrap();
        RateMonitor::new(&p, &decide(&p, Some(("e", 125.0)), Some(("v", 1000.0)))).with_samples(1)
    }

    fn margins(h: Health) -> (f64, f64) {
        match h {
            Health::Ok {
                live_margin,
                calibrated_margin,
            }
            | Health::Drift {
                live_margin,
                calibrated_margin,
            } => (live_margin, calibrated_margin),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn eval_drifts_once_the_margin_is_used_up() {
        let mut m = monitor();
        assert_eq!(m.status().eval, Health::NoData);
        let s = m.record_eval_rate(125.0);
        let (live, cal) = margins(s.eval);
        assert!((live - 0.2).abs() < 1e-12 && (cal - 0.2).abs() < 1e-12);
        assert!(!s.is_drift());
        // A drop of exactly the margin (20%) leaves a zero margin: still ok.
        assert!(!m.record_eval_rate(100.0).eval.is_drift());
        assert!(m.record_eval_rate(99.9).eval.is_drift());
        assert!(m.status().is_drift());
        assert!(!m.record_eval_rate(110.0).eval.is_drift());
        assert!(m.record_eval_rate(0.0).eval.is_drift());
    }

    #[test]
    fn verify_drifts_past_a_quarter_of_the_window() {
        let mut m = monitor();
        let (live, cal) = margins(m.record_verify_share(0.10).verify);
        assert!((live - 0.6).abs() < 1e-12 && (cal - 0.6).abs() < 1e-12);
        assert!(!m.record_verify_share(0.25).verify.is_drift());
        assert!(m.record_verify_share(0.2501).verify.is_drift());
        assert_eq!(m.status().eval, Health::NoData);
    }

    #[test]
    fn the_median_ignores_one_bad_window() {
        let mut m = monitor().with_samples(3);
        m.record_verify_share(0.1);
        m.record_verify_share(0.1);
        assert!(!m.record_verify_share(0.9).is_drift());
        assert!(m.record_verify_share(0.9).is_drift());
        // Garbage samples are ignored.
        let before = m.status();
        assert_eq!(m.record_verify_share(f64::NAN), before);
    }

    #[test]
    fn a_follower_s_eval_rate_is_not_monitored() {
        let p = NetworkParams::new(HashSuite::Sha256, 6000, 10, 60.0).unwrap();
        let v = decide(&p, Some(("e", 50.0)), Some(("v", 1000.0)));
        let mut m = RateMonitor::new(&p, &v);
        assert_eq!(m.record_eval_rate(1.0).eval, Health::NotMonitored);
    }
}
