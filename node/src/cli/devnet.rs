//! `montana devnet`: N node processes on loopback, run to W windows.
//!
//! Plans keys and a genesis (`montana_node::devnet`), starts one
//! `montana start` child per node (the proposer with `--last-window W`),
//! shows a live table (a progress line per window when stderr is not a
//! terminal), and once every node reports window W (or on SIGINT/SIGTERM,
//! or when a node dies) sends every child SIGTERM, waits for clean exits,
//! and checks convergence: the same window and T on every node, and that T
//! is the TimeChain's (every stored window verified in parallel against the
//! scalar oracle, with progress).
//!
//! Exit 0 converged; 1 not; 2 bad arguments; 130 interrupted (by SIGINT or
//! SIGTERM, during the run or the final check): the JSON then says
//! `"interrupted":true`, `"converged":false` and the window reached. The
//! default working directory (under the system temp dir) is removed after a
//! converged run unless `--keep`; a `--dir` is always kept, and a run that
//! fails or is interrupted keeps its directory and says where the logs are.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use montana_node::backend_choice;
use montana_node::devnet::{self, CheckError, Plan};
use montana_node::node::NodeState;
use montana_vdf::HashSuite;

use super::number::group;
use super::progress::Meter;
use super::{print_json, CliError};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Number of genesis nodes (node0 proposes first).
    #[arg(long, default_value_t = 4, value_parser = super::number::parse_usize)]
    pub nodes: usize,
    /// Nodes started from keys of their own with only the genesis file and
    /// node0's address: they sync, prove themselves as candidates and must
    /// end as active members (docs/SPEC.md 9.9).
    #[arg(long, default_value_t = 1, value_parser = super::number::parse_usize)]
    pub joiners: usize,
    /// Each node's `--max-peers` (member connection slots; default: the
    /// node's, 16), for scale runs.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_peers: Option<u16>,
    /// Each node's `--min-window-secs`: a proposal no sooner than this
    /// after the window before was cemented (scale runs with a small --d).
    #[arg(long, value_parser = super::number::parse_secs)]
    pub min_window_secs: Option<f64>,
    /// Stop after this many windows.
    #[arg(long, default_value_t = 10, value_parser = super::number::parse_positive_u64)]
    pub windows: u64,
    /// Target seconds per window (D is measured to match on this host).
    #[arg(long, default_value_t = 1.0, value_parser = super::number::parse_positive_f64)]
    pub window_secs: f64,
    /// Hash suite: sha256 or blake3.
    #[arg(long, default_value = "sha256")]
    pub hash: HashSuite,
    /// Checkpoints per proposal.
    #[arg(long, default_value_t = 1_000, value_parser = super::number::parse_positive_u64)]
    pub checkpoints: u64,
    /// Steps per window (default: measured from this host's eval rate).
    #[arg(long, value_parser = super::number::parse_positive_u64)]
    pub d: Option<u64>,
    /// Working directory, kept after the run (default: a new private
    /// directory, mode 0700 with an unpredictable name, under the system
    /// temp dir, removed after a converged run unless --keep).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the default working directory after a converged run.
    #[arg(long, conflicts_with = "dir")]
    pub keep: bool,
    /// Print the result as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
    /// SIGKILL the current proposer once every node has cemented this
    /// window, and keep going with the others (needs 4 or more nodes).
    #[arg(long, value_parser = super::number::parse_positive_u64)]
    pub kill_proposer_after: Option<u64>,
    /// N synthetic initial accounts in the genesis (balance 1 each; see
    /// `montana genesis new --accounts`), for scale tests.
    #[arg(long, default_value_t = 0, value_parser = super::number::parse_u64)]
    pub accounts: u64,
    /// The last node starts only once the others have written a snapshot,
    /// and fast-syncs from it (`montana start --fast-sync`); needs 4 or
    /// more nodes (the others must make a quorum without it).
    #[arg(long)]
    pub fast_sync: bool,
    /// Every node writes a snapshot each N cemented windows (default with
    /// --fast-sync: half of --windows, at least 2, so that the snapshot the
    /// late node syncs from is not pruned before the run ends; else the
    /// node's default of 100).
    #[arg(long, value_parser = super::number::parse_positive_u64)]
    pub snapshot_interval: Option<u64>,
}

