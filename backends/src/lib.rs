//! # montana-backends: the compute paths behind the `Backend` trait
//!
//! - [`scalar`]: the oracle. Plain `sha2` / `blake3` crate calls, supports
//!   every (suite, operation) pair, runs everywhere; every other backend is
//!   tested against it.
//! - [`driver`]: the shared plumbing every CPU backend uses: checkpoints,
//!   progress and cancellation around an evaluation kernel, and the
//!   lowest-failing-index rule around a parallel verification kernel.
//! - `gpu` (cargo feature `gpu`, on by default): verification on wgpu; a
//!   build without it has no wgpu at all.
//! - [`registry`]: what this host has, `auto` selection, and the
//!   `MONTANA_BACKEND` / `MONTANA_DISABLE_BACKENDS` overrides.
//!
//! Adding a backend: one module implementing [`montana_vdf::Backend`] with
//! its kernels, one line in [`registry::compiled`], and its tests against
//! [`scalar::ScalarBackend`].

pub mod conformance;
pub mod driver;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod registry;
pub mod scalar;

pub use registry::{Registry, SelectError};
pub use scalar::ScalarBackend;
