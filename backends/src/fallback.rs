//! A backend that survives its backend: calls go to the chosen backend and,
//! when it fails at run time or gives a wrong verdict, move for good to the
//! next best one, logged once per switch. Following never stops because one
//! backend broke, and no backend can turn a valid proposal into a rejection
//! (or a corrupted one into an acceptance) unchecked.
//!
//! The rules, all here and nowhere else:
//! - **Failure**: [`BackendError::Device`] or [`BackendError::Unavailable`]
//!   (a lost GPU, a driver reset) moves to the next backend.
//! - **Known-bad sample** (at a backend's first verify, per suite, so after
//!   every fallback too): the backend must reject a fixed batch of segments
//!   with one corrupted claim, at that segment's index ([`known_bad_sample`]).
//!   One that accepts it, or names another index, is refused. The check runs
//!   when a backend is first used, so a GPU that is never chosen is never
//!   opened.
//! - **A rejection is a claim, not a verdict**: before `verify` answers
//!   "invalid at segment i", segment i alone is re-checked by the scalar
//!   oracle (one segment: cheap). If the oracle says it is valid, the backend
//!   is faulty: it is refused and the whole batch is verified again by the
//!   next backend.
//!
//! This is the one fallback rule: every backend a caller runs comes from
//! [`Registry::resolve`] wrapped in it.
//!
//! Every refusal counts in the shared [`FaultCounter`] (the node's
//! `montana_backend_faults_total`). Other errors (bad parameters,
//! cancellation, an unsupported pair) are the caller's business and pass
//! through unchanged: another backend would say the same. An evaluation that
//! fails midway restarts from its start value on the next backend, so
//! progress callbacks may go back once.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::registry::Registry;
use crate::scalar::ScalarBackend;
use montana_vdf::{
    AdapterInfo, Availability, Backend, BackendError, BackendKind, ChainParams, EvalControl,
    Hash32, HashSuite, Operation, Segment, VerifyOptions, VerifyOutcome,
};

/// Backends refused for the rest of the run (failed, or gave a wrong
/// verdict), shared by the wrappers of one node and read by its metrics.
#[derive(Clone, Debug, Default)]
pub struct FaultCounter(Arc<AtomicU64>);

impl FaultCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Segment lengths of the known-bad sample: uneven, so SIMD lane groups
/// have ragged tails, and more segments than the narrowest lane group.
const SAMPLE_STEPS: [u64; 12] = [5, 64, 1, 200, 33, 128, 97, 2, 150, 77, 3, 41];
/// The sample's corrupted segment (not in the first lane group of 4 or 8).
const SAMPLE_BAD: usize = 9;

/// A batch of independent segments for `suite` whose claims all hold except
/// segment `bad` (its claimed end has one bit flipped), and `bad`: the
/// verdict every correct backend gives is `Invalid { first_bad_segment: bad }`.
pub fn known_bad_sample(suite: HashSuite) -> (Vec<Segment>, usize) {
    let segments = SAMPLE_STEPS
        .iter()
        .enumerate()
        .map(|(i, &steps)| {
            let start = suite.hash(format!("montana known-bad sample {i}").as_bytes());
            let mut end = suite.iterate(&start, steps);
            if i == SAMPLE_BAD {
                end.0[i % 32] ^= 0x10;
            }
            Segment { start, end, steps }
        })
        .collect();
    (segments, SAMPLE_BAD)
}

/// Why a backend is refused for the rest of the run.
struct Refusal(BackendError);

/// What one backend's attempt came to.
enum Attempt<T> {
    Done(Result<T, BackendError>),
    Refuse(Refusal),
}

/// The chosen backend and its stand-ins, best first.
pub struct FallbackBackend {
    chain: Vec<Arc<dyn Backend>>,
    active: AtomicUsize,
    /// Per chain member and suite (SHA-256, BLAKE3): passed the known-bad
    /// sample.
    proven: Vec<[AtomicBool; 2]>,
    faults: FaultCounter,
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
            proven: chain.iter().map(|_| Default::default()).collect(),
            chain,
            active: AtomicUsize::new(0),
            faults: FaultCounter::default(),
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

    /// Counts refusals in `faults` (shared with other wrappers) instead of
    /// a counter of its own.
    pub fn with_faults(mut self, faults: FaultCounter) -> Self {
        self.faults = faults;
        self
    }

