//! # montana-backends: the compute paths behind the `Backend` trait
//!
//! - [`scalar`]: the oracle. Plain `sha2` / `blake3` crate calls, supports
//!   every (suite, operation) pair, runs everywhere; every other backend is
//!   tested against it.
//! - [`driver`]: the shared plumbing every CPU backend uses: checkpoints,
//!   progress and cancellation around an evaluation kernel, and the
//!   lowest-failing-index rule around a parallel verification kernel.
//! - [`choice`]: the user's backend choice as one typed value (the CLI
//!   parses `--backend`, `MONTANA_BACKEND`, `MONTANA_DISABLE_BACKENDS` and
//!   the GPU probe variables into it once; this crate reads no environment).
//! - [`registry`]: what this host has, and [`Registry::resolve`], the one
//!   path by which every caller gets a backend to run.
//! - [`ranking`]: `auto`'s order: measured rates when the host has them,
//!   else the static ranks.
//! - [`fallback`]: the one fallback rule around every resolved backend.
//!
//! - [`platform`]: which SIMD features this CPU has, detected once
//!   (`cpufeatures`); a backend without its feature reports unavailable.
//! - SIMD backends, one module per instruction set, intrinsics in
//!   `<isa>/kernel.rs`: `sha_ni` (SHA-256 eval, interleaved-stream verify),
//!   `sse41` (BLAKE3 eval, 4-lane verify), `avx2` (8-lane verify), `avx512`
//!   (16-lane verify, BLAKE3 eval with native rotates). Shared hash steps:
//!   [`lanes`] (word-sliced, generic over the vector width) and
//!   [`blake3_rows`] (one-block row-wise BLAKE3).
//! - `gpu` (cargo feature `gpu`, on by default): verification on wgpu
//!   (Vulkan), one invocation per segment, kernels in `shaders/`; a build
//!   without the feature has no wgpu at all.
//! - [`bench`]: hashes-per-second measurements (`montana bench`, calibration).
//!
//! Adding a backend: one module implementing [`montana_vdf::Backend`] with
//! its kernels, one line in [`registry::compiled`], and its tests against
//! [`scalar::ScalarBackend`].

pub mod bench;
pub mod choice;
pub mod conformance;
pub mod consts;
pub mod driver;
pub mod fallback;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod platform;
pub mod ranking;
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

pub use choice::{BackendChoice, ChoiceError, GpuPolicy, Origin, Pin, PinScope};
pub use fallback::{FallbackBackend, FaultCounter};
pub use ranking::{Ranking, Rate};
pub use registry::{Registry, Resolved, SelectError, Why};
pub use scalar::ScalarBackend;
