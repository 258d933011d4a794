//! Seeds for the fuzz targets (fuzz/): a valid encoding of every fuzzed
//! format, checked here to decode back to itself. With
//! `MONTANA_FUZZ_SEEDS=DIR` they are also written to `DIR/<target>/`
//! (scripts/fuzz does this), so the fuzzer starts past the magic bytes and
//! length checks.

use std::fs;
use std::path::Path;

use montana_node::consensus::active::NodeId;
use montana_node::consensus::agreement::VoteKind;
use montana_node::consensus::vote::{Cement, Vote, VoteKey};
use montana_node::genesis::{Genesis, GenesisPeer};
use montana_node::keys::NodeKeys;
use montana_node::messages::Message;
use montana_node::net::envelope::Envelope;
use montana_node::net::frame;
use montana_node::consensus::propose::{Beacon, Propose, ProposeKey};
use montana_node::proposal::{Basis, Proposal};
use montana_node::storage::Tip;
use montana_vdf::json::ProofJson;
use montana_vdf::{encoding, ChainParams, Hash32, HashSuite, Proof};

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
    let msgs = [
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
    check_and_write(all);
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
            "message",
            "proof_json",
            "proof_mtvp",
            "proposal",
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
                n == 5 && d.finish().is_ok()
            }
            "frame" => bytes.len() == 2 + 1 + 2 + 48 + 2 + 1000,
            _ => false,
        };
        assert!(ok, "seed {target}/{name} does not decode");
    }
    if let Some(dir) = std::env::var_os("MONTANA_FUZZ_SEEDS") {
        let dir = Path::new(&dir);
        for (target, name, bytes) in &all.0 {
            let d = dir.join(target);
            fs::create_dir_all(&d).expect("create corpus dir");
            fs::write(d.join(name), bytes).expect("write seed");
        }
    }
}
