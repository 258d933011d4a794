//! # montana-backends: the compute paths behind the `Backend` trait
//!
//! - [`scalar`]: the oracle. Plain `sha2` / `blake3` crate calls, supports
//!   every (suite, operation) pair, runs everywhere; every other backend is
//!   tested against it.
//! - [`driver`]: the shared plumbing every CPU backend uses: checkpoints,
//!   progress and cancellation around an evaluation kernel, and the
//!   lowest-failing-index rule around a parallel verification kernel.
//! - [`registry`]: what this host has, `auto` selection, and the
//!   `MONTANA_BACKEND` / `MONTANA_DISABLE_BACKENDS` overrides.
//!
//! - [`platform`]: which SIMD features this CPU has, detected once
//!   (`cpufeatures`); a backend without its feature reports unavailable.
//! - SIMD backends, one module per instruction set, intrinsics in
//!   `<isa>/kernel.rs`: `sha_ni` (SHA-256 eval, interleaved-stream verify),
//!   `sse41` (BLAKE3 eval, 4-lane verify), `avx2` (8-lane verify), `avx512`
//!   (16-lane verify, BLAKE3 eval with native rotates). Shared hash steps:
//!   [`lanes`] (word-sliced, generic over the vector width) and
//!   [`blake3_rows`] (one-block row-wise BLAKE3).
//! - [`bench`]: hashes-per-second measurements (`montana bench`, calibration).
//!
//! Adding a backend: one module implementing [`montana_vdf::Backend`] with
//! its kernels, one line in [`registry::compiled`], and its tests against
//! [`scalar::ScalarBackend`].

pub mod bench;
pub mod conformance;
pub mod consts;
pub mod driver;
pub mod platform;
pub mod registry;
pub mod scalar;

// SIMD backends: one module per instruction set, intrinsics in `<isa>/kernel.rs`.
#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "x86_64")]
pub mod blake3_rows;
#[cfg(target_arch = "x86_64")]
pub mod lanes;
#[cfg(target_arch = "x86_64")]
pub mod sha_ni;
#[cfg(target_arch = "x86_64")]
pub mod sse41;

pub use registry::{Registry, SelectError};
pub use scalar::ScalarBackend;
