//! `montana bench`: the JSON shape later tooling reads, and bad input.
//! Figures are not checked (speed goals live in docs/BENCHMARKS.md, not in
//! tests); only that every row is there and positive.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Runs montana with its rate cache in a scratch directory (a bench writes
/// one; tests must not touch the user's).
fn montana(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    montana_cached(cache.path(), args, None)
}

/// Runs montana with `cache` as `XDG_CACHE_HOME`, no backend pinned or
/// disabled, and `stdin` as its input.
fn montana_cached(cache: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_montana"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .env_remove("MONTANA_BACKEND")
        .env_remove("MONTANA_DISABLE_BACKENDS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run montana");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().expect("run montana")
}

/// `montana bench` writes this host's rate cache; `auto` then ranks from
/// it, and a corrupt cache is ignored with one warning line.
#[test]
fn bench_writes_the_host_rate_cache_and_auto_ranks_from_it() {
    let cache = tempfile::tempdir().unwrap();
    let out = montana_cached(
        cache.path(),
        &[
            "bench",
            "--hash",
            "sha256",
            "--seconds",
            "0.05",
            "--threads",
            "1",
            "--json",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<_> = std::fs::read_dir(cache.path().join("montana"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let path = &files[0];
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("rates-") && name.ends_with(".toml"),
        "{name}"
    );
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains("backend = \"scalar\""), "{text}");
    assert!(!text.contains("crate-sha2"), "{text}");

    // Measurements saying the oracle verifies fastest by far: auto follows.
    let list: Value = serde_json::from_slice(&montana(&["backends", "--json"]).stdout).unwrap();
    let mut rates = String::from("format = 1\nhost = \"test\"\n");
    for b in list.as_array().unwrap() {
        let name = b["name"].as_str().unwrap();
        let hps = if name == "scalar" { 1e15 } else { 1.0 };
        rates += &format!(
            "[[rates]]\nbackend = \"{name}\"\nhash = \"sha256\"\nop = \"verify\"\nthreads = 1\nhashes_per_sec = {hps:e}\n"
        );
    }
    std::fs::write(path, rates).unwrap();
    let proof = montana_cached(
        cache.path(),
        &[
            "vdf",
            "eval",
            "--iterations",
            "1000",
            "--checkpoints",
            "10",
            "--json",
        ],
        None,
    );
    assert!(
        proof.status.success(),
        "{}",
        String::from_utf8_lossy(&proof.stderr)
    );
    let proof = String::from_utf8(proof.stdout).unwrap();
    let verify = |cache: &Path| montana_cached(cache, &["vdf", "verify"], Some(&proof));
    let out = verify(cache.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backend"], "scalar", "{v}");

    std::fs::write(path, "not = [toml").unwrap();
    let out = verify(cache.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("warning: ignoring the rate cache"), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
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
