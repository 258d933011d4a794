//! The registry: which backends this build has, which this host can run, and
//! the one path by which every caller gets a backend to run:
//! [`Registry::resolve`].
//!
//! A registry carries the user's [`BackendChoice`] (parsed once by the CLI:
//! `--backend`, `MONTANA_BACKEND`, `MONTANA_DISABLE_BACKENDS`, the GPU probe
//! policy); this crate reads no environment variables. `resolve(suite, op,
//! ranking)` applies the pin where it applies ([`PinScope`]), else takes
//! the [`Ranking`]'s leader (measured rates, or the static ranks), and
//! wraps the choice in the one fallback rule ([`FallbackBackend`]: a failed
//! or lying backend is replaced by the next in the same order). The CLI
//! verbs, the node, calibration and the devnet all call it.
//!
//! Naming a backend (a pin, [`Registry::get`]) tells it so
//! ([`mark_named`]): the GPU backend then looks for a software adapter too,
//! which it does not load for `auto` alone on a host without a GPU device
//! (see `gpu::adapter`).

use std::sync::Arc;

use montana_vdf::{Availability, Backend, HashSuite, Operation};
use thiserror::Error;

use crate::choice::{BackendChoice, ChoiceError, Pin, PinScope};
pub use crate::choice::{AUTO, ENV_BACKEND, ENV_DISABLE};
use crate::fallback::FallbackBackend;
use crate::ranking::{Ranked, Ranking};
use crate::scalar::ScalarBackend;

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

/// The backend [`Registry::resolve`] chose for one (suite, operation).
pub struct Resolved {
    /// The choice wrapped in the fallback rule, falling back along the
    /// same ranking.
    pub backend: FallbackBackend,
    /// Why it leads.
    pub why: Why,
    /// Its measured rate (steps/s) when the ranking has one.
    pub hashes_per_sec: Option<f64>,
}

impl Resolved {
    /// The chosen backend's name (before any fallback).
    pub fn name(&self) -> &'static str {
        self.backend.chain_names()[0]
    }
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("backend", &self.backend)
            .field("why", &self.why)
            .field("hashes_per_sec", &self.hashes_per_sec)
            .finish()
    }
}

/// Why a backend was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The user pinned it (`--backend`, `MONTANA_BACKEND`).
    Pinned,
    /// The fastest of this host's measurements (within the tie rule).
    Measured,
    /// The static ranking (no measurement of this pair).
    Static,
}

/// The backends of this build with the user's choice applied.
#[derive(Clone)]
pub struct Registry {
    backends: Vec<Arc<dyn Backend>>,
    choice: BackendChoice,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("backends", &self.names())
            .field("choice", &self.choice)
            .finish()
    }
}

impl Registry {
    /// A registry of the given backends, `auto` with nothing disabled.
    pub fn new(backends: Vec<Arc<dyn Backend>>) -> Self {
        Registry {
            backends,
            choice: BackendChoice::auto(),
        }
    }

    /// Applies the user's choice. An unknown name (pinned or disabled) is an
    /// error naming where it came from: a typo must not silently test the
    /// wrong path. Sets the GPU probe policy for this process.
    pub fn with_choice(mut self, choice: BackendChoice) -> Result<Self, ChoiceError> {
        for name in &choice.disabled {
            self.find(name).map_err(|source| ChoiceError::Env {
                var: ENV_DISABLE,
                value: choice.disabled_text.clone(),
                source,
            })?;
        }
        if let Some(pin) = &choice.pin {
            self.find(&pin.name)
                .map_err(|e| ChoiceError::from_pin(pin, e))?;
            mark_named(&pin.name);
        }
        #[cfg(feature = "gpu")]
        crate::gpu::adapter::set_policy(choice.gpu);
        self.choice = choice;
        Ok(self)
    }

    /// The choice this registry applies.
    pub fn choice(&self) -> &BackendChoice {
        &self.choice
    }

