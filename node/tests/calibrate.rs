//! `montana calibrate` contract: exit codes (0 can follow, 3 cannot, 2 bad
//! input with one stderr line), the `--json` fields, where the file goes,
//! `--genesis` and `--recommend-d`. Tiny D and millisecond runs: these check
//! the contract, not the speed.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Millisecond measurements.
const FAST: &[&str] = &["--quick", "--run-ms", "5", "--runs", "1"];

fn montana_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_montana"))
        .arg("calibrate")
        .args(args)
        .args(FAST)
        .current_dir(dir)
        // The host rate cache a calibration writes: inside the test's dir.
        .env("XDG_CACHE_HOME", dir)
        .output()
        .expect("spawn montana")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const VERDICT_FIELDS: &[&str] = &[
    "can_evaluate",
    "margin",
    "can_follow",
    "role",
    "eval_backend",
    "verify_backend",
    "eval_hashes_per_sec",
    "verify_hashes_per_sec",
    "window_eval_secs",
    "window_verify_secs",
];

#[test]
fn a_host_that_can_follow_exits_0_with_every_field_and_writes_the_data_dir_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = montana_in(
        dir.path(),
        &[
            "--hash",
            "blake3",
            "--d",
            "1000",
            "--checkpoints",
            "10",
            "--window-secs",
            "60",
            "--threads",
            "2",
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    for f in VERDICT_FIELDS {
        assert!(v.get(f).is_some(), "missing {f}: {v}");
    }
    assert_eq!(v["role"], "proposer-capable");
    assert_eq!(v["can_follow"], true);
    assert_eq!(
        (
            v["hash"].as_str(),
            v["d"].as_u64(),
            v["checkpoints"].as_u64()
        ),
        (Some("blake3"), Some(1000), Some(10))
    );
    assert_eq!(v["threads"], 2);
    // The numbers are consistent with each other.
    let eval_rate = v["eval_hashes_per_sec"].as_f64().unwrap();
    let eval_secs = v["window_eval_secs"].as_f64().unwrap();
    assert!((eval_secs - 1000.0 / eval_rate).abs() <= 1e-9 * eval_secs);
    assert!((v["margin"].as_f64().unwrap() - (1.0 - eval_secs / 60.0)).abs() < 1e-9);
    let verify_secs = v["window_verify_secs"].as_f64().unwrap();
    assert!(
        (verify_secs - 1000.0 / v["verify_hashes_per_sec"].as_f64().unwrap()).abs()
            <= 1e-9 * verify_secs
    );
    let ms = v["measurements"].as_array().unwrap();
    assert!(ms.iter().any(|m| m["backend"] == v["eval_backend"]
        && m["eval"]["hashes_per_sec"].as_f64() == Some(eval_rate)));
    let file = data.join("calibration.toml");
    assert_eq!(v["file"].as_str(), file.to_str());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("role = \"proposer-capable\"") && text.contains("[host]"),
        "{text}"
    );
    assert!(!dir.path().join("calibration.toml").exists());
}

#[test]
fn out_and_the_default_path_and_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = montana_in(
        dir.path(),
        &["--d", "1000", "--checkpoints", "10", "--out", "x/c.toml"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dir.path().join("x/c.toml").exists());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("role:") && table.contains("proposer-capable"),
        "{table}"
    );

    let out = montana_in(dir.path(), &["--d", "1000", "--checkpoints", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dir.path().join("calibration.toml").exists());
}

#[test]
fn a_host_that_cannot_follow_exits_3_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    // A million steps to verify in a quarter of a millisecond.
    let args = [
        "--d",
        "1000000",
        "--checkpoints",
        "10",
        "--window-secs",
        "0.001",
        "--json",
    ];
    let out = montana_in(dir.path(), &args);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("cannot follow"), "{err}");
    let v = json(&out);
    assert_eq!(
        (v["role"].as_str(), v["can_follow"].as_bool()),
        (Some("cannot-follow"), Some(false))
    );
    assert!(
        dir.path().join("calibration.toml").exists(),
        "the measurements are kept"
    );

    let mut allowed = args.to_vec();
    allowed.push("--allow-slow");
    let out = montana_in(dir.path(), &allowed);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["role"], "cannot-follow");
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.json"), r#"{"hash":"sha256","d":10}"#).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--hash", "md5"], "md5"),
        (&["--d", "10", "--checkpoints", "3"], "divide"),
        (&["--d", "0"], "--d"),
        (&["--window-secs", "0"], "window"),
        (&["--window-secs", "nan"], "window"),
        (&["--threads", "0"], "threads"),
        (&["--run-ms", "0"], "run-ms"),
        (&["--genesis", "absent.json"], "absent.json"),
        (&["--genesis", "bad.json"], "bad.json"),
        (&["--genesis", "bad.json", "--d", "10"], "--d"),
        (&["--data-dir", "a", "--out", "b"], "--out"),
        (&["--recommend-d"], "--window-secs"),
        (&["--recommend-d", "--window-secs", "1", "--d", "5"], "--d"),
        (&["--no-such-flag"], "--no-such-flag"),
        // Checked before measuring, not after.
        (
            &["--out", "bad.json/calibration.toml"],
            "--out bad.json/calibration.toml",
        ),
        (&["--out", "."], "is a directory"),
        (&["--data-dir", "bad.json"], "--data-dir"),
    ];
    for (args, needle) in cases {
        let out = montana_in(dir.path(), args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.to_lowercase().contains(&needle.to_lowercase()),
            "{args:?}: {err:?} should mention {needle:?}"
        );
    }
    assert!(!dir.path().join("calibration.toml").exists());
}

