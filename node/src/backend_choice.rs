//! Which backends the node evaluates and verifies with.
//!
//! One function between start-up and the one resolution path
//! ([`Registry::resolve`]): the user's choice arrives typed (the CLI parsed
//! `--backend`, `MONTANA_BACKEND` and `MONTANA_DISABLE_BACKENDS` once) and
//! the ranking comes from measurements: the calibration file
//! `DATA_DIR/calibration.toml` if it still applies to this host and this
//! genesis, else a quick re-calibration (saved, with the reason logged);
//! with `Calibration::Skip` (tests, and nodes whose devnet calibrated once
//! for all) the per-host rate cache when the CLI found one, else the
//! static ranking. Both backends come wrapped in the one fallback rule
//! (`montana_backends::fallback`), so a backend failing at run time (a lost
//! GPU) or giving a wrong verdict hands over to the next best instead of
//! stopping the node or rejecting a valid proposal.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use montana_backends::registry::compiled;
use montana_backends::{BackendChoice, FaultCounter, Ranking, Registry, Resolved};
use montana_calibration::{select, CalibrationError, NetworkParams, SelectOptions};
use montana_vdf::{Backend, Operation};
use thiserror::Error;

use crate::genesis::Genesis;

/// File name of the calibration inside a data dir.
pub const CALIBRATION_FILE: &str = montana_calibration::file::FILE_NAME;

/// Whether to consult (and if needed run) the calibration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Calibration {
    Use,
    Skip,
}

/// Why no backend could be chosen; one line.
#[derive(Debug, Error)]
pub enum ChoiceError {
    #[error("{0}")]
    Choice(#[from] montana_backends::ChoiceError),
    #[error("calibration: {0}")]
    Calibration(#[from] CalibrationError),
}

/// What the node was asked for.
#[derive(Clone, Debug, Default)]
pub struct BackendRequest {
    /// The user's choice, parsed once by the CLI.
    pub choice: BackendChoice,
    /// The per-host rate cache (the CLI resolves its path); used with
    /// `Calibration::Skip`.
    pub host_rates: Option<PathBuf>,
}

/// The backends the node uses, and why they were chosen.
#[derive(Clone)]
pub struct Chosen {
    pub eval: Arc<dyn Backend>,
    pub verify: Arc<dyn Backend>,
    /// Calibrated rates (steps/s; verify with all threads), when measured.
    pub eval_rate: Option<f64>,
    pub verify_rate: Option<f64>,
    /// One line for the start-up log.
    pub reason: String,
    /// Backends refused at run time (failed or gave a wrong verdict), shared
    /// by both wrappers: `montana_backend_faults_total`.
    pub faults: FaultCounter,
    /// What the backends were resolved with, kept for a re-ranking when
    /// the drift watch finds one slower than measured ([`Chosen::rerank`]).
    pub registry: Registry,
    pub ranking: Ranking,
    pub suite: montana_vdf::HashSuite,
}

impl Chosen {
    /// The backend serving `op` now.
    pub fn backend(&self, op: Operation) -> &Arc<dyn Backend> {
        match op {
            Operation::Eval => &self.eval,
            Operation::Verify => &self.verify,
        }
    }

    /// The measured rate of backend `name` for `op` (steps/s), if any.
    pub fn rate_of(&self, name: &str, op: Operation) -> Option<f64> {
        self.ranking.rate(name, self.suite, op)
    }

    /// Resolves `op` again (the one resolution path, same choice and
    /// fallback rule) with the measured rate of each backend in `slowdown`
    /// (name, live / measured) scaled by what it was seen to deliver. When
    /// another backend now leads, it serves `op` from here on and its name
    /// and (scaled) rate are returned; `None` when the current one still
    /// leads, the ranking has no measurements, or the user pinned it.
    pub fn rerank(
        &mut self,
        op: Operation,
        slowdown: &[(String, f64)],
    ) -> Option<(&'static str, Option<f64>)> {
        let Ranking::Measured(rates) = &self.ranking else {
            return None;
        };
        let mut rates = rates.clone();
        for r in rates.iter_mut() {
            if let Some((_, share)) = slowdown
                .iter()
                .find(|(name, _)| r.suite == self.suite && r.op == op && *name == r.backend)
            {
                r.hashes_per_sec *= share;
            }
        }
        let resolved = self
            .registry
            .resolve(self.suite, op, &Ranking::Measured(rates))
            .ok()?;
        let name = resolved.name();
        if name == self.backend(op).name() {
            return None;
        }
        let rate = resolved.hashes_per_sec;
        let backend: Arc<dyn Backend> = Arc::new(resolved.backend.with_faults(self.faults.clone()));
        match op {
            Operation::Eval => self.eval = backend,
            Operation::Verify => self.verify = backend,
        }
        Some((name, rate))
    }
}

impl std::fmt::Debug for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chosen")
            .field("eval", &self.eval.name())
            .field("verify", &self.verify.name())
            .finish()
    }
}

