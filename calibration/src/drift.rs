//! The drift watch: is the backend still as fast as it was measured?
//!
//! The node feeds it every evaluation and every verification it runs
//! ([`DriftWatch::observe`]: operation, steps, seconds). For each operation
//! the live rate is the median of the last [`DriftConfig::window`] rates
//! (rates on a shared host swing by tens of percent for seconds; one slow
//! call is not a trend). Against the rate the backend was resolved with
//! (calibration file or host cache):
//!
//! - **drift** starts when the live rate falls below `1 - DRIFT_DROP`
//!   (70 %) of the reference, with a full window of samples;
//! - it ends only when the live rate is back at or above `1 - RECOVER_DROP`
//!   (85 %): the gap between the two is the hysteresis, so a rate
//!   hovering near one threshold does not flap.
//!
//! Each change is returned once as a [`DriftEvent`] (the node logs it,
//! shows it, and may re-rank); calls without a change return `None`.
//! Calls shorter than [`DriftConfig::min_secs`] are ignored (timer noise,
//! a tiny batch that cannot fill the lanes). An operation without a
//! reference rate (nothing measured) is not watched.

use std::collections::VecDeque;

use montana_vdf::Operation;
use serde::Serialize;

use crate::measure::median;

/// Drift starts below this share of the reference lost (30 %).
pub const DRIFT_DROP: f64 = 0.30;
/// Drift ends at or above this share lost (15 %).
pub const RECOVER_DROP: f64 = 0.15;

/// Thresholds and smoothing; [`Default`] is the documented one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriftConfig {
    /// Samples whose median is the live rate (and needed before drift).
    pub window: usize,
    pub drift_drop: f64,
    pub recover_drop: f64,
    /// Calls shorter than this are not counted.
    pub min_secs: f64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            window: 5,
            drift_drop: DRIFT_DROP,
            recover_drop: RECOVER_DROP,
            min_secs: 0.05,
        }
    }
}

/// A change of an operation's state.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum DriftEvent {
    /// The live rate fell below the drift threshold.
    Drifted {
        op: Operation,
        live: f64,
        reference: f64,
    },
    /// The live rate came back above the recovery threshold.
    Recovered {
        op: Operation,
        live: f64,
        reference: f64,
    },
}

impl DriftEvent {
    /// One line for the log.
    pub fn line(&self) -> String {
        let (what, op, live, reference) = match *self {
            DriftEvent::Drifted {
                op,
                live,
                reference,
            } => ("slower than measured", op, live, reference),
            DriftEvent::Recovered {
                op,
                live,
                reference,
            } => ("back to its measured rate", op, live, reference),
        };
        format!(
            "{op} backend {what}: {:.0} steps/s live (median), {:.0} measured ({:.0} %)",
            live,
            reference,
            100.0 * live / reference
        )
    }
}

/// One operation's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftState {
    /// No reference rate: not watched.
    #[default]
    Unwatched,
    /// Fewer samples than the window so far.
    Warming,
    Ok,
    Drifting,
}

#[derive(Clone, Debug, Default)]
struct Watch {
    reference: Option<f64>,
    rates: VecDeque<f64>,
    drifting: bool,
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct DriftWatch {
    cfg: DriftConfig,
    eval: Watch,
    verify: Watch,
}

impl DriftWatch {
    /// Watches the operations with a reference rate (steps/s; verify with
    /// the threads the node verifies with).
    pub fn new(eval_rate: Option<f64>, verify_rate: Option<f64>) -> Self {
        Self::with_config(eval_rate, verify_rate, DriftConfig::default())
    }

    pub fn with_config(eval_rate: Option<f64>, verify_rate: Option<f64>, cfg: DriftConfig) -> Self {
        let watch = |r: Option<f64>| Watch {
            reference: r.filter(|r| r.is_finite() && *r > 0.0),
            ..Watch::default()
        };
        DriftWatch {
            cfg: DriftConfig {
                window: cfg.window.max(1),
                ..cfg
            },
            eval: watch(eval_rate),
            verify: watch(verify_rate),
        }
    }

    fn watch(&mut self, op: Operation) -> &mut Watch {
        match op {
            Operation::Eval => &mut self.eval,
            Operation::Verify => &mut self.verify,
        }
    }

    /// Feeds one call: `steps` hashed in `secs` seconds. Returns the change
    /// of state it caused, if any.
    pub fn observe(&mut self, op: Operation, steps: u64, secs: f64) -> Option<DriftEvent> {
        let cfg = self.cfg;
        let w = self.watch(op);
        let reference = w.reference?;
        if !(secs.is_finite() && secs >= cfg.min_secs) || steps == 0 {
            return None;
        }
        w.rates.push_back(steps as f64 / secs);
        while w.rates.len() > cfg.window {
            w.rates.pop_front();
        }
        if w.rates.len() < cfg.window {
            return None;
        }
        let live = median(w.rates.make_contiguous());
        if !w.drifting && live < (1.0 - cfg.drift_drop) * reference {
            w.drifting = true;
            return Some(DriftEvent::Drifted {
                op,
                live,
                reference,
            });
        }
        if w.drifting && live >= (1.0 - cfg.recover_drop) * reference {
            w.drifting = false;
            return Some(DriftEvent::Recovered {
                op,
                live,
                reference,
            });
        }
        None
    }

