//! Issue 12, fault test "Crash": during one run of four nodes (small
//! windows, tens of milliseconds each), a follower is SIGKILLed at random
//! moments of window processing N times and the proposer M times, each
//! restarted at once. Every restart must succeed (no refusal, no corrupt
//! database), a node's window never goes backwards across restarts and no
//! window is applied twice (each node's log, see
//! `common::check_applied_log`), and at the end every node reaches the same
//! window with the same T (and state root, once /status has one).
//!
//! CI: N = 10, M = 3. `MONTANA_CRASH_LONG=1`: N = 100, M = 20 (the figures
//! in docs/RELIABILITY.md). The random seed is printed;
//! `MONTANA_CRASH_SEED=...` replays a run's schedule (the moments are
//! relative to the node's progress, so a replay is close, not exact).
//!
//! Four nodes, so the three left while one is down are still a quorum
//! (more than 2/3) once the node cements windows.

mod common;

use std::time::{Duration, Instant};

use common::{check_applied_log, small_plan, Cluster, Rng};

const NODES: usize = 4;

/// How one kill is timed.
#[derive(Debug)]
enum Moment {
    /// After a random delay (0-1.5 s), wherever the node is.
    Anywhere(u64),
    /// A random few milliseconds after the victim's window changes: inside
    /// the next window's evaluation, verification or write.
    AfterWindow(u64),
}

fn crash_run(follower_kills: usize, proposer_kills: usize) {
    let t0 = Instant::now();
    let mut rng = Rng::from_env("MONTANA_CRASH_SEED");
    let dir = common::tempdir();
    let mut c = Cluster::new(small_plan(dir.path(), NODES));
    for i in (0..NODES).rev() {
        c.start(i, &[]);
    }
    c.wait_until("window 2 on every node", 90, |c| {
        (0..NODES).all(|i| c.window(i) >= 2)
    });

    // The schedule: N follower kills and M proposer kills, shuffled.
    let mut victims: Vec<usize> = (0..follower_kills)
        .map(|_| rng.range(1, NODES as u64) as usize)
        .chain(std::iter::repeat_n(0, proposer_kills))
        .collect();
    for i in (1..victims.len()).rev() {
        victims.swap(i, rng.range(0, i as u64 + 1) as usize);
    }
    let mut kills = [0usize; NODES];
    for (k, &v) in victims.iter().enumerate() {
        let moment = if rng.next() >> 63 == 0 {
            Moment::Anywhere(rng.range(0, 1500))
        } else {
            Moment::AfterWindow(rng.range(0, 40))
        };
        match moment {
            Moment::Anywhere(ms) => std::thread::sleep(Duration::from_millis(ms)),
            Moment::AfterWindow(ms) => {
                let w = c.window(v);
                c.wait_until(&format!("node{v} past window {w}"), 60, |c| c.window(v) > w);
                std::thread::sleep(Duration::from_millis(ms));
            }
        }
        let before = c.window(v);
        c.kill(v);
        kills[v] += 1;
        // Down for a moment (0-300 ms), then back.
        std::thread::sleep(Duration::from_millis(rng.range(0, 300)));
        c.start(v, &[]);
        // The restart succeeds and the node moves on from where it was
        // (its window, and the others', rise past the one before the kill).
        c.wait_until(
            &format!("kill {k}: node{v} back and past window {before}"),
            90,
            |c| c.window(v) > before && (0..NODES).all(|i| c.window(i) > before),
        );
        println!(
            "kill {:>3}: node{v} at window {before} ({moment:?}); back, network at window {}",
            k + 1,
            c.window(0)
        );
    }
    let all: Vec<usize> = (0..NODES).collect();
    let end = c.converge(&all, 180);
    println!(
        "converged: window {}, T {}, state root {:?}; {} follower and {} proposer kills in {:.0} s",
        end.window,
        end.t,
        end.state_root,
        kills[1..].iter().sum::<usize>(),
        kills[0],
        t0.elapsed().as_secs_f64()
    );
    for (i, kills) in kills.iter().enumerate() {
        let log = c.log(i);
        for bad in ["corrupt", "panicked", "ERROR"] {
            assert!(
                !log.contains(bad),
                "node{i} logged {bad:?}:\n{}",
                common::tail(&log, 40)
            );
        }
        let (starts, applied) = check_applied_log(&log).unwrap_or_else(|e| panic!("node{i}: {e}"));
        // The first start, one per kill, and the two of `converge`.
        assert_eq!(starts, 1 + kills + 1, "node{i}'s starts");
        // Most windows are logged (a kill can hide the rest of a batch).
        assert!(
            applied as u64 <= end.window && 2 * applied as u64 >= end.window,
            "node{i}: {applied} of {} windows logged as applied",
            end.window
        );
        println!("node{i}: {starts} starts, {applied} windows applied, each once, in order");
    }
    // Nothing lost: the proposer's stored chain (the others agree on T) is
    // the TimeChain.
    c.check_timechain(0, &end);
}

#[test]
fn killed_followers_and_proposer_restart_and_converge() {
    if std::env::var_os("MONTANA_CRASH_LONG").is_some() {
        crash_run(100, 20);
    } else {
        crash_run(10, 3);
    }
}

#[test]
fn the_applied_log_check_catches_a_window_applied_twice_or_skipped() {
    let ok = "node running label=\"n\" window=0 t=a\n\
              cemented window window=1 t=b\n\
              cemented window window=2 t=c\n\
              node running label=\"n\" window=3 t=d\n\
              cemented window window=4 t=e\n";
    assert_eq!(check_applied_log(ok), Ok((2, 3)));
    let backwards = "node running label=\"n\" window=0 t=a\n\
                     cemented window window=1 t=b\n\
                     cemented window window=2 t=c\n\
                     node running label=\"n\" window=1 t=d\n";
    assert!(check_applied_log(backwards).is_err());
    let skipped = "node running label=\"n\" window=0 t=a\n\
                   cemented window window=2 t=b\n";
    assert!(check_applied_log(skipped).is_err());
    let twice = "node running label=\"n\" window=4 t=a\n\
                 cemented window window=4 t=b\n";
    assert!(check_applied_log(twice).is_err());
}