/// The network parameters calibration measures for.
pub fn network_params(g: &Genesis) -> NetworkParams {
    NetworkParams {
        hash: g.hash,
        d: g.d,
        checkpoints: g.checkpoints,
        window_secs: g.window_secs,
    }
}

/// Chooses the eval and verify backends for `genesis` on this host.
pub fn choose(
    genesis: &Genesis,
    data_dir: &Path,
    request: &BackendRequest,
    calibration: Calibration,
) -> Result<Chosen, ChoiceError> {
    let registry = Registry::new(compiled()).with_choice(request.choice.clone())?;
    let faults = FaultCounter::default();
    let wrap =
        |r: Resolved| -> Arc<dyn Backend> { Arc::new(r.backend.with_faults(faults.clone())) };
    let pin = request
        .choice
        .pin_name()
        .unwrap_or(montana_backends::choice::AUTO);
    let (eval, verify, reason, ranking) = if calibration == Calibration::Skip {
        let (ranking, warning) =
            montana_calibration::rates::ranking_at(request.host_rates.as_deref());
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        let source = match ranking {
            Ranking::Measured(_) => "calibration skipped, host rate cache",
            Ranking::Static => "calibration skipped",
        };
        let resolve = |op| registry.resolve(genesis.hash, op, &ranking);
        (
            resolve(Operation::Eval)?,
            resolve(Operation::Verify)?,
            format!("{pin} ({source})"),
            ranking,
        )
    } else {
        let opts = SelectOptions::new(data_dir.join(CALIBRATION_FILE), network_params(genesis));
        let sel = select(&registry, &opts)?;
        let reason = match (&sel.recalibrated, &sel.save_error) {
            (None, _) => format!("calibration file {}", opts.path.display()),
            (Some(why), None) => format!("re-calibrated ({why}), saved to {}", opts.path.display()),
            (Some(why), Some(e)) => format!("re-calibrated ({why}), not saved: {e}"),
        };
        let ranking = montana_calibration::calibrate::ranking(
            sel.calibration.network.hash,
            &sel.calibration.measurements,
        );
        (sel.eval, sel.verify, reason, ranking)
    };
    Ok(Chosen {
        eval_rate: eval.hashes_per_sec,
        verify_rate: verify.hashes_per_sec,
        eval: wrap(eval),
        verify: wrap(verify),
        reason,
        faults,
        registry,
        ranking,
        suite: genesis.hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesis::tests::peers;
    use montana_backends::PinScope;
    use montana_vdf::HashSuite;

    fn request(name: &str, scope: PinScope) -> BackendRequest {
        BackendRequest {
            choice: BackendChoice::pinned(name, scope),
            host_rates: None,
        }
    }

    #[test]
    fn skip_picks_available_backends_and_rejects_unknown_names() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = peers(1);
        let g = Genesis::new(p, HashSuite::Sha256, 1_000, 10, 1.0).unwrap();
        let c = choose(
            &g,
            dir.path(),
            &BackendRequest::default(),
            Calibration::Skip,
        )
        .unwrap();
        assert!(c.eval.supports(HashSuite::Sha256, Operation::Eval));
        assert!(c.verify.supports(HashSuite::Sha256, Operation::Verify));
        let c = choose(
            &g,
            dir.path(),
            &request("scalar", PinScope::SomeOperation),
            Calibration::Skip,
        )
        .unwrap();
        assert_eq!(c.verify.name(), "scalar");
        for mode in [Calibration::Skip, Calibration::Use] {
            let e = choose(
                &g,
                dir.path(),
                &request("no-such", PinScope::SomeOperation),
                mode,
            )
            .unwrap_err();
            assert!(e.to_string().contains("unknown backend 'no-such'"), "{e}");
        }
    }

    #[test]
    fn a_verify_only_pin_applies_to_verification_only() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = peers(1);
        let g = Genesis::new(p, HashSuite::Sha256, 1_000, 10, 1.0).unwrap();
        let registry = Registry::new(compiled());
        let verify_only = registry.all().iter().find(|b| {
            registry.availability(b.as_ref()).is_available()
                && b.supports(HashSuite::Sha256, Operation::Verify)
                && !b.supports(HashSuite::Sha256, Operation::Eval)
        });
        let Some(b) = verify_only else {
            eprintln!("no verify-only backend available on this host; nothing to check");
            return;
        };
        for scope in [PinScope::SomeOperation, PinScope::WhereSupported] {
            let c = choose(&g, dir.path(), &request(b.name(), scope), Calibration::Skip).unwrap();
            assert_eq!(c.verify.name(), b.name());
            assert!(c.eval.supports(HashSuite::Sha256, Operation::Eval));
            assert!(c.reason.contains(b.name()), "{}", c.reason);
        }
    }

    #[test]
    fn the_host_rate_cache_ranks_when_calibration_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = peers(1);
        let g = Genesis::new(p, HashSuite::Sha256, 1_000, 10, 1.0).unwrap();
        // A cache saying the oracle is the fastest verifier on this host.
        let path = dir.path().join("rates.toml");
        let rate = |backend: &str, hps| montana_backends::Rate {
            backend: backend.into(),
            suite: HashSuite::Sha256,
            op: Operation::Verify,
            threads: 1,
            hashes_per_sec: hps,
        };
        let rates: Vec<_> = Registry::new(compiled())
            .ranked(HashSuite::Sha256, Operation::Verify)
            .iter()
            .map(|b| rate(b.name(), if b.name() == "scalar" { 1e12 } else { 1.0 }))
            .collect();
        montana_calibration::rates::save(&path, "test", &rates).unwrap();
        let req = BackendRequest {
            choice: BackendChoice::auto(),
            host_rates: Some(path),
        };
        let c = choose(&g, dir.path(), &req, Calibration::Skip).unwrap();
        assert_eq!(c.verify.name(), "scalar");
        assert_eq!(c.verify_rate, Some(1e12));
        assert!(c.reason.contains("host rate cache"), "{}", c.reason);
    }

    #[test]
    fn calibrates_once_then_reuses_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = peers(1);
        let g = Genesis::new(p, HashSuite::Sha256, 100_000, 100, 1.0).unwrap();
        let req = request("scalar", PinScope::SomeOperation);
        let first = choose(&g, dir.path(), &req, Calibration::Use).unwrap();
        assert!(first.reason.contains("re-calibrated"), "{}", first.reason);
        assert!(dir.path().join(CALIBRATION_FILE).exists());
        assert!(first.verify_rate.unwrap() > 0.0);
        let again = choose(&g, dir.path(), &req, Calibration::Use).unwrap();
        assert!(
            again.reason.starts_with("calibration file"),
            "{}",
            again.reason
        );
        assert_eq!(again.eval.name(), "scalar");
    }
}
