//! Which backends the node evaluates and verifies with.
//!
//! One function, so that start-up can switch to the calibration crate's
//! selection API (issue 5: calibration file, host fingerprint, run-time
//! fallback) without touching the node: until that lands, the registry's
//! best available backend for each operation, or the one `--backend` /
//! `MONTANA_BACKEND` pins.

use std::sync::Arc;

use montana_backends::{Registry, SelectError};
use montana_vdf::{Backend, HashSuite, Operation};

/// The backends the node uses, and why they were chosen.
#[derive(Clone)]
pub struct Chosen {
    pub eval: Arc<dyn Backend>,
    pub verify: Arc<dyn Backend>,
    /// One line for the start-up log.
    pub reason: String,
}

impl std::fmt::Debug for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chosen")
            .field("eval", &self.eval.name())
            .field("verify", &self.verify.name())
            .finish()
    }
}

/// Chooses the eval and verify backends for `suite`. `pinned` (from
/// `--backend`) wins over `MONTANA_BACKEND`; `auto` or `None` picks the best.
pub fn choose(suite: HashSuite, pinned: Option<&str>) -> Result<Chosen, SelectError> {
    let registry = Registry::from_env()?;
    let name = pinned
        .or(registry.forced())
        .unwrap_or(montana_backends::registry::AUTO)
        .to_string();
    let eval = registry.select(&name, suite, Operation::Eval)?;
    let verify = registry.select(&name, suite, Operation::Verify)?;
    Ok(Chosen {
        reason: format!(
            "{} (no calibration API yet: best available backend per operation)",
            if name == montana_backends::registry::AUTO {
                "auto".to_string()
            } else {
                format!("pinned to {name}")
            }
        ),
        eval,
        verify,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_available_backends_and_rejects_unknown_names() {
        let c = choose(HashSuite::Sha256, None).unwrap();
        assert!(c.eval.supports(HashSuite::Sha256, Operation::Eval));
        assert!(c.verify.supports(HashSuite::Sha256, Operation::Verify));
        let c = choose(HashSuite::Blake3, Some("scalar")).unwrap();
        assert_eq!(c.verify.name(), "scalar");
        assert!(matches!(
            choose(HashSuite::Sha256, Some("no-such")),
            Err(SelectError::Unknown { .. })
        ));
    }
}