impl Args {
    /// How many genesis nodes start late (the last ones) to fast-sync.
    fn late(&self) -> usize {
        usize::from(self.fast_sync)
    }

    /// Whether plan node `i` is a genesis node that starts late.
    fn is_late(&self, i: usize) -> bool {
        i < self.nodes && i >= self.nodes - self.late()
    }

    /// The `--snapshot-interval` every node gets, if any.
    fn interval(&self) -> Option<u64> {
        self.snapshot_interval
            .or(self.fast_sync.then(|| (self.windows / 2).max(2)))
    }
}

pub fn run(a: Args) -> Result<(), CliError> {
    if !(2..=64).contains(&a.nodes) {
        return Err(CliError::bad_input("--nodes must be between 2 and 64"));
    }
    if let Some(k) = a.kill_proposer_after {
        if a.nodes < 4 {
            return Err(CliError::bad_input(format!(
                "--kill-proposer-after needs at least 4 nodes (3 must remain for a quorum), not {}",
                a.nodes
            )));
        }
        if k >= a.windows {
            return Err(CliError::bad_input(format!(
                "--kill-proposer-after {k} must be below --windows {}",
                a.windows
            )));
        }
    }
    if a.fast_sync {
        // Everyone but the late node and any killed proposer must still
        // make a quorum (the genesis' default, 2/3 of equal weights).
        let absent = a.late() + usize::from(a.kill_proposer_after.is_some());
        let q = montana_node::consensus::active::Quorum::default();
        if !q.reached((a.nodes - absent) as u64, a.nodes as u64) {
            return Err(CliError::bad_input(format!(
                "--fast-sync with {} nodes: the {} running from the start (without the late node{}) are not a quorum of {}/{}; give --nodes {} or more",
                a.nodes,
                a.nodes - absent,
                if absent > 1 { " and the killed proposer" } else { "" },
                q.num,
                q.den,
                (1..).map(|n: usize| n + absent).find(|&n| q.reached((n - absent) as u64, n as u64)).unwrap_or(a.nodes)
            )));
        }
        let i = a.interval().unwrap_or(2);
        if a.windows < i + 2 {
            return Err(CliError::bad_input(format!(
                "--fast-sync with --windows {} and --snapshot-interval {i}: give --windows {} or more (a snapshot, then windows to follow)",
                a.windows,
                i + 2
            )));
        }
    }
    if a.joiners > 16 {
        return Err(CliError::bad_input("--joiners must be at most 16"));
    }
    if a.joiners > 0 {
        // Candidate windows (the chain of window 0 counts), the activation
        // delay, and 4 windows of margin to register and see it through.
        let j = montana_node::genesis::JoinRules::defaults(1_000_000);
        let need = (j.candidate_windows + j.activation_delay + 4) as u64;
        if a.windows < need {
            return Err(CliError::bad_input(format!(
                "--windows {} is too short for a joiner to become active: {} candidate windows + {} of activation delay + 4 of margin; give --windows {need} or more, or --joiners 0",
                a.windows, j.candidate_windows, j.activation_delay
            )));
        }
        if a.fast_sync {
            // The late node syncs from a snapshot taken after the joiners
            // are active (its trust then goes through a membership
            // certificate), and follows for two windows at least.
            let i = a.interval().unwrap_or(2);
            let first = (need / i + 1) * i;
            if a.windows < first + 2 {
                let fits = (need + 1..)
                    .find(|w| {
                        let i = a.snapshot_interval.unwrap_or((w / 2).max(2));
                        *w >= (need / i + 1) * i + 2
                    })
                    .unwrap_or(first + 2);
                return Err(CliError::bad_input(format!(
                    "--fast-sync with --joiners: the late node syncs from a snapshot taken after the joiners are active (window {need} at the earliest; snapshots every {i} windows); give --windows {fits} or more"
                )));
            }
        }
    }
    if let Some(d) = a.d {
        if d % a.checkpoints != 0 {
            return Err(CliError::bad_input(format!(
                "--d {d} must be a multiple of --checkpoints {}",
                a.checkpoints
            )));
        }
    }
    let dir = match &a.dir {
        Some(d) => {
            check_dir(d)?;
            d.clone()
        }
        None => devnet::fresh_private_dir(&std::env::temp_dir()).map_err(|e| {
            CliError::bad_input(format!(
                "cannot create a devnet directory under {}: {e}",
                std::env::temp_dir().display()
            ))
        })?,
    };
    let interrupted = super::interrupt::flag();
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::bad_input(format!("cannot create {}: {e}", dir.display())))?;
    let remove_after = a.dir.is_none() && !a.keep;
    let result = run_in(&a, &dir, &interrupted);
    match &result {
        Ok(()) if remove_after => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(()) => {}
        Err(e) if e.code == super::error::BAD_INPUT && a.dir.is_none() => {
            // Nothing ran: nothing to look at.
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(_) => eprintln!(
            "devnet: kept {} (node logs in {})",
            dir.display(),
            dir.join("node*").join("node.log").display()
        ),
    }
    result
}

