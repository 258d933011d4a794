//! Seeds for the fuzz targets (fuzz/): a valid encoding of every fuzzed
//! format, checked here to decode back to itself. With
//! `MONTANA_FUZZ_SEEDS=DIR` they are also written to `DIR/<target>/`
//! (scripts/fuzz does this), so the fuzzer starts past the magic bytes and
//! length checks.

use std::fs;
use std::path::Path;

use montana_node::consensus::active::NodeId;
use montana_node::consensus::agreement::VoteKind;
use montana_node::consensus::propose::{Beacon, Propose, ProposeKey};
use montana_node::consensus::vote::{Cement, Vote, VoteKey};
use montana_node::genesis::{Genesis, GenesisPeer};
use montana_node::keys::NodeKeys;
use montana_node::messages::Message;
use montana_node::net::envelope::Envelope;
use montana_node::net::frame;
use montana_node::proposal::{Basis, Proposal};
use montana_node::storage::Tip;
use montana_vdf::json::ProofJson;
use montana_vdf::{encoding, ChainParams, Hash32, HashSuite, Proof};

/// The messages in the seeds: one of each type.
const MESSAGES: usize = 9;

struct Seeds(Vec<(&'static str, String, Vec<u8>)>);

fn write(seeds: &mut Seeds, target: &'static str, name: &str, bytes: &[u8]) {
    seeds.0.push((target, name.to_string(), bytes.to_vec()));
}

#[test]
fn seeds_decode_and_are_written_when_asked() {
    let mut all = Seeds(Vec::new());
    let dir = &mut all;
    let keys = NodeKeys::generate().expect("keys");
    let cps: Vec<Hash32> = (0..4u8).map(|i| Hash32([i + 1; 32])).collect();

    // Proofs: binary and JSON.
    let params = ChainParams::new(400, 4).unwrap();
    for suite in [HashSuite::Sha256, HashSuite::Blake3] {
        let p = Proof::new(suite, Hash32([9; 32]), params, cps.clone()).unwrap();
        write(
            dir,
            "proof_mtvp",
            &format!("{suite:?}"),
            &encoding::encode(&p),
        );
        let j = serde_json::to_string(&ProofJson::from(&p)).unwrap();
        write(dir, "proof_json", &format!("{suite:?}"), j.as_bytes());
    }

    // Proposals and the messages that carry them.
    let basis = Basis {
        window: 3,
        link: [7; 32],
        bundle: [6; 32],
        state_root: Hash32([5; 32]),
    };
    let prop = Proposal::sign(&keys, HashSuite::Sha256, 400, basis, cps.clone());
    write(dir, "proposal", "one", &prop.to_bytes());
    let me = NodeId::of(keys.verifying_key());
    let propose = Propose::sign(
        ProposeKey {
            network_id: [1; 32],
            window: 3,
            round: 1,
            valid_round: Some(0),
            value: Hash32(prop.hash()),
            signer: me,
        },
        prop.clone(),
        &keys,
    );
    let pc = Vote::sign(
        VoteKey {
            kind: VoteKind::Precommit,
            network_id: [1; 32],
            window: 3,
            round: 1,
            value: Some(Hash32(prop.hash())),
            signer: me,
        },
        &keys,
    );
    let cement = Cement::from_votes(std::slice::from_ref(&pc)).unwrap();
    let msgs: [Message; MESSAGES] = [
        Message::GetProposals { from: 1, count: 16 },
        Message::Proposals(vec![prop.clone(), prop.clone()]),
        Message::Tip {
            cemented: Tip {
                window: 3,
                t: cps[3],
                hash: [5; 32],
            },
            applied: 4,
        },
        Message::Propose(Box::new(propose)),
        Message::Vote(Box::new(pc)),
        Message::Cement(Box::new(cement.clone())),
        Message::Beacon(Box::new(Beacon::sign([1; 32], 3, 1, &keys))),
        Message::GetCements { from: 2, count: 2 },
        Message::Cements(vec![cement]),
    ];
    for (i, m) in msgs.iter().enumerate() {
        let mut b = vec![m.msg_type(), 1];
        b.extend_from_slice(&m.encode());
        write(dir, "message", &format!("m{i}"), &b);
    }

    // Envelopes (split byte first) and frames.
    let mut env = vec![7u8];
    for (i, m) in msgs.iter().enumerate() {
        env.extend_from_slice(
            &Envelope::new(m.msg_type(), 1, i as u64, m.encode())
                .encode()
                .unwrap(),
        );
    }
    env.extend_from_slice(&Envelope::new(1, 1, 9, Vec::new()).encode().unwrap());
    write(dir, "envelope", "stream", &env);

    // Fast-sync messages (selector byte 0, then type and version).
    use montana_node::snapshot::messages::SyncMessage;
    let sync = [
        SyncMessage::GetManifest { window: 0 },
        SyncMessage::Manifest(None),
        SyncMessage::GetChunk {
            window: 100,
            root: Hash32([4; 32]),
            index: 3,
        },
        SyncMessage::Chunk(None),
        SyncMessage::GetCertificates {
            above: 0,
            below: 100,
        },
        SyncMessage::Certificates(Vec::new()),
    ];
    for (i, m) in sync.iter().enumerate() {
        let mut b = vec![0, m.msg_type(), 1];
        b.extend_from_slice(&m.encode());
        write(dir, "snapshot", &format!("s{i}"), &b);
    }
    let mut frames = Vec::new();
    for len in [1usize, 48, 1000] {
        frame::encode(&vec![0xA5; len], &mut frames).unwrap();
    }
    write(dir, "frame", "three", &frames);

    // Genesis.
    let other = NodeKeys::generate().expect("keys");
    let peer = |i: u16, boot| GenesisPeer {
        label: format!("node{i}"),
        address: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
        noise_public_key: [&keys, &other][i as usize].public_keys().noise_public_key,
        signing_public_key: [&keys, &other][i as usize].public_keys().signing_public_key,
        bootstrap: boot,
        weight: 1,
    };
    if let Ok(g) = Genesis::new(
        vec![peer(0, true), peer(1, false)],
        HashSuite::Sha256,
        1_000,
        10,
        1.0,
    ) {
        write(dir, "genesis_json", "two", g.to_json().as_bytes());
    }

    // Votes and a cement.
    let signer = NodeId::of(keys.verifying_key());
    let key = VoteKey {
        kind: VoteKind::Precommit,
        network_id: [1; 32],
        window: 5,
        round: 1,
        value: Some(Hash32([2; 32])),
        signer,
    };
    let v = Vote::sign(key, &keys);
    write(dir, "vote", "precommit", &v.encode());
    let nil = Vote::sign(
        VoteKey {
            kind: VoteKind::Prevote,
            value: None,
            ..key
        },
        &keys,
    );
    write(dir, "vote", "nil_prevote", &nil.encode());
    let c = Cement::from_votes(&[v]).unwrap();
    write(dir, "cement", "one", &c.encode());

    // Handshakes: what each side of a real handshake read from the other
    // (the target's role byte first: 0 we respond, 1 we dial).
    let (to_responder, to_initiator) = recorded_handshake();
    let mut seed = vec![0u8];
    seed.extend_from_slice(&to_responder);
    write(dir, "handshake", "respond", &seed);
    let mut seed = vec![1u8];
    seed.extend_from_slice(&to_initiator);
    write(dir, "handshake", "dial", &seed);

    // Status server requests.
    for (name, req) in STATUS_REQUESTS {
        write(dir, "status_http", name, req.as_bytes());
    }
    check_and_write(all);
}

/// Requests a status client may send; the GETs of existing paths must be
/// answered 200 by the real server (checked below).
const STATUS_REQUESTS: [(&str, &str); 5] = [
    ("status", "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
    ("metrics", "GET /metrics HTTP/1.0\r\n\r\n"),
    (
        "two",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\nGET /status HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "post",
        "POST /status HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    ),
    (
        "chunked",
        "GET /status HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ),
];

/// A real handshake between two genesis peers over in-memory pipes, through
/// a relay that records each direction: (what the responder read, what the
/// initiator read).
fn recorded_handshake() -> (Vec<u8>, Vec<u8>) {
    use montana_node::net::handshake::{self, Context};
    use montana_node::net::{PeerId, PeerInfo, DEFAULT_TRANSPORT};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let keys: Vec<NodeKeys> = (0..2).map(|_| NodeKeys::generate().unwrap()).collect();
    let peers: Vec<PeerInfo> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| PeerInfo {
            id: PeerId(i as u16),
            label: format!("n{i}"),
            address: "127.0.0.1:9".parse().unwrap(),
            noise_public: *k.noise_public(),
            signing_public: k.verifying_key().clone(),
        })
        .collect();
    let params = handshake::parse_suite(DEFAULT_TRANSPORT).unwrap();
    let ctx = |me: u16| Context {
        params: &params,
        network_id: &[0x42; 32],
        me: Some(PeerId(me)),
        keys: &keys[me as usize],
        peers: &peers,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut a, a_relay) = tokio::io::duplex(1 << 20);
        let (mut b, b_relay) = tokio::io::duplex(1 << 20);
        // Copies one direction, recording it, until the writer side closes.
        async fn pipe(
            mut from: tokio::io::ReadHalf<tokio::io::DuplexStream>,
            mut to: tokio::io::WriteHalf<tokio::io::DuplexStream>,
        ) -> Vec<u8> {
            let mut seen = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = from.read(&mut buf).await {
                if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            seen
        }
        let (ar, aw) = tokio::io::split(a_relay);
        let (br, bw) = tokio::io::split(b_relay);
        let up = tokio::spawn(pipe(ar, bw));
        let down = tokio::spawn(pipe(br, aw));
        let (c0, c1) = (ctx(0), ctx(1));
        let (i, r) = tokio::join!(
            handshake::initiate(&mut a, &c0, handshake::Expect::Genesis(PeerId(1))),
            handshake::respond(&mut b, &c1)
        );
        assert!(i.is_ok() && r.is_ok(), "the recorded handshake completed");
        drop((a, b));
        (up.await.unwrap(), down.await.unwrap())
    })
}

/// The GET seeds are answered 200 by the real status server.
fn status_seeds_are_served(all: &Seeds) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let source = std::sync::Arc::new(montana_node::status::StatusSnapshot::default);
        let addr = montana_node::status::serve(
            "127.0.0.1:0".parse().unwrap(),
            source,
            std::future::pending(),
        )
        .await
        .unwrap();
        for (_, name, bytes) in all.0.iter().filter(|s| s.0 == "status_http") {
            // The write side stays open (hyper does not answer a client
            // that half-closed first); read up to the end of the head.
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(bytes).await.unwrap();
            let mut answer = Vec::new();
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => answer.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            let answer = String::from_utf8_lossy(&answer);
            let expect = if name == "post" { " 405 " } else { " 200 " };
            assert!(answer.starts_with("HTTP/1."), "{name}: {answer}");
            assert!(
                answer.lines().next().unwrap().contains(expect),
                "{name}: {answer}"
            );
        }
    });
}

