//! Issue 12, fault test "Partition": a TCP proxy written in the test
//! (common::proxy, loopback) stands at node2's genesis address and node2
//! listens behind it, so every connection of node2 (the peers with lower
//! ids dial) passes through the proxy. The proxy cuts node2 off for many
//! windows and then heals: node2 stays where it was during the cut, the
//! others never stall (their windows keep rising), and after the heal
//! node2 catches up by itself; at the end all three agree on window, T
//! (and state root, once it exists) and the chain is the TimeChain.

mod common;

use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{check_applied_log, small_plan, Cluster};

/// Windows the others must advance while node2 is cut off.
const CUT_WINDOWS: u64 = 30;
/// And the least time it stays cut off (the peers' redial backoff grows).
const MIN_CUT: Duration = Duration::from_secs(4);

#[test]
fn a_node_cut_off_for_many_windows_catches_up_by_itself_and_the_rest_never_stall() {
    let dir = common::tempdir();
    let mut c = Cluster::new(small_plan(dir.path(), 3));
    let behind = common::free_addr();
    let proxy = Proxy::start(c.plan.nodes[2].address, behind, 0);
    c.args[2] = vec!["--listen".into(), behind.to_string()];
    for i in [1, 2, 0] {
        c.start(i, &[]);
    }
    c.wait_until("window 3 on every node, node2 following closely", 90, |c| {
        (0..3).all(|i| c.window(i) >= 3) && c.window(2) + 2 >= c.window(0)
    });
    assert!(
        proxy.accepted() >= 2,
        "node0 and node1 reach node2 through the proxy"
    );

    proxy.cut();
    let cut_at = Instant::now();
    // What was in flight lands or is lost within a moment.
    std::thread::sleep(Duration::from_millis(300));
    let w2 = c.window(2);
    let (w0, w1) = (c.window(0), c.window(1));
    // The others go on: both rise by CUT_WINDOWS, and neither stands still
    // for long (sampled: no window may stand still for 20 s).
    let mut last = [(w0, Instant::now()), (w1, Instant::now())];
    let mut longest_still = Duration::ZERO;
    c.wait_until("node0 and node1 to advance during the cut", 120, |c| {
        for (i, l) in last.iter_mut().enumerate() {
            let w = c.window(i);
            if w != l.0 {
                *l = (w, Instant::now());
            }
            longest_still = longest_still.max(l.1.elapsed());
            assert!(
                l.1.elapsed() < Duration::from_secs(20),
                "node{i} stalled at window {} during the cut",
                l.0
            );
        }
        assert_eq!(c.window(2), w2, "node2 moved while cut off");
        c.window(0) >= w0 + CUT_WINDOWS
            && c.window(1) >= w1 + CUT_WINDOWS
            && cut_at.elapsed() >= MIN_CUT
    });
    let accepted = proxy.accepted();
    let (h0, h1) = (c.window(0), c.window(1));
    println!(
        "cut for {:.1} s: node0 {w0} -> {h0}, node1 {w1} -> {h1}, node2 stayed at {w2} \
         (longest a window stood still on node0/node1: {:.2} s)",
        cut_at.elapsed().as_secs_f64(),
        longest_still.as_secs_f64()
    );

    proxy.heal();
    let healed = Instant::now();
    c.wait_until("node2 to catch up after the heal", 90, |c| {
        c.window(2) > h0.max(h1)
    });
    println!(
        "healed: node2 at window {} after {:.1} s (node0 at {})",
        c.window(2),
        healed.elapsed().as_secs_f64(),
        c.window(0)
    );
    assert!(proxy.accepted() > accepted, "the peers redialed node2");

    let end = c.converge(&[0, 1, 2], 120);
    for i in 0..3 {
        check_applied_log(&c.log(i)).unwrap_or_else(|e| panic!("node{i}: {e}"));
    }
    c.check_timechain(2, &end);
    drop(proxy);
}
