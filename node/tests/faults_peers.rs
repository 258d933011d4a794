//! Issue 12, fault test "Slow and flooding peers": three honest nodes
//! (`montana start`) and a hostile genesis peer, node3, whose keys the test
//! holds: it is a `Network` in this process (the crate's transport, so it
//! completes the Noise handshake and the signature exchange like any
//! peer), reached through a proxy (common::proxy) at its genesis address
//! (the honest nodes have lower ids, so they dial it). In turn, for
//! `PHASE` each, node3
//! 1. reads nothing (the proxy stops reading what the nodes send it, past
//!    the handshake), while asking every node for 256 windows 50 times a
//!    second;
//! 2. the same, reading at 1 KB/s;
//! 3. sends 1 MiB envelopes of an unknown type to every node as fast as its
//!    queues take them (and reads normally).
//!
//! Throughout, every honest node keeps advancing, heartbeats keep flowing
//! between the honest nodes, and their memory stays bounded: the peak RSS
//! (`rss_bytes` of /status, sampled every 250 ms) is printed per phase and
//! must stay under `RSS_BOUND`; what a node holds queued for node3 stays
//! within the transport's 8 MiB per-peer budget. At the end the honest
//! nodes converge (window, T, state root when it exists).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{small_plan, status, u64_field, Cluster};
use montana_node::keys::NodeKeys;
use montana_node::messages::{Message, MAX_REQUEST, MSG_GET_PROPOSALS, MSG_VERSION};
use montana_node::net::{Envelope, Limits, NetConfig, Network, PeerId, PeerInfo, MAX_PAYLOAD};
use serde_json::Value;

const HONEST: usize = 3;
const HOSTILE: u16 = 3;
const PHASE: Duration = Duration::from_secs(12);
/// Generous: a node in these tests runs in about 20-40 MB; a leak of the
/// flood (1 MiB envelopes, hundreds a second) or of the queues for a peer
/// that does not read would pass this within the phase.
const RSS_BOUND: u64 = 200 << 20;
/// The transport's per-peer send budget (Limits::max_queued_bytes).
const QUEUE_BOUND: u64 = 8 << 20;

/// One /status sample of an honest node.
struct Sample {
    window: u64,
    rss: u64,
    /// heartbeats_ok_1h per honest peer.
    heartbeats: Vec<u64>,
    honest_connected: bool,
    queued_for_hostile: u64,
}

fn sample(c: &Cluster, i: usize) -> Option<Sample> {
    let s = status(c.dir(i))?;
    let peers = s["peers"].as_array()?;
    let peer = |id: u64| peers.iter().find(|p| p["peer"].as_u64() == Some(id));
    let honest: Vec<&Value> = (0..HONEST as u64)
        .filter(|&j| j != i as u64)
        .map(|j| peer(j).unwrap_or(&Value::Null))
        .collect();
    Some(Sample {
        window: u64_field(&s, "window"),
        rss: u64_field(&s, "rss_bytes"),
        heartbeats: honest
            .iter()
            .map(|p| u64_field(p, "heartbeats_ok_1h"))
            .collect(),
        honest_connected: honest.iter().all(|p| p["connected"] == true),
        queued_for_hostile: peer(HOSTILE as u64).map_or(0, |p| u64_field(p, "queued_bytes")),
    })
}

/// Peaks over a phase.
#[derive(Default, Debug)]
struct Peaks {
    rss: u64,
    queued_for_hostile: u64,
}

