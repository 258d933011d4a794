//! Issue 12, fault tests "Disk" and "Corrupted database or state file":
//! `montana start` on a data dir it cannot use (not writable, a file, full),
//! keys missing or readable by others, a corrupted database: exactly one
//! line on stderr naming the path and the cause, exit code 2, no half-made
//! database, and never a silent re-initialisation. A corrupt `state.json`
//! is rewritten from the database (the source of truth), with a warning.
//!
//! The size-limited and read-only filesystems are tmpfs mounts the test
//! makes (tests run as root, where permission bits do not stop writes);
//! where `mount` is not permitted, those cases are skipped with a printed
//! reason. Every mount is unmounted on drop, so also when a test fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use montana_node::devnet;
use montana_node::node::NodeState;
use montana_vdf::HashSuite;

const BIN: &str = env!("CARGO_BIN_EXE_montana");

/// A tmpfs mounted by the test, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs with `opts` on `dir` (created), or says why not.
    fn tmpfs(dir: &Path, opts: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs -o {opts} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A node child killed on drop.
struct Node(Option<Child>);

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A one-node network: its node is a quorum by itself and cements alone.
fn plan(dir: &Path) -> devnet::Plan {
    devnet::plan(dir, 1, HashSuite::Sha256, 400_000, 100, 0.05).unwrap()
}

fn start_cmd(plan: &devnet::Plan, data: &Path, keys: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("start")
        .arg("--data-dir")
        .arg(data)
        .arg("--genesis")
        .arg(&plan.genesis_path)
        .arg("--keys")
        .arg(keys)
        .arg("--skip-calibration")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env_remove("MONTANA_LOG")
        .stdin(Stdio::null());
    c
}

/// Runs a start that must fail; a start still running after 60 s is a
/// failure of the test (it would have run forever).
fn start_refused(plan: &devnet::Plan, data: &Path, keys: &Path) -> Output {
    let child = start_cmd(plan, data, keys)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        if Instant::now() > deadline {
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            let out = waiter.join().unwrap();
            panic!(
                "the start did not refuse: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    waiter.join().unwrap()
}

/// Exit 2, exactly one stderr line, naming `path` and every word of `cause`.
fn assert_refused(out: &Output, path: &Path, cause: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(&path.display().to_string()),
        "{err:?} should name {}",
        path.display()
    );
    for c in cause {
        assert!(
            err.to_lowercase().contains(&c.to_lowercase()),
            "{err:?} should say {c:?}"
        );
    }
    err
}

fn skip(case: &str, why: &str) {
    println!("SKIPPED {case}: {why}");
}

#[test]
fn an_unusable_data_dir_or_bad_keys_refuse_the_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let plan = devnet::plan(dir.path(), 2, HashSuite::Sha256, 400_000, 100, 0.05).unwrap();
    let keys = plan.nodes[1].dir.join("keys");

    // A file where the data dir should be.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a dir").unwrap();
    let out = start_refused(&plan, &file, &keys);
    assert_refused(&out, &file, &["data dir", "not a directory"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"not a dir");

    // The keys dir is missing.
    let data = dir.path().join("data");
    let missing = dir.path().join("no-keys");
    let out = start_refused(&plan, &data, &missing);
    assert_refused(&out, &missing, &["no node keys", "montana keys new"]);
    assert!(!data.exists(), "nothing made: {:?}", data);

    // A secret key readable by others.
    use std::os::unix::fs::PermissionsExt;
    let open_keys = dir.path().join("open-keys");
    std::fs::create_dir(&open_keys).unwrap();
    for e in std::fs::read_dir(&keys).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), open_keys.join(e.file_name())).unwrap();
    }
    let secret = open_keys.join("signing_secret.key");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = start_refused(&plan, &data, &open_keys);
    assert_refused(&out, &secret, &["readable by other users", "chmod 600"]);
    assert!(!data.exists());

    // A data dir that cannot be written (a read-only filesystem: root
    // ignores permission bits).
    let ro = dir.path().join("read-only");
    match Mount::tmpfs(&ro, "ro,size=1m") {
        Err(why) => skip("read-only data dir", &why),
        Ok(_mount) => {
            let out = start_refused(&plan, &ro, &keys);
            assert_refused(&out, &ro, &["data dir", "read-only file system"]);
        }
    }

    // Disk full at start: a 256 KiB tmpfs filled up.
    let full = dir.path().join("full");
    match Mount::tmpfs(&full, "size=256k") {
        Err(why) => skip("disk full at start", &why),
        Ok(_mount) => {
            let filler = full.join("filler");
            let mut f = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 4096];
            use std::io::Write;
            while f.write_all(&chunk).is_ok() {}
            drop(f);
            let out = start_refused(&plan, &full, &keys);
            let err = assert_refused(&out, &full, &["no space left on device"]);
            println!("disk full: {}", err.trim_end());
            assert!(!full.join("db").exists(), "no half-made database");
            // Some room, but not enough for the database: the same answer.
            std::fs::remove_file(&filler).unwrap();
            let mut f = std::fs::File::create(&filler).unwrap();
            for _ in 0..(256 - 24) / 4 {
                f.write_all(&chunk).unwrap();
            }
            drop(f);
            let out = start_refused(&plan, &full, &keys);
            let err = assert_refused(&out, &full, &["no space left on device"]);
            println!("24 KiB left: {}", err.trim_end());
            assert!(!full.join("db").exists(), "no half-made database");
        }
    }
}

