//! The verdicts: from the best eval rate and the best verify throughput to
//! what this host can be on the network.
//!
//! - `window_eval_secs = D / eval rate`; `can_evaluate` when it fits the
//!   window; `margin = 1 - window_eval_secs / window_secs`.
//! - `window_verify_secs = D / verify rate`; `can_follow` when it takes at
//!   most [`FOLLOW_SHARE`] of the window (the rest is for evaluating,
//!   networking and catching up).
//! - `role`: `proposer-capable` (follows, margin >= [`PROPOSER_MARGIN`]),
//!   `candidate-capable` (follows, 0 <= margin < 15%), `follower` (follows,
//!   cannot evaluate in time), `cannot-follow`.
//!
//! Boundaries are inclusive. Products like `1 - 51/60` land a rounding error
//! away from 0.15, so the 15% and 25% comparisons allow [`BOUNDARY_EPS`]
//! (relative); no measurement is anywhere near that precise.

use serde::{Deserialize, Serialize};

use crate::network::NetworkParams;

/// Largest share of a window that verifying it may take for `can_follow`.
pub const FOLLOW_SHARE: f64 = 0.25;
/// Smallest margin for `proposer-capable`.
pub const PROPOSER_MARGIN: f64 = 0.15;
/// Rounding allowance at the 15% and 25% boundaries.
pub const BOUNDARY_EPS: f64 = 1e-9;

/// What this host can be on the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ProposerCapable,
    CandidateCapable,
    Follower,
    CannotFollow,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::ProposerCapable => "proposer-capable",
            Role::CandidateCapable => "candidate-capable",
            Role::Follower => "follower",
            Role::CannotFollow => "cannot-follow",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The verdicts and the numbers behind them. Fields are `None` when no
/// backend could do the operation at all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub can_evaluate: bool,
    pub margin: Option<f64>,
    pub can_follow: bool,
    pub role: Role,
    pub eval_backend: Option<String>,
    pub verify_backend: Option<String>,
    pub eval_hashes_per_sec: Option<f64>,
    pub verify_hashes_per_sec: Option<f64>,
    pub window_eval_secs: Option<f64>,
    pub window_verify_secs: Option<f64>,
}

/// Applies the rules to the chosen (backend, rate) for each operation.
/// Rates that are not positive and finite count as no backend.
pub fn decide(
    params: &NetworkParams,
    eval: Option<(&str, f64)>,
    verify: Option<(&str, f64)>,
) -> Verdict {
    let usable = |r: &(&str, f64)| r.1.is_finite() && r.1 > 0.0;
    let (eval, verify) = (eval.filter(usable), verify.filter(usable));
    let w = params.window_secs;
    let d = params.d as f64;
    let window_eval_secs = eval.map(|(_, r)| d / r);
    let window_verify_secs = verify.map(|(_, r)| d / r);
    let margin = window_eval_secs.map(|e| 1.0 - e / w);
    let can_evaluate = window_eval_secs.is_some_and(|e| e <= w);
    let can_follow =
        window_verify_secs.is_some_and(|v| v <= FOLLOW_SHARE * w * (1.0 + BOUNDARY_EPS));
    let role = if !can_follow {
        Role::CannotFollow
    } else if !can_evaluate {
        Role::Follower
    } else if margin.is_some_and(|m| m >= PROPOSER_MARGIN - BOUNDARY_EPS) {
        Role::ProposerCapable
    } else {
        Role::CandidateCapable
    };
    Verdict {
        can_evaluate,
        margin,
        can_follow,
        role,
        eval_backend: eval.map(|(b, _)| b.to_string()),
        verify_backend: verify.map(|(b, _)| b.to_string()),
        eval_hashes_per_sec: eval.map(|(_, r)| r),
        verify_hashes_per_sec: verify.map(|(_, r)| r),
        window_eval_secs,
        window_verify_secs,
    }
}

