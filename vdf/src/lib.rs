//! # montana-vdf: the TimeChain specification in code
//!
//! The Montana network measures time with a sequential hash chain: every
//! window, `T(w+1) = H^D(T(w))`. This crate is the single source of truth for
//! what that means, byte for byte:
//!
//! - [`HashSuite`]: the hash `H` (SHA-256, Montana-compatible, or BLAKE3) and
//!   one chain step `x -> H(x)` over 32 bytes.
//! - [`TimeChain`]: the genesis value `T0` and the window recurrence.
//! - [`Proof`]: one chain run with `K` evenly spaced checkpoints, so that a
//!   verifier checks `K` independent [`Segment`]s in parallel instead of
//!   recomputing a chain that cannot be split.
//! - [`encoding`]: the canonical binary form of a proof (consensus bytes) and
//!   [`json`]: the same proof as JSON for tools.
//! - [`NetworkParams`]: a network's suite, D, K and window target, defined once.
//! - [`Backend`]: what a compute backend (scalar, SIMD, GPU) must provide.
//!
//! Nothing here is hardware-specific or async: the reference step lives here,
//! the fast paths live in `montana-backends` and are tested against it.

pub mod backend;
pub mod encoding;
pub mod error;
pub mod hash;
pub mod json;
pub mod network;
pub mod params;
pub mod proof;
pub mod segment;
pub mod suite;
pub mod timechain;

pub use backend::{
    AdapterInfo, Availability, Backend, BackendKind, EvalControl, Operation, VerifyOptions,
    VerifyOutcome,
};
pub use error::{BackendError, DecodeError, ParamError, ParseError};
pub use hash::Hash32;
pub use network::{NetworkError, NetworkParams};
pub use params::{ChainParams, MAX_CHECKPOINTS, MAX_ITERATIONS};
pub use proof::Proof;
pub use segment::Segment;
pub use suite::HashSuite;
pub use timechain::TimeChain;