/// Runs node 0 (the proposer) alone to window 2 in `plan.nodes[0].dir` and
/// stops it cleanly.
fn make_database(plan: &devnet::Plan) {
    let n = &plan.nodes[0];
    let log = std::fs::File::create(n.dir.join("node.log")).unwrap();
    let mut node = Node(Some(
        start_cmd(plan, &n.dir, &n.dir.join("keys"))
            .arg("--last-window")
            .arg("2")
            .env("MONTANA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    let deadline = Instant::now() + Duration::from_secs(90);
    while NodeState::read(&n.dir).map_or(0, |s| s.window) < 2 {
        assert!(
            Instant::now() < deadline,
            "the proposer did not reach window 2: {}",
            std::fs::read_to_string(n.dir.join("node.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(&mut node);
}

fn stop(node: &mut Node) {
    let mut child = node.0.take().unwrap();
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// Every file of the database but RocksDB's own info logs, by name.
fn db_files(db: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(db)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with("LOG"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn file_named(db: &Path, f: impl Fn(&str) -> bool) -> Option<PathBuf> {
    std::fs::read_dir(db)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| f(&p.file_name().unwrap().to_string_lossy()))
}

#[test]
fn a_corrupted_database_refuses_the_start_and_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(dir.path());
    make_database(&plan);
    let good = &plan.nodes[0].dir;
    let keys = good.join("keys");

    type Corrupt = fn(&Path);
    let cases: Vec<(&str, Corrupt)> = vec![
        ("CURRENT overwritten", |db| {
            std::fs::write(db.join("CURRENT"), b"garbage").unwrap()
        }),
        ("CURRENT removed", |db| {
            std::fs::remove_file(db.join("CURRENT")).unwrap()
        }),
        ("MANIFEST truncated", |db| {
            let m = file_named(db, |n| n.starts_with("MANIFEST-")).unwrap();
            let len = std::fs::metadata(&m).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(&m).unwrap();
            f.set_len(len / 2).unwrap();
        }),
        ("write-ahead log zeroed", |db| {
            let log = file_named(db, |n| n.ends_with(".log")).unwrap();
            let len = std::fs::metadata(&log).unwrap().len();
            std::fs::write(&log, vec![0u8; len as usize]).unwrap();
        }),
        ("write-ahead log truncated", |db| {
            let log = file_named(db, |n| n.ends_with(".log")).unwrap();
            let len = std::fs::metadata(&log).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
            f.set_len(len / 3).unwrap();
        }),
        ("every file garbage", |db| {
            for e in std::fs::read_dir(db).unwrap() {
                let p = e.unwrap().path();
                std::fs::write(&p, b"garbage garbage garbage\n").unwrap();
            }
        }),
    ];
    for (i, (what, corrupt)) in cases.into_iter().enumerate() {
        let data = dir.path().join(format!("case{i}"));
        copy_dir(good, &data);
        let db = data.join("db");
        corrupt(&db);
        let before = db_files(&db);
        let out = start_refused(&plan, &data, &keys);
        let err = assert_refused(&out, &db, &["corrupt", "move it aside"]);
        println!("{what}: {}", err.trim_end());
        assert_eq!(db_files(&db), before, "{what}: the database was changed");
    }
}

#[test]
fn a_corrupt_state_file_is_rewritten_from_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(dir.path());
    make_database(&plan);
    let n = &plan.nodes[0];
    let state = n.dir.join("state.json");
    std::fs::write(&state, b"{\"window\": 7, garbage").unwrap();
    let log = std::fs::File::create(n.dir.join("node2.log")).unwrap();
    let mut node = Node(Some(
        start_cmd(&plan, &n.dir, &n.dir.join("keys"))
            .arg("--last-window")
            .arg("2")
            .env("MONTANA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        if let Some(s) = NodeState::read(&n.dir) {
            break s;
        }
        assert!(Instant::now() < deadline, "state.json never rewritten");
        std::thread::sleep(Duration::from_millis(100));
    };
    stop(&mut node);
    assert_eq!(s.window, 2, "the window comes from the database");
    let text = std::fs::read_to_string(n.dir.join("node2.log")).unwrap();
    let warned: Vec<&str> = text.lines().filter(|l| l.contains("state.json")).collect();
    assert_eq!(warned.len(), 1, "said once: {text}");
    assert!(warned[0].contains("rewritten from the database"), "{text}");
    // The bad copy is kept for the operator to look at.
    assert_eq!(
        std::fs::read(n.dir.join("state.json.corrupt")).unwrap(),
        b"{\"window\": 7, garbage"
    );
}

fn applied_windows(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("applied window"))
        .filter_map(|l| l.split("window=").nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

fn wait_for_log(log: &Path, needle: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Disk full mid-run: the node stops applying and says so once (naming the
/// database and the cause), keeps running, and when space returns writes
/// the windows it verified meanwhile, in order, by itself; nothing is lost
/// and a restart resumes from the last window.
#[test]
fn disk_full_mid_run_pauses_applying_and_continues_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    // 6,500 checkpoints: about 200 KiB a window, so 3 MiB fill in seconds.
    let plan = devnet::plan(dir.path(), 1, HashSuite::Sha256, 650_000, 6_500, 0.2).unwrap();
    let data = dir.path().join("data");
    let keys = plan.nodes[0].dir.join("keys");
    let Ok(_mount) = Mount::tmpfs(&data, "size=3m").map_err(|why| skip("disk full mid-run", &why))
    else {
        return;
    };
    let last = 40u64;
    let run = |log: &Path| {
        Node(Some(
            start_cmd(&plan, &data, &keys)
                .arg("--last-window")
                .arg(last.to_string())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap(),
        ))
    };
    let log = dir.path().join("run.log");
    let mut node = run(&log);
    let paused = "not cementing until space returns";
    let text = wait_for_log(&log, paused, 90);
    let line = text.lines().find(|l| l.contains(paused)).unwrap();
    assert!(
        line.contains(&data.join("db").display().to_string())
            && line.contains("No space left on device"),
        "{line}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        node.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the node keeps running: {}",
        std::fs::read_to_string(&log).unwrap()
    );

    // Space returns: the node writes what it kept and carries on.
    let st = Command::new("mount")
        .args(["-o", "remount,size=32m"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success());
    wait_for_log(&log, "database writable again", 30);
    let deadline = Instant::now() + Duration::from_secs(60);
    while NodeState::read(&data).map_or(0, |s| s.window) < last {
        assert!(Instant::now() < deadline, "the node did not reach {last}");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(&mut node);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches(paused).count(), 1, "said once: {text}");
    assert!(
        !text.contains("ERROR") && !text.contains("panicked"),
        "{text}"
    );
    assert_eq!(
        applied_windows(&text),
        (1..=last).collect::<Vec<_>>(),
        "every window applied once, in order"
    );

    // Nothing lost: a restart resumes from the last window.
    let log2 = dir.path().join("restart.log");
    let mut node = run(&log2);
    let text = wait_for_log(&log2, "node running", 30);
    stop(&mut node);
    assert!(
        text.contains(&format!(
            "node running label=\"node0\" window={last} cemented={last} "
        )),
        "resumes from window {last}: {text}"
    );
}
