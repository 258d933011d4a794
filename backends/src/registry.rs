//! The registry: which backends this build has, which this host can run, and
//! which one serves a given (suite, operation).
//!
//! `auto` picks, among available backends supporting the pair, the one with
//! the highest [`Backend::auto_rank`] (ties: the earlier in [`compiled`]).
//! Two environment variables let tests reach every path on one machine:
//! - `MONTANA_BACKEND=name` forces that backend for the pairs it supports;
//!   `auto` still serves the others.
//! - `MONTANA_DISABLE_BACKENDS=a,b` hides backends: they report unavailable
//!   and are never chosen.
//!
//! Naming a backend (`MONTANA_BACKEND`, [`Registry::get`], which serves
//! `--backend`) tells it so ([`mark_named`]): the GPU backend then looks for
//! a software adapter too, which it does not load for `auto` alone on a host
//! without a GPU device (see `gpu::adapter`).

use std::collections::BTreeSet;
use std::sync::Arc;

use montana_vdf::{Availability, Backend, HashSuite, Operation};
use thiserror::Error;

use crate::scalar::ScalarBackend;

/// Environment variable forcing one backend.
pub const ENV_BACKEND: &str = "MONTANA_BACKEND";
/// Environment variable hiding a comma-separated list of backends.
pub const ENV_DISABLE: &str = "MONTANA_DISABLE_BACKENDS";
/// The name that means "the best available".
pub const AUTO: &str = "auto";

/// Why no backend could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectError {
    #[error("unknown backend '{name}' (known: {known})")]
    Unknown { name: String, known: String },
    #[error("backend '{name}' is not available on this host: {reason}")]
    Unavailable { name: String, reason: String },
    #[error("backend '{name}' does not support {suite}/{op}")]
    Unsupported {
        name: String,
        suite: HashSuite,
        op: Operation,
    },
    #[error("no available backend supports {suite}/{op}")]
    NoneAvailable { suite: HashSuite, op: Operation },
}

/// Every backend compiled into this build, most specialised first.
pub fn compiled() -> Vec<Arc<dyn Backend>> {
    #[allow(unused_mut)]
    let mut v: Vec<Arc<dyn Backend>> = Vec::new();
    #[cfg(feature = "gpu")]
    v.push(Arc::new(crate::gpu::GpuBackend::default()));
    #[cfg(target_arch = "x86_64")]
    v.extend([
        Arc::new(crate::avx512::Avx512Backend) as Arc<dyn Backend>,
        Arc::new(crate::avx2::Avx2Backend),
        Arc::new(crate::sha_ni::ShaNiBackend),
        Arc::new(crate::sse41::Sse41Backend),
    ]);
    v.push(Arc::new(ScalarBackend));
    v
}

/// Records that the user named backend `name`: the GPU backend may then
/// open a software adapter (see the module docs).
pub fn mark_named(name: &str) {
    #[cfg(feature = "gpu")]
    if name == "gpu" {
        crate::gpu::adapter::mark_named();
    }
    #[cfg(not(feature = "gpu"))]
    let _ = name;
}

/// The backends of this build with this host's overrides applied.
#[derive(Clone)]
pub struct Registry {
    backends: Vec<Arc<dyn Backend>>,
    disabled: BTreeSet<String>,
    forced: Option<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("backends", &self.names())
            .field("disabled", &self.disabled)
            .field("forced", &self.forced)
            .finish()
    }
}

impl Registry {
    /// A registry of the given backends, with no overrides.
    pub fn new(backends: Vec<Arc<dyn Backend>>) -> Self {
        Registry {
            backends,
            disabled: BTreeSet::new(),
            forced: None,
        }
    }

    /// Every compiled backend, with `MONTANA_BACKEND` and
    /// `MONTANA_DISABLE_BACKENDS` applied. An unknown name in either is an
    /// error: a typo must not silently test the wrong path.
    pub fn from_env() -> Result<Self, SelectError> {
        let forced = std::env::var(ENV_BACKEND)
            .ok()
            .filter(|s| !s.trim().is_empty());
        let disabled = std::env::var(ENV_DISABLE).unwrap_or_default();
        Registry::new(compiled()).with_overrides(forced.as_deref(), &disabled)
    }

