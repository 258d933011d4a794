//! The operator's tools against real node processes on loopback: the status
//! page rendered by headless Chromium, `montana soak` recording a devnet
//! with a node killed mid-soak, `montana report` on crafted and recorded
//! soak files, and the systemd unit checked by `systemd-analyze verify`.
//! Every node is stopped by the test (killed on drop).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use montana_node::devnet;
use montana_node::ops::report::{self, SECTIONS};
use montana_node::ops::soak::{NodeRecord, SoakRecord};
use montana_node::status::{self, STATUS_ADDR_FILE};
use montana_vdf::HashSuite;

const BIN: &str = env!("CARGO_BIN_EXE_montana");

/// Children killed on drop, so a failing test leaves no process behind.
struct Procs(Vec<Option<Child>>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(plan: &devnet::Plan, i: usize) -> Child {
    let n = &plan.nodes[i];
    let log = std::fs::File::create(n.dir.join("node.log")).unwrap();
    Command::new(BIN)
        .arg("start")
        .arg("--data-dir")
        .arg(&n.dir)
        .arg("--genesis")
        .arg(&plan.genesis_path)
        .args(["--skip-calibration", "--status-addr", "127.0.0.1:0"])
        .env("MONTANA_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn montana start")
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status_addr(dir: &Path) -> SocketAddr {
    wait_for("the status address file", 60, || {
        std::fs::read_to_string(dir.join(STATUS_ADDR_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
}

fn window_at(addr: SocketAddr) -> u64 {
    status::fetch(addr, Duration::from_secs(5)).map_or(0, |s| s.window)
}

/// A devnet of `n` nodes started, with their status addresses.
fn devnet(dir: &Path, n: usize) -> (devnet::Plan, Procs, Vec<SocketAddr>) {
    let plan = devnet::plan(dir, n, HashSuite::Sha256, 200_000, 100, 0.2).unwrap();
    let procs = Procs((0..n).map(|i| Some(start(&plan, i))).collect());
    let addrs = plan.nodes.iter().map(|x| status_addr(&x.dir)).collect();
    (plan, procs, addrs)
}

// ---------------------------------------------------------------------------
// The status page in headless Chromium.

fn chromium() -> Option<String> {
    if let Ok(c) = std::env::var("MONTANA_CHROMIUM") {
        return Some(c);
    }
    ["chromium", "chromium-browser"].into_iter().find_map(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()
            .filter(|s| s.success())
            .map(|_| c.to_string())
    })
}

/// The DOM after the page ran its script for a few (virtual) seconds.
fn dump_dom(browser: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    // Under coreutils' timeout: a hung browser must not hang the test.
    let out = Command::new("timeout")
        .args(["120", browser])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=4000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed or timed out: {out:?}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The text of the first element with `data-field="name"` (no nested tags).
fn field(dom: &str, name: &str) -> Option<String> {
    let at = dom.find(&format!("data-field=\"{name}\""))?;
    let rest = &dom[at..];
    let open = rest.find('>')? + 1;
    let close = rest[open..].find('<')? + open;
    Some(rest[open..close].to_string())
}

fn number(text: &str) -> u64 {
    text.replace(',', "").parse().unwrap_or(0)
}

#[test]
fn the_status_page_renders_a_live_node_in_chromium() {
    let Some(browser) = chromium() else {
        if std::env::var("MONTANA_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("skipped: no chromium and MONTANA_SKIP_BROWSER=1");
            return;
        }
        panic!(
            "chromium not found: install it with scripts/setup (Debian package `chromium`), \
             point MONTANA_CHROMIUM at a browser, or set MONTANA_SKIP_BROWSER=1 to skip this test"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let (_plan, _procs, addrs) = devnet(dir.path(), 2);
    let url = format!("http://{}/", addrs[0]);
    wait_for("window 1", 90, || (window_at(addrs[0]) >= 1).then_some(()));

    // The page itself is one self-contained document.
    let html = status::get(addrs[0], "/", Duration::from_secs(5)).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html:.100}");
    for external in ["src=\"http", "href=\"http", "<link ", "@import"] {
        assert!(!html.contains(external), "external asset: {external}");
    }

    let first = dump_dom(&browser, &url);
    assert_eq!(field(&first, "label").as_deref(), Some("node0"), "{first}");
    assert_eq!(
        field(&first, "connection").as_deref(),
        Some("live"),
        "{first}"
    );
    assert_eq!(field(&first, "membership").as_deref(), Some("active"));
    assert_eq!(field(&first, "peer.label").as_deref(), Some("node1"));
    assert!(first.contains("<polyline"), "no chart drawn: {first}");
    let w1 = number(&field(&first, "window").unwrap());
    assert!(w1 >= 1, "{first}");

    wait_for("a newer window", 90, || {
        (window_at(addrs[0]) > w1).then_some(())
    });
    let second = dump_dom(&browser, &url);
    let w2 = number(&field(&second, "window").unwrap());
    assert!(
        w2 > w1,
        "window did not advance between loads: {w1} then {w2}"
    );
}

// ---------------------------------------------------------------------------
// montana soak against a running devnet.

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn soak_records_every_node_and_a_killed_one_as_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, mut procs, addrs) = devnet(dir.path(), 3);
    wait_for("window 1 everywhere", 90, || {
        addrs.iter().all(|a| window_at(*a) >= 1).then_some(())
    });
    let out = dir.path().join("soak.jsonl");
    let soak_cmd = |duration: &str| {
        let mut c = Command::new(BIN);
        c.arg("soak");
        for a in &addrs {
            c.arg("--status").arg(a.to_string());
        }
        c.args(["--interval", "0.5", "--duration", duration, "--out"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let mut soaker = Procs(vec![Some(soak_cmd("120").spawn().unwrap())]);
    wait_for("two polls", 60, || (lines(&out).len() >= 2).then_some(()));

    // Kill node 2 (a crash) mid-soak.
    let mut victim = procs.0[2].take().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    wait_for("node2 recorded unreachable", 60, || {
        lines(&out)
            .last()
            .filter(|l| l["nodes"][2]["reachable"] == false)
            .map(|_| ())
    });

    // SIGTERM stops it cleanly, well before --duration.
    let child = soaker.0[0].take().unwrap();
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let t0 = Instant::now();
    let done = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(done.status.code(), Some(0), "{done:?}");
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(err.contains("stopped by signal"), "{err}");
    assert!(err.contains("poll 1: node0 w "), "{err}");

    let recorded = lines(&out);
    assert!(recorded.len() >= 3);
    for (i, l) in recorded.iter().enumerate() {
        let nodes = l["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "line {i}: {l}");
        for (n, a) in nodes.iter().zip(&addrs) {
            assert_eq!(n["addr"], a.to_string());
        }
        assert_eq!(l["poll"], i as u64 + 1);
    }
    let first = &recorded[0]["nodes"];
    for (i, n) in first.as_array().unwrap().iter().enumerate() {
        assert_eq!(n["reachable"], true, "{n}");
        assert_eq!(n["label"], format!("node{i}"));
        for k in [
            "host",
            "phase",
            "membership",
            "window",
            "cemented",
            "lag",
            "d",
            "heartbeats_ok_5m",
            "heartbeat_errors_5m",
            "closed_5m",
            "verify_backend",
            "eval_rate",
            "verify_rate",
            "rss_bytes",
        ] {
            assert!(n.get(k).is_some(), "{k} missing: {n}");
        }
        assert!(n["rss_bytes"].as_u64().unwrap() > 0);
    }
    let last = &recorded.last().unwrap()["nodes"][2];
    assert_eq!(last["label"], "node2", "{last}");
    assert_eq!(last["phase"], "unreachable");
    assert!(last["error"].as_str().unwrap().contains("cannot reach"));

    // A restart appends to the same file.
    let again = soak_cmd("0.7").output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    let after = lines(&out);
    assert!(after.len() > recorded.len());
    assert_eq!(after[..recorded.len()], recorded[..]);
    // node2 is down during the whole second run: its label comes from the file.
    let resumed = &after[recorded.len()]["nodes"][2];
    assert_eq!(resumed["label"], "node2", "{resumed}");
    assert_eq!(resumed["reachable"], false);

    // And the recording turns into a report (node2 unreachable: sync fails).
    let report_dir = dir.path().join("report");
    let r = Command::new(BIN)
        .args(["report", "--soak"])
        .arg(&out)
        .arg("--logs")
        .arg(plan.nodes[0].dir.join("node.log"))
        .arg("--status")
        .arg(addrs[0].to_string())
        .arg("--out")
        .arg(&report_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("sync ")), "{r:?}");
    assert!(matches!(r.status.code(), Some(0) | Some(1)), "{r:?}");
    let md = std::fs::read_to_string(report_dir.join(report::REPORT_FILE)).unwrap();
    assert!(
        md.contains(&format!("- {}: node0 ", addrs[0])),
        "live status missing: {md}"
    );
    assert!(md.contains("| node2 |"), "{md}");
}

#[test]
fn soak_refuses_bad_input_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("no").join("dir").join("soak.jsonl");
    let cases: [(Vec<String>, &str); 4] = [
        (vec![], "required"),
        (
            vec!["--status".into(), "nowhere".into()],
            "invalid status address",
        ),
        (
            vec![
                "--status".into(),
                "127.0.0.1:1".into(),
                "--interval".into(),
                "0".into(),
            ],
            "--interval",
        ),
        (
            vec![
                "--status".into(),
                "127.0.0.1:1".into(),
                "--out".into(),
                out.display().to_string(),
            ],
            "cannot write",
        ),
    ];
    for (args, needle) in cases {
        let o = Command::new(BIN).arg("soak").args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

// ---------------------------------------------------------------------------
// montana report on a crafted soak file.

/// Three nodes over `polls` polls a minute apart; `n2` is 5 windows behind
/// from the third poll on.
fn crafted(polls: u64) -> Vec<SoakRecord> {
    (0..polls)
        .map(|p| SoakRecord {
            time: 1_796_070_000.0 + 60.0 * p as f64,
            poll: p + 1,
            nodes: (0..3)
                .map(|i| {
                    let lag = if i == 2 && p >= 2 { 5 } else { 0 };
                    let window = 10 + 6 * p - lag;
                    NodeRecord {
                        addr: format!("127.0.0.1:{}", 9000 + i),
                        reachable: true,
                        label: format!("n{i}"),
                        host: "h".into(),
                        phase: if i == 0 { "proposing" } else { "following" }.into(),
                        membership: "active".into(),
                        window,
                        t: format!("{window:064x}"),
                        lag,
                        d: 1_000,
                        window_secs: 10.0,
                        heartbeats_ok_5m: 300,
                        heartbeat_errors_5m: 1,
                        verify_backend: "sha-ni".into(),
                        eval_backend: "sha-ni".into(),
                        rss_bytes: (30 + p) << 20,
                        ..Default::default()
                    }
                })
                .collect(),
        })
        .collect()
}

fn is_svg(text: &str) -> bool {
    let t = text.trim();
    t.starts_with("<svg") && t.ends_with("</svg>")
}

#[test]
fn report_from_a_crafted_soak_follows_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("soak.jsonl");
    let mut text = String::new();
    for r in crafted(20) {
        text += &serde_json::to_string(&r).unwrap();
        text.push('\n');
    }
    std::fs::write(&file, text).unwrap();
    let log = dir.path().join("node.log");
    std::fs::write(
        &log,
        "2026-11-30T20:00:00.1Z  WARN montana_node::node::runtime: rejected proposal peer=1 window=3\n\
         2026-11-30T20:00:01.1Z  WARN montana_node::node::runtime: rejected proposal peer=2 window=4\n\
         2026-11-30T20:00:02.1Z  INFO montana_node::node::runtime: applied window window=5\n\
         2026-11-30T20:00:03.1Z ERROR montana_node::node::runtime: verify backend failed; will retry\n",
    )
    .unwrap();
    let out_dir = dir.path().join("report");
    let o = Command::new(BIN)
        .args(["report", "--soak"])
        .arg(&file)
        .arg("--logs")
        .arg(&log)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    // n2 was in sync in 2 of 20 polls: sync fails, so the command exits 1.
    assert_eq!(o.status.code(), Some(1), "{stdout}{stderr}");
    let verdict = |c: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(c))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(verdict("transport"), "PASS", "{stdout}");
    assert_eq!(verdict("consensus"), "PASS", "{stdout}");
    assert_eq!(verdict("sync"), "FAIL", "{stdout}");
    assert_eq!(verdict("storage"), "PASS", "{stdout}");
    assert!(stdout.contains("n2 in sync in 10 %"), "{stdout}");

    let md = std::fs::read_to_string(out_dir.join(report::REPORT_FILE)).unwrap();
    let mut at = 0;
    for s in SECTIONS {
        let i = md[at..]
            .find(s)
            .unwrap_or_else(|| panic!("{s} missing:\n{md}"));
        at += i;
    }
    for (component, rule) in report::RULES {
        assert!(md.contains(rule), "rule of {component} not stated");
    }
    assert!(md.contains("| sync | **FAIL** |"), "{md}");
    assert!(md.contains("20 records"), "{md}");
    assert!(
        md.contains("| 2 | `WARN montana_node::node::runtime: rejected proposal` |"),
        "{md}"
    );
    assert!(md.contains("ERROR montana_node::node::runtime: verify backend failed"));
    assert!(!md.contains("INFO montana"), "INFO lines are not problems");
    for plot in [
        report::LAG_PLOT,
        report::HEARTBEAT_PLOT,
        report::WINDOW_PLOT,
    ] {
        assert!(md.contains(&format!("]({plot})")), "{plot} not linked");
        let svg = std::fs::read_to_string(out_dir.join(plot)).unwrap();
        assert!(is_svg(&svg), "{plot}: {svg:.200}");
        for label in ["n0", "n1", "n2", "minutes since the first poll"] {
            assert!(svg.contains(label), "{plot} lacks {label}");
        }
    }

    // Without the lagging node every verdict passes and the exit is 0.
    let healthy: Vec<SoakRecord> = crafted(20)
        .into_iter()
        .map(|mut r| {
            r.nodes.truncate(2);
            r
        })
        .collect();
    let mut text = String::new();
    for r in &healthy {
        text += &serde_json::to_string(r).unwrap();
        text.push('\n');
    }
    std::fs::write(&file, text).unwrap();
    let o = Command::new(BIN)
        .args(["report", "--soak"])
        .arg(&file)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.matches(" PASS ").count(), 4, "{stdout}");
    let md = std::fs::read_to_string(out_dir.join(report::REPORT_FILE)).unwrap();
    assert!(md.contains("No logs given"), "{md}");

    // An empty or missing soak file is bad input.
    std::fs::write(&file, "").unwrap();
    for path in [file.clone(), dir.path().join("missing.jsonl")] {
        let o = Command::new(BIN)
            .args(["report", "--soak"])
            .arg(&path)
            .arg("--out")
            .arg(&out_dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

// ---------------------------------------------------------------------------
// deploy/montana.service

fn unit_with_exec(exec: &Path) -> (tempfile::TempDir, PathBuf) {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/montana.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let mut replaced = 0;
    let copy: String = text
        .lines()
        .map(
            |l| match l.strip_prefix("ExecStart=/usr/local/bin/montana") {
                Some(rest) => {
                    replaced += 1;
                    format!("ExecStart={}{rest}\n", exec.display())
                }
                None => format!("{l}\n"),
            },
        )
        .collect();
    assert_eq!(replaced, 1, "one ExecStart=/usr/local/bin/montana line");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("montana.service");
    std::fs::write(&path, copy).unwrap();
    (dir, path)
}

#[test]
fn the_systemd_unit_is_hardened_and_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/montana.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for directive in [
        "User=montana",
        "StateDirectory=montana",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "StartLimitIntervalSec=",
        "StartLimitBurst=",
        "RestartPreventExitStatus=2",
        "--data-dir /var/lib/montana",
        "--status-addr 127.0.0.1:",
    ] {
        assert!(
            text.lines().any(|l| l.contains(directive)),
            "{directive} missing"
        );
    }
    let Ok(which) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    assert!(which.status.success());

    let verify = |path: &Path| {
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(path)
            .env("SYSTEMD_LOG_COLOR", "0")
            .output()
            .unwrap()
    };
    let (_d, good) = unit_with_exec(Path::new(BIN));
    let o = verify(&good);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "systemd-analyze verify failed:\n{err}");
    // Warnings about this unit (not about the host's other units) fail too.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("montana.service"))
        .collect();
    assert!(ours.is_empty(), "{}", ours.join("\n"));

    // The check can fail: a missing executable is refused.
    let (_d2, bad) = unit_with_exec(Path::new("/nonexistent/montana"));
    let o = verify(&bad);
    assert!(
        !o.status.success(),
        "a missing ExecStart binary passed verify"
    );
}