    /// A new reference after a re-ranking or a fallback (`None`: stop
    /// watching); the samples of the old backend are dropped.
    pub fn rebase(&mut self, op: Operation, reference: Option<f64>) {
        *self.watch(op) = Watch {
            reference: reference.filter(|r| r.is_finite() && *r > 0.0),
            ..Watch::default()
        };
    }

    /// The reference rate the operation is watched against (steps/s).
    pub fn reference(&self, op: Operation) -> Option<f64> {
        self.watch_ref(op).reference
    }

    /// The live rate: the median of the samples held (fewer than the
    /// window while warming); `None` before the first counted call.
    pub fn live(&self, op: Operation) -> Option<f64> {
        let w = self.watch_ref(op);
        if w.rates.is_empty() {
            return None;
        }
        let rates: Vec<f64> = w.rates.iter().copied().collect();
        Some(median(&rates))
    }

    fn watch_ref(&self, op: Operation) -> &Watch {
        match op {
            Operation::Eval => &self.eval,
            Operation::Verify => &self.verify,
        }
    }

    /// The operation's state now (for /status and /metrics).
    pub fn state(&self, op: Operation) -> DriftState {
        let w = self.watch_ref(op);
        match (w.reference, w.drifting) {
            (None, _) => DriftState::Unwatched,
            (Some(_), true) => DriftState::Drifting,
            (Some(_), false) if w.rates.len() < self.cfg.window => DriftState::Warming,
            _ => DriftState::Ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Operation = Operation::Verify;

    /// Feeds `n` calls of one second at `rate`; the events they caused.
    fn feed(w: &mut DriftWatch, rate: f64, n: usize) -> Vec<DriftEvent> {
        (0..n)
            .filter_map(|_| w.observe(V, rate as u64, 1.0))
            .collect()
    }

    #[test]
    fn a_sustained_drop_is_reported_once_and_recovery_needs_the_upper_threshold() {
        let mut w = DriftWatch::new(None, Some(1000.0));
        assert_eq!(w.state(V), DriftState::Warming);
        assert!(feed(&mut w, 950.0, 5).is_empty());
        assert_eq!(w.state(V), DriftState::Ok);
        // Two slow calls among fast ones: the median holds.
        assert!(feed(&mut w, 100.0, 2).is_empty());
        // Sustained: drift, reported once however long it lasts.
        let events = feed(&mut w, 600.0, 20);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(
            matches!(events[0], DriftEvent::Drifted { op: V, live, reference }
            if live == 600.0 && reference == 1000.0)
        );
        assert!(
            events[0].line().contains("slower than measured"),
            "{}",
            events[0].line()
        );
        assert_eq!(w.state(V), DriftState::Drifting);
        assert_eq!((w.live(V), w.reference(V)), (Some(600.0), Some(1000.0)));
        // Back to 80 %: above the drift threshold but below recovery (85 %).
        assert!(feed(&mut w, 800.0, 10).is_empty());
        assert_eq!(w.state(V), DriftState::Drifting);
        let events = feed(&mut w, 900.0, 10);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(matches!(events[0], DriftEvent::Recovered { .. }));
        assert_eq!(w.state(V), DriftState::Ok);
    }

    #[test]
    fn hovering_at_the_drift_threshold_does_not_flap() {
        let mut w = DriftWatch::new(None, Some(1000.0));
        let mut events = 0;
        for i in 0..100 {
            let rate = if i % 2 == 0 { 690.0 } else { 710.0 };
            events += usize::from(w.observe(V, rate as u64, 1.0).is_some());
        }
        assert!(events <= 1, "{events} events");
    }

    #[test]
    fn unwatched_short_and_nonsense_calls_are_ignored() {
        let mut w = DriftWatch::new(None, Some(1000.0));
        assert_eq!(w.state(Operation::Eval), DriftState::Unwatched);
        assert_eq!(w.observe(Operation::Eval, 1, 1.0), None);
        assert_eq!(
            (w.live(Operation::Eval), w.reference(Operation::Eval)),
            (None, None)
        );
        for (steps, secs) in [(1, 0.001), (0, 1.0), (5, f64::NAN), (5, -1.0)] {
            for _ in 0..10 {
                assert_eq!(w.observe(V, steps, secs), None);
            }
        }
        assert_eq!(w.state(V), DriftState::Warming);
        assert_eq!(
            DriftWatch::new(Some(f64::NAN), Some(0.0)).state(V),
            DriftState::Unwatched
        );
    }

    #[test]
    fn rebasing_forgets_the_old_backend() {
        let mut w = DriftWatch::new(Some(1000.0), None);
        let e = (0..5)
            .filter_map(|_| w.observe(Operation::Eval, 100, 1.0))
            .count();
        assert_eq!(e, 1);
        // A fallback to a backend measured at 120 steps/s: no longer drifting.
        w.rebase(Operation::Eval, Some(120.0));
        assert_eq!(w.state(Operation::Eval), DriftState::Warming);
        assert!((0..5).all(|_| w.observe(Operation::Eval, 100, 1.0).is_none()));
        assert_eq!(w.state(Operation::Eval), DriftState::Ok);
    }
}