    /// Backend names in registry order.
    pub fn names(&self) -> Vec<&'static str> {
        self.backends.iter().map(|b| b.name()).collect()
    }

    /// Every backend of this build, available or not.
    pub fn all(&self) -> &[Arc<dyn Backend>] {
        &self.backends
    }

    /// Tells every backend it was named, so that each shows what this host
    /// has (a software GPU adapter included): for `montana backends`.
    pub fn name_all(&self) {
        for b in &self.backends {
            mark_named(b.name());
        }
    }

    /// Availability after the choice (a disabled backend is unavailable).
    pub fn availability(&self, backend: &dyn Backend) -> Availability {
        if self.choice.disabled.contains(backend.name()) {
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

    /// The named backend, which must exist, be available and support the
    /// pair: for tools that test one backend (selftest, bench), never to
    /// pick one to run (that is [`Registry::resolve`]).
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

    /// The backend to run for (suite, op): the one resolution path.
    ///
    /// 1. A pin: a backend this host cannot run is an error (naming the
    ///    flag or variable). Where it supports the pair it is chosen; where
    ///    it does not, [`PinScope`] decides: `WhereSupported` leaves the
    ///    pair to the ranking, `SomeOperation` too unless the backend
    ///    supports no operation of the suite (an error), `Exactly` is an
    ///    error.
    /// 2. Otherwise the ranking's leader among the backends `auto` may
    ///    choose (see [`crate::ranking`]).
    ///
    /// The result falls back along the ranking's order.
    pub fn resolve(
        &self,
        suite: HashSuite,
        op: Operation,
        ranking: &Ranking,
    ) -> Result<Resolved, ChoiceError> {
        let order = self.order(suite, op, ranking);
        let rest = |skip: &str| -> Vec<Arc<dyn Backend>> {
            order
                .iter()
                .filter(|r| r.backend.name() != skip)
                .map(|r| r.backend.clone())
                .collect()
        };
        if let Some(pin) = &self.choice.pin {
            if let Some(b) = self.pinned(pin, suite, op)? {
                return Ok(Resolved {
                    hashes_per_sec: ranking.rate(b.name(), suite, op),
                    backend: FallbackBackend::new(b.clone(), rest(b.name())),
                    why: Why::Pinned,
                });
            }
        }
        let Some(first) = order.first() else {
            return Err(SelectError::NoneAvailable { suite, op }.into());
        };
        Ok(Resolved {
            backend: FallbackBackend::new(first.backend.clone(), rest(first.backend.name())),
            why: if first.hashes_per_sec.is_some() {
                Why::Measured
            } else {
                Why::Static
            },
            hashes_per_sec: first.hashes_per_sec,
        })
    }

    /// The pinned backend for the pair, `None` when the ranking serves it.
    fn pinned(
        &self,
        pin: &Pin,
        suite: HashSuite,
        op: Operation,
    ) -> Result<Option<Arc<dyn Backend>>, ChoiceError> {
        let err = |e| ChoiceError::from_pin(pin, e);
        let b = self.find(&pin.name).map_err(err)?;
        if let Availability::Unavailable(reason) = self.availability(b.as_ref()) {
            return Err(err(SelectError::Unavailable {
                name: pin.name.clone(),
                reason,
            }));
        }
        if b.supports(suite, op) {
            return Ok(Some(b.clone()));
        }
        let any_op = Operation::ALL.iter().any(|o| b.supports(suite, *o));
        match pin.scope {
            PinScope::WhereSupported => Ok(None),
            PinScope::SomeOperation if any_op => Ok(None),
            PinScope::SomeOperation | PinScope::Exactly => Err(err(SelectError::Unsupported {
                name: pin.name.clone(),
                suite,
                op,
            })),
        }
    }

    /// Backends `auto` may choose for the pair, best first by `ranking`.
    pub fn order(&self, suite: HashSuite, op: Operation, ranking: &Ranking) -> Vec<Ranked> {
        let candidates = self
            .backends
            .iter()
            .filter(|b| b.supports(suite, op) && self.availability(b.as_ref()).is_available())
            .filter_map(|b| b.auto_rank(suite, op).map(|r| (b.clone(), r)))
            .collect();
        ranking.order(suite, op, candidates)
    }

    /// What [`Registry::resolve`] runs for the pair with the static
    /// ranking, unwrapped (tests, and callers that only need a name).
    pub fn auto(&self, suite: HashSuite, op: Operation) -> Result<Arc<dyn Backend>, ChoiceError> {
        self.resolve(suite, op, &Ranking::Static)
            .map(|r| r.backend.active_backend().clone())
    }

    /// Available backends for the pair that `auto` may choose, in static
    /// order: the fallback order when nothing was measured.
    pub fn ranked(&self, suite: HashSuite, op: Operation) -> Vec<Arc<dyn Backend>> {
        self.order(suite, op, &Ranking::Static)
            .into_iter()
            .map(|r| r.backend)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use montana_vdf::{BackendError, BackendKind, Segment, VerifyOptions, VerifyOutcome};

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

    fn choice(flag: Option<&str>, scope: PinScope, env: Option<&str>, off: &str) -> BackendChoice {
        BackendChoice::parse(crate::choice::ChoiceInputs {
            flag,
            flag_scope: Some(scope),
            env_backend: env,
            env_disable: Some(off),
            gpu: Default::default(),
        })
    }

    #[test]
    fn named_lookup_is_strict() {
        let r = registry();
        assert!(matches!(
            r.get("nope", HashSuite::Sha256, Operation::Eval),
            Err(SelectError::Unknown { .. })
        ));
        assert!(matches!(
            r.get("wider", HashSuite::Blake3, Operation::Verify),
            Err(SelectError::Unavailable { .. })
        ));
        assert!(matches!(
            r.get("wide", HashSuite::Sha256, Operation::Verify),
            Err(SelectError::Unsupported { .. })
        ));
        // A software GPU is never chosen by auto but can be asked for by name.
        assert_eq!(
            r.get("soft-gpu", HashSuite::Blake3, Operation::Verify)
                .unwrap()
                .name(),
            "soft-gpu"
        );
    }

    #[test]
    fn unknown_names_fail_naming_their_source() {
        let e = registry()
            .with_choice(choice(None, PinScope::Exactly, Some("typo"), ""))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("MONTANA_BACKEND=typo: unknown backend 'typo'"),
            "{e}"
        );
        let e = registry()
            .with_choice(choice(Some("typo"), PinScope::Exactly, None, ""))
            .unwrap_err();
        assert!(e.to_string().starts_with("unknown backend 'typo'"), "{e}");
        let e = registry()
            .with_choice(choice(None, PinScope::Exactly, None, "wide, nah"))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("MONTANA_DISABLE_BACKENDS=wide, nah: unknown backend 'nah'"),
            "{e}"
        );
    }

    /// resolve over a grid of (choice, suite, op, availability): the
    /// expected backend name, or the error's start.
    #[test]
    fn resolve_over_a_grid_of_choices() {
        use HashSuite::{Blake3 as B, Sha256 as S};
        use Operation::{Eval as E, Verify as V};
        use PinScope::{Exactly as X, SomeOperation as O, WhereSupported as W};
        /// (--backend, its scope, MONTANA_BACKEND, MONTANA_DISABLE_BACKENDS,
        /// suite, operation, expected)
        type Case<'a> = (
            Option<&'a str>,
            PinScope,
            Option<&'a str>,
            &'a str,
            HashSuite,
            Operation,
            &'a str,
        );
        let grid: &[Case] = &[
            // auto: the best available rank; the oracle where nothing else.
            (None, X, None, "", B, V, "wide"),
            (None, X, None, "", S, V, "scalar"),
            (None, X, None, "", B, E, "scalar"),
            (None, X, None, "wide", B, V, "scalar"),
            (
                None,
                X,
                None,
                "wide,scalar",
                B,
                V,
                "error: no available backend",
            ),
            // A pin where it supports the pair.
            (Some("scalar"), X, None, "", B, V, "scalar"),
            (None, X, Some("scalar"), "", B, V, "scalar"),
            (None, X, Some("soft-gpu"), "", B, V, "soft-gpu"),
            // A pin where it does not: the scope decides.
            (None, X, Some("wide"), "", B, E, "scalar"),
            (None, X, Some("wide"), "", S, V, "scalar"),
            (Some("wide"), W, None, "", S, E, "scalar"),
            (Some("wide"), O, None, "", B, E, "scalar"),
            (
                Some("wide"),
                O,
                None,
                "",
                S,
                E,
                "error: backend 'wide' does not support",
            ),
            (
                Some("wide"),
                X,
                None,
                "",
                B,
                E,
                "error: backend 'wide' does not support",
            ),
            // A pin this host cannot run is an error for every pair.
            (
                Some("wider"),
                O,
                None,
                "",
                S,
                E,
                "error: backend 'wider' is not available",
            ),
            (
                None,
                X,
                Some("wider"),
                "",
                S,
                E,
                "error: MONTANA_BACKEND=wider: backend 'wider' is not available",
            ),
            (
                None,
                X,
                Some("scalar"),
                "scalar",
                S,
                E,
                "error: MONTANA_BACKEND=scalar: backend 'scalar' is not available",
            ),
            // The flag wins over the variable; auto defers to it.
            (Some("scalar"), X, Some("wide"), "", B, V, "scalar"),
            (Some("auto"), X, Some("soft-gpu"), "", B, V, "soft-gpu"),
        ];
        for (flag, scope, env, off, suite, op, want) in grid {
            let r = registry()
                .with_choice(choice(*flag, *scope, *env, off))
                .unwrap();
            let got = match r.resolve(*suite, *op, &Ranking::Static) {
                Ok(res) => res.name().to_string(),
                Err(e) => format!("error: {e}"),
            };
            assert!(
                got.starts_with(want),
                "{flag:?} {scope:?} {env:?} off={off:?} {suite}/{op}: {got}"
            );
        }
    }

    #[test]
    fn resolve_follows_measurements_and_falls_back_along_them() {
        use crate::ranking::Rate;
        let r = Registry::new(vec![
            Arc::new(Fake("wide", Some(10), true)),
            Arc::new(Fake("wider", Some(20), true)),
            Arc::new(ScalarBackend),
        ]);
        let s = r
            .resolve(HashSuite::Blake3, Operation::Verify, &Ranking::Static)
            .unwrap();
        assert_eq!(
            (s.name(), s.why, s.hashes_per_sec),
            ("wider", Why::Static, None)
        );
        let rate = |b: &str, hps| Rate {
            backend: b.into(),
            suite: HashSuite::Blake3,
            op: Operation::Verify,
            threads: 1,
            hashes_per_sec: hps,
        };
        let m = Ranking::Measured(vec![
            rate("wide", 300.0),
            rate("wider", 100.0),
            rate("scalar", 10.0),
        ]);
        let res = r.resolve(HashSuite::Blake3, Operation::Verify, &m).unwrap();
        assert_eq!(
            (res.name(), res.why, res.hashes_per_sec),
            ("wide", Why::Measured, Some(300.0))
        );
        assert_eq!(res.backend.chain_names(), ["wide", "wider", "scalar"]);
        // A pin keeps its measured rate and the measured fallback order.
        let pinned = r
            .clone()
            .with_choice(BackendChoice::pinned("scalar", PinScope::Exactly))
            .unwrap()
            .resolve(HashSuite::Blake3, Operation::Verify, &m)
            .unwrap();
        assert_eq!(
            (pinned.name(), pinned.why, pinned.hashes_per_sec),
            ("scalar", Why::Pinned, Some(10.0))
        );
        assert_eq!(pinned.backend.chain_names(), ["scalar", "wide", "wider"]);
    }

    #[test]
    fn disabled_backends_are_unavailable() {
        let r = registry()
            .with_choice(choice(None, PinScope::Exactly, None, "wide, scalar"))
            .unwrap();
        assert!(matches!(
            r.auto(HashSuite::Blake3, Operation::Verify),
            Err(ChoiceError::Select(SelectError::NoneAvailable { .. }))
        ));
        assert_eq!(
            r.availability(&ScalarBackend).reason(),
            Some("disabled by MONTANA_DISABLE_BACKENDS")
        );
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
