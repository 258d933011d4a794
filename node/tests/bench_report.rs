//! `montana bench --report DIR`: bench.json with the batch sweep, and the SVG
//! plots. Shapes only; figures are not checked (speed goals live in
//! docs/BENCHMARKS.md).

use std::process::{Command, Output};

use serde_json::Value;

fn montana(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_montana"))
        .args(args)
        .envs(cpu_only())
        .output()
        .expect("run montana")
}

/// Hides a GPU backend: its `montana bench` rows (on CI's software Vulkan
/// device, about a minute) belong to the bench's own tests, and the
/// report's shape and the crossover rule are checked without them.
fn cpu_only() -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_montana"))
        .args(["backends", "--json"])
        .output()
        .expect("run montana");
    let has_gpu = String::from_utf8_lossy(&out.stdout).contains("\"name\":\"gpu\"");
    let forced_gpu = std::env::var("MONTANA_BACKEND").is_ok_and(|b| b.trim() == "gpu");
    if !has_gpu || forced_gpu {
        return vec![];
    }
    let mut disabled = std::env::var("MONTANA_DISABLE_BACKENDS").unwrap_or_default();
    if !disabled.trim().is_empty() {
        disabled.push(',');
    }
    disabled.push_str("gpu");
    vec![("MONTANA_DISABLE_BACKENDS".into(), disabled)]
}

fn available_verify_backends(suite: &str) -> Vec<String> {
    let out = montana(&["backends", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|b| b["available"] == true)
        .filter(|b| {
            b["supports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == &format!("{suite}/verify"))
        })
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn report_writes_json_with_the_sweep_and_svg_plots() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    // An earlier run's plot of another suite goes; the user's own file stays.
    std::fs::create_dir_all(&report).unwrap();
    std::fs::write(report.join("hashes-per-sec-blake3.svg"), "<svg/>").unwrap();
    std::fs::write(report.join("notes.txt"), "mine").unwrap();
    let out = montana(&[
        "bench",
        "--hash",
        "sha256",
        "--seconds",
        "0.05",
        "--threads",
        "2",
        "--report",
        report.to_str().unwrap(),
        "--max-batch",
        "8",
        "--segment-len",
        "64",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("report written to"));

    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("bench.json")).unwrap()).unwrap();
    assert!(v["host"]["cpu"].is_string());
    assert!(v["crossover"].is_object());
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["backend"] == "crate-sha2"));
    let sweep = v["verify_vs_batch"].as_array().unwrap();
    let backends = available_verify_backends("sha256");
    assert!(!backends.is_empty());
    for b in &backends {
        let batches: Vec<u64> = sweep
            .iter()
            .filter(|p| p["backend"] == b.as_str())
            .map(|p| p["segments"].as_u64().unwrap())
            .collect();
        assert_eq!(batches, [1, 2, 4, 8], "{b}");
    }
    assert!(sweep.iter().all(|p| p["hash"] == "sha256"
        && p["threads"] == 2
        && p["segment_len"] == 64
        && p["hashes_per_sec"].as_f64().unwrap() > 0.0));

    for name in ["hashes-per-sec-sha256.svg", "verify-vs-batch-sha256.svg"] {
        let svg = std::fs::read_to_string(report.join(name)).unwrap();
        assert!(svg.starts_with("<svg"), "{name}");
        assert!(svg.contains("sha256"), "{name}");
        for b in &backends {
            assert!(svg.contains(b.as_str()), "{name} should name {b}");
        }
    }
    assert!(
        !report.join("hashes-per-sec-blake3.svg").exists(),
        "the report dir holds only this run's report files"
    );
    assert!(report.join("notes.txt").exists());
}

#[test]
fn an_unwritable_report_dir_fails_before_measuring() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    for target in [file.clone(), file.join("report")] {
        let out = montana(&["bench", "--report", target.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("--report"), "{err}");
        assert!(out.stdout.is_empty(), "nothing was measured: {out:?}");
    }
}

/// SIGINT during `bench --report` (not on a terminal): exit 130, the rows
/// measured so far are printed and written, with progress lines on stderr.
#[test]
fn an_interrupted_report_keeps_what_was_measured() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let child = Command::new(env!("CARGO_BIN_EXE_montana"))
        .args(["bench", "--seconds", "0.5", "--threads", "2", "--report"])
        .arg(&report)
        .envs(cpu_only())
        .env("MONTANA_PROGRESS_SECS", "0.1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Two suites of every backend at half a second a row: far longer than this.
    std::thread::sleep(std::time::Duration::from_secs(3));
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("bench: "), "progress lines: {err}");
    assert!(err.lines().last().unwrap().contains("interrupted"), "{err}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("hashes/s"), "{table}");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("bench.json")).unwrap()).unwrap();
    assert!(!v["results"].as_array().unwrap().is_empty());
}

#[test]
fn report_options_are_checked_before_measuring() {
    let cases: [&[&str]; 3] = [
        &["bench", "--max-batch", "8"],
        &["bench", "--report", "x", "--max-batch", "0"],
        &["bench", "--report", "x", "--segment-len", "0"],
    ];
    for args in cases {
        let out = montana(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!std::path::Path::new("x").exists());
    }
}
