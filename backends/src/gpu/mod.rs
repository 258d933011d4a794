//! The GPU backend: segment verification on wgpu (Vulkan).
//!
//! Verifying a checkpointed proof is embarrassingly parallel: each segment is
//! walked by its own invocation of a WGSL kernel (`shaders/`), which compares
//! the end with the claim and writes a pass flag. A single chain is
//! latency-bound, so this backend verifies only; `evaluate` is unsupported.
//!
//! - [`adapter`]: which adapter (discrete, then integrated; a CPU adapter
//!   only when asked for), probed once per process.
//! - `context`: the device and both kernels, made on first use and shared.
//! - `runner`: dispatches of a learnt step budget (`tuner`) so none runs
//!   past ~100 ms nor asks for more than [`MAX_STEPS_PER_DISPATCH`] steps, chunks pipelined over two buffer sets (`buffers`, kept
//!   between calls) so upload, compute and readback overlap.
//! - [`bench`]: throughput and CPU/GPU crossover measurement.
//!
//! Environment: `MONTANA_GPU_ALLOW_CPU=1` lets `auto` choose a software
//! adapter (and lets the backend look for one: [`adapter`] does not load
//! Vulkan on a host without a GPU device unless asked to);
//! `MONTANA_GPU_TRACE=1` prints every dispatch's size and time;
//! `VK_ICD_FILENAMES` picks the Vulkan driver (see `scripts/gpu-check.sh`).
//!
//! Every wgpu failure (no adapter, device creation, validation, out of
//! memory, a lost or hung device, even a panic inside wgpu) becomes
//! [`BackendError::Device`], so callers fall back to a CPU backend.

pub mod adapter;
pub mod bench;
mod block;
mod buffers;
mod context;
mod runner;
mod shaders;
mod tuner;

#[cfg(test)]
mod tests;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::Duration;

use montana_vdf::{
    AdapterInfo, Availability, Backend, BackendError, BackendKind, Hash32, HashSuite, Operation,
    Segment, VerifyOptions, VerifyOutcome,
};

pub use adapter::{adapters, ENV_ALLOW_CPU};
pub use runner::ENV_TRACE;

use buffers::Buffers;
use runner::Runner;
use tuner::StepTuner;

/// `auto` rank of a hardware GPU for verification: above the CPU backends,
/// whose ranks are single and double digits. Calibration may reorder.
pub const AUTO_RANK: u32 = 100;

/// What [`GpuBackend::lanes`] reports on a software adapter.
const SOFTWARE_LANES: usize = 1024;

/// The most steps one dispatch may ask of a lane, whatever the config: the
/// kernel's step loop must stay within every driver's loop limit. llvmpipe
/// (lavapipe) ends all loops of an invocation after 65,535 iterations in
/// total (Mesa's `LP_MAX_TGSI_LOOP_ITERATIONS`), silently: a dispatch of
/// 65,536 steps walked one step short, and a segment whose last dispatch
/// was that long read as invalid (issue 15: a fresh tuner reaches 65,536
/// steps after 65,472, so every segment of 131,008 steps or more failed).
/// On a hardware GPU a dispatch this long is rarely cut: with the device
/// full, the ~50 ms target is reached far earlier.
pub const MAX_STEPS_PER_DISPATCH: u32 = 65_535;

/// Knobs of the dispatch loop. The defaults suit real GPUs; tests shrink
/// them to reach every path (chunking, step splitting) with small batches.
#[derive(Clone, Debug)]
pub struct GpuConfig {
    /// The time one dispatch aims for (well under drivers' watchdogs).
    pub target_dispatch: Duration,
    /// Steps of the first dispatch, before any timing is known.
    pub initial_steps: u32,
    /// A hard cap on steps per dispatch (at most [`MAX_STEPS_PER_DISPATCH`]).
    pub max_steps_per_dispatch: u32,
    /// Segments per chunk (one invocation each); bounded by device limits.
    pub max_lanes: usize,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            target_dispatch: Duration::from_millis(50),
            initial_steps: 64,
            max_steps_per_dispatch: MAX_STEPS_PER_DISPATCH,
            // Enough to fill an H100 (132 SMs x 2,048 resident threads ~
            // 270k) in two chunks while keeping chunks small enough to
            // overlap; 65,536 invocations already reach ~95% of peak there.
            max_lanes: 1 << 17,
        }
    }
}

/// The wgpu verification backend.
pub struct GpuBackend {
    config: GpuConfig,
    state: Mutex<State>,
}

/// What a backend keeps between calls.
struct State {
    buffers: Buffers,
    /// One step budget per suite (SHA-256 is several times slower).
    tuners: [StepTuner; 2],
}

impl Default for GpuBackend {
    fn default() -> Self {
        GpuBackend::new(GpuConfig::default())
    }
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBackend")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl GpuBackend {
    /// A backend with `config`, its step cap held to [`MAX_STEPS_PER_DISPATCH`].
    pub fn new(mut config: GpuConfig) -> Self {
        config.max_steps_per_dispatch = config.max_steps_per_dispatch.min(MAX_STEPS_PER_DISPATCH);
        Self::build(config)
    }