    /// Applies a forced backend (or `auto`/`None`) and a disabled list.
    pub fn with_overrides(
        mut self,
        forced: Option<&str>,
        disabled: &str,
    ) -> Result<Self, SelectError> {
        for name in disabled.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            self.find(name)?;
            self.disabled.insert(name.to_string());
        }
        match forced.map(str::trim) {
            None | Some(AUTO) => {}
            Some(name) => {
                self.find(name)?;
                mark_named(name);
                self.forced = Some(name.to_string());
            }
        }
        Ok(self)
    }

    /// Backend names in registry order.
    pub fn names(&self) -> Vec<&'static str> {
        self.backends.iter().map(|b| b.name()).collect()
    }

    /// Every backend of this build, available or not.
    pub fn all(&self) -> &[Arc<dyn Backend>] {
        &self.backends
    }

    /// The forced backend's name, if `MONTANA_BACKEND` named one.
    pub fn forced(&self) -> Option<&str> {
        self.forced.as_deref()
    }

    /// Tells every backend it was named, so that each shows what this host
    /// has (a software GPU adapter included): for `montana backends`.
    pub fn name_all(&self) {
        for b in &self.backends {
            mark_named(b.name());
        }
    }

    /// Availability after overrides (a disabled backend is unavailable).
    pub fn availability(&self, backend: &dyn Backend) -> Availability {
        if self.disabled.contains(backend.name()) {
            return Availability::Unavailable(format!("disabled by {ENV_DISABLE}"));
        }
        backend.availability()
    }

    fn find(&self, name: &str) -> Result<&Arc<dyn Backend>, SelectError> {
        self.backends
            .iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| SelectError::Unknown {
                name: name.to_string(),
                known: std::iter::once(AUTO)
                    .chain(self.names())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The named backend, which must exist, be available and support the pair.
    pub fn get(
        &self,
        name: &str,
        suite: HashSuite,
        op: Operation,
    ) -> Result<Arc<dyn Backend>, SelectError> {
        let b = self.find(name)?;
        mark_named(name);
        if let Availability::Unavailable(reason) = self.availability(b.as_ref()) {
            return Err(SelectError::Unavailable {
                name: name.to_string(),
                reason,
            });
        }
        if !b.supports(suite, op) {
            return Err(SelectError::Unsupported {
                name: name.to_string(),
                suite,
                op,
            });
        }
        Ok(b.clone())
    }

    /// `auto` for `name == "auto"`, else [`Registry::get`].
    pub fn select(
        &self,
        name: &str,
        suite: HashSuite,
        op: Operation,
    ) -> Result<Arc<dyn Backend>, SelectError> {
        if name == AUTO {
            self.auto(suite, op)
        } else {
            self.get(name, suite, op)
        }
    }

    /// The forced backend if it supports the pair, else the best available.
    pub fn auto(&self, suite: HashSuite, op: Operation) -> Result<Arc<dyn Backend>, SelectError> {
        if let Some(name) = &self.forced {
            let b = self.find(name)?;
            if b.supports(suite, op) {
                return self.get(name, suite, op);
            }
        }
        self.ranked(suite, op)
            .into_iter()
            .next()
            .ok_or(SelectError::NoneAvailable { suite, op })
    }

    /// Available backends for the pair that `auto` may choose, best first:
    /// the fallback order when one fails at run time.
    pub fn ranked(&self, suite: HashSuite, op: Operation) -> Vec<Arc<dyn Backend>> {
        let mut v: Vec<(u32, usize, &Arc<dyn Backend>)> = self
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.supports(suite, op) && self.availability(b.as_ref()).is_available())
            .filter_map(|(i, b)| b.auto_rank(suite, op).map(|r| (r, i, b)))
            .collect();
        v.sort_by_key(|(r, i, _)| (std::cmp::Reverse(*r), *i));
        v.into_iter().map(|(_, _, b)| b.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use montana_vdf::{
        BackendError, BackendKind, ChainParams, EvalControl, Hash32, Segment, VerifyOptions,
        VerifyOutcome,
    };

    /// A verify-only backend with a configurable rank and availability.
    struct Fake(&'static str, Option<u32>, bool);
    impl Backend for Fake {
        fn name(&self) -> &'static str {
            self.0
        }
        fn kind(&self) -> BackendKind {
            BackendKind::Simd
        }
        fn availability(&self) -> Availability {
            if self.2 {
                Availability::Available
            } else {
                Availability::Unavailable("no such CPU feature".into())
            }
        }
        fn lanes(&self) -> usize {
            8
        }
        fn supports(&self, suite: HashSuite, op: Operation) -> bool {
            suite == HashSuite::Blake3 && op == Operation::Verify
        }
        fn auto_rank(&self, _: HashSuite, _: Operation) -> Option<u32> {
            self.1
        }
        fn evaluate(
            &self,
            suite: HashSuite,
            _: &Hash32,
            _: ChainParams,
            _: &EvalControl<'_>,
        ) -> Result<Vec<Hash32>, BackendError> {
            self.check_supported(suite, Operation::Eval)?;
            unreachable!()
        }
        fn verify(
            &self,
            _: HashSuite,
            _: &[Segment],
            _: &VerifyOptions,
        ) -> Result<VerifyOutcome, BackendError> {
            Ok(VerifyOutcome::Valid)
        }
    }

    fn registry() -> Registry {
        Registry::new(vec![
            Arc::new(Fake("wide", Some(10), true)),
            Arc::new(Fake("wider", Some(20), false)),
            Arc::new(Fake("soft-gpu", None, true)),
            Arc::new(ScalarBackend),
        ])
    }

    #[test]
    fn auto_prefers_the_highest_available_rank() {
        let r = registry();
        assert_eq!(
            r.auto(HashSuite::Blake3, Operation::Verify).unwrap().name(),
            "wide"
        );
        assert_eq!(
            r.auto(HashSuite::Sha256, Operation::Verify).unwrap().name(),
            "scalar"
        );
        assert_eq!(
            r.auto(HashSuite::Blake3, Operation::Eval).unwrap().name(),
            "scalar"
        );
        let ranked: Vec<_> = r
            .ranked(HashSuite::Blake3, Operation::Verify)
            .iter()
            .map(|b| b.name())
            .collect();
        assert_eq!(ranked, ["wide", "scalar"]);
    }

    #[test]
    fn named_selection_is_strict() {
        let r = registry();
        assert!(matches!(
            r.select("nope", HashSuite::Sha256, Operation::Eval),
            Err(SelectError::Unknown { .. })
        ));
        assert!(matches!(
            r.select("wider", HashSuite::Blake3, Operation::Verify),
            Err(SelectError::Unavailable { .. })
        ));
        assert!(matches!(
            r.select("wide", HashSuite::Sha256, Operation::Verify),
            Err(SelectError::Unsupported { .. })
        ));
        // A software GPU is never chosen by auto but can be asked for by name.
        assert_eq!(
            r.select("soft-gpu", HashSuite::Blake3, Operation::Verify)
                .unwrap()
                .name(),
            "soft-gpu"
        );
    }

    #[test]
    fn overrides_force_and_disable() {
        let r = registry().with_overrides(Some("soft-gpu"), "").unwrap();
        assert_eq!(
            r.auto(HashSuite::Blake3, Operation::Verify).unwrap().name(),
            "soft-gpu"
        );
        // Pairs the forced backend lacks are served by auto.
        assert_eq!(
            r.auto(HashSuite::Sha256, Operation::Eval).unwrap().name(),
            "scalar"
        );

        let r = registry().with_overrides(None, "wide, scalar").unwrap();
        assert!(matches!(
            r.auto(HashSuite::Blake3, Operation::Verify),
            Err(SelectError::NoneAvailable { .. })
        ));
        assert_eq!(
            r.availability(&ScalarBackend).reason(),
            Some("disabled by MONTANA_DISABLE_BACKENDS")
        );
        assert!(matches!(
            registry().with_overrides(Some("typo"), ""),
            Err(SelectError::Unknown { .. })
        ));
        assert!(matches!(
            registry().with_overrides(None, "typo"),
            Err(SelectError::Unknown { .. })
        ));
    }

    #[test]
    fn the_compiled_registry_always_has_the_oracle() {
        let r = Registry::new(compiled());
        for suite in HashSuite::ALL {
            for op in Operation::ALL {
                assert!(r.auto(suite, op).is_ok());
            }
        }
    }
}
