//! Issue 14: `auto` alone does not load Vulkan on a host without a GPU
//! device. Loading Mesa's drivers (lavapipe) cost a node ~50 MB resident for
//! a software adapter `auto` never picks. Naming the backend still opens it.
//!
//! One test in its own process: the probe and the "named" mark are
//! process-wide.
#![cfg(feature = "gpu")]

use montana_backends::gpu::adapter;
use montana_backends::registry::{compiled, Registry};
use montana_vdf::{HashSuite, Operation};

fn vulkan_mapped() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("libvulkan"))
}

fn gpu_device_node() -> bool {
    let render = std::fs::read_dir("/dev/dri").is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("renderD"))
    });
    render
        || ["/dev/nvidiactl", "/dev/dxg"]
            .iter()
            .any(|p| std::path::Path::new(p).exists())
}

#[test]
fn auto_does_not_load_vulkan_without_a_gpu_device_but_naming_gpu_does() {
    // As `montana` does first thing (else Mesa's layer writes to stderr).
    adapter::disable_device_select_layer();
    let asked = [
        "MONTANA_GPU_ALLOW_CPU",
        "MONTANA_BACKEND",
        "VK_ICD_FILENAMES",
        "VK_DRIVER_FILES",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if asked || gpu_device_node() {
        eprintln!("skipping: a GPU device or a variable asks for probing on this host");
        return;
    }
    // Everything a node start does with the registry: auto, the fallback
    // order, availability and adapters of every backend (calibration, the
    // host fingerprint).
    let registry = Registry::new(compiled());
    for suite in HashSuite::ALL {
        for op in Operation::ALL {
            let b = registry.auto(suite, op).unwrap();
            assert_ne!(b.name(), "gpu");
            assert!(registry.ranked(suite, op).iter().all(|b| b.name() != "gpu"));
        }
    }
    for b in registry.all() {
        let _ = (registry.availability(b.as_ref()), b.adapter(), b.lanes());
    }
    let gpu = registry.all().iter().find(|b| b.name() == "gpu").unwrap();
    let why = registry.availability(gpu.as_ref());
    assert!(
        why.reason()
            .is_some_and(|r| r.contains("MONTANA_GPU_ALLOW_CPU")),
        "{why:?}"
    );
    assert!(!adapter::probed(), "auto probed the GPU adapters");
    assert!(!vulkan_mapped(), "auto loaded libvulkan");

    // Named, it looks (and so the test could fail above: probing maps the
    // Vulkan loader).
    let named = registry.get("gpu", HashSuite::Blake3, Operation::Verify);
    assert!(adapter::probed());
    if named.is_ok() {
        assert!(vulkan_mapped(), "an adapter was found without libvulkan?");
    } else {
        eprintln!("no Vulkan adapter on this host: {:?}", named.err());
    }
}
