//! Finding the GPU: which adapters this host has and which one to use.
//!
//! Vulkan only: the backend targets headless Linux servers (NVIDIA's driver,
//! Mesa's). Preference: a discrete GPU, then an integrated one, then anything
//! else; a CPU adapter (Mesa's lavapipe, `llvmpipe` in its name) comes last.
//! It counts as available, so tests and `--backend gpu` run the real code on
//! a machine without a GPU, but `auto` never picks it unless
//! `MONTANA_GPU_ALLOW_CPU=1`: it is far slower than the CPU backends.
//!
//! Probing loads the Vulkan loader and asks every driver for its devices,
//! which takes tens to hundreds of milliseconds, so it happens once per
//! process and is cached. It also costs memory for the life of the process:
//! on a host with Mesa and no GPU, loading lavapipe and the other Mesa
//! drivers took a node from 24-31 MB resident to 76-89 MB (issue 14). So
//! the backend does not probe unless the adapter it would find could be
//! used ([`may_probe`]): the user named the backend (`--backend gpu`,
//! `MONTANA_BACKEND=gpu`, `montana backends`), `MONTANA_GPU_ALLOW_CPU=1`
//! is set, `VK_ICD_FILENAMES`/`VK_DRIVER_FILES` pick a driver, or the host
//! has a GPU device node (`/dev/dri/renderD*`, `/dev/nvidiactl`,
//! `/dev/dxg`). Without any of these only a software adapter could be
//! found, and `auto` would never pick it, so the backend reports itself
//! unavailable without loading Vulkan at all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use montana_vdf::AdapterInfo;

use super::block::block_on;

/// Environment variable letting `auto` choose a CPU (software) adapter
/// (read by the CLI into [`crate::GpuPolicy`]).
pub const ENV_ALLOW_CPU: &str = crate::choice::ENV_GPU_ALLOW_CPU;

/// The result of looking for adapters, kept for the life of the process.
pub(crate) struct Probe {
    /// Every adapter, best first (each keeps the instance alive).
    pub adapters: Vec<wgpu::Adapter>,
}

static PROBE: OnceLock<Probe> = OnceLock::new();

/// Set once the user has named the GPU backend in this process.
static NAMED: AtomicBool = AtomicBool::new(false);
/// The GPU policy's `allow_cpu` ([`set_policy`]).
static ALLOW_CPU: AtomicBool = AtomicBool::new(false);
/// The GPU policy's `driver_chosen` ([`set_policy`]).
static DRIVER_CHOSEN: AtomicBool = AtomicBool::new(false);

/// Applies the user's GPU policy (the registry does, from the choice the
/// CLI parsed); this crate reads no environment variables.
pub fn set_policy(policy: crate::GpuPolicy) {
    ALLOW_CPU.store(policy.allow_cpu, Ordering::Relaxed);
    DRIVER_CHOSEN.store(policy.driver_chosen, Ordering::Relaxed);
}

/// The cached probe (made on first call).
pub(crate) fn probe() -> &'static Probe {
    PROBE.get_or_init(|| {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::VULKAN,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let mut adapters = block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
        // Stable: among equals the driver's order stands.
        adapters.sort_by_key(|a| std::cmp::Reverse(preference(a.get_info().device_type)));
        Probe { adapters }
    })
}

/// Higher is better.
fn preference(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 1,
        wgpu::DeviceType::Cpu => 0,
    }
}

/// The adapter the backend uses, if any.
pub(crate) fn chosen() -> Option<&'static wgpu::Adapter> {
    probe().adapters.first()
}

/// Whether the chosen adapter is a software one.
pub(crate) fn chosen_is_cpu() -> bool {
    chosen().is_some_and(|a| a.get_info().device_type == wgpu::DeviceType::Cpu)
}

/// Whether `MONTANA_GPU_ALLOW_CPU` lets `auto` use a software adapter.
pub(crate) fn cpu_allowed() -> bool {
    ALLOW_CPU.load(Ordering::Relaxed)
}

/// Records that the user named the GPU backend (the registry calls it for
/// `--backend gpu`, `MONTANA_BACKEND=gpu` and `montana backends`): from now
/// on this process may probe, and a software adapter counts as available.
pub fn mark_named() {
    NAMED.store(true, Ordering::Relaxed);
}

/// Whether this process has probed (loaded Vulkan) already.
pub fn probed() -> bool {
    PROBE.get().is_some()
}

/// Whether looking for adapters is worth its cost: see the module docs.
pub(crate) fn may_probe() -> bool {
    probed() || NAMED.load(Ordering::Relaxed) || cpu_allowed() || driver_chosen() || device_node()
}

/// Whether the user picked a Vulkan driver by its manifest.
fn driver_chosen() -> bool {
    DRIVER_CHOSEN.load(Ordering::Relaxed)
}

/// Whether the host has a device node a hardware Vulkan driver would open:
/// a DRM render node (AMD, Intel, NVIDIA with modesetting, Mesa's hardware
/// drivers), NVIDIA's control device, or WSL's GPU device. Costs a
/// directory listing, not a driver load.
fn device_node() -> bool {
    let render = std::fs::read_dir("/dev/dri").is_ok_and(|dir| {
        dir.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("renderD"))
    });
    render
        || ["/dev/nvidiactl", "/dev/dxg"]
            .iter()
            .any(|p| std::path::Path::new(p).exists())
}

/// What `montana backends` shows for an adapter.
pub fn describe(info: &wgpu::AdapterInfo) -> AdapterInfo {
    let driver = [info.driver.trim(), info.driver_info.trim()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    AdapterInfo {
        name: info.name.clone(),
        api: format!("{:?}", info.backend),
        driver,
        device_type: format!("{:?}", info.device_type),
    }
}

/// Every adapter this host has, best first (the first is the one used).
pub fn adapters() -> Vec<AdapterInfo> {
    probe()
        .adapters
        .iter()
        .map(|a| describe(&a.get_info()))
        .collect()
}

/// The environment variable that switches off Mesa's device-select layer.
const NODEVICE_SELECT: &str = "NODEVICE_SELECT";

/// Switches off Mesa's implicit `VK_LAYER_MESA_device_select` layer for this
/// process, unless the user has set `NODEVICE_SELECT` themselves.
///
/// The layer (installed with `mesa-vulkan-drivers`) reorders devices for
/// desktop applications by connecting to Wayland and X11; on a headless host
/// libwayland then prints "error: XDG_RUNTIME_DIR is invalid or not set" on
/// stderr at every probe, which breaks the CLI's one-line error contract.
/// This backend ranks adapters itself, so the layer is of no use to it.
///
/// Call it first thing in `main`, before any other thread exists: it sets an
/// environment variable, which is unsound while other threads may read the
/// environment.
pub fn disable_device_select_layer() {
    if std::env::var_os(NODEVICE_SELECT).is_none() {
        std::env::set_var(NODEVICE_SELECT, "1");
    }
}
