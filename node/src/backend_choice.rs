//! Which backends the node evaluates and verifies with.
//!
//! One function between start-up and the calibration crate (issue 5): the
//! calibration file `DATA_DIR/calibration.toml` if it still applies to this
//! host and this genesis, else a quick re-calibration (saved, with the
//! reason logged); `--backend` / `MONTANA_BACKEND` pins one. Both backends
//! come wrapped in the calibration's fallback (also with
//! `Calibration::Skip`), so a backend failing at run time (a lost GPU) or
//! giving a wrong verdict (checked against the scalar oracle, see
//! `montana_calibration::fallback`) hands over to the next best instead of
//! stopping the node or rejecting a valid proposal. `Calibration::Skip`
//! takes the registry's best available backends without measuring (tests,
//! and nodes whose devnet calibrated once for all).

use std::path::Path;
use std::sync::Arc;

use montana_backends::{Registry, SelectError};
use montana_calibration::fallback::FaultCounter;
use montana_calibration::{
    select, CalibrationError, FallbackBackend, NetworkParams, SelectOptions,
};
use montana_vdf::{Backend, Operation};
use thiserror::Error;

use crate::genesis::Genesis;

/// File name of the calibration inside a data dir.
pub const CALIBRATION_FILE: &str = "calibration.toml";

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
    Select(#[from] SelectError),
    #[error("calibration: {0}")]
    Calibration(#[from] CalibrationError),
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
    pinned: Option<&str>,
    calibration: Calibration,
) -> Result<Chosen, ChoiceError> {
    let registry = Registry::from_env()?;
    let faults = FaultCounter::default();
    let wrap = |b: Arc<dyn Backend>, op| -> Arc<dyn Backend> {
        Arc::new(
            FallbackBackend::from_registry(b, &registry, genesis.hash, op)
                .with_faults(faults.clone()),
        )
    };
    if calibration == Calibration::Skip {
        let name = pinned
            .or(registry.forced())
            .unwrap_or(montana_backends::registry::AUTO)
            .to_string();
        return Ok(Chosen {
            eval: wrap(
                registry.select(&name, genesis.hash, Operation::Eval)?,
                Operation::Eval,
            ),
            verify: wrap(
                registry.select(&name, genesis.hash, Operation::Verify)?,
                Operation::Verify,
            ),
            eval_rate: None,
            verify_rate: None,
            reason: format!("{name} (calibration skipped)"),
            faults,
        });
    }
    if let Some(name) = pinned.filter(|n| *n != montana_backends::registry::AUTO) {
        // A typo must fail here, with the registry's list of names.
        registry.get(name, genesis.hash, Operation::Verify)?;
    }
    let mut opts = SelectOptions::new(data_dir.join(CALIBRATION_FILE), network_params(genesis));
    opts.pin = pinned.map(str::to_string);
    let sel = select(&registry, &opts)?;
    let reason = match (&sel.recalibrated, &sel.save_error) {
        (None, _) => format!("calibration file {}", opts.path.display()),
        (Some(why), None) => format!("re-calibrated ({why}), saved to {}", opts.path.display()),
        (Some(why), Some(e)) => format!("re-calibrated ({why}), not saved: {e}"),
    };
    Ok(Chosen {
        eval: wrap(sel.eval.backend.clone(), Operation::Eval),
        verify: wrap(sel.verify.backend.clone(), Operation::Verify),
        eval_rate: Some(sel.eval.hashes_per_sec),
        verify_rate: Some(sel.verify.hashes_per_sec),
        reason,
        faults,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesis::tests::peers;
    use montana_vdf::HashSuite;

    #[test]
    fn skip_picks_available_backends_and_rejects_unknown_names() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = peers(1);
        let g = Genesis::new(p, HashSuite::Sha256, 1_000, 10, 1.0).unwrap();
        let c = choose(&g, dir.path(), None, Calibration::Skip).unwrap();
        assert!(c.eval.supports(HashSuite::Sha256, Operation::Eval));
        assert!(c.verify.supports(HashSuite::Sha256, Operation::Verify));
        let c = choose(&g, dir.path(), Some("scalar"), Calibration::Skip).unwrap();
        assert_eq!(c.verify.name(), "scalar");
        for mode in [Calibration::Skip, Calibration::Use] {
            assert!(choose(&g, dir.path(), Some("no-such"), mode).is_err());
        }
    }

    #[test]
    fn calibrates_once_then_reuses_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = peers(1);
        let g = Genesis::new(p, HashSuite::Sha256, 100_000, 100, 1.0).unwrap();
        let first = choose(&g, dir.path(), Some("scalar"), Calibration::Use).unwrap();
        assert!(first.reason.contains("re-calibrated"), "{}", first.reason);
        assert!(dir.path().join(CALIBRATION_FILE).exists());
        assert!(first.verify_rate.unwrap() > 0.0);
        let again = choose(&g, dir.path(), Some("scalar"), Calibration::Use).unwrap();
        assert!(
            again.reason.starts_with("calibration file"),
            "{}",
            again.reason
        );
        assert_eq!(again.eval.name(), "scalar");
    }
}
