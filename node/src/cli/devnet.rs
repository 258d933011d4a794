//! `montana devnet`: N node processes on loopback, run to W windows.
//!
//! Plans keys and a genesis (`montana_node::devnet`), starts one
//! `montana start` child per node (the proposer with `--last-window W`),
//! shows a live table, and once every node reports window W (or on Ctrl-C,
//! or when a node dies) sends every child SIGTERM, waits for clean exits,
//! and checks convergence. Exit 0 only if all nodes ended on the same window
//! with the same T and that T is the TimeChain's.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use montana_node::backend_choice;
use montana_node::devnet::{self, Plan};
use montana_node::node::NodeState;
use montana_vdf::HashSuite;

use super::{print_json, CliError};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Number of nodes (node0 proposes).
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Stop after this many windows.
    #[arg(long, default_value_t = 10)]
    pub windows: u64,
    /// Target seconds per window (D is measured to match on this host).
    #[arg(long, default_value_t = 1.0)]
    pub window_secs: f64,
    /// Hash suite: sha256 or blake3.
    #[arg(long, default_value = "sha256")]
    pub hash: HashSuite,
    /// Checkpoints per proposal.
    #[arg(long, default_value_t = 1_000)]
    pub checkpoints: u64,
    /// Steps per window (default: measured from this host's eval rate).
    #[arg(long)]
    pub d: Option<u64>,
    /// Working directory (default: a new private directory, mode 0700 with
    /// an unpredictable name, under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the result as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<(), CliError> {
    if !(2..=64).contains(&a.nodes) {
        return Err(CliError::bad_input("--nodes must be between 2 and 64"));
    }
    if a.windows == 0 {
        return Err(CliError::bad_input("--windows must be at least 1"));
    }
    if !(a.window_secs.is_finite() && a.window_secs > 0.0) {
        return Err(CliError::bad_input(
            "--window-secs must be a positive number",
        ));
    }
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => devnet::fresh_private_dir(&std::env::temp_dir()).map_err(|e| {
            CliError::bad_input(format!(
                "cannot create a devnet directory under {}: {e}",
                std::env::temp_dir().display()
            ))
        })?,
    };
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut r| r.next().is_some())
            .unwrap_or(true)
    {
        return Err(CliError::bad_input(format!(
            "{} exists and is not empty (a devnet starts from nothing)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::bad_input(format!("cannot create {}: {e}", dir.display())))?;

    let d = match a.d {
        Some(d) => d,
        None => {
            let eval = super::registry()?.auto(a.hash, montana_vdf::Operation::Eval)?;
            let rate =
                devnet::measure_eval_rate(eval.as_ref(), a.hash).map_err(CliError::check_failed)?;
            let d = devnet::d_for(rate, a.window_secs, a.checkpoints);
            eprintln!(
                "devnet: {} eval rate {:.1} M steps/s on {}: D = {d} for {} s windows",
                a.hash,
                rate / 1e6,
                eval.name(),
                a.window_secs
            );
            d
        }
    };
    let plan = devnet::plan(&dir, a.nodes, a.hash, d, a.checkpoints, a.window_secs)
        .map_err(CliError::bad_input)?;
    calibrate_once(&plan)?;
    eprintln!(
        "devnet: {} nodes in {}, D = {d}, K = {}, {} windows",
        a.nodes,
        dir.display(),
        a.checkpoints,
        a.windows
    );

    let interrupted = interrupt_flag();
    let mut children = spawn_nodes(&plan, a.windows)?;
    let outcome = watch(&plan, &mut children, a.windows, a.window_secs, &interrupted);
    stop_nodes(&mut children);

    let states: Vec<Option<NodeState>> =
        plan.nodes.iter().map(|n| NodeState::read(&n.dir)).collect();
    // Interrupted runs are judged on convergence where they stopped.
    let interrupted_run = matches!(&outcome, Err(e) if e == INTERRUPTED);
    let required = if interrupted_run { 0 } else { a.windows };
    let (mut report, check) = devnet::verdict(&plan.genesis, required, &states);
    report.windows = a.windows;
    if a.json {
        print_json(&report);
    } else {
        draw_table(&plan, &states, false);
    }
    if !interrupted_run {
        outcome.map_err(CliError::check_failed)?;
    }
    check.map_err(CliError::check_failed)?;
    eprintln!(
        "devnet: all {} nodes converged on window {} (T checks against the TimeChain)",
        a.nodes, report.nodes[0].window
    );
    Ok(())
}

const INTERRUPTED: &str = "interrupted";

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
        pin: None,
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

/// Set by SIGINT/SIGTERM: the run ends and the nodes are stopped cleanly.
fn interrupt_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let _ = signal_hook_flag(sig, flag.clone());
    }
    flag
}

fn signal_hook_flag(
    sig: i32,
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<()> {
    // A small tokio runtime thread turns the signal into the flag.
    std::thread::Builder::new()
        .name(format!("signal-{sig}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("signal runtime");
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                if let Ok(mut s) = signal(SignalKind::from_raw(sig)) {
                    s.recv().await;
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            });
        })
        .map(|_| ())
}

fn spawn_nodes(plan: &Plan, windows: u64) -> Result<Vec<Child>, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::check_failed(format!("cannot find the montana binary: {e}")))?;
    let mut children = Vec::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        let log_path = n.dir.join("node.log");
        let log = std::fs::File::create(&log_path).map_err(|e| {
            CliError::bad_input(format!("cannot create {}: {e}", log_path.display()))
        })?;
        let mut cmd = Command::new(&exe);
        cmd.arg("start")
            .arg("--data-dir")
            .arg(&n.dir)
            .arg("--genesis")
            .arg(&plan.genesis_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if i == 0 {
            cmd.arg("--last-window").arg(windows.to_string());
        }
        match cmd.spawn() {
            Ok(c) => children.push(c),
            Err(e) => {
                stop_nodes(&mut children);
                return Err(CliError::check_failed(format!(
                    "cannot start {}: {e}",
                    n.label
                )));
            }
        }
    }
    Ok(children)
}

