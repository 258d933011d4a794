//! Issue 12, fault test "Partition": a TCP proxy written in the test
//! (common::proxy, loopback) stands at node3's genesis address and node3
//! listens behind it, so every connection of node3 (the peers with lower
//! ids dial) passes through the proxy. The proxy cuts node3 off for many
//! windows and then heals: node3 stays where it was during the cut, the
//! others never stall (their windows keep rising), and after the heal
//! node3 catches up by itself; at the end all four agree on window, T (and
//! state root, once it exists) and the chain is the TimeChain.
//!
//! Four nodes, so the three that stay connected are still a quorum (more
//! than 2/3) once the node cements windows.

mod common;

use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{check_applied_log, small_plan, Cluster};

const NODES: usize = 4;
/// The node cut off.
const CUT: usize = 3;
/// Windows the others must advance while it is cut off.
const CUT_WINDOWS: u64 = 30;
/// And the least time it stays cut off (the peers' redial backoff grows).
const MIN_CUT: Duration = Duration::from_secs(4);

#[test]
fn a_node_cut_off_for_many_windows_catches_up_by_itself_and_the_rest_never_stall() {
    let dir = common::tempdir();
    let mut c = Cluster::new(small_plan(dir.path(), NODES));
    let behind = common::free_addr();
    let proxy = Proxy::start(c.plan.nodes[CUT].address, behind, 0);
    c.args[CUT] = vec!["--listen".into(), behind.to_string()];
    let others: Vec<usize> = (0..NODES).filter(|&i| i != CUT).collect();
    for i in (0..NODES).rev() {
        c.start(i, &[]);
    }
    c.wait_until("window 3 on every node, node3 following closely", 90, |c| {
        (0..NODES).all(|i| c.window(i) >= 3) && c.window(CUT) + 2 >= c.window(0)
    });
    assert!(
        proxy.accepted() >= others.len() as u64,
        "the others reach node3 through the proxy"
    );

    proxy.cut();
    let cut_at = Instant::now();
    // What was in flight lands or is lost within a moment.
    std::thread::sleep(Duration::from_millis(300));
    let stuck = c.window(CUT);
    let before: Vec<u64> = others.iter().map(|&i| c.window(i)).collect();
    // The others go on: each rises by CUT_WINDOWS, and none stands still
    // for long (sampled: no window may stand still for 20 s).
    let mut last: Vec<(u64, Instant)> = before.iter().map(|&w| (w, Instant::now())).collect();
    let mut longest_still = Duration::ZERO;
    c.wait_until("the others to advance during the cut", 120, |c| {
        for (k, &i) in others.iter().enumerate() {
            let w = c.window(i);
            if w != last[k].0 {
                last[k] = (w, Instant::now());
            }
            longest_still = longest_still.max(last[k].1.elapsed());
            assert!(
                last[k].1.elapsed() < Duration::from_secs(20),
                "node{i} stalled at window {} during the cut",
                last[k].0
            );
        }
        // A window whose proposal and votes arrived just before the cut
        // may still be applied (verification was under way); no more.
        assert!(
            c.window(CUT) <= stuck + 1,
            "node3 moved while cut off: {} after {stuck}",
            c.window(CUT)
        );
        others
            .iter()
            .zip(&before)
            .all(|(&i, &w)| c.window(i) >= w + CUT_WINDOWS)
            && cut_at.elapsed() >= MIN_CUT
    });
    let accepted = proxy.accepted();
    let after: Vec<u64> = others.iter().map(|&i| c.window(i)).collect();
    println!(
        "cut for {:.1} s: the others {before:?} -> {after:?}, node3 stayed at {stuck} \
         (longest a window stood still on the others: {:.2} s)",
        cut_at.elapsed().as_secs_f64(),
        longest_still.as_secs_f64()
    );

    proxy.heal();
    let healed = Instant::now();
    let top = *after.iter().max().unwrap();
    c.wait_until("node3 to catch up after the heal", 90, |c| {
        c.window(CUT) > top
    });
    println!(
        "healed: node3 at window {} after {:.1} s (node0 at {})",
        c.window(CUT),
        healed.elapsed().as_secs_f64(),
        c.window(0)
    );
    assert!(proxy.accepted() > accepted, "the peers redialed node3");

    let all: Vec<usize> = (0..NODES).collect();
    let end = c.converge(&all, 120);
    for i in all {
        check_applied_log(&c.log(i)).unwrap_or_else(|e| panic!("node{i}: {e}"));
    }
    c.check_timechain(CUT, &end);
    drop(proxy);
}
