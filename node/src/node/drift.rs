//! The drift monitor in the node: is the backend still as fast as it was
//! measured? (docs/SPEC.md 11.1, `drift`).
//!
//! The runtime feeds [`NodeDrift::observe`] every evaluation and every
//! verification that succeeded (steps, seconds) and the backends it runs
//! ([`Chosen`]). Each operation is watched by
//! [`montana_calibration::DriftWatch`] against the rate its backend was
//! resolved with (the calibration file or the host's rate cache; nothing
//! measured: not watched): drift starts when the median of the last 5
//! calls (each at least 50 ms) falls below 70 % of that rate and ends only
//! back at 85 % or more (hysteresis).
//!
//! - When the backend serving an operation changes under it (a run-time
//!   fallback of the fallback rule, or the scalar stand-in after a panic),
//!   the watch is rebased on the new backend's measured rate and its old
//!   samples are dropped.
//! - Drift is logged once per episode (a warning), and at most once per
//!   [`LOG_EVERY`] per operation (further events in between are counted and
//!   named in the next line); recovery is logged the same way.
//! - Drift triggers a re-ranking without stopping the node
//!   ([`Chosen::rerank`]): the operation is resolved again with the drifting
//!   backend's measured rate scaled by what it delivers live (and every
//!   backend that drifted earlier scaled the same way, so two slow backends
//!   do not swap forever). If another backend now leads, it takes over and
//!   the watch is rebased on it; otherwise (a loaded host slows every
//!   backend alike, or the backend is pinned) the node keeps it and says so.

use std::time::{Duration, Instant};

use montana_calibration::{DriftEvent, DriftState, DriftWatch};
use montana_vdf::Operation;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::backend_choice::Chosen;

/// At most one drift log line per operation this often.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// One operation's drift, as `/status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct OpDrift {
    /// `unwatched` (no measured rate), `warming` (fewer than 5 calls
    /// counted), `ok` or `drifting`.
    pub state: String,
    /// The backend watched (the one serving the operation).
    pub backend: String,
    /// The rate it is watched against, steps/s (null: not watched).
    pub reference: Option<f64>,
    /// The median of the last calls counted, steps/s (null before one).
    pub live: Option<f64>,
    /// Drift episodes since start.
    pub drifts: u64,
}

/// `/status` `drift`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DriftStatus {
    pub eval: OpDrift,
    pub verify: OpDrift,
    /// Times a drift moved an operation to another backend.
    pub rerankings: u64,
}

fn idx(op: Operation) -> usize {
    match op {
        Operation::Eval => 0,
        Operation::Verify => 1,
    }
}

fn state_name(s: DriftState) -> &'static str {
    match s {
        DriftState::Unwatched => "unwatched",
        DriftState::Warming => "warming",
        DriftState::Ok => "ok",
        DriftState::Drifting => "drifting",
    }
}

/// See the module docs.
pub struct NodeDrift {
    watch: DriftWatch,
    /// The backend each operation is watched on.
    watched: [&'static str; 2],
    /// Backends seen drifting, per operation: (name, live / measured).
    slowdown: [Vec<(String, f64)>; 2],
    drifts: [u64; 2],
    rerankings: u64,
    last_log: [Option<Instant>; 2],
    /// Events not logged because of [`LOG_EVERY`].
    unlogged: [u64; 2],
}

impl NodeDrift {
    /// Watches `chosen`'s backends against their measured rates.
    pub fn new(chosen: &Chosen) -> Self {
        NodeDrift {
            watch: DriftWatch::new(chosen.eval_rate, chosen.verify_rate),
            watched: [chosen.eval.name(), chosen.verify.name()],
            slowdown: Default::default(),
            drifts: [0; 2],
            rerankings: 0,
            last_log: [None; 2],
            unlogged: [0; 2],
        }
    }

    /// Feeds one successful call of `op`: `steps` hashed in `secs`. May
    /// move `op` to another backend in `chosen` (a re-ranking).
    pub fn observe(&mut self, chosen: &mut Chosen, op: Operation, steps: u64, secs: f64) {
        self.observe_at(chosen, op, steps, secs, Instant::now());
    }

