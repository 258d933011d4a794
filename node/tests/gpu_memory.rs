//! Issue 14: a node on a host with Mesa and no GPU does not load Vulkan.
//! Opening the software adapter (lavapipe) while probing or calibrating took
//! a node from ~20 MB resident to ~80 MB (docs/BENCHMARKS.md), for an
//! adapter `auto` never picks. A node maps the Vulkan loader only when the
//! gpu backend is named (or a GPU device exists).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use montana_node::devnet;
use montana_node::status::STATUS_ADDR_FILE;
use montana_vdf::HashSuite;

const BIN: &str = env!("CARGO_BIN_EXE_montana");

/// Killed on drop, so a failing test leaves no process behind.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Variables that would make the node probe on purpose.
const PROBING_VARS: [&str; 5] = [
    "MONTANA_GPU_ALLOW_CPU",
    "MONTANA_BACKEND",
    "MONTANA_DISABLE_BACKENDS",
    "VK_ICD_FILENAMES",
    "VK_DRIVER_FILES",
];

fn gpu_device_node() -> bool {
    let render = std::fs::read_dir("/dev/dri").is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("renderD"))
    });
    render
        || ["/dev/nvidiactl", "/dev/dxg"]
            .iter()
            .any(|p| Path::new(p).exists())
}

/// Starts node `dir` (a follower of the plan), waits until it has chosen its
/// backends and serves, and says whether it maps the Vulkan loader.
fn maps_vulkan(plan: &devnet::Plan, i: usize, args: &[&str], env: &[(&str, &str)]) -> bool {
    let n = &plan.nodes[i];
    let _ = std::fs::remove_file(n.dir.join(STATUS_ADDR_FILE));
    let log = std::fs::File::create(n.dir.join("node.log")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("start")
        .arg("--data-dir")
        .arg(&n.dir)
        .arg("--genesis")
        .arg(&plan.genesis_path)
        .args(["--status-addr", "127.0.0.1:0"])
        .args(args)
        .env("MONTANA_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for v in PROBING_VARS {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    let mut node = Node(cmd.spawn().expect("spawn montana start"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !n.dir.join(STATUS_ADDR_FILE).exists() {
        if let Some(status) = node.0.try_wait().unwrap() {
            let log = std::fs::read_to_string(n.dir.join("node.log")).unwrap_or_default();
            panic!("the node exited ({status}) with {args:?}: {log}");
        }
        assert!(
            Instant::now() < deadline,
            "the node did not start: {args:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", node.0.id())).unwrap();
    maps.contains("libvulkan")
}

#[test]
fn a_node_loads_vulkan_only_when_the_gpu_backend_is_named() {
    if gpu_device_node() {
        eprintln!("skipping: this host has a GPU device, which auto may use");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = devnet::plan(dir.path(), 2, HashSuite::Sha256, 200_000, 100, 0.2).unwrap();
    // node1, a follower: calibration skipped, then the quick calibration of
    // a node without a file, then the file it wrote.
    let calibration = plan.nodes[1].dir.join("calibration.toml");
    assert!(!maps_vulkan(&plan, 1, &["--skip-calibration"], &[]));
    assert!(!calibration.exists());
    assert!(!maps_vulkan(&plan, 1, &[], &[]), "quick calibration");
    assert!(calibration.exists());
    assert!(!maps_vulkan(&plan, 1, &[], &[]), "with a calibration file");

    // Named, the software adapter is opened: this test can fail.
    let backends = Command::new(BIN)
        .args(["backends", "--json"])
        .env("MONTANA_GPU_ALLOW_CPU", "1")
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&backends.stdout).unwrap();
    let gpu = list
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["name"] == "gpu" && b["available"] == true);
    if !gpu {
        eprintln!(
            "no Vulkan adapter on this host (mesa-vulkan-drivers): the named case is not checked"
        );
        return;
    }
    // Every verb that takes a backend's name opens it.
    let selftest = Command::new(BIN)
        .args([
            "selftest",
            "--backend",
            "gpu",
            "--seconds",
            "0",
            "--max-exp",
            "0",
        ])
        .env_remove("MONTANA_GPU_ALLOW_CPU")
        .output()
        .unwrap();
    assert!(selftest.status.success(), "{selftest:?}");
    let named = ["--skip-calibration", "--backend", "gpu"];
    assert!(maps_vulkan(
        &plan,
        1,
        &named,
        &[("MONTANA_GPU_ALLOW_CPU", "1")]
    ));
    assert!(maps_vulkan(&plan, 1, &named, &[]));
}
