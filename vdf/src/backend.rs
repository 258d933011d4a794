//! The `Backend` trait: what every compute path (scalar, SIMD, GPU) provides.
//!
//! Two operations with opposite shapes:
//! - **evaluate** one chain: latency-bound, one core, the fastest instruction
//!   path; it must report progress and stop when asked (a node abandons a
//!   window's work when a valid proposal arrives first).
//! - **verify** a batch of independent segments: throughput-bound (lanes,
//!   cores, GPU invocations); the batch may span many proofs.
//!
//! A backend declares which (suite, operation) pairs it supports; asking for
//! any other pair is [`BackendError::Unsupported`], never a silent fallback.
//! Falling back is the caller's decision (the registry's and the node's).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::error::BackendError;
use crate::hash::Hash32;
use crate::params::ChainParams;
use crate::proof::Proof;
use crate::segment::Segment;
use crate::suite::HashSuite;

/// What family a backend belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Scalar,
    Simd,
    Gpu,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Scalar => "scalar",
            BackendKind::Simd => "simd",
            BackendKind::Gpu => "gpu",
        }
    }
}

/// The two operations a backend may support.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Eval,
    Verify,
}

impl Operation {
    pub const ALL: [Operation; 2] = [Operation::Eval, Operation::Verify];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Eval => "eval",
            Operation::Verify => "verify",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a backend can run on this host, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    Available,
    Unavailable(String),
}

impl Availability {
    pub fn is_available(&self) -> bool {
        matches!(self, Availability::Available)
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Availability::Available => None,
            Availability::Unavailable(r) => Some(r),
        }
    }
}

/// A GPU adapter as reported by the graphics API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdapterInfo {
    pub name: String,
    pub api: String,
    pub driver: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `Cpu` (a software rasteriser), ...
    pub device_type: String,
}

/// Progress reporting and cancellation for one evaluation.
#[derive(Clone, Copy, Default)]
pub struct EvalControl<'a> {
    /// Set to `true` to stop; the evaluation returns [`BackendError::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
    /// Called from time to time with the number of steps done so far.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl<'a> EvalControl<'a> {
    /// No progress, no cancellation.
    pub fn none() -> Self {
        EvalControl::default()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    pub fn report(&self, steps_done: u64) {
        if let Some(p) = self.progress {
            p(steps_done);
        }
    }
}

/// Options for a verification call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Worker threads (>= 1). A 1-core VPS verifies with one.
    pub threads: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

impl VerifyOptions {
    pub fn threads(threads: usize) -> Self {
        VerifyOptions {
            threads: threads.max(1),
        }
    }
}

/// The result of verifying a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyOutcome {
    Valid,
    /// The lowest index (in the batch's segment list) whose claim is false.
    Invalid {
        first_bad_segment: usize,
    },
}

impl VerifyOutcome {
    pub fn is_valid(&self) -> bool {
        matches!(self, VerifyOutcome::Valid)
    }
}

/// `valid`, or `invalid at segment i`: how errors and logs print an outcome.
impl fmt::Display for VerifyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyOutcome::Valid => f.write_str("valid"),
            VerifyOutcome::Invalid { first_bad_segment } => {
                write!(f, "invalid at segment {first_bad_segment}")
            }
        }
    }
}

/// A compute backend. See the module docs.
pub trait Backend: Send + Sync {
    /// The instruction-set name: `scalar`, `sha-ni`, `sse41`, `avx2`, `avx512`, `gpu`.
    fn name(&self) -> &'static str;

    fn kind(&self) -> BackendKind;

    /// Whether it runs on this host; unavailable backends must not be called.
    fn availability(&self) -> Availability;

    /// Segments processed side by side by one worker (1 for a scalar chain).
    fn lanes(&self) -> usize;

    /// Whether (suite, op) is implemented, regardless of availability.
    fn supports(&self, suite: HashSuite, op: Operation) -> bool;

    /// Preference when `auto` chooses (higher wins); `None`: never chosen
    /// automatically (e.g. a software GPU adapter).
    fn auto_rank(&self, _suite: HashSuite, _op: Operation) -> Option<u32> {
        Some(0)
    }

    /// The GPU adapter, for GPU backends.
    fn adapter(&self) -> Option<AdapterInfo> {
        None
    }

    /// Runs one chain of `params.iterations()` steps from `start` and returns
    /// its `params.checkpoints()` evenly spaced checkpoints.
    ///
    /// Verify-only backends (`avx2`, `gpu`: a chain is latency-bound, lanes
    /// do not help it) keep this default, which answers
    /// [`BackendError::Unsupported`]; a backend that evaluates overrides it
    /// and declares the pairs in [`Backend::supports`].
    fn evaluate(
        &self,
        suite: HashSuite,
        _start: &Hash32,
        _params: ChainParams,
        _ctl: &EvalControl<'_>,
    ) -> Result<Vec<Hash32>, BackendError> {
        Err(self.unsupported(suite, Operation::Eval))
    }

    /// Checks every segment; reports the lowest failing index.
    fn verify(
        &self,
        suite: HashSuite,
        segments: &[Segment],
        opts: &VerifyOptions,
    ) -> Result<VerifyOutcome, BackendError>;

    /// The (suite, op) pairs this backend implements, as `suite/op` strings.
    fn supported_pairs(&self) -> Vec<String> {
        let mut v = Vec::new();
        for s in HashSuite::ALL {
            for op in Operation::ALL {
                if self.supports(s, op) {
                    v.push(format!("{}/{}", s.name(), op.name()));
                }
            }
        }
        v
    }

    /// `Err(Unsupported)` unless (suite, op) is implemented.
    fn check_supported(&self, suite: HashSuite, op: Operation) -> Result<(), BackendError> {
        if self.supports(suite, op) {
            Ok(())
        } else {
            Err(self.unsupported(suite, op))
        }
    }

    /// The error for a pair this backend does not implement.
    fn unsupported(&self, suite: HashSuite, op: Operation) -> BackendError {
        BackendError::Unsupported {
            backend: self.name().to_string(),
            suite: suite.name().to_string(),
            op: op.name().to_string(),
        }
    }

    /// Evaluates and packages the result as a [`Proof`].
    fn prove(
        &self,
        suite: HashSuite,
        start: &Hash32,
        params: ChainParams,
        ctl: &EvalControl<'_>,
    ) -> Result<Proof, BackendError> {
        let cps = self.evaluate(suite, start, params, ctl)?;
        Ok(Proof::new(suite, *start, params, cps)?)
    }

    /// Verifies several proofs of one suite in one batch; a failing index is
    /// counted in the concatenated list of their segments.
    fn verify_proofs(
        &self,
        proofs: &[Proof],
        opts: &VerifyOptions,
    ) -> Result<VerifyOutcome, BackendError> {
        let Some(first) = proofs.first() else {
            return Ok(VerifyOutcome::Valid);
        };
        let suite = first.suite();
        if proofs.iter().any(|p| p.suite() != suite) {
            return Err(BackendError::BadBatch(
                "proofs of different hash suites in one batch".into(),
            ));
        }
        let mut segs = Vec::new();
        for p in proofs {
            p.push_segments(&mut segs);
        }
        self.verify(suite, &segs, opts)
    }
}