/// `--dir` must be an empty directory or a path that does not exist yet.
fn check_dir(d: &Path) -> Result<(), CliError> {
    match std::fs::metadata(d) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CliError::bad_input(format!(
            "--dir {}: {e}",
            d.display()
        ))),
        Ok(m) if !m.is_dir() => Err(CliError::bad_input(format!(
            "--dir {} is a file, not a directory (give a new or empty directory)",
            d.display()
        ))),
        Ok(_) => match std::fs::read_dir(d).map(|mut r| r.next().is_some()) {
            Err(e) => Err(CliError::bad_input(format!(
                "--dir {}: cannot read it: {e}",
                d.display()
            ))),
            Ok(true) => Err(CliError::bad_input(format!(
                "--dir {} is not empty (a devnet starts from nothing; give a new or empty directory)",
                d.display()
            ))),
            Ok(false) => Ok(()),
        },
    }
}

fn run_in(a: &Args, dir: &Path, interrupted: &AtomicBool) -> Result<(), CliError> {
    let d = match a.d {
        Some(d) => d,
        None => {
            let eval = super::registry()?.auto(a.hash, montana_vdf::Operation::Eval)?;
            let rate =
                devnet::measure_eval_rate(eval.as_ref(), a.hash).map_err(CliError::check_failed)?;
            let d = devnet::d_for(rate, a.window_secs, a.checkpoints);
            eprintln!(
                "devnet: {} eval rate {} steps/s on {}: D = {} for {} s windows",
                a.hash,
                super::number::group_f64(rate),
                eval.name(),
                group(d),
                a.window_secs
            );
            d
        }
    };
    if a.accounts > montana_node::genesis::MAX_ACCOUNTS as u64 {
        return Err(CliError::bad_input(format!(
            "--accounts {} is over the cap of {}",
            a.accounts,
            montana_node::genesis::MAX_ACCOUNTS
        )));
    }
    let params = montana_vdf::NetworkParams {
        hash: a.hash,
        d,
        checkpoints: a.checkpoints,
        // Paced windows last --min-window-secs: the genesis window (and so
        // the proposer timeout, 3 windows) is at least that.
        window_secs: a.window_secs.max(a.min_window_secs.unwrap_or(0.0)),
    };
    let plan = devnet::plan_with_accounts(dir, a.nodes, params, a.accounts, a.joiners)
        .map_err(CliError::bad_input)?;
    calibrate_once(&plan)?;
    if interrupted.load(Ordering::Relaxed) {
        return Err(CliError::interrupted(
            "devnet interrupted before any node started",
        ));
    }
    eprintln!(
        "devnet: {} nodes and {} joiners in {}, D = {}, K = {}, {} windows",
        a.nodes,
        a.joiners,
        dir.display(),
        group(d),
        group(a.checkpoints),
        a.windows
    );

    let mut children = Vec::new();
    for i in (0..plan.nodes.len()).filter(|&i| !a.is_late(i)) {
        match spawn(&plan, i, a) {
            Ok(c) => children.push(c),
            Err(e) => {
                stop_nodes(&mut children);
                return Err(e);
            }
        }
    }
    let mut killed = Vec::new();
    let outcome = watch(&plan, &mut children, a, &mut killed, interrupted);
    stop_nodes(&mut children);

    let states: Vec<Option<NodeState>> =
        plan.nodes.iter().map(|n| NodeState::read(&n.dir)).collect();
    let (mut report, mut compared) = devnet::compare(&plan.genesis, a.windows, &states, &killed);
    if compared.is_ok() {
        compared = devnet::check_fast_synced(&report, |i| a.is_late(i));
    }
    let checked = (0..plan.nodes.len())
        .find(|i| !killed.contains(i))
        .unwrap_or(0);
    let result = match outcome {
        Err(Stop::Interrupted) => Err(CliError::interrupted(format!(
            "devnet interrupted at window {} of {}",
            report.window, a.windows
        ))),
        Err(Stop::Failed(e)) => Err(CliError::check_failed(e)),
        Ok(()) => match compared {
            Err(e) => Err(CliError::check_failed(e)),
            Ok(()) => final_check(
                &plan,
                checked,
                &report.nodes[checked].t,
                report.window,
                interrupted,
            ),
        },
    };
    report.interrupted = matches!(&result, Err(e) if e.code == super::error::INTERRUPTED);
    report.converged = result.is_ok();
    if a.json {
        print_json(&report);
    } else {
        draw_table(&plan, &states, false);
    }
    result?;
    eprintln!(
        "devnet: all {} surviving nodes cemented window {} with one state root {} (T checks against the TimeChain){}",
        plan.nodes.len() - killed.len(),
        report.window,
        &report.nodes[checked].state_root,
        if a.joiners > 0 {
            format!("; {} joiner(s) active", a.joiners)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// T(W) against the TimeChain: node0's stored windows, every checkpoint
/// verified with the scalar oracle in parallel, with progress; SIGINT stops it.
fn final_check(
    plan: &Plan,
    node: usize,
    t: &str,
    window: u64,
    interrupted: &AtomicBool,
) -> Result<(), CliError> {
    eprintln!(
        "devnet: checking T({window}) against the TimeChain (every window's checkpoints, scalar oracle, {} threads)",
        rayon::current_num_threads()
    );
    let meter = Meter::new(
        "devnet check",
        window.saturating_mul(plan.genesis.d),
        "steps",
    );
    let on_steps = |n: u64| meter.inc(n);
    let result = devnet::check_timechain(
        &plan.genesis,
        &plan.nodes[node].dir,
        window,
        t,
        &on_steps,
        interrupted,
    );
    meter.finish();
    match result {
        Ok(()) => Ok(()),
        Err(CheckError::Interrupted) => Err(CliError::interrupted(format!(
            "devnet interrupted while checking T({window}) (the nodes had reached it)"
        ))),
        Err(CheckError::Failed(e)) => Err(CliError::check_failed(e)),
    }
}

/// Why the watch ended early.
enum Stop {
    Interrupted,
    Failed(String),
}

/// One quick calibration for this host and the devnet's genesis, copied into
/// every node's data dir: the nodes share the host, so measuring N times in
/// parallel would only measure each other.
fn calibrate_once(plan: &Plan) -> Result<(), CliError> {
    use montana_calibration::{calibrate, CalibrationRequest, MeasureConfig, NoProgress};
    let registry = super::registry()?;
    let req = CalibrationRequest {
        registry: &registry,
        params: backend_choice::network_params(&plan.genesis),
        threads: montana_vdf::VerifyOptions::default().threads,
        config: MeasureConfig::quick(),
        quick: true,
        program_version: montana_calibration::PROGRAM_VERSION.to_string(),
    };
    let file = calibrate(&req, &NoProgress)
        .map_err(|e| CliError::check_failed(format!("calibration: {e}")))?;
    for n in &plan.nodes {
        let path = n.dir.join(backend_choice::CALIBRATION_FILE);
        file.save(&path)
            .map_err(|e| CliError::bad_input(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Starts node `i`: every node stops agreeing after the last window; the
/// late ones of a `--fast-sync` devnet start with `--fast-sync`.
fn spawn(plan: &Plan, i: usize, a: &Args) -> Result<Child, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::check_failed(format!("cannot find the montana binary: {e}")))?;
    let n = &plan.nodes[i];
    let log_path = n.dir.join("node.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| CliError::bad_input(format!("cannot create {}: {e}", log_path.display())))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("start")
        .arg("--data-dir")
        .arg(&n.dir)
        .arg("--genesis")
        .arg(&plan.genesis_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    cmd.arg("--last-window").arg(a.windows.to_string());
    if let Some(every) = a.interval() {
        cmd.arg("--snapshot-interval").arg(every.to_string());
    }
    if a.is_late(i) {
        cmd.arg("--fast-sync");
    }
    if let Some(m) = a.max_peers {
        cmd.arg("--max-peers").arg(m.to_string());
    }
    if let Some(s) = a.min_window_secs {
        cmd.arg("--min-window-secs").arg(s.to_string());
    }
    if n.joiner {
        cmd.arg("--keys")
            .arg(n.dir.join("keys"))
            .arg("--listen")
            .arg(n.address.to_string())
            .arg("--bootstrap")
            .arg(plan.nodes[0].address.to_string())
            .arg("--label")
            .arg(&n.label);
    }
    cmd.spawn()
        .map_err(|e| CliError::check_failed(format!("cannot start {}: {e}", n.label)))
}

/// Waits for every node to reach `windows`; errors if a node exits, the
/// run is interrupted, or it makes no progress for too long.
fn watch(
    plan: &Plan,
    children: &mut Vec<Child>,
    a: &Args,
    killed: &mut Vec<usize>,
    interrupted: &AtomicBool,
) -> Result<(), Stop> {
    let (windows, window_secs) = (a.windows, a.window_secs);
    let tty = std::io::stderr().is_terminal();
    // Generous: a shared 2-core host runs N verifiers and one evaluator.
    let stall = Duration::from_secs_f64(30.0 + 20.0 * window_secs * plan.nodes.len() as f64);
    let mut last_progress = Instant::now();
    let mut best = (0u64, 0u64);
    let mut drawn = false;
    // The cemented window when every joiner was first seen active.
    let mut joined_at: Option<u64> = None;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let states: Vec<Option<NodeState>> =
            plan.nodes.iter().map(|n| NodeState::read(&n.dir)).collect();
        if tty {
            draw_table(plan, &states, drawn);
            drawn = true;
        }
        let alive = || {
            states
                .iter()
                .enumerate()
                .filter(|(i, _)| !killed.contains(i))
                .map(|(_, s)| s.as_ref().map_or(0, |s| s.cemented))
        };
        let min = alive().min();
        let max = alive().max();
        if let Some(k) = a.kill_proposer_after {
            if killed.is_empty() && min.unwrap_or(0) >= k {
                // The node proposing now (rank 0 of the next window).
                let victim = states
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|s| s.phase == "proposing"))
                    .unwrap_or(0);
                // SAFETY: kill(2) on our own child's pid has no memory effects.
                unsafe {
                    libc::kill(children[victim].id() as libc::pid_t, libc::SIGKILL);
                }
                let _ = children[victim].wait();
                killed.push(victim);
                eprintln!(
                    "devnet: killed the proposer {} (SIGKILL) after window {k}",
                    plan.nodes[victim].label
                );
                continue;
            }
        }
        if a.joiners > 0 && joined_at.is_none() {
            let active = (a.nodes..plan.nodes.len())
                .all(|i| states[i].as_ref().is_some_and(|s| s.membership == "active"));
            if active {
                joined_at = Some(max.unwrap_or(0));
            }
        }
        if children.len() < plan.nodes.len() {
            // The late nodes start once the others serve a snapshot (with
            // joiners: one taken after they are all active, so that the
            // late node's trust goes through the change of the set).
            let newest = devnet::snapshot_windows(&plan.nodes[0].dir).last().copied();
            let after = joined_at.map_or(0, |w| w + 1);
            if let Some(w) =
                newest.filter(|w| *w >= after && (a.joiners == 0 || joined_at.is_some()))
            {
                for i in (0..plan.nodes.len()).filter(|&i| a.is_late(i)) {
                    let c = spawn(plan, i, a).map_err(|e| Stop::Failed(e.message))?;
                    children.insert(i, c);
                    eprintln!(
                        "devnet: started {} to fast-sync (node0 serves the snapshot of window {w})",
                        plan.nodes[i].label
                    );
                }
            }
        }
        let now = (min.unwrap_or(0), max.unwrap_or(0));
        if now != best {
            if !tty && now.0 != best.0 {
                eprintln!("devnet: window {} of {windows} cemented, all nodes", now.0);
            }
            best = now;
            last_progress = Instant::now();
        }
        if now.0 >= windows {
            return Ok(());
        }
        if interrupted.load(Ordering::Relaxed) {
            return Err(Stop::Interrupted);
        }
        for (i, c) in children.iter_mut().enumerate() {
            if killed.contains(&i) {
                continue;
            }
            if let Ok(Some(status)) = c.try_wait() {
                return Err(Stop::Failed(format!(
                    "{} exited early ({status}); see {}",
                    plan.nodes[i].label,
                    plan.nodes[i].dir.join("node.log").display()
                )));
            }
        }
        if last_progress.elapsed() > stall {
            return Err(Stop::Failed(format!(
                "no progress for {} s",
                stall.as_secs()
            )));
        }
    }
}

/// SIGTERM to every child, then wait (SIGKILL after 30 s).
fn stop_nodes(children: &mut [Child]) {
    for c in children.iter() {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for c in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

fn draw_table(plan: &Plan, states: &[Option<NodeState>], redraw: bool) {
    let mut out = String::new();
    if redraw {
        // Move up over the previous table and clear to the end.
        out.push_str(&format!("\x1b[{}A\x1b[J", plan.nodes.len() + 1));
    }
    out.push_str(&format!(
        "{:<8} {:<12} {:>7} {:>8} {:>4} {:>6} {:>10} {:>9}  {:<16}  {}\n",
        "node",
        "phase",
        "window",
        "cemented",
        "lag",
        "peers",
        "heartbeats",
        "rejected",
        "T",
        "state root"
    ));
    for (n, s) in plan.nodes.iter().zip(states) {
        match s {
            Some(s) => out.push_str(&format!(
                "{:<8} {:<12} {:>7} {:>8} {:>4} {:>6} {:>10} {:>9}  {:<16}  {}\n",
                n.label,
                s.phase_shown(),
                s.window,
                s.cemented,
                s.lag,
                s.connected,
                s.heartbeats_ok_5m,
                s.rejected_total(),
                &s.t[..16.min(s.t.len())],
                &s.state_root[..16.min(s.state_root.len())]
            )),
            None => out.push_str(&format!("{:<8} {:<12}\n", n.label, "starting")),
        }
    }
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(out.as_bytes());
    let _ = e.flush();
}