    fn observe_at(
        &mut self,
        chosen: &mut Chosen,
        op: Operation,
        steps: u64,
        secs: f64,
        now: Instant,
    ) {
        let i = idx(op);
        let current = chosen.backend(op).name();
        if current != self.watched[i] {
            // A fallback moved the calls: watch the new backend.
            let reference = self.reference_of(chosen, op, current);
            info!(
                op = op.name(),
                backend = current,
                reference,
                "drift watch: {op} backend is now {current}; watching it"
            );
            self.watch.rebase(op, reference);
            self.watched[i] = current;
        }
        match self.watch.observe(op, steps, secs) {
            None => {}
            Some(
                e @ DriftEvent::Drifted {
                    live, reference, ..
                },
            ) => {
                self.drifts[i] += 1;
                let share = live / reference;
                self.slowdown[i].retain(|(n, _)| n != current);
                self.slowdown[i].push((current.to_string(), share));
                match chosen.rerank(op, &self.slowdown[i]) {
                    Some((next, rate)) => {
                        self.rerankings += 1;
                        let line = format!(
                            "{}; re-ranked: {op} moves to {next} ({} steps/s expected)",
                            e.line(),
                            rate.map_or("?".into(), |r| format!("{r:.0}"))
                        );
                        self.log(op, now, &line, true);
                        self.watch.rebase(op, rate);
                        self.watched[i] = next;
                    }
                    None => {
                        let line =
                            format!("{}; no backend ranks above it now, keeping it", e.line());
                        self.log(op, now, &line, true);
                    }
                }
            }
            Some(e @ DriftEvent::Recovered { .. }) => {
                self.slowdown[i].retain(|(n, _)| n != current);
                let line = e.line();
                self.log(op, now, &line, false);
            }
        }
    }

    /// The measured rate of `name`, scaled by its slowdown if it drifted.
    fn reference_of(&self, chosen: &Chosen, op: Operation, name: &str) -> Option<f64> {
        let share = self.slowdown[idx(op)]
            .iter()
            .find(|(n, _)| n == name)
            .map_or(1.0, |(_, s)| *s);
        chosen.rate_of(name, op).map(|r| r * share)
    }

    /// Logs a drift (`warning`) or a recovery, rate-limited; returns
    /// whether it was logged.
    fn log(&mut self, op: Operation, now: Instant, line: &str, warning: bool) -> bool {
        let i = idx(op);
        if self.last_log[i].is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.unlogged[i] += 1;
            return false;
        }
        self.last_log[i] = Some(now);
        let line = match std::mem::take(&mut self.unlogged[i]) {
            0 => line.to_string(),
            n => format!("{line} ({n} drift events not logged since the last line)"),
        };
        if warning {
            warn!(op = op.name(), "{line}");
        } else {
            info!(op = op.name(), "{line}");
        }
        true
    }

