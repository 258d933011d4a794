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
//! process and is cached.

use std::sync::OnceLock;

use montana_vdf::AdapterInfo;

use super::block::block_on;

/// Environment variable letting `auto` choose a CPU (software) adapter.
pub const ENV_ALLOW_CPU: &str = "MONTANA_GPU_ALLOW_CPU";

/// The result of looking for adapters, kept for the life of the process.
pub(crate) struct Probe {
    /// Every adapter, best first (each keeps the instance alive).
    pub adapters: Vec<wgpu::Adapter>,
}

/// The cached probe.
pub(crate) fn probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
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
    std::env::var(ENV_ALLOW_CPU).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
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