    /// `config` as given, even past the drivers' loop limit: for the test
    /// that shows a loop cut short is a device error, never a verdict.
    #[cfg(test)]
    fn unclamped(config: GpuConfig) -> Self {
        Self::build(config)
    }

    fn build(config: GpuConfig) -> Self {
        let tuner = StepTuner::new(
            config.target_dispatch,
            config.initial_steps,
            config.max_steps_per_dispatch,
        );
        GpuBackend {
            config,
            state: Mutex::new(State {
                buffers: Buffers::default(),
                tuners: [tuner.clone(), tuner],
            }),
        }
    }

    fn device_error(message: impl Into<String>) -> BackendError {
        BackendError::Device {
            backend: "gpu".into(),
            message: message.into(),
        }
    }

    /// Runs `f` on the device under this backend's lock, turning every
    /// failure (including a panic inside wgpu) into a typed error.
    fn with_runner<T>(
        &self,
        suite: HashSuite,
        f: impl FnOnce(&mut Runner<'_>) -> Result<T, String>,
    ) -> Result<T, BackendError> {
        let ctx = context::context().map_err(Self::device_error)?;
        ctx.check().map_err(Self::device_error)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let result = catch_unwind(AssertUnwindSafe(|| {
            let State { buffers, tuners } = &mut *state;
            let tuner = &mut tuners[usize::from(suite == HashSuite::Blake3)];
            let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let validation = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let out = f(&mut Runner::new(ctx, buffers, tuner, self.config.max_lanes));
            let errors = [validation.pop(), oom.pop()].map(block::block_on);
            match errors.into_iter().flatten().next() {
                Some(e) => Err(format!("GPU error: {}", context::one_line(&e.to_string()))),
                None => out,
            }
        }));
        let message = match result {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(message)) => message,
            Err(panic) => {
                // The buffers may be mid-update: start afresh next call.
                state.buffers = Buffers::default();
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("panic");
                format!("wgpu panicked: {}", context::one_line(what))
            }
        };
        ctx.mark_failed(&message);
        Err(Self::device_error(message))
    }

    /// Each segment's value after its `steps` steps, ignoring `end`.
    pub(crate) fn walk_values(
        &self,
        suite: HashSuite,
        segments: &[Segment],
    ) -> Result<Vec<Hash32>, BackendError> {
        self.with_runner(suite, |r| r.walk_values(suite, segments))
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Gpu
    }

    fn availability(&self) -> Availability {
        if let Some(why) = context::failure() {
            return Availability::Unavailable(why);
        }
        if !adapter::may_probe() {
            // Only a software adapter could be found, and auto never picks
            // one: loading Vulkan would only cost memory (issue 14).
            return Availability::Unavailable(format!(
                "no GPU device on this host (no /dev/dri/renderD*, /dev/nvidiactl); \
                 a software Vulkan adapter is used only with --backend gpu or {ENV_ALLOW_CPU}=1"
            ));
        }
        match adapter::chosen() {
            Some(_) => Availability::Available,
            None => Availability::Unavailable("no GPU adapter found (Vulkan)".into()),
        }
    }

    /// Segments it takes to fill the device: a chunk on a GPU; on a
    /// software adapter (a few SIMD lanes per CPU core) far fewer, so that
    /// batches sized by `lanes` (bench, calibration) stay small there.
    fn lanes(&self) -> usize {
        if adapter::may_probe() && adapter::chosen_is_cpu() {
            SOFTWARE_LANES.min(self.config.max_lanes)
        } else {
            self.config.max_lanes
        }
    }

    fn supports(&self, _suite: HashSuite, op: Operation) -> bool {
        op == Operation::Verify
    }

    fn auto_rank(&self, _suite: HashSuite, op: Operation) -> Option<u32> {
        if op != Operation::Verify
            || !adapter::may_probe()
            || (adapter::chosen_is_cpu() && !adapter::cpu_allowed())
        {
            return None;
        }
        Some(AUTO_RANK)
    }

    fn adapter(&self) -> Option<AdapterInfo> {
        if !adapter::may_probe() {
            return None;
        }
        adapter::chosen().map(|a| adapter::describe(&a.get_info()))
    }

    // No `evaluate`: a chain is latency-bound, one invocation would walk it
    // alone (the trait's default answers Unsupported).

    fn verify(
        &self,
        suite: HashSuite,
        segments: &[Segment],
        _opts: &VerifyOptions,
    ) -> Result<VerifyOutcome, BackendError> {
        self.check_supported(suite, Operation::Verify)?;
        if segments.is_empty() {
            return Ok(VerifyOutcome::Valid);
        }
        Ok(
            match self.with_runner(suite, |r| r.verify(suite, segments))? {
                None => VerifyOutcome::Valid,
                Some(i) => VerifyOutcome::Invalid {
                    first_bad_segment: i,
                },
            },
        )
    }
}
