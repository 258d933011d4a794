//! `montana bench --report DIR`: bench.json with the batch sweep, and the SVG
//! plots. Shapes only; figures are not checked (speed goals live in
//! docs/BENCHMARKS.md).

use std::process::{Command, Output};

use serde_json::Value;

fn montana(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_montana"))
        .args(args)
        .output()
        .expect("run montana")
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
    assert!(!report.join("hashes-per-sec-blake3.svg").exists());
}

#[test]
fn report_options_are_checked() {
    for args in [
        &["bench", "--max-batch", "8"][..],
        &[
            "bench",
            "--seconds",
            "0.05",
            "--report",
            "x",
            "--max-batch",
            "0",
        ][..],
    ] {
        let out = montana(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}
