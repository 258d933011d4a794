//! `montana accounts`: after a 4-node devnet, every node's balances sum to
//! the initial accounts plus the emission of the windows paid, under the
//! state root the devnet reported; it reads the database of a running node
//! (read-only) and sees it advance; a bad data dir or a database of another
//! schema is exit 2 with one line.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use montana_node::genesis::Genesis;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_montana");

fn devnet_args<'a>(windows: &'a str, work: &'a Path) -> Vec<&'a str> {
    vec![
        "devnet",
        "--joiners",
        "0",
        "--nodes",
        "4",
        "--windows",
        windows,
        "--window-secs",
        "0.05",
        "--checkpoints",
        "100",
        "--d",
        "400_000",
        "--accounts",
        "3",
        "--json",
        "--dir",
        work.to_str().unwrap(),
    ]
}

fn accounts(dir: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("accounts")
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn accounts_json(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let out = accounts(dir, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "montana accounts failed: {err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    serde_json::from_str(stdout.trim()).unwrap()
}

/// The emission rule (docs/SPEC.md 9.6, 9.8): the state after cemented
/// window c has windows 1..c-1 paid, each minting exactly `per_window`.
fn check_total(g: &Genesis, v: &Value) {
    let c = v["cemented"].as_u64().unwrap();
    let paid = c.saturating_sub(1);
    assert_eq!(v["paid_through"].as_u64(), Some(paid), "{v}");
    let initial: u128 = g
        .accounts
        .iter()
        .chain(&g.synthetic_accounts.accounts())
        .map(|(_, b)| *b as u128)
        .sum();
    let expected = initial + g.emission.per_window as u128 * paid as u128;
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(v["accounts"].as_u64().unwrap() as usize, rows.len(), "{v}");
    let sum: u128 = rows
        .iter()
        .map(|r| r["balance"].as_u64().unwrap() as u128)
        .sum();
    assert_eq!(sum, expected, "balances at cemented window {c}: {v}");
    assert_eq!(v["total"].as_u64().map(u128::from), Some(expected), "{v}");
    // Sorted: balance descending, then node id.
    for w in rows.windows(2) {
        let key = |r: &Value| {
            (
                std::cmp::Reverse(r["balance"].as_u64().unwrap()),
                r["node_id"].as_str().unwrap().to_string(),
            )
        };
        assert!(key(&w[0]) < key(&w[1]), "{v}");
    }
}

#[test]
fn balances_after_a_four_node_devnet_follow_the_emission_rule() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("net");
    let out = Command::new(BIN)
        .args(devnet_args("4", &work))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "devnet failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["converged"], true, "{report}");
    let g = Genesis::load(&work.join("genesis.json")).unwrap();
    assert_eq!(g.synthetic_accounts.count, 3);
    let nodes = report["nodes"].as_array().unwrap();
    let mut paid_nodes = 0;
    for (i, n) in nodes.iter().enumerate() {
        let data_dir = work.join(format!("node{i}"));
        let v = accounts_json(&data_dir, &["--limit", "0"]);
        assert_eq!(v["cemented"], n["cemented"], "node{i}: {v} vs {n}");
        assert_eq!(v["state_root"], n["state_root"], "node{i}: {v} vs {n}");
        assert_eq!(
            v["network_id"].as_str(),
            Some(hex::encode(g.network_id()).as_str())
        );
        assert!(v["cemented"].as_u64().unwrap() >= 2, "something paid: {v}");
        check_total(&g, &v);
        // Paid accounts are the genesis peers, named by label.
        paid_nodes = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["label"].is_string())
            .count();
        assert!(paid_nodes >= 1, "{v}");
        // The limit keeps the highest balances and still counts them all.
        let top = accounts_json(&data_dir, &["--limit", "2"]);
        assert_eq!(top["rows"].as_array().unwrap().len(), 2);
        assert_eq!(
            top["rows"].as_array().unwrap()[..],
            v["rows"].as_array().unwrap()[..2]
        );
        assert_eq!(
            (&top["accounts"], &top["total"]),
            (&v["accounts"], &v["total"])
        );
    }
    assert!(paid_nodes <= 4);
    // The table names the window and the root.
    let out = accounts(&work.join("node1"), &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let root = accounts_json(&work.join("node1"), &[])["state_root"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains(&format!("state root {root}")), "{text}");
    assert!(text.contains("cemented   window "), "{text}");

    // A database of another schema (what a pre-consensus node wrote: no
    // schema_version record) is refused with one line, exit 2.
    {
        let path = work.join("node2").join("db");
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, &cfs).unwrap();
        let meta = db.cf_handle("metadata").unwrap();
        db.delete_cf(meta, b"schema_version").unwrap();
    }
    let out = accounts(&work.join("node2"), &["--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("schema 1, this node needs 3"), "{err}");
    assert!(out.stdout.is_empty());
}

/// Children killed on drop, so a failing test leaves no process behind.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn cemented(dir: &Path) -> u64 {
    std::fs::read(dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["cemented"].as_u64())
        .unwrap_or(0)
}

fn wait_cemented(dir: &Path, at_least: u64, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while cemented(dir) < at_least {
        assert!(
            Instant::now() < deadline,
            "{} never cemented window {at_least}:\n{}",
            dir.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn reads_the_database_of_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("net");
    let err_log: PathBuf = dir.path().join("devnet.err");
    let net = Running(Some(
        Command::new(BIN)
            .args(devnet_args("100000", &work))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_log).unwrap())
            .spawn()
            .unwrap(),
    ));
    let node = work.join("node1");
    wait_cemented(&node, 3, &err_log);
    let g = Genesis::load(&work.join("genesis.json")).unwrap();
    let first = accounts_json(&node, &["--limit", "0"]);
    check_total(&g, &first);
    let c1 = first["cemented"].as_u64().unwrap();
    assert!(c1 >= 3, "{first}");
    // The node goes on (nothing was locked or written) and a second read
    // sees the windows it cemented since.
    wait_cemented(&node, c1 + 3, &err_log);
    let second = accounts_json(&node, &["--limit", "0"]);
    check_total(&g, &second);
    assert!(
        second["cemented"].as_u64().unwrap() > c1,
        "{first}\n{second}"
    );
    assert_ne!(first["state_root"], second["state_root"]);
    let log = std::fs::read_to_string(node.join("node.log")).unwrap_or_default();
    assert!(!log.contains("LOCK"), "{log}");
    drop(net);
}

#[test]
fn a_bad_data_dir_is_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let cases: [(PathBuf, &str); 3] = [
        (dir.path().join("absent"), "does not exist"),
        (file, "not a directory"),
        (dir.path().to_path_buf(), "no montana database"),
    ];
    for (path, needle) in cases {
        let out = accounts(&path, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", path.display());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
        assert!(out.stdout.is_empty());
    }
    assert!(!dir.path().join("db").exists(), "nothing created");
    // Bad arguments too.
    let out = accounts(dir.path(), &["--limit", "many"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
