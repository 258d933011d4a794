//! The `montana` command-line contract: outputs, exit codes (0 ok, 1 check
//! failed, 2 bad input with one stderr line), and agreement with the spec.
//!
//! These tests honour an inherited `MONTANA_BACKEND` (CI runs them once per
//! forced backend), so they never assume which backend answered.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use montana_vdf::{Hash32, HashSuite, TimeChain};
use serde_json::Value;

fn montana(args: &[&str]) -> Output {
    montana_with(args, &[], None)
}

fn montana_with(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_montana"));
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn montana");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait for montana")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Exit 2, exactly one line on stderr, no panic.
fn assert_bad_input(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let out = montana_with(args, env, Some(""));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: stderr {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: stderr {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{args:?}: {err:?} should mention {needle:?}"
    );
}

#[test]
fn eval_then_verify_round_trip_for_both_suites() {
    for suite in HashSuite::ALL {
        let seed = Hash32([0x5a; 32]);
        let out = montana(&[
            "vdf",
            "eval",
            "--hash",
            suite.name(),
            "--seed",
            &seed.to_hex(),
            "--iterations",
            "600",
            "--checkpoints",
            "12",
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let proof = json(&out);
        assert_eq!(proof["hash"], suite.name());
        assert_eq!(proof["seed"], seed.to_hex());
        assert_eq!(proof["iterations"], 600);
        let cps = proof["checkpoints"].as_array().unwrap();
        assert_eq!(cps.len(), 12);
        assert_eq!(cps[0], suite.iterate(&seed, 50).to_hex());
        assert_eq!(proof["output"], suite.iterate(&seed, 600).to_hex());
        assert!(proof["backend"].is_string() && proof["seconds"].is_number());

        let text = proof.to_string();
        let out = montana_with(&["vdf", "verify"], &[], Some(&text));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let v = json(&out);
        assert_eq!(v["valid"], true);
        assert!(v.get("first_bad_segment").is_none());

        // Corrupt checkpoint 7: segment 7 is the first bad one.
        let mut bad = proof.clone();
        let mut cp7 = Hash32::from_hex(bad["checkpoints"][7].as_str().unwrap()).unwrap();
        cp7.0[31] ^= 0x80;
        bad["checkpoints"][7] = cp7.to_hex().into();
        let dir =
            std::env::temp_dir().join(format!("montana-cli-{}-{}", std::process::id(), suite));
        std::fs::write(&dir, bad.to_string()).unwrap();
        let out = montana(&["vdf", "verify", dir.to_str().unwrap()]);
        std::fs::remove_file(&dir).ok();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let v = json(&out);
        assert_eq!(v["valid"], false);
        assert_eq!(v["first_bad_segment"], 7);
    }
}

#[test]
fn eval_defaults_to_the_genesis_seed_and_one_checkpoint() {
    let out = montana(&["vdf", "eval", "--iterations", "5", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let p = json(&out);
    let t0 = TimeChain::new(HashSuite::Sha256, 5).t0();
    assert_eq!(p["hash"], "sha256");
    assert_eq!(p["seed"], t0.to_hex());
    assert_eq!(p["checkpoints"].as_array().unwrap().len(), 1);
    assert_eq!(p["output"], HashSuite::Sha256.iterate(&t0, 5).to_hex());

    let human = montana(&["vdf", "eval", "--iterations", "5"]);
    assert_eq!(human.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&human.stdout).contains(p["output"].as_str().unwrap()));
}

#[test]
fn timechain_matches_the_definition() {
    let out = montana(&["vdf", "timechain", "--windows", "0", "--d", "10", "--json"]);
    let v = json(&out);
    assert_eq!(
        v["t0"],
        "0619a36fd8b606aa6d6a799c1fac31e1187302a23484e7516b12122cbe49ebc3"
    );
    assert_eq!(v["t"], v["t0"]);
    for suite in HashSuite::ALL {
        let out = montana(&[
            "vdf",
            "timechain",
            "--windows",
            "3",
            "--d",
            "250",
            "--hash",
            suite.name(),
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(0));
        let v = json(&out);
        let t0 = TimeChain::new(suite, 250).t0();
        assert_eq!(v["hash"], suite.name());
        assert_eq!(v["d"], 250);
        assert_eq!(v["windows"], 3);
        assert_eq!(v["t0"], t0.to_hex());
        assert_eq!(v["t"], suite.iterate(&t0, 750).to_hex());
    }
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let seed = "00".repeat(32);
    let e = |a: &[&str], needle: &str| assert_bad_input(a, &[], needle);
    e(&["vdf", "eval", "--iterations", "0"], "at least 1");
    e(&["vdf", "eval", "--iterations", "1099511627777"], "2^40");
    e(
        &["vdf", "eval", "--iterations", "10", "--checkpoints", "3"],
        "divide",
    );
    e(
        &["vdf", "eval", "--iterations", "10", "--checkpoints", "11"],
        "checkpoints",
    );
    e(
        &["vdf", "eval", "--iterations", "10", "--checkpoints", "0"],
        "checkpoints",
    );
    e(
        &["vdf", "eval", "--iterations", "10", "--seed", "abcd"],
        "64 hex",
    );
    e(
        &[
            "vdf",
            "eval",
            "--iterations",
            "10",
            "--seed",
            &"zz".repeat(32),
        ],
        "hex",
    );
    e(&["vdf", "eval", "--iterations", "-5"], "-5");
    e(&["vdf", "eval", "--iterations", "ten"], "ten");
    e(
        &["vdf", "eval", "--iterations", "10", "--hash", "md5"],
        "md5",
    );
    e(
        &[
            "vdf",
            "eval",
            "--iterations",
            "10",
            "--seed",
            &seed,
            "--backend",
            "nope",
        ],
        "unknown backend",
    );
    e(&["vdf", "eval"], "iterations");
    e(&["vdf", "frobnicate"], "frobnicate");
    e(
        &["vdf", "timechain", "--windows", "1", "--d", "0"],
        "at least 1",
    );
    // The flag is named (not the library's "iterations").
    e(&["vdf", "timechain", "--windows", "1", "--d", "0"], "'--d");
    e(
        &["vdf", "timechain", "--windows", "1", "--d", "1.5"],
        "whole number",
    );
    e(
        &["vdf", "timechain", "--windows", "1", "--d", "1e-3"],
        "'--d",
    );
    e(&["vdf", "eval", "--iterations", "1e30"], "too large");
    e(&["vdf", "verify", "/nonexistent/proof.json"], "cannot read");
    e(&["vdf", "verify", "--threads", "0"], "threads");
    e(&["selftest", "--backend", "nope"], "unknown backend");
    e(&["selftest", "--seconds=-1"], "seconds");
    e(&["selftest", "--seconds", "NaN"], "seconds");
    e(&["selftest", "--max-exp", "31"], "max-exp");

    let malformed = |text: &str, needle: &str| {
        let out = montana_with(&["vdf", "verify"], &[], Some(text));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
        assert!(err.contains(needle), "{err:?} should mention {needle}");
    };
    malformed("", "malformed proof JSON");
    malformed("{\"hash\":\"sha256\"}", "malformed proof JSON");
    let one = format!(
        "{{\"hash\":\"sha256\",\"seed\":\"{seed}\",\"iterations\":4,\"checkpoints\":[\"{seed}\",\"{seed}\"],\"output\":\"{}\"}}",
        "11".repeat(32)
    );
    malformed(&one, "differs from the last checkpoint");
    let uneven = one
        .replace("\"iterations\":4", "\"iterations\":5")
        .replace(&"11".repeat(32), &seed);
    malformed(&uneven, "divide");
    let empty = format!(
        "{{\"hash\":\"sha256\",\"seed\":\"{seed}\",\"iterations\":4,\"checkpoints\":[],\"output\":\"{seed}\"}}"
    );
    malformed(&empty, "checkpoints must be at least 1");
}

#[test]
fn unavailable_or_unsupported_backends_are_bad_input() {
    let disable = [("MONTANA_DISABLE_BACKENDS", "scalar")];
    assert_bad_input(
        &["vdf", "eval", "--iterations", "10", "--backend", "scalar"],
        &disable,
        "not available",
    );
    assert_bad_input(
        &["backends"],
        &[("MONTANA_BACKEND", "nope")],
        "unknown backend",
    );
    assert_bad_input(
        &["backends"],
        &[("MONTANA_DISABLE_BACKENDS", "nope")],
        "unknown backend",
    );
    // The line says which variable holds the bad name.
    assert_bad_input(
        &["backends"],
        &[("MONTANA_BACKEND", "nope")],
        "MONTANA_BACKEND=nope:",
    );
    assert_bad_input(
        &["vdf", "eval", "--iterations", "10"],
        &[("MONTANA_DISABLE_BACKENDS", "scalar,nah")],
        "MONTANA_DISABLE_BACKENDS=scalar,nah:",
    );
    // A backend that does not support an operation is named as such.
    let list = json(&montana(&["backends", "--json"]));
    for b in list.as_array().unwrap() {
        let supports: Vec<&str> = b["supports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        if b["available"] == true && !supports.contains(&"sha256/eval") {
            assert_bad_input(
                &[
                    "vdf",
                    "eval",
                    "--iterations",
                    "10",
                    "--backend",
                    b["name"].as_str().unwrap(),
                ],
                &[],
                "does not support",
            );
        }
    }
}

#[test]
fn backends_lists_the_oracle_with_its_pairs() {
    let out = montana(&["backends", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let list = json(&out);
    let scalar = list
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "scalar")
        .expect("scalar listed");
    assert_eq!(scalar["kind"], "scalar");
    assert_eq!(scalar["available"], true);
    assert_eq!(scalar["lanes"], 1);
    assert_eq!(
        scalar["supports"],
        serde_json::json!([
            "sha256/eval",
            "sha256/verify",
            "blake3/eval",
            "blake3/verify"
        ])
    );
    for b in list.as_array().unwrap() {
        for field in ["name", "kind", "available", "lanes", "supports"] {
            assert!(b.get(field).is_some(), "{b} lacks {field}");
        }
        if b["available"] == false {
            assert!(
                b["reason"].is_string(),
                "{b} must say why it is unavailable"
            );
        }
    }
    let human = montana(&["backends"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("scalar"));
}

#[test]
fn long_segments_verify_on_every_available_backend() {
    // Issue 15: the GPU answered "invalid" from 131,008 steps per segment.
    let env = [("MONTANA_GPU_ALLOW_CPU", "1")];
    let list = json(&montana_with(&["backends", "--json"], &env, None));
    for suite in HashSuite::ALL {
        let verify = format!("{suite}/verify");
        for steps in ["131007", "131008", "262144"] {
            let eval = montana(&[
                "vdf",
                "eval",
                "--hash",
                suite.name(),
                "--iterations",
                steps,
                "--backend",
                "scalar",
                "--json",
            ]);
            assert_eq!(eval.status.code(), Some(0), "{eval:?}");
            let proof = String::from_utf8_lossy(&eval.stdout).into_owned();
            let named = list.as_array().unwrap().iter().filter(|b| {
                b["available"] == true
                    && b["supports"]
                        .as_array()
                        .unwrap()
                        .contains(&verify.as_str().into())
            });
            for name in named.map(|b| b["name"].as_str().unwrap()).chain(["auto"]) {
                let out = montana_with(&["vdf", "verify", "--backend", name], &env, Some(&proof));
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{suite} {steps} steps on {name}: {out:?}"
                );
                assert_eq!(json(&out)["valid"], true);
            }
        }
    }
}

#[test]
fn selftest_passes_on_the_oracle_and_every_available_backend() {
    let out = montana(&[
        "selftest",
        "--backend",
        "scalar",
        "--seconds",
        "0.2",
        "--seed",
        "7",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("scalar"));
    // The boundary sweep to 2^18 steps: past 131,008, where the GPU failed.
    let out = montana(&["selftest", "--seconds", "1", "--max-exp", "18"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("selftest passed"));
}

#[test]
fn keys_new_writes_private_files_and_prints_public_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("montana-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = montana(&["keys", "new", "--dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    for f in ["noise_secret.key", "signing_secret.key", "public.json"] {
        assert!(
            err.contains(dir.join(f).to_str().unwrap()),
            "names {f}: {err}"
        );
    }
    assert_eq!(v["noise_public_key"].as_str().unwrap().len(), 64);
    assert_eq!(v["signing_public_key"].as_str().unwrap().len(), 2 * 1952);
    for f in ["noise_secret.key", "signing_secret.key"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    // A second run must not replace the identity.
    assert_bad_input(
        &["keys", "new", "--dir", dir.to_str().unwrap()],
        &[],
        "already exist",
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_fault_injector_is_only_in_test_builds() {
    // Built without `--features test-faults` (the README's build), the
    // binary does not even contain the variable's name.
    let bin = std::fs::read(env!("CARGO_BIN_EXE_montana")).unwrap();
    let needle = b"MONTANA_TEST_FAULTS";
    let present = bin.windows(needle.len()).any(|w| w == needle);
    assert_eq!(present, cfg!(feature = "test-faults"));
}

#[test]
fn no_subcommand_prints_the_full_help() {
    for (args, words) in [
        (
            &[][..],
            &["Usage: montana", "Commands:", "devnet", "calibrate"][..],
        ),
        (
            &["vdf"][..],
            &["Usage: montana vdf", "eval", "verify", "timechain"][..],
        ),
        (&["keys"][..], &["Usage: montana keys", "new"][..]),
    ] {
        let out = montana(args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        for w in words {
            assert!(text.contains(w), "{args:?}: {text}");
        }
        assert!(out.stderr.is_empty(), "{out:?}");
    }
    let about = String::from_utf8_lossy(&montana(&[]).stdout).into_owned();
    assert!(!about.contains("(later)"), "{about}");
}

#[test]
fn typos_get_clap_suggestions_on_one_line() {
    assert_bad_input(&["benc"], &[], "'bench'");
    assert_bad_input(&["vdf", "timechian"], &[], "'timechain'");
    assert_bad_input(&["backends", "--jsn"], &[], "--json");
}

#[test]
fn numeric_flags_accept_separators_and_exact_scientific_forms() {
    let t = |d: &str| {
        let out = montana(&["vdf", "timechain", "--windows", "2", "--d", d, "--json"]);
        assert_eq!(out.status.code(), Some(0), "{d}: {out:?}");
        json(&out)
    };
    let plain = t("1500");
    for d in ["1_500", "1,500", "1.5e3", "15e2", "1.500E3"] {
        let v = t(d);
        assert_eq!((&v["d"], &v["t"]), (&plain["d"], &plain["t"]), "{d}");
    }
    assert_eq!(plain["d"], 1500);
}

#[test]
fn human_output_groups_thousands_and_aligns() {
    let out = montana(&["vdf", "timechain", "--windows", "2", "--d", "1500"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1,500"), "{text}");
    let value_columns: Vec<usize> = text
        .lines()
        .map(|l| {
            let end = l.find(' ').unwrap();
            end + l[end..].find(|c: char| c != ' ').unwrap()
        })
        .collect();
    assert!(
        value_columns.windows(2).all(|w| w[0] == w[1]),
        "aligned: {text}"
    );
}

/// Not on a terminal, a long evaluation prints plain progress lines on
/// stderr (every MONTANA_PROGRESS_SECS); a short one prints nothing.
#[test]
fn long_evaluations_report_progress_on_stderr() {
    let out = montana_with(
        &["vdf", "eval", "--iterations", "30_000_000", "--json"],
        &[("MONTANA_PROGRESS_SECS", "0.1")],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("vdf eval: ") && l.contains(" of 30,000,000 steps (")),
        "{err}"
    );
    assert_eq!(json(&out)["iterations"], 30_000_000);
    let quick = montana_with(
        &["vdf", "eval", "--iterations", "1000"],
        &[("MONTANA_PROGRESS_SECS", "0.1")],
        None,
    );
    assert!(quick.stderr.is_empty(), "{quick:?}");
}
