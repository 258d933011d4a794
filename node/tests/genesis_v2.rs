//! Genesis version 2 and the database schema version at the command line:
//! `montana genesis new` with the consensus flags, and `montana start`
//! refusing a version-1 genesis or a version-1 database with exit 2 and one
//! line (and leaving the refused database where it was).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use montana_node::devnet;
use montana_node::genesis::{Genesis, GenesisPeer, Synthetic};
use montana_node::keys::NodeKeys;
use montana_vdf::HashSuite;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_montana");

fn montana(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run montana")
}

/// Exit 2, exactly one line on stderr containing `needle`, no panic.
fn assert_bad_input(out: &Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "stderr {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "stderr {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    err
}

fn peers_file(dir: &Path, n: usize) -> String {
    let peers: Vec<GenesisPeer> = (0..n)
        .map(|i| {
            let pk = NodeKeys::generate().unwrap().public_keys();
            GenesisPeer {
                label: format!("node{i}"),
                address: format!("127.0.0.1:{}", 7100 + i).parse().unwrap(),
                noise_public_key: pk.noise_public_key,
                signing_public_key: pk.signing_public_key,
                bootstrap: i == 0,
                weight: 1,
            }
        })
        .collect();
    let path = dir.join("peers.json");
    std::fs::write(&path, serde_json::to_string(&peers).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn genesis_new_writes_version_2_with_the_consensus_flags() {
    let dir = tempfile::tempdir().unwrap();
    let peers = peers_file(dir.path(), 3);
    let out_path = dir.path().join("g.json");
    let out = out_path.to_str().unwrap();
    let base = [
        "genesis",
        "new",
        "--peers",
        &peers,
        "--d",
        "1000",
        "--checkpoints",
        "10",
        "--window-secs",
        "2",
    ];

    // Defaults: 2/3, 3 windows, the default emission, no accounts.
    let o = montana(&[&base[..], &["--out", out]].concat());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let printed: Value = serde_json::from_slice(&o.stdout).unwrap();
    let g = Genesis::load(&out_path).unwrap();
    assert_eq!(printed["network_id"], hex::encode(g.network_id()));
    assert_eq!(printed["accounts"], 0);
    assert_eq!(g.version, 2);
    assert_eq!((g.quorum.num, g.quorum.den), (2, 3));
    assert_eq!(g.proposer_timeout_secs, 6.0);
    assert_eq!(g.emission.per_window, 1_000_000_000);
    assert_eq!(g.emission.proposer_bps, 5_000);
    assert!(g.accounts.is_empty());

    // Every flag.
    std::fs::remove_file(&out_path).unwrap();
    let o = montana(
        &[
            &base[..],
            &[
                "--out",
                out,
                "--quorum",
                "3/4",
                "--proposer-timeout-secs",
                "4.5",
                "--emission-per-window",
                "1_000",
                "--proposer-bps",
                "2500",
                "--accounts",
                "1,000",
            ],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let g = Genesis::load(&out_path).unwrap();
    assert_eq!((g.quorum.num, g.quorum.den), (3, 4));
    assert_eq!(g.proposer_timeout_secs, 4.5);
    assert_eq!(g.emission.per_window, 1_000);
    assert_eq!(g.emission.proposer_bps, 2_500);
    assert!(g.accounts.is_empty());
    assert_eq!(
        g.synthetic_accounts,
        Synthetic {
            count: 1_000,
            seed: 0
        }
    );
    assert_eq!(g.initial_state().accounts().len(), 1_000);
    std::fs::remove_file(&out_path).unwrap();

    // --accounts-seed: other accounts, another network id.
    let o = montana(
        &[
            &base[..],
            &["--out", out, "--accounts", "1000", "--accounts-seed", "7"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let h = Genesis::load(&out_path).unwrap();
    assert_eq!(h.synthetic_accounts.seed, 7);
    assert_ne!(h.network_id(), g.network_id());
    std::fs::remove_file(&out_path).unwrap();

    // Bad flags: exit 2, one line naming the problem, nothing written.
    for (flags, needle) in [
        (&["--quorum", "1/3"][..], "at least 1/2"),
        (&["--quorum", "3/3"][..], "below 1"),
        (&["--quorum", "two thirds"][..], "NUM/DEN"),
        (&["--proposer-timeout-secs", "0"][..], "above 0"),
        (&["--proposer-timeout-secs", "NaN"][..], "finite"),
        (&["--proposer-bps", "10001"][..], "10,000"),
        (&["--accounts", "20000000"][..], "cap"),
        (&["--accounts-seed", "3"][..], "--accounts"),
    ] {
        let o = montana(&[&base[..], &["--out", out], flags].concat());
        assert_bad_input(&o, needle);
        assert!(!out_path.exists(), "{flags:?}");
    }
}

/// A devnet plan of one node, its genesis rewritten as version 1.
fn version_1_genesis(dir: &Path) -> (devnet::Plan, std::path::PathBuf) {
    let plan = devnet::plan(dir, 2, HashSuite::Sha256, 1_000, 10, 1.0).unwrap();
    let mut v: Value = serde_json::from_str(&plan.genesis.to_json()).unwrap();
    let o = v.as_object_mut().unwrap();
    for k in ["quorum", "proposer_timeout_secs", "emission", "accounts"] {
        o.remove(k);
    }
    o.insert("version".into(), 1.into());
    let path = dir.join("genesis-v1.json");
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    (plan, path)
}

/// `montana start`, which must exit by itself within a minute (a node that
/// started despite the test's expectation is killed, and the test fails).
fn start(data_dir: &Path, genesis: &Path) -> Output {
    let mut child = Command::new(BIN)
        .arg("start")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--genesis")
        .arg(genesis)
        .args(["--skip-calibration", "--status-addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn montana start");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "montana start kept running: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn start_refuses_a_version_1_genesis_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, v1) = version_1_genesis(dir.path());
    let o = start(&plan.nodes[0].dir, &v1);
    let err = assert_bad_input(&o, "is version 1; this montana needs version 2");
    assert!(err.contains("montana genesis new"), "{err}");
    assert!(err.contains("genesis-v1.json"), "{err}");
    assert!(!plan.nodes[0].dir.join("db").exists(), "nothing created");
}

#[test]
fn start_refuses_a_database_written_before_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let plan = devnet::plan(dir.path(), 2, HashSuite::Sha256, 1_000, 10, 1.0).unwrap();
    let data = &plan.nodes[0].dir;
    // The database as the version-1 node left it: records without a
    // schema_version.
    drop(montana_node::storage::Store::open(data, &plan.genesis).unwrap());
    let db_path = data.join("db");
    {
        let opts = rocksdb::Options::default();
        let cfs = rocksdb::DB::list_cf(&opts, &db_path).unwrap();
        let db = rocksdb::DB::open_cf(&opts, &db_path, cfs).unwrap();
        let cf = db.cf_handle("metadata").unwrap();
        assert!(db.get_cf(cf, b"schema_version").unwrap().is_some());
        db.delete_cf(cf, b"schema_version").unwrap();
        assert!(db.get_cf(cf, b"tip").unwrap().is_some());
    }
    let o = start(data, &plan.genesis_path);
    let err = assert_bad_input(
        &o,
        "was written by another montana version (schema 1, this node needs 3)",
    );
    assert!(err.contains(db_path.to_str().unwrap()), "{err}");
    assert!(err.contains("another --data-dir"), "{err}");
    // The refused database is left as it was.
    assert!(db_path.join("CURRENT").exists());
}