    /// The state for `/status` and `/metrics`.
    pub fn status(&self) -> DriftStatus {
        let op = |op: Operation| OpDrift {
            state: state_name(self.watch.state(op)).into(),
            backend: self.watched[idx(op)].into(),
            reference: self.watch.reference(op),
            live: self.watch.live(op),
            drifts: self.drifts[idx(op)],
        };
        DriftStatus {
            eval: op(Operation::Eval),
            verify: op(Operation::Verify),
            rerankings: self.rerankings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend_choice::{choose, BackendRequest, Calibration};
    use crate::genesis::tests::peers;
    use crate::genesis::Genesis;
    use montana_backends::registry::compiled;
    use montana_backends::{BackendChoice, Rate, Registry};
    use montana_vdf::{BackendKind, HashSuite};

    const V: Operation = Operation::Verify;

    /// Backends chosen from a host rate cache where the two best CPU
    /// verifiers of this host measured 1,000 and 500 steps/s (the others
    /// 1); None when this host has fewer than two.
    fn chosen(dir: &std::path::Path) -> Option<(Chosen, &'static str, &'static str)> {
        let (p, _) = peers(1);
        let g = Genesis::new(p, HashSuite::Sha256, 1_000, 10, 1.0).unwrap();
        let ranked = Registry::new(compiled()).ranked(HashSuite::Sha256, V);
        let cpu: Vec<&'static str> = ranked
            .iter()
            .filter(|b| b.kind() != BackendKind::Gpu)
            .map(|b| b.name())
            .collect();
        let [a, b, ..] = cpu[..] else {
            eprintln!("fewer than two CPU verifiers on this host; nothing to check");
            return None;
        };
        let rates: Vec<Rate> = ranked
            .iter()
            .map(|x| Rate {
                backend: x.name().into(),
                suite: HashSuite::Sha256,
                op: V,
                threads: 1,
                hashes_per_sec: match x.name() {
                    n if n == a => 1000.0,
                    n if n == b => 500.0,
                    _ => 1.0,
                },
            })
            .collect();
        let path = dir.join("rates.toml");
        montana_calibration::rates::save(&path, "test", &rates).unwrap();
        let req = BackendRequest {
            choice: BackendChoice::auto(),
            host_rates: Some(path),
        };
        let c = choose(&g, dir, &req, Calibration::Skip).unwrap();
        assert_eq!(c.verify.name(), a);
        Some((c, a, b))
    }

    fn feed(d: &mut NodeDrift, c: &mut Chosen, rate: u64, n: usize) {
        for _ in 0..n {
            d.observe(c, V, rate, 1.0);
        }
    }

    #[test]
    fn a_drifting_backend_is_re_ranked_and_two_slow_ones_do_not_swap_forever() {
        let dir = tempfile::tempdir().unwrap();
        let Some((mut c, a, b)) = chosen(dir.path()) else {
            return;
        };
        let mut d = NodeDrift::new(&c);
        let s = d.status();
        assert_eq!(
            (s.verify.state.as_str(), s.verify.backend.as_str()),
            ("warming", a)
        );
        assert_eq!(s.verify.reference, Some(1000.0));
        assert_eq!(s.eval.state, "unwatched", "no eval rate measured");
        feed(&mut d, &mut c, 950, 5);
        assert_eq!(d.status().verify.state, "ok");
        assert_eq!(d.status().verify.live, Some(950.0));
        // `a` slows to 10 %: drift, and `b` (500 measured) now leads.
        feed(&mut d, &mut c, 100, 5);
        let s = d.status();
        assert_eq!(c.verify.name(), b, "re-ranked");
        assert_eq!(
            (s.verify.backend.as_str(), s.verify.drifts, s.rerankings),
            (b, 1, 1)
        );
        assert_eq!(s.verify.reference, Some(500.0));
        assert_eq!(s.verify.state, "warming", "the old samples are dropped");
        // `b` is slow too (5 %): back to `a`, at the rate it was seen at.
        feed(&mut d, &mut c, 25, 5);
        assert_eq!(c.verify.name(), a);
        let s = d.status();
        assert_eq!((s.verify.drifts, s.rerankings), (2, 2));
        assert_eq!(s.verify.reference, Some(100.0));
        // At that rate `a` is not drifting: no third move, however long.
        feed(&mut d, &mut c, 100, 50);
        let s = d.status();
        assert_eq!((s.verify.state.as_str(), s.rerankings), ("ok", 2));
        assert_eq!(c.verify.name(), a);
    }

    #[test]
    fn a_fallback_rebases_the_watch_on_the_new_backend() {
        let dir = tempfile::tempdir().unwrap();
        let Some((mut c, _, _)) = chosen(dir.path()) else {
            return;
        };
        let mut d = NodeDrift::new(&c);
        feed(&mut d, &mut c, 950, 5);
        // The runtime's scalar stand-in after a panic (or the fallback
        // rule moving on): the next call watches it, against its own rate.
        c.verify = std::sync::Arc::new(montana_backends::ScalarBackend);
        feed(&mut d, &mut c, 1, 1);
        let s = d.status();
        assert_eq!(s.verify.backend, "scalar");
        assert_eq!(s.verify.reference, Some(1.0));
        assert_eq!(
            (s.verify.state.as_str(), s.verify.live),
            ("warming", Some(1.0))
        );
        feed(&mut d, &mut c, 1, 10);
        assert_eq!(d.status().verify.drifts, 0, "1 step/s is its measured rate");
    }

    #[test]
    fn drift_lines_are_rate_limited() {
        let dir = tempfile::tempdir().unwrap();
        let Some((c, _, _)) = chosen(dir.path()) else {
            return;
        };
        let mut d = NodeDrift::new(&c);
        let t0 = Instant::now();
        assert!(d.log(V, t0, "first", true));
        assert!(!d.log(V, t0 + Duration::from_secs(10), "second", true));
        assert!(!d.log(V, t0 + Duration::from_secs(59), "third", true));
        assert!(d.log(Operation::Eval, t0, "other op", true));
        assert_eq!(d.unlogged[idx(V)], 2);
        assert!(d.log(V, t0 + LOG_EVERY, "later", true));
        assert_eq!(d.unlogged[idx(V)], 0);
    }
}