impl Verdict {
    /// One line saying why the host cannot follow (for exit code 3), or
    /// `None` if it can.
    pub fn cannot_follow_reason(&self, params: &NetworkParams) -> Option<String> {
        if self.can_follow {
            return None;
        }
        let limit = FOLLOW_SHARE * params.window_secs;
        Some(match (&self.verify_backend, self.window_verify_secs) {
            (Some(b), Some(v)) => format!(
                "this host cannot follow: verifying one window takes {v:.3} s with backend {b}, \
                 over the {limit:.3} s limit (25% of the {} s window)",
                params.window_secs
            ),
            _ => format!(
                "this host cannot follow: no backend can verify {} here",
                params.hash.name()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use montana_vdf::HashSuite;

    /// A 60 s window whose D is 6000 steps: a rate of r steps/s evaluates or
    /// verifies a window in 6000 / r seconds.
    fn params() -> NetworkParams {
        NetworkParams::new(HashSuite::Sha256, 6000, 10, 60.0).unwrap()
    }

    /// (eval window secs, verify window secs) -> (can_evaluate, can_follow, role)
    #[test]
    fn table_of_boundaries() {
        use Role::*;
        let rate = |secs: f64| 6000.0 / secs;
        let cases: &[(f64, f64, bool, bool, Role)] = &[
            // margin exactly 15%: 51 s of 60.
            (51.0, 10.0, true, true, ProposerCapable),
            (51.001, 10.0, true, true, CandidateCapable),
            (50.999, 10.0, true, true, ProposerCapable),
            // margin exactly 0: 60 s of 60.
            (60.0, 10.0, true, true, CandidateCapable),
            (60.001, 10.0, false, true, Follower),
            (59.999, 10.0, true, true, CandidateCapable),
            // can_follow exactly 25%: 15 s of 60.
            (30.0, 15.0, true, true, ProposerCapable),
            (30.0, 15.001, true, false, CannotFollow),
            (90.0, 15.0, false, true, Follower),
            (90.0, 20.0, false, false, CannotFollow),
            // a host that could propose but not follow is no use.
            (1.0, 60.0, true, false, CannotFollow),
        ];
        for &(e, v, can_eval, can_follow, role) in cases {
            let verdict = decide(&params(), Some(("e", rate(e))), Some(("v", rate(v))));
            assert_eq!(
                (verdict.can_evaluate, verdict.can_follow, verdict.role),
                (can_eval, can_follow, role),
                "eval {e} s, verify {v} s: {verdict:?}"
            );
            let m = verdict.margin.unwrap();
            assert!((m - (1.0 - e / 60.0)).abs() < 1e-12);
            assert!((verdict.window_eval_secs.unwrap() - e).abs() < 1e-9);
            assert!((verdict.window_verify_secs.unwrap() - v).abs() < 1e-9);
            assert_eq!(
                verdict.cannot_follow_reason(&params()).is_some(),
                !can_follow
            );
        }
    }

    #[test]
    fn missing_or_broken_rates_are_no_backend() {
        let v = decide(&params(), None, Some(("v", 1e9)));
        assert_eq!(
            (v.can_evaluate, v.role, v.margin),
            (false, Role::Follower, None)
        );
        let v = decide(&params(), Some(("e", 1e9)), Some(("v", 0.0)));
        assert_eq!(v.role, Role::CannotFollow);
        assert_eq!(v.verify_backend, None);
        assert!(v
            .cannot_follow_reason(&params())
            .unwrap()
            .contains("no backend"));
        let v = decide(&params(), Some(("e", f64::NAN)), None);
        assert!(!v.can_evaluate);
    }

    #[test]
    fn role_names_are_the_contract() {
        let names: Vec<String> = [
            Role::ProposerCapable,
            Role::CandidateCapable,
            Role::Follower,
            Role::CannotFollow,
        ]
        .iter()
        .map(|r| {
            serde_json::to_value(r)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
        assert_eq!(
            names,
            [
                "proposer-capable",
                "candidate-capable",
                "follower",
                "cannot-follow"
            ]
        );
    }
}