/// Runs one phase: samples every node every 250 ms for `PHASE`, then
/// checks that each advanced, that its heartbeats with the other honest
/// nodes rose and that they are connected, and the bounds.
fn phase(c: &mut Cluster, name: &str) -> Peaks {
    let first: Vec<Sample> = (0..HONEST)
        .map(|i| sample(c, i).unwrap_or_else(|| panic!("{name}: no /status from node{i}")))
        .collect();
    let mut peaks = Peaks::default();
    let mut last: Vec<Option<Sample>> = (0..HONEST).map(|_| None).collect();
    let end = Instant::now() + PHASE;
    while Instant::now() < end {
        for (i, last) in last.iter_mut().enumerate() {
            c.assert_running(i);
            if let Some(s) = sample(c, i) {
                peaks.rss = peaks.rss.max(s.rss);
                peaks.queued_for_hostile = peaks.queued_for_hostile.max(s.queued_for_hostile);
                *last = Some(s);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for i in 0..HONEST {
        let (a, b) = (&first[i], last[i].as_ref().expect("sampled"));
        assert!(
            b.window > a.window,
            "{name}: node{i} did not advance (window {})\n{}",
            a.window,
            c.report()
        );
        for (k, (x, y)) in a.heartbeats.iter().zip(&b.heartbeats).enumerate() {
            assert!(
                y > x,
                "{name}: node{i}'s heartbeats with honest peer #{k} stopped at {x}"
            );
        }
        assert!(b.honest_connected, "{name}: node{i} lost an honest peer");
        println!(
            "{name}: node{i} window {} -> {}, heartbeats {:?} -> {:?}",
            a.window, b.window, a.heartbeats, b.heartbeats
        );
    }
    println!(
        "{name}: peak RSS {:.1} MiB, peak queued for node3 {:.2} MiB",
        peaks.rss as f64 / (1 << 20) as f64,
        peaks.queued_for_hostile as f64 / (1 << 20) as f64
    );
    assert!(peaks.rss > 0 && peaks.rss < RSS_BOUND, "{name}: {peaks:?}");
    assert!(peaks.queued_for_hostile <= QUEUE_BOUND, "{name}: {peaks:?}");
    peaks
}

#[test]
fn slow_silent_and_flooding_peers_do_not_stop_the_others_or_grow_their_memory() {
    let dir = common::tempdir();
    let plan = small_plan(dir.path(), HONEST + 1);
    // node3 is the test's: it listens behind a proxy at its genesis address.
    let behind = common::free_addr();
    let proxy = Proxy::start(plan.nodes[3].address, behind, 16 * 1024);
    let keys = Arc::new(NodeKeys::load(&plan.nodes[3].dir.join("keys")).unwrap());
    let peers: Vec<PeerInfo> = plan
        .genesis
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| PeerInfo {
            id: PeerId(i as u16),
            label: p.label.clone(),
            address: p.address,
            noise_public: p.noise_public().unwrap(),
            signing_public: p.signing_public().unwrap(),
        })
        .collect();
    let cfg = NetConfig {
        network_id: plan.genesis.network_id(),
        me: Some(PeerId(HOSTILE)),
        listen: behind,
        keys,
        peers,
        bootstrap: Vec::new(),
        members: None,
        // It never gives up on a connection itself.
        limits: Limits {
            idle_timeout: Duration::from_secs(3600),
            heartbeat_every: Duration::from_secs(600),
            ..Limits::default()
        },
        transport: plan.genesis.transport.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut c = Cluster::new(plan);
    for i in [1, 2, 0] {
        c.start(i, &[]);
    }
    let (hostile, mut inbound) = rt.block_on(Network::start(cfg)).unwrap();
    let hostile = Arc::new(hostile);
    // node3 reads everything the transport delivers (the proxy decides how
    // fast anything arrives).
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    rt.spawn(async move {
        while let Some(m) = inbound.recv().await {
            r.fetch_add(m.envelope.payload.len() as u64, Ordering::Relaxed);
        }
    });
    c.wait_until("window 3 everywhere and node3 connected", 90, |c| {
        (0..HONEST).all(|i| c.window(i) >= 3) && hostile.connected().len() == HONEST
    });

    // While it reads nothing, or slowly, node3 asks every node for 256
    // windows 50 times a second (so the nodes have much to send it).
    let requesting = Arc::new(AtomicBool::new(true));
    let (q, h) = (requesting.clone(), hostile.clone());
    let requests = rt.spawn(async move {
        let ask = Message::GetProposals {
            from: 1,
            count: MAX_REQUEST,
        }
        .encode();
        let mut n = 0u64;
        while q.load(Ordering::Relaxed) {
            for p in 0..HONEST as u16 {
                let env = Envelope::new(MSG_GET_PROPOSALS, MSG_VERSION, n, ask.clone());
                let _ = h.send(PeerId(p), env);
                n += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    proxy.limit_reads(Some(0));
    let silent = phase(&mut c, "reads nothing");
    proxy.limit_reads(Some(1024));
    let slow = phase(&mut c, "reads 1 KB/s");
    requesting.store(false, Ordering::Relaxed);
    rt.block_on(requests).unwrap();
    proxy.limit_reads(None);

    let flooding = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicU64::new(0));
    let (f, s, h) = (flooding.clone(), sent.clone(), hostile.clone());
    let flood = rt.spawn(async move {
        let mut n = 0u64;
        while f.load(Ordering::Relaxed) {
            let mut queued = false;
            for p in 0..HONEST as u16 {
                let env = Envelope::new(200, 1, n, vec![0xA5; MAX_PAYLOAD]);
                if h.send(PeerId(p), env).is_ok() {
                    s.fetch_add(1, Ordering::Relaxed);
                    queued = true;
                }
                n += 1;
            }
            if !queued {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let flood_peaks = phase(&mut c, "floods 1 MiB unknown envelopes");
    flooding.store(false, Ordering::Relaxed);
    rt.block_on(flood).unwrap();
    let envelopes = sent.load(Ordering::Relaxed);
    println!(
        "flood: {envelopes} envelopes of 1 MiB queued by node3 in {} s; node3 received {} bytes in all",
        PHASE.as_secs(),
        received.load(Ordering::Relaxed)
    );
    // The flood was real: far more than the nodes could buffer.
    assert!(envelopes >= 100, "only {envelopes} envelopes sent");
    println!(
        "peak RSS of the honest nodes: silent {:.1} MiB, slow {:.1} MiB, flood {:.1} MiB",
        silent.rss as f64 / (1 << 20) as f64,
        slow.rss as f64 / (1 << 20) as f64,
        flood_peaks.rss as f64 / (1 << 20) as f64
    );

    rt.block_on(hostile.shutdown());
    let end = c.converge(&[0, 1, 2], 120);
    println!("converged at window {} (T {})", end.window, end.t);
    drop(proxy);
}
