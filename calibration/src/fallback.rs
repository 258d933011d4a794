//! A backend that survives its backend: calls go to the chosen backend and,
//! when it fails at run time ([`BackendError::Device`] or
//! [`BackendError::Unavailable`]: a lost GPU, a driver reset), move for good
//! to the next best one, logged once per switch. Following never stops
//! because one backend broke.
//!
//! Other errors (bad parameters, cancellation, an unsupported pair) are the
//! caller's business and pass through unchanged: another backend would say
//! the same. An evaluation that fails midway restarts from its start value
//! on the next backend, so progress callbacks may go back once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use montana_backends::Registry;
use montana_vdf::{
    AdapterInfo, Availability, Backend, BackendError, BackendKind, ChainParams, EvalControl,
    Hash32, HashSuite, Operation, Segment, VerifyOptions, VerifyOutcome,
};

/// The chosen backend and its stand-ins, best first.
pub struct FallbackBackend {
    chain: Vec<Arc<dyn Backend>>,
    active: AtomicUsize,
}

impl std::fmt::Debug for FallbackBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackBackend")
            .field(
                "chain",
                &self.chain.iter().map(|b| b.name()).collect::<Vec<_>>(),
            )
            .field("active", &self.active_backend().name())
            .finish()
    }
}

impl FallbackBackend {
    /// `primary`, then `alternatives` in order (duplicates of an earlier
    /// name dropped).
    pub fn new(primary: Arc<dyn Backend>, alternatives: Vec<Arc<dyn Backend>>) -> Self {
        let mut chain: Vec<Arc<dyn Backend>> = vec![primary];
        for b in alternatives {
            if chain.iter().all(|c| c.name() != b.name()) {
                chain.push(b);
            }
        }
        FallbackBackend {
            chain,
            active: AtomicUsize::new(0),
        }
    }

    /// `primary`, then what `auto` would pick for (suite, op), best first.
    pub fn from_registry(
        primary: Arc<dyn Backend>,
        registry: &Registry,
        suite: HashSuite,
        op: Operation,
    ) -> Self {
        Self::new(primary, registry.ranked(suite, op))
    }

    /// The backend now serving calls.
    pub fn active_backend(&self) -> &Arc<dyn Backend> {
        &self.chain[self
            .active
            .load(Ordering::Acquire)
            .min(self.chain.len() - 1)]
    }

    /// Names of the chain, best first.
    pub fn chain_names(&self) -> Vec<&'static str> {
        self.chain.iter().map(|b| b.name()).collect()
    }

    /// How many times calls moved to a stand-in.
    pub fn fallbacks(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    fn run<T>(
        &self,
        op: Operation,
        call: impl Fn(&dyn Backend) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        loop {
            let i = self.active.load(Ordering::Acquire);
            let backend = &self.chain[i];
            match call(backend.as_ref()) {
                Err(e @ (BackendError::Device { .. } | BackendError::Unavailable { .. }))
                    if i + 1 < self.chain.len() =>
                {
                    // Only the call that moves the chain on logs; calls that
                    // failed concurrently just retry on the new active one.
                    if self
                        .active
                        .compare_exchange(i, i + 1, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        tracing::warn!(
                            failed = backend.name(),
                            next = self.chain[i + 1].name(),
                            error = %e,
                            "{op} backend {} failed, falling back to {}",
                            backend.name(),
                            self.chain[i + 1].name()
                        );
                    }
                }
                other => return other,
            }
        }
    }
}

impl Backend for FallbackBackend {
    fn name(&self) -> &'static str {
        self.active_backend().name()
    }

    fn kind(&self) -> BackendKind {
        self.active_backend().kind()
    }

    fn availability(&self) -> Availability {
        self.active_backend().availability()
    }

    fn lanes(&self) -> usize {
        self.active_backend().lanes()
    }

    fn supports(&self, suite: HashSuite, op: Operation) -> bool {
        self.active_backend().supports(suite, op)
    }

    fn auto_rank(&self, suite: HashSuite, op: Operation) -> Option<u32> {
        self.active_backend().auto_rank(suite, op)
    }

    fn adapter(&self) -> Option<AdapterInfo> {
        self.active_backend().adapter()
    }

    fn evaluate(
        &self,
        suite: HashSuite,
        start: &Hash32,
        params: ChainParams,
        ctl: &EvalControl<'_>,
    ) -> Result<Vec<Hash32>, BackendError> {
        self.run(Operation::Eval, |b| b.evaluate(suite, start, params, ctl))
    }

    fn verify(
        &self,
        suite: HashSuite,
        segments: &[Segment],
        opts: &VerifyOptions,
    ) -> Result<VerifyOutcome, BackendError> {
        self.run(Operation::Verify, |b| b.verify(suite, segments, opts))
    }
}