/// Every seed must be accepted by the decoder its target fuzzes.
fn check_and_write(all: Seeds) {
    let mut targets: Vec<&str> = all.0.iter().map(|s| s.0).collect();
    targets.sort();
    targets.dedup();
    assert_eq!(
        targets,
        [
            "cement",
            "envelope",
            "frame",
            "genesis_json",
            "handshake",
            "message",
            "proof_json",
            "proof_mtvp",
            "proposal",
            "snapshot",
            "status_http",
            "vote"
        ]
    );
    for (target, name, bytes) in &all.0 {
        let ok = match *target {
            "proof_mtvp" => encoding::decode(bytes)
                .map(|p| encoding::encode(&p) == *bytes)
                .unwrap_or(false),
            "proof_json" => {
                montana_vdf::json::from_str(std::str::from_utf8(bytes).unwrap()).is_ok()
            }
            "proposal" => Proposal::from_bytes(bytes)
                .map(|p| p.to_bytes() == *bytes)
                .unwrap_or(false),
            "message" => matches!(
                Message::decode(bytes[0], bytes[1], &bytes[2..]),
                Some(Ok(_))
            ),
            "vote" => Vote::decode(bytes)
                .map(|v| v.encode() == *bytes)
                .unwrap_or(false),
            "cement" => Cement::decode(bytes)
                .map(|c| c.encode() == *bytes)
                .unwrap_or(false),
            "genesis_json" => serde_json::from_slice::<Genesis>(bytes)
                .map(|g| g.validate().is_ok())
                .unwrap_or(false),
            "envelope" => {
                let mut d = montana_node::net::envelope::Decoder::new();
                d.push(&bytes[1..]);
                let mut n = 0;
                while let Ok(Some(_)) = d.next_envelope() {
                    n += 1;
                }
                // Every message of the seed stream, and one empty envelope.
                n == MESSAGES + 1 && d.finish().is_ok()
            }
            "frame" => bytes.len() == 2 + 1 + 2 + 48 + 2 + 1000,
            // Three frames to the responder (two Noise messages and the
            // signature), two to the initiator.
            "handshake" => {
                let mut rest = &bytes[1..];
                let mut frames = 0;
                while rest.len() >= 2 {
                    let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                    if rest.len() < 2 + len {
                        break;
                    }
                    rest = &rest[2 + len..];
                    frames += 1;
                }
                rest.is_empty() && frames == if bytes[0] == 0 { 3 } else { 2 }
            }
            "status_http" => true, // served: status_seeds_are_served
            "snapshot" => {
                bytes[0] == 0
                    && matches!(
                        montana_node::snapshot::messages::SyncMessage::decode(
                            bytes[1],
                            bytes[2],
                            &bytes[3..]
                        ),
                        Some(Ok(_))
                    )
            }
            _ => false,
        };
        assert!(ok, "seed {target}/{name} does not decode");
    }
    status_seeds_are_served(&all);
    if let Some(dir) = std::env::var_os("MONTANA_FUZZ_SEEDS") {
        let dir = Path::new(&dir);
        for (target, name, bytes) in &all.0 {
            let d = dir.join(target);
            fs::create_dir_all(&d).expect("create corpus dir");
            fs::write(d.join(name), bytes).expect("write seed");
        }
    }
}
