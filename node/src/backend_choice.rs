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

use montana_backends::registry::{AUTO, ENV_BACKEND, ENV_DISABLE};
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
    /// A bad `MONTANA_BACKEND` or `MONTANA_DISABLE_BACKENDS`: the line
    /// names the variable, since the command line shows nothing wrong.
    #[error("{var}={value}: {source}")]
    Env {
        var: &'static str,
        value: String,
        source: SelectError,
    },
}

/// Every compiled backend with `MONTANA_DISABLE_BACKENDS` and
/// `MONTANA_BACKEND` applied; an unknown name fails naming its variable.
pub fn registry_from_env() -> Result<Registry, ChoiceError> {
    let forced = std::env::var(ENV_BACKEND)
        .ok()
        .filter(|s| !s.trim().is_empty());
    let disabled = std::env::var(ENV_DISABLE).unwrap_or_default();
    registry_with(forced.as_deref(), &disabled)
}

fn registry_with(forced: Option<&str>, disabled: &str) -> Result<Registry, ChoiceError> {
    let env = |var, value: &str| {
        let value = value.to_string();
        move |source| ChoiceError::Env { var, value, source }
    };
    Registry::new(montana_backends::registry::compiled())
        .with_overrides(None, disabled)
        .map_err(env(ENV_DISABLE, disabled))?
        .with_overrides(forced, "")
        .map_err(env(ENV_BACKEND, forced.unwrap_or_default()))
}

/// The backend for one operation when `name` is pinned without a
/// calibration: the pin where it supports the operation (a verify-only
/// backend such as avx2 or gpu pins verification only), `auto` for the rest.
fn pinned_or_auto(
    registry: &Registry,
    name: &str,
    suite: montana_vdf::HashSuite,
    op: Operation,
) -> Result<Arc<dyn Backend>, SelectError> {
    if name == AUTO {
        return registry.auto(suite, op);
    }
    match registry.get(name, suite, op) {
        Err(SelectError::Unsupported { .. }) => registry.auto(suite, op),
        other => other,
    }
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
    let registry = registry_from_env()?;
    if let (None, Some(forced)) = (pinned, registry.forced()) {
        // MONTANA_BACKEND applies to the operations its backend supports;
        // one it names that cannot run here is that variable's error.
        for op in Operation::ALL {
            match registry.get(forced, genesis.hash, op) {
                Ok(_) | Err(SelectError::Unsupported { .. }) => {}
                Err(source) => {
                    return Err(ChoiceError::Env {
                        var: ENV_BACKEND,
                        value: forced.to_string(),
                        source,
                    })
                }
            }
        }
    }
    let faults = FaultCounter::default();
    let wrap = |b: Arc<dyn Backend>, op| -> Arc<dyn Backend> {
        Arc::new(
            FallbackBackend::from_registry(b, &registry, genesis.hash, op)
                .with_faults(faults.clone()),
        )
    };
    if calibration == Calibration::Skip {
        let name = pinned.or(registry.forced()).unwrap_or(AUTO).to_string();
        // A name that supports neither operation is a typo or a wrong
        // backend, not a partial pin.
        // An error about the backend MONTANA_BACKEND forced says so.
        let named = |e: SelectError| match (&e, pinned, registry.forced()) {
            (
                SelectError::Unavailable { name, .. } | SelectError::Unsupported { name, .. },
                None,
                Some(forced),
            ) if name == forced => ChoiceError::Env {
                var: ENV_BACKEND,
                value: forced.to_string(),
                source: e,
            },
            _ => ChoiceError::Select(e),
        };
        if name != AUTO
            && !Operation::ALL
                .iter()
                .any(|op| registry.get(&name, genesis.hash, *op).is_ok())
        {
            registry
                .get(&name, genesis.hash, Operation::Verify)
                .map_err(named)?;
            registry
                .get(&name, genesis.hash, Operation::Eval)
                .map_err(named)?;
        }
        return Ok(Chosen {
            eval: wrap(
                pinned_or_auto(&registry, &name, genesis.hash, Operation::Eval).map_err(named)?,
                Operation::Eval,
            ),
            verify: wrap(
                pinned_or_auto(&registry, &name, genesis.hash, Operation::Verify).map_err(named)?,
                Operation::Verify,
            ),
            eval_rate: None,
            verify_rate: None,
            reason: format!("{name} (calibration skipped)"),
            faults,
        });
    }
    if let Some(name) = pinned.filter(|n| *n != AUTO) {
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
    fn a_verify_only_pin_applies_to_verification_only() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = peers(1);
        let g = Genesis::new(p, HashSuite::Sha256, 1_000, 10, 1.0).unwrap();
        let registry = registry_with(None, "").unwrap();
        let verify_only = registry.all().iter().find(|b| {
            registry.availability(b.as_ref()).is_available()
                && b.supports(HashSuite::Sha256, Operation::Verify)
                && !b.supports(HashSuite::Sha256, Operation::Eval)
        });
        let Some(b) = verify_only else {
            eprintln!("no verify-only backend available on this host; nothing to check");
            return;
        };
        let c = choose(&g, dir.path(), Some(b.name()), Calibration::Skip).unwrap();
        assert_eq!(c.verify.name(), b.name());
        assert!(c.eval.supports(HashSuite::Sha256, Operation::Eval));
        assert!(c.reason.contains(b.name()), "{}", c.reason);
    }

    #[test]
    fn environment_errors_name_their_variable() {
        let e = registry_with(Some("nope"), "").unwrap_err().to_string();
        assert!(
            e.starts_with("MONTANA_BACKEND=nope: unknown backend 'nope'"),
            "{e}"
        );
        let e = registry_with(None, "scalar,nah").unwrap_err().to_string();
        assert!(
            e.starts_with("MONTANA_DISABLE_BACKENDS=scalar,nah: unknown backend 'nah'"),
            "{e}"
        );
        let r = registry_with(Some("scalar"), "sse41").unwrap();
        assert_eq!(r.forced(), Some("scalar"));
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
