//! `montana bench`: the JSON shape later tooling reads, and bad input.
//! Figures are not checked (speed goals live in docs/BENCHMARKS.md, not in
//! tests); only that every row is there and positive.

use std::process::{Command, Output};

use serde_json::Value;

fn montana(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_montana"))
        .args(args)
        .output()
        .expect("run montana")
}

#[test]
fn json_report_has_host_crate_rows_and_backend_rows() {
    let out = montana(&[
        "bench",
        "--hash",
        "blake3",
        "--seconds",
        "0.1",
        "--threads",
        "2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(v["host"]["cpu"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(v["host"]["features"].is_array());
    assert!(v["crossover"].is_object());
    let rows = v["results"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["hash"] == "blake3"));
    assert!(rows
        .iter()
        .all(|r| r["hashes_per_sec"].as_f64().unwrap() > 0.0));
    let crate_row = rows
        .iter()
        .find(|r| r["backend"] == "crate-blake3")
        .unwrap();
    assert_eq!(crate_row["op"], "eval");
    assert_eq!(crate_row["threads"], 1);
    // The oracle is always measured; verification at 1 and at 2 threads.
    for threads in [1, 2] {
        let r = rows
            .iter()
            .find(|r| r["backend"] == "scalar" && r["op"] == "verify" && r["threads"] == threads)
            .unwrap_or_else(|| panic!("no scalar verify row at {threads} threads"));
        assert!(r["segments"].as_u64().unwrap() >= 1);
        assert!(r["segment_len"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn table_names_the_crate_baselines() {
    let out = montana(&["bench", "--seconds", "0.05", "--threads", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("crate-sha2") && text.contains("crate-blake3"),
        "{text}"
    );
}

#[test]
fn bad_input_exits_2_with_one_line() {
    for args in [
        &["bench", "--seconds", "0"][..],
        &["bench", "--seconds", "nan"],
        &["bench", "--threads", "0"],
        &["bench", "--hash", "md5"],
    ] {
        let out = montana(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}
