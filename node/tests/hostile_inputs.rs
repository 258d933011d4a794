//! Hostile inputs of the catalogue in docs/RELIABILITY.md that no other
//! test covered: a replayed handshake, malformed messages from an
//! authenticated genesis peer (end to end, counted by a running node), bad
//! genesis and key files given to `montana start`, and bad requests to the
//! status server. Also checks the catalogue itself: every test it names
//! exists in the tree.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{small_plan, Cluster};
use montana_node::consensus::agreement::VoteKind;
use montana_node::consensus::vote::{Vote, VoteKey};
use montana_node::keys::NodeKeys;
use montana_node::messages::{Message, MSG_GET_PROPOSALS, MSG_PROPOSALS, MSG_PROPOSE, MSG_TIP};
use montana_node::net::{Envelope, Limits, NetConfig, NetError, Network, NodeId, PeerId, PeerInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every genesis peer of a plan as the transport sees it.
fn peer_infos(plan: &montana_node::devnet::Plan) -> Vec<PeerInfo> {
    plan.genesis
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
        .collect()
}

/// Node `me` of a plan as a `Network` in this process (its keys from the
/// plan), listening on `listen`.
fn as_network_config(
    plan: &montana_node::devnet::Plan,
    me: usize,
    listen: SocketAddr,
) -> NetConfig {
    NetConfig {
        network_id: plan.genesis.network_id(),
        me: Some(PeerId(me as u16)),
        listen,
        keys: Arc::new(NodeKeys::load(&plan.nodes[me].dir.join("keys")).unwrap()),
        peers: peer_infos(plan),
        bootstrap: Vec::new(),
        members: None,
        limits: Limits {
            heartbeat_every: Duration::from_millis(200),
            ..Limits::default()
        },
        transport: plan.genesis.transport.clone(),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn wait(what: &str, secs: u64, f: impl Fn() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(tokio::time::Instant::now() < end, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A handshake recorded on the wire (everything a genesis peer sent in a
/// real session) and sent again on a new connection: the responder's fresh
/// ephemeral keys make the replayed third message undecryptable, so the
/// handshake fails and nothing is delivered.
#[test]
fn a_replayed_handshake_is_refused() {
    let dir = common::tempdir();
    let plan = small_plan(dir.path(), 2);
    let rt = rt();
    rt.block_on(async {
        // Node 1 listens at its genesis address; node 0 dials it through a
        // relay that records what node 0 sends.
        let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = relay.local_addr().unwrap();
        let target = plan.nodes[1].address;
        let (b, _b_rx) = Network::start(as_network_config(&plan, 1, target))
            .await
            .unwrap();
        let mut cfg = as_network_config(&plan, 0, common::free_addr());
        cfg.peers[1].address = relay_addr;
        let recorded = tokio::spawn(async move {
            let (mut client, _) = relay.accept().await.unwrap();
            let mut server = tokio::net::TcpStream::connect(target).await.unwrap();
            let (mut cr, mut cw) = client.split();
            let (mut sr, mut sw) = server.split();
            let mut seen = Vec::new();
            let up = async {
                let mut buf = [0u8; 8192];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
            };
            let down = tokio::io::copy(&mut sr, &mut cw);
            tokio::select! {
                _ = up => {}
                _ = down => {}
            }
            seen
        });
        let (a, _a_rx) = Network::start(cfg).await.unwrap();
        wait("the recorded session is up", 30, || {
            a.connected() == vec![PeerId(1)] && b.connected() == vec![PeerId(0)]
        })
        .await;
        a.shutdown().await;
        let seen = recorded.await.unwrap();
        wait("node 1 sees the session end", 30, || {
            b.connected().is_empty()
        })
        .await;
        assert!(seen.len() > 3000, "recorded {} bytes", seen.len());
        let before = b.totals();

        // The replay: the same bytes, on a new connection.
        let mut s = tokio::net::TcpStream::connect(target).await.unwrap();
        let _ = s.write_all(&seen).await;
        let mut buf = vec![0u8; 1 << 16];
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // node 1's own handshake message
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the replay was not cut off");
        wait("the failure counted", 30, || {
            b.totals().handshake_failures > before.handshake_failures
        })
        .await;
        let after = b.totals();
        assert_eq!(after.handshakes_ok, before.handshakes_ok, "{after:?}");
        assert!(b.connected().is_empty());
        b.shutdown().await;
    });
}

/// An authenticated genesis peer (node3, played by this test) sends the
/// running proposer (node0) every malformed kind of message, then a flood
/// of 2,000 more: each is counted once as `malformed` and dropped, and the
/// log has one line for them all (once a minute per peer); an unknown type
/// is ignored without a count; the node keeps running and stays connected. (Three
/// running nodes, so they are a quorum of the four once windows are
/// cemented.)
#[test]
fn malformed_messages_from_a_genesis_peer_are_counted_and_a_flood_bans_it() {
    let dir = common::tempdir();
    let plan = small_plan(dir.path(), 4);
    let listen = plan.nodes[3].address;
    let cfg = as_network_config(&plan, 3, listen);
    let mut c = Cluster::new(plan);
    for i in [2, 1, 0] {
        c.start(i, &[]);
    }
    let rt = rt();
    let (peer, _rx) = rt.block_on(Network::start(cfg)).unwrap();
    let everyone = vec![PeerId(0), PeerId(1), PeerId(2)];
    c.wait_until("node0 proposing with node3 connected", 90, |c| {
        c.window(0) >= 2 && peer.connected() == everyone
    });
    let tip = Message::Tip {
        cemented: montana_node::storage::Tip {
            window: 1,
            t: montana_vdf::Hash32([1; 32]),
            hash: [2; 32],
        },
        applied: 1,
    }
    .encode();
    let bad: Vec<(&str, Envelope)> = vec![
        (
            "tip of version 2",
            Envelope::new(MSG_TIP, 2, 0, tip.clone()),
        ),
        (
            "tip cut short",
            Envelope::new(MSG_TIP, 1, 0, tip[..tip.len() - 1].to_vec()),
        ),
        (
            "tip with a trailing byte",
            Envelope::new(MSG_TIP, 1, 0, [&tip[..], &[0]].concat()),
        ),
        (
            "get-proposals of 13 bytes",
            Envelope::new(MSG_GET_PROPOSALS, 1, 0, vec![0; 13]),
        ),
        (
            "proposals whose count lies",
            Envelope::new(MSG_PROPOSALS, 1, 0, vec![5, 0, 1, 0, 0, 0, 0]),
        ),
        (
            "propose of garbage",
            Envelope::new(MSG_PROPOSE, 1, 0, vec![0xEE; 3000]),
        ),
        (
            "fast-sync get-chunk of 13 bytes",
            Envelope::new(
                montana_node::snapshot::messages::MSG_GET_CHUNK,
                1,
                0,
                vec![0; 13],
            ),
        ),
    ];
    // Seven: 70 points of misbehaviour, short of a ban (100).
    let counted = bad.len() as u64;
    for (what, env) in bad {
        peer.send(PeerId(0), env)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // Unknown types (a future protocol's) are not an offence.
    for t in [99u8, 255] {
        peer.send(PeerId(0), Envelope::new(t, 1, 0, vec![1; 100]))
            .unwrap();
    }
    c.wait_until("the malformed messages counted", 60, |c| {
        c.state(0)
            .is_some_and(|s| s["rejected"]["malformed"].as_u64() == Some(counted))
    });
    let w = c.window(0);
    c.wait_until("node0 going on", 30, |c| c.window(0) > w + 2);
    let s = c.state(0).unwrap();
    assert_eq!(s["rejected"]["malformed"], counted, "{s}");
    assert_eq!(s["net"]["peer_offences"], counted, "{s}");
    assert_eq!(s["net"]["peers_banned"], 0, "{s}");
    assert_eq!(peer.connected(), everyone, "still connected");
    // Then a flood: counted each, logged once a minute per peer (a hostile
    // peer must not fill the disk through the log), until the peer is
    // banned: disconnected, and not redialed while the ban lasts.
    let mut sent = 0u64;
    loop {
        match peer.send(PeerId(0), Envelope::new(MSG_TIP, 2, 0, tip.clone())) {
            Ok(()) => sent += 1,
            Err(NetError::QueueFull(_)) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                assert!(matches!(e, NetError::NotConnected(_)), "{e}");
                break;
            }
        }
        assert!(sent < 100_000, "never disconnected");
    }
    c.wait_until("the ban counted", 30, |c| {
        c.state(0)
            .is_some_and(|s| s["net"]["peers_banned"].as_u64() == Some(1))
    });
    let w = c.window(0);
    c.wait_until("node0 going on", 30, |c| c.window(0) > w + 2);
    let s = c.state(0).unwrap();
    let malformed = s["rejected"]["malformed"].as_u64().unwrap();
    assert!(
        (counted + 3..counted + 3 + 20).contains(&malformed),
        "the flood cut short at the ban (a few in flight): {malformed} of {}",
        counted + sent
    );
    assert_eq!(
        peer.connected(),
        vec![PeerId(1), PeerId(2)],
        "node0 closed us"
    );
    let log = c.log(0);
    assert_eq!(
        log.matches("malformed message").count(),
        1,
        "one line a minute from one peer: {log}"
    );
    assert_eq!(
        log.matches("peer banned for misbehaviour").count(),
        1,
        "one line per ban: {log}"
    );
    rt.block_on(peer.shutdown());
    for i in 0..3 {
        c.terminate(i);
    }
}

/// A genesis peer sending forged votes (a member's id, a signature of
/// garbage) is banned: its connection closed and its redials refused
/// while the ban lasts. The honest peers, which relay every genuine
/// message to one another and to it, are never banned.
/// Sends node 3 forged prevotes signed as `signer` for its next window
/// (checked there before being held), each of its own round (so no copy is
/// dropped unchecked), one every 100 ms, until node 3 closes the
/// connection; returns how many were queued. At most 64.
fn forge_votes_until_closed(
    c: &Cluster,
    net: &Network,
    network_id: [u8; 32],
    signer: NodeId,
) -> u32 {
    let mut forged = 0u32;
    while net.connected().contains(&PeerId(3)) {
        assert!(forged < 64, "never disconnected");
        let v = Vote {
            key: VoteKey {
                kind: VoteKind::Prevote,
                network_id,
                window: c.state(3).map_or(0, |s| common::u64_field(&s, "cemented")) + 1,
                round: forged,
                value: None,
                signer,
            },
            signature: vec![0x5A; montana_node::keys::SIGNATURE_LEN],
        };
        let m = Message::Vote(Box::new(v));
        let env = Envelope::new(
            m.msg_type(),
            montana_node::messages::MSG_VERSION,
            0,
            m.encode(),
        );
        if net.send(PeerId(3), env).is_ok() {
            forged += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    forged
}

#[test]
fn a_peer_sending_forged_votes_is_banned_and_honest_relays_are_not() {
    let dir = common::tempdir();
    let plan = small_plan(dir.path(), 4);
    // Node 2 in this process: it dials node 3 (the lower id dials), so its
    // redials after the ban reach node 3's admission.
    let listen = plan.nodes[2].address;
    let cfg = as_network_config(&plan, 2, listen);
    let network_id = plan.genesis.network_id();
    let signer = NodeId::of(&peer_infos(&plan)[1].signing_public);
    let mut c = Cluster::new(plan);
    for i in [3, 1, 0] {
        c.start(i, &[]);
    }
    let rt = rt();
    let (peer, _rx) = rt.block_on(Network::start(cfg)).unwrap();
    let others = vec![PeerId(0), PeerId(1), PeerId(3)];
    c.wait_until("node0 proposing with node2 connected", 90, |c| {
        c.window(0) >= 2 && peer.connected() == others
    });
    // Forged votes for the next window until node 3 closes the connection.
    let forged = forge_votes_until_closed(&c, &peer, network_id, signer);
    assert!(forged >= 4, "four forged votes ban: {forged}");
    c.wait_until("node 3 refuses node 2's redials", 30, |c| {
        c.state(3).is_some_and(|s| {
            s["net"]["peers_banned"].as_u64() == Some(1)
                && s["net"]["refused_banned"].as_u64() >= Some(1)
        })
    });
    let w = c.window(3);
    c.wait_until("node 3 going on", 60, |c| c.window(3) > w + 2);
    let s = c.state(3).unwrap();
    assert!(
        s["rejected"]["vote_bad_signature"].as_u64() >= Some(4),
        "{s}"
    );
    assert!(!peer.connected().contains(&PeerId(3)), "still refused");
    assert_eq!(peer.connected(), vec![PeerId(0), PeerId(1)]);
    for i in [0, 1] {
        let s = c.state(i).unwrap();
        assert_eq!(s["net"]["peers_banned"], 0, "node{i}: {s}");
        assert_eq!(s["net"]["peer_offences"], 0, "node{i}: {s}");
    }
    assert_eq!(
        c.log(3).matches("peer banned for misbehaviour").count(),
        1,
        "one line per ban"
    );
    rt.block_on(peer.shutdown());
    for i in [0, 1, 3] {
        c.terminate(i);
    }
}

/// A node outside the genesis (a guest) sending forged votes is banned by
/// its node id and by its source address: it mints node ids for free, so
/// when it comes back under a new one from the same address it is still
/// refused (`refused_banned`), while the genesis peers, all on the same
/// address here, are judged by their own ids and keep cementing with the
/// node that banned it; the re-keyed guest is refused only there (found by
/// review; fails before: the new id was admitted).
#[test]
fn a_guest_that_rekeys_and_reconnects_stays_banned_by_its_address() {
    let dir = common::tempdir();
    let plan = small_plan(dir.path(), 4);
    let network_id = plan.genesis.network_id();
    let signer = NodeId::of(&peer_infos(&plan)[1].signing_public);
    let guest = |bootstrap: Vec<SocketAddr>| NetConfig {
        me: None,
        keys: Arc::new(NodeKeys::generate().unwrap()),
        listen: common::free_addr(),
        bootstrap,
        ..as_network_config(&plan, 0, common::free_addr())
    };
    let first = guest(vec![plan.nodes[3].address]);
    let rekeyed = guest(vec![plan.nodes[3].address, plan.nodes[0].address]);
    let mut c = Cluster::new(plan);
    for i in [3, 2, 1, 0] {
        c.start(i, &[]);
    }
    let rt = rt();
    let (bad, _rx) = rt.block_on(Network::start(first)).unwrap();
    c.wait_until("cementing, with the guest connected to node 3", 90, |c| {
        c.window(3) >= 2 && bad.connected().contains(&PeerId(3))
    });
    let forged = forge_votes_until_closed(&c, &bad, network_id, signer);
    assert!(forged >= 4, "four forged votes ban: {forged}");
    rt.block_on(bad.shutdown());
    let before = c.state(3).unwrap();
    // The same guest under a new node id, from the same address.
    let (again, _rx2) = rt.block_on(Network::start(rekeyed)).unwrap();
    c.wait_until("node 3 refuses the re-keyed guest", 60, |c| {
        c.state(3).is_some_and(|s| {
            s["net"]["refused_banned"].as_u64() > before["net"]["refused_banned"].as_u64()
        })
    });
    let w = c.window(3);
    c.wait_until("node 3 cementing with the genesis peers", 60, |c| {
        c.window(3) > w + 2
    });
    let s = c.state(3).unwrap();
    assert_eq!(s["net"]["peers_banned"], 1, "{s}");
    assert!(!again.connected().contains(&PeerId(3)), "refused");
    rt.block_on(async {
        wait("the re-keyed guest connected elsewhere", 30, || {
            again.connected().contains(&PeerId(0))
        })
        .await
    });
    assert!(!again.connected().contains(&PeerId(3)), "still refused");
    for i in 0..3 {
        let s = c.state(i).unwrap();
        assert_eq!(s["net"]["peers_banned"], 0, "node{i}: {s}");
    }
    rt.block_on(again.shutdown());
    for i in 0..4 {
        c.terminate(i);
    }
}

/// A guest that claims a far tip: a node caught up with its members does
/// not count the claim in its lag (its phase stays following; a candidate
/// would otherwise stop its candidate work), and asks the guest at most
/// once for windows no member claims (then the guest is demoted).
#[test]
fn a_guest_claiming_a_far_tip_is_not_believed() {
    let dir = common::tempdir();
    let plan = small_plan(dir.path(), 4);
    let cfg = NetConfig {
        me: None,
        keys: Arc::new(NodeKeys::generate().unwrap()),
        listen: common::free_addr(),
        bootstrap: vec![plan.nodes[3].address],
        ..as_network_config(&plan, 0, common::free_addr())
    };
    let mut c = Cluster::new(plan);
    for i in [3, 2, 1, 0] {
        c.start(i, &[]);
    }
    let rt = rt();
    let (guest, mut rx) = rt.block_on(Network::start(cfg)).unwrap();
    c.wait_until("cementing, with the guest connected to node 3", 90, |c| {
        c.window(3) >= 2 && guest.connected().contains(&PeerId(3))
    });
    let far = u64::MAX / 2;
    let lie = Message::Tip {
        cemented: montana_node::storage::Tip {
            window: far,
            t: montana_vdf::Hash32([7; 32]),
            hash: [8; 32],
        },
        applied: far,
    };
    let start = c.window(3);
    let (mut max_lag, mut asked) = (0, 0);
    for _ in 0..30 {
        let env = Envelope::new(
            MSG_TIP,
            montana_node::messages::MSG_VERSION,
            0,
            lie.encode(),
        );
        guest.send(PeerId(3), env).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        if let Some(s) = c.state(3) {
            max_lag = max_lag.max(common::u64_field(&s, "lag"));
        }
        // Read as it comes (a full queue would hold back what follows).
        while let Ok(m) = rx.try_recv() {
            asked += u32::from(m.envelope.msg_type == MSG_GET_PROPOSALS);
        }
    }
    assert!(asked <= 1, "node 3 asked the guest {asked} times");
    assert!(
        max_lag < 100,
        "the guest's claim counted in the lag: {max_lag}"
    );
    assert!(c.window(3) > start + 2, "node 3 kept cementing");
    rt.block_on(guest.shutdown());
    for i in 0..4 {
        c.terminate(i);
    }
}

/// Runs `montana start` expecting a refusal; returns its one stderr line.
fn refused_start(
    plan: &montana_node::devnet::Plan,
    genesis: &Path,
    keys: &Path,
    data: &Path,
) -> String {
    let out = std::process::Command::new(common::BIN)
        .arg("start")
        .arg("--data-dir")
        .arg(data)
        .arg("--genesis")
        .arg(genesis)
        .arg("--keys")
        .arg(keys)
        .arg("--skip-calibration")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env_remove("MONTANA_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = plan;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{}: {err}", genesis.display());
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!data.join("db").exists(), "no database made: {err}");
    err.trim_end().to_string()
}

/// Bad genesis files and key files given to `montana start`: exit 2, one
/// line saying what is wrong, no database made. (A genesis that parses but
/// does not validate is not named in the line: "genesis: invalid genesis:
/// ..."; the unparsable ones are.)
#[test]
fn start_refuses_bad_genesis_and_key_files_with_one_line() {
    let dir = common::tempdir();
    let plan = small_plan(dir.path(), 2);
    let keys = plan.nodes[1].dir.join("keys");
    let data = dir.path().join("data");
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan.genesis_path).unwrap()).unwrap();
    let variant = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut g = good.clone();
        edit(&mut g);
        let p = dir.path().join(name);
        std::fs::write(&p, g.to_string()).unwrap();
        p
    };
    let text = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let cases: Vec<(&str, std::path::PathBuf, &str)> = vec![
        (
            "not JSON",
            text("garbage.json", "{ this is not json"),
            "garbage.json",
        ),
        ("empty file", text("empty.json", ""), "empty.json"),
        (
            "D not a multiple of K",
            variant("d.json", &|g| g["d"] = (400_001).into()),
            "must be a positive multiple of checkpoints",
        ),
        (
            "K over the cap",
            variant("outside 1..=32000", &|g| {
                g["checkpoints"] = 64_000.into();
                g["d"] = 6_400_000.into();
            }),
            "outside 1..=32000",
        ),
        (
            "unknown version",
            variant("version 9 (this build reads version 1)", &|g| {
                g["version"] = 9.into()
            }),
            "version 9 (this build reads version 1)",
        ),
        (
            "unknown hash suite",
            variant("unknown hash suite 'md5'", &|g| g["hash"] = "md5".into()),
            "unknown hash suite 'md5'",
        ),
        (
            "a malformed peer key",
            variant("noise_public_key must be 64 hex digits", &|g| {
                g["peers"][0]["noise_public_key"] = "zz".into()
            }),
            "noise_public_key must be 64 hex digits",
        ),
        (
            "no peers",
            variant("0 peers", &|g| g["peers"] = serde_json::json!([])),
            "0 peers",
        ),
        (
            "another transport",
            variant("this build speaks", &|g| {
                g["transport"] = "Noise_NN_25519_ChaChaPoly_BLAKE2s".into()
            }),
            "this build speaks",
        ),
    ];
    let lines: Vec<String> = cases
        .iter()
        .map(|(what, path, _)| {
            let line = refused_start(&plan, path, &keys, &data);
            println!("{what}: {line}");
            line
        })
        .collect();
    for ((what, _, needle), line) in cases.iter().zip(&lines) {
        assert!(line.contains(needle), "{what}: {line}");
    }
    // Key files: garbage in a secret key, a public file of other keys.
    let bad_keys = dir.path().join("bad-keys");
    NodeKeys::load(&keys).unwrap(); // the good ones load
    std::fs::create_dir(&bad_keys).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bad_keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    for e in std::fs::read_dir(&keys).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), bad_keys.join(e.file_name())).unwrap();
    }
    let secret = bad_keys.join("signing_secret.key");
    std::fs::write(&secret, "not hex at all\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let line = refused_start(&plan, &plan.genesis_path, &bad_keys, &data);
    println!("garbage secret key: {line}");
    assert!(line.contains("signing_secret.key"), "{line}");
    let other = dir.path().join("other-keys");
    NodeKeys::generate().unwrap().save(&other).unwrap();
    std::fs::copy(other.join("public.json"), bad_keys.join("public.json")).unwrap();
    std::fs::copy(keys.join("signing_secret.key"), &secret).unwrap();
    let line = refused_start(&plan, &plan.genesis_path, &bad_keys, &data);
    println!("public file of other keys: {line}");
    assert!(line.contains("bad-keys"), "{line}");
}

/// Sends `request` to the status server and reads until it closes (the
/// requests ask it to; the write side stays open, as the server does not
/// answer a client that half-closed first); empty if it closed without an
/// answer.
async fn ask(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).to_string()
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

/// The status server: methods other than GET, unknown paths, malformed
/// request lines, a body on a GET, and more connections than it serves at
/// once. Each gets an error status or is closed; GET /status still works.
#[test]
fn the_status_server_refuses_bad_requests_and_excess_connections() {
    let rt = rt();
    rt.block_on(async {
        let source = Arc::new(montana_node::status::StatusSnapshot::default);
        let addr = montana_node::status::serve(
            "127.0.0.1:0".parse().unwrap(),
            source,
            std::future::pending(),
        )
        .await
        .unwrap();
        let cases: [(&str, &[u8], &str); 7] = [
            ("POST", b"POST /status HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", " 405 "),
            ("DELETE", b"DELETE / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", " 405 "),
            ("unknown path", b"GET /../../etc/passwd HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", " 404 "),
            ("garbage request line", b"\x00\x01\x02 garbage\r\n\r\n", " 400 "),
            ("HTTP/9", b"GET /status HTTP/9.9\r\nHost: a\r\n\r\n", " 400 "),
            ("header without a colon", b"GET /status HTTP/1.1\r\nHost a\r\n\r\n", " 400 "),
            ("NUL in the path", b"GET /sta\x00tus HTTP/1.1\r\nHost: a\r\n\r\n", " 400 "),
        ];
        for (what, req, expect) in cases {
            let answer = ask(addr, req).await;
            println!("{what}: {:?}", status_line(&answer));
            assert!(
                status_line(&answer).contains(expect) && !answer.contains("\"window\""),
                "{what}: {answer:?}"
            );
        }
        // More connections than it serves at once: the extra ones are
        // closed at once, the held ones are served when they speak.
        let max = montana_node::status::guard::MAX_CONNECTIONS;
        let mut held = Vec::new();
        for _ in 0..max {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let answer = ask(addr, b"GET /status HTTP/1.0\r\n\r\n").await;
        assert_eq!(answer, "", "a connection past {max} was served");
        drop(held);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let answer = ask(addr, b"GET /status HTTP/1.0\r\n\r\n").await;
        assert!(status_line(&answer).contains(" 200 "), "{answer:?}");
    });
}

/// The catalogue in docs/RELIABILITY.md: at least 40 kinds of bad input,
/// and every test it names (`path::name`) is a function of that file.
#[test]
fn the_catalogue_names_only_tests_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let doc = std::fs::read_to_string(root.join("docs/RELIABILITY.md")).unwrap();
    let section = doc
        .split("## Hostile-input catalogue")
        .nth(1)
        .expect("a Hostile-input catalogue section");
    let section = section.split("\n## ").next().unwrap();
    let rows: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|--") && !l.starts_with("| input"))
        .collect();
    assert!(rows.len() >= 40, "{} kinds of bad input", rows.len());
    let mut named = 0;
    for row in &rows {
        let cells: Vec<&str> = row.split('|').collect();
        let tests = cells
            .get(cells.len().saturating_sub(2))
            .copied()
            .unwrap_or("");
        let refs: Vec<&str> = tests
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|r| r.contains("::"))
            .collect();
        assert!(!refs.is_empty(), "no test named in: {row}");
        for r in refs {
            let (file, name) = r.rsplit_once("::").unwrap();
            let text = std::fs::read_to_string(root.join(file))
                .unwrap_or_else(|e| panic!("{file} (in {row}): {e}"));
            let found = text.lines().any(|l| {
                l.trim_start()
                    .trim_start_matches("pub ")
                    .trim_start_matches("async ")
                    .starts_with(&format!("fn {name}("))
            });
            assert!(found, "no fn {name} in {file} (row: {row})");
            named += 1;
        }
    }
    println!(
        "{} kinds of bad input, {named} test references, all found",
        rows.len()
    );
}

/// After a real handshake: a transport message with a flipped bit, one
/// replayed, and one out of order all fail to decrypt (`LinkError::Decrypt`,
/// a protocol violation that closes the connection); the genuine next
/// message still opens.
#[test]
fn tampered_replayed_or_reordered_transport_messages_fail_to_decrypt() {
    use montana_node::net::connection::LinkError;
    use montana_node::net::handshake::{self, Context};
    let dir = common::tempdir();
    let plan = small_plan(dir.path(), 2);
    let peers = peer_infos(&plan);
    let keys: Vec<NodeKeys> = (0..2)
        .map(|i| NodeKeys::load(&plan.nodes[i].dir.join("keys")).unwrap())
        .collect();
    let params = handshake::parse_suite(&plan.genesis.transport).unwrap();
    let id = plan.genesis.network_id();
    let ctx = |me: usize| Context {
        params: &params,
        network_id: &id,
        me: Some(PeerId(me as u16)),
        keys: &keys[me],
        peers: &peers,
    };
    let (c0, c1) = (ctx(0), ctx(1));
    let rt = rt();
    let (mut a, mut b) = rt.block_on(async {
        let (mut x, mut y) = tokio::io::duplex(1 << 20);
        let (a, b) = tokio::join!(
            handshake::initiate(&mut x, &c0, handshake::Expect::Genesis(PeerId(1))),
            handshake::respond(&mut y, &c1)
        );
        (a.unwrap(), b.unwrap())
    });
    assert_eq!(
        (a.remote.genesis, b.remote.genesis),
        (Some(PeerId(1)), Some(PeerId(0)))
    );
    // Sealed messages are frames: a 2-byte length, then the ciphertext.
    let seal = |s: &mut montana_node::net::connection::Session, text: &[u8]| {
        let mut out = Vec::new();
        s.sealer.seal(text, &mut out).unwrap();
        out[2..].to_vec()
    };
    let m1 = seal(&mut a, b"first");
    let m2 = seal(&mut a, b"second");
    let m3 = seal(&mut a, b"third");
    let decrypt = |r: Result<&[u8], LinkError>| match r {
        Err(e @ LinkError::Decrypt) => assert!(e.is_protocol_violation()),
        other => panic!("{other:?}"),
    };
    // Out of order: the second before the first.
    decrypt(b.opener.open(&m2));
    // Tampered: one bit of the first flipped.
    let mut t = m1.clone();
    t[3] ^= 1;
    decrypt(b.opener.open(&t));
    // The genuine first opens; replaying it then fails.
    assert_eq!(b.opener.open(&m1).unwrap(), b"first");
    decrypt(b.opener.open(&m1));
    assert_eq!(b.opener.open(&m2).unwrap(), b"second");
    // Sealed by the other direction's key (a reflection): fails.
    let reflected = seal(&mut b, b"to a");
    decrypt(b.opener.open(&reflected));
    assert_eq!(b.opener.open(&m3).unwrap(), b"third");
    assert_eq!(a.opener.open(&reflected).unwrap(), b"to a");
}