/// Waits for every node to reach `windows`; errors if a node exits, the
/// run is interrupted, or it makes no progress for too long.
fn watch(
    plan: &Plan,
    children: &mut [Child],
    windows: u64,
    window_secs: f64,
    interrupted: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    let tty = std::io::stderr().is_terminal();
    // Generous: a shared 2-core host runs N verifiers and one evaluator.
    let stall = Duration::from_secs_f64(30.0 + 20.0 * window_secs * plan.nodes.len() as f64);
    let mut last_progress = Instant::now();
    let mut best = (0u64, 0u64);
    let mut drawn = false;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let states: Vec<Option<NodeState>> =
            plan.nodes.iter().map(|n| NodeState::read(&n.dir)).collect();
        if tty {
            draw_table(plan, &states, drawn);
            drawn = true;
        }
        let min = states
            .iter()
            .map(|s| s.as_ref().map_or(0, |s| s.window))
            .min();
        let max = states
            .iter()
            .map(|s| s.as_ref().map_or(0, |s| s.window))
            .max();
        let now = (min.unwrap_or(0), max.unwrap_or(0));
        if now != best {
            if !tty && now.0 != best.0 {
                eprintln!("devnet: windows {}..{} across nodes", now.0, now.1);
            }
            best = now;
            last_progress = Instant::now();
        }
        if now.0 >= windows {
            return Ok(());
        }
        if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(INTERRUPTED.into());
        }
        for (i, c) in children.iter_mut().enumerate() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(format!(
                    "{} exited early ({status}); see {}",
                    plan.nodes[i].label,
                    plan.nodes[i].dir.join("node.log").display()
                ));
            }
        }
        if last_progress.elapsed() > stall {
            return Err(format!("no progress for {} s", stall.as_secs()));
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
        "{:<8} {:<12} {:>7} {:>4} {:>6} {:>10} {:>9}  {}\n",
        "node", "phase", "window", "lag", "peers", "heartbeats", "rejected", "T"
    ));
    for (n, s) in plan.nodes.iter().zip(states) {
        match s {
            Some(s) => out.push_str(&format!(
                "{:<8} {:<12} {:>7} {:>4} {:>6} {:>10} {:>9}  {}\n",
                n.label,
                s.phase_shown(),
                s.window,
                s.lag,
                s.connected,
                s.heartbeats_ok_5m,
                s.rejected_total(),
                &s.t[..16.min(s.t.len())]
            )),
            None => out.push_str(&format!("{:<8} {:<12}\n", n.label, "starting")),
        }
    }
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(out.as_bytes());
    let _ = e.flush();
}