#[test]
fn genesis_supplies_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = dir.path().join("genesis.json");
    std::fs::write(
        &genesis,
        r#"{"version":1,"hash":"blake3","d":2000,"checkpoints":20,"window_secs":30.0,
           "transport":"Noise_XXhfs_25519+Kyber1024_ChaChaPoly_BLAKE2s","peers":[]}"#,
    )
    .unwrap();
    let out = montana_in(
        dir.path(),
        &["--genesis", genesis.to_str().unwrap(), "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        (
            v["hash"].as_str(),
            v["d"].as_u64(),
            v["checkpoints"].as_u64(),
            v["window_secs"].as_f64()
        ),
        (Some("blake3"), Some(2000), Some(20), Some(30.0))
    );
}

#[test]
fn recommend_d_is_a_multiple_of_k_that_fits_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let out = montana_in(
        dir.path(),
        &[
            "--recommend-d",
            "--window-secs",
            "0.5",
            "--checkpoints",
            "10",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    let d = v["d"].as_u64().unwrap();
    let rate = v["eval_hashes_per_sec"].as_f64().unwrap();
    assert!(d >= 10 && d.is_multiple_of(10), "{v}");
    assert!(
        d as f64 <= rate * 0.5 + 1.0 && (d + 10) as f64 > rate * 0.5,
        "{v}"
    );
    assert_eq!(v["checkpoints"], 10);
    assert!(
        !dir.path().join("calibration.toml").exists(),
        "recommend writes no file"
    );
}

#[test]
fn recommend_d_without_quick_says_quick_exists() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_montana"))
            .args(["calibrate", "--recommend-d", "--window-secs", "1"])
            .args(["--checkpoints", "10", "--run-ms", "5", "--runs", "1"])
            .args(extra)
            .current_dir(dir.path())
            .env("XDG_CACHE_HOME", dir.path())
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("--quick"), "{}", stderr(&out));
    let quick = run(&["--quick"]);
    assert_eq!(quick.status.code(), Some(0), "{}", stderr(&quick));
    assert!(!stderr(&quick).contains("--quick"), "{}", stderr(&quick));
}

#[test]
fn the_node_accepts_the_file_the_command_wrote() {
    use montana_calibration::{select, NetworkParams, SelectOptions};
    use montana_vdf::HashSuite;

    let dir = tempfile::tempdir().unwrap();
    let out = montana_in(
        dir.path(),
        &[
            "--hash",
            "sha256",
            "--d",
            "3000",
            "--checkpoints",
            "30",
            "--window-secs",
            "20",
            "--threads",
            "2",
            "--data-dir",
            "data",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let path = dir.path().join("data/calibration.toml");
    // The registry as the CLI builds it (the same inherited variables).
    let env = |v: &str| std::env::var(v).ok();
    let (forced, disabled) = (env("MONTANA_BACKEND"), env("MONTANA_DISABLE_BACKENDS"));
    let registry = montana_backends::Registry::new(montana_backends::registry::compiled())
        .with_choice(montana_backends::BackendChoice::parse(
            montana_backends::choice::ChoiceInputs {
                env_backend: forced.as_deref(),
                env_disable: disabled.as_deref(),
                ..Default::default()
            },
        ))
        .unwrap();
    let params = NetworkParams::new(HashSuite::Sha256, 3000, 30, 20.0).unwrap();
    let opts = SelectOptions {
        threads: 2,
        ..SelectOptions::new(&path, params)
    };
    let s = select(&registry, &opts).unwrap();
    assert_eq!(s.recalibrated, None, "the CLI's file should apply as is");
    assert_eq!(
        Some(s.verify.name()),
        s.calibration.verdict.verify_backend.as_deref()
    );
    // Another network: the node re-calibrates (quickly) and says why.
    let other = SelectOptions {
        params: NetworkParams { d: 6000, ..params },
        config: montana_calibration::MeasureConfig::uniform(std::time::Duration::from_millis(5), 1),
        ..opts
    };
    let s = select(&registry, &other).unwrap();
    assert_eq!(
        s.recalibrated.map(|r| r.to_string()),
        Some("the network parameters changed: d 3000 -> 6000".into())
    );
}