    /// The counter of refused backends.
    pub fn faults(&self) -> &FaultCounter {
        &self.faults
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

    /// Calls `attempt` on the active backend until one answers, moving down
    /// the chain past every refused one; the last one's refusal is the error.
    fn run<T>(
        &self,
        op: Operation,
        attempt: impl Fn(usize, &dyn Backend) -> Attempt<T>,
    ) -> Result<T, BackendError> {
        loop {
            let i = self.active.load(Ordering::Acquire);
            let backend = &self.chain[i];
            match attempt(i, backend.as_ref()) {
                Attempt::Done(r) => return r,
                Attempt::Refuse(Refusal(e)) if i + 1 < self.chain.len() => {
                    // Only the call that moves the chain on logs and counts;
                    // calls that failed concurrently retry on the new one.
                    if self
                        .active
                        .compare_exchange(i, i + 1, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        self.faults.add();
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
                Attempt::Refuse(Refusal(e)) => return Err(e),
            }
        }
    }

    /// Chain member `i`'s verdict on `segments`, or why it is refused.
    fn verify_on(
        &self,
        i: usize,
        backend: &dyn Backend,
        suite: HashSuite,
        segments: &[Segment],
        opts: &VerifyOptions,
    ) -> Attempt<VerifyOutcome> {
        let proven = &self.proven[i][usize::from(suite == HashSuite::Blake3)];
        if !proven.load(Ordering::Acquire) {
            match prove(backend, suite, opts) {
                Ok(()) => proven.store(true, Ordering::Release),
                Err(a) => return a,
            }
        }
        let outcome = match backend.verify(suite, segments, opts) {
            Ok(o) => o,
            Err(e) => return failure(e),
        };
        let VerifyOutcome::Invalid { first_bad_segment } = outcome else {
            return Attempt::Done(Ok(outcome));
        };
        let Some(seg) = segments.get(first_bad_segment) else {
            return refuse(
                backend,
                format!(
                    "named segment {first_bad_segment} of a batch of {} as invalid",
                    segments.len()
                ),
            );
        };
        if backend.name() == ScalarBackend.name() {
            // The oracle itself: nothing to re-check against.
            return Attempt::Done(Ok(outcome));
        }
        match ScalarBackend.verify(suite, std::slice::from_ref(seg), &VerifyOptions::threads(1)) {
            Ok(VerifyOutcome::Valid) => refuse(
                backend,
                format!(
                    "rejected a valid segment at index {first_bad_segment} ({} steps; the scalar oracle accepts it)",
                    seg.steps
                ),
            ),
            // The oracle agrees (or cannot say): the verdict stands.
            _ => Attempt::Done(Ok(outcome)),
        }
    }
}

/// A run-time failure refuses the backend; any other error is the caller's.
fn failure<T>(e: BackendError) -> Attempt<T> {
    match e {
        BackendError::Device { .. } | BackendError::Unavailable { .. } => {
            Attempt::Refuse(Refusal(e))
        }
        e => Attempt::Done(Err(e)),
    }
}

fn refuse<T>(backend: &dyn Backend, message: String) -> Attempt<T> {
    Attempt::Refuse(Refusal(BackendError::Device {
        backend: backend.name().into(),
        message,
    }))
}

/// `Ok` if `backend` rejects the known-bad sample at its corrupted index.
fn prove(
    backend: &dyn Backend,
    suite: HashSuite,
    opts: &VerifyOptions,
) -> Result<(), Attempt<VerifyOutcome>> {
    let (sample, bad) = known_bad_sample(suite);
    match backend.verify(suite, &sample, opts) {
        Ok(VerifyOutcome::Invalid { first_bad_segment }) if first_bad_segment == bad => Ok(()),
        Ok(VerifyOutcome::Valid) => Err(refuse(
            backend,
            format!(
                "accepted a corrupted sample (segment {bad} of {} is wrong)",
                sample.len()
            ),
        )),
        Ok(VerifyOutcome::Invalid { first_bad_segment }) => Err(refuse(
            backend,
            format!("reported segment {first_bad_segment} of a sample corrupted at segment {bad}"),
        )),
        Err(e) => Err(failure(e)),
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
        self.run(Operation::Eval, |_, b| {
            match b.evaluate(suite, start, params, ctl) {
                Err(e) => failure(e),
                ok => Attempt::Done(ok),
            }
        })
    }

    fn verify(
        &self,
        suite: HashSuite,
        segments: &[Segment],
        opts: &VerifyOptions,
    ) -> Result<VerifyOutcome, BackendError> {
        self.run(Operation::Verify, |i, b| {
            self.verify_on(i, b, suite, segments, opts)
        })
    }
}
