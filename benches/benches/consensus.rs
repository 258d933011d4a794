//! Consensus costs (issue 9): one ML-DSA-65 signature and one verification
//! of a precommit, and the check of a full Cement (MTCM, docs/SPEC.md 9.3:
//! every member's precommit, so every signature verified) at 16, 64 and 300
//! members. Each Cement's size is printed once: exactly `83 + n * 3,341`
//! bytes.
//!
//! Candidate batches (issue 10): 64 candidates' proofs verified in one
//! call (the joining rules' chains: 80,000 steps, 16 checkpoints, i.e. D =
//! 8,000,000 / 100), against the same backend verifying the same number of
//! steps as one proof of 64 segments (the layout of `montana bench`), one
//! thread, for every available verify backend of SHA-256.
//!
//! `cargo bench -p montana-benches --bench consensus`; figures in
//! docs/BENCHMARKS.md, "Consensus costs" and "Joining".

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use montana_node::consensus::active::{ActiveSet, Member, NodeId, Quorum};
use montana_node::consensus::agreement::VoteKind;
use montana_node::consensus::vote::{Cement, Vote, VoteKey};
use montana_node::keys::{Domain, NodeKeys};
use montana_vdf::Hash32;

const NET: [u8; 32] = [0xAB; 32];
const WINDOW: u64 = 7;

fn precommit(keys: &NodeKeys) -> VoteKey {
    VoteKey {
        kind: VoteKind::Precommit,
        network_id: NET,
        window: WINDOW,
        round: 0,
        value: Some(Hash32([0x5C; 32])),
        signer: NodeId::of(keys.verifying_key()),
    }
}

fn signatures(c: &mut Criterion) {
    let keys = NodeKeys::generate().unwrap();
    let msg = precommit(&keys).signed_bytes();
    let mut g = c.benchmark_group("mldsa65");
    g.bench_function("sign", |b| b.iter(|| keys.sign(Domain::Precommit, &msg)));
    let sig = keys.sign(Domain::Precommit, &msg);
    let vk = keys.verifying_key().clone();
    g.bench_function("verify", |b| {
        b.iter(|| assert!(vk.verify(Domain::Precommit, &msg, &sig)))
    });
    g.finish();
}

fn cement(c: &mut Criterion) {
    let mut g = c.benchmark_group("cement_verify");
    g.sample_size(10);
    for n in [16usize, 64, 300] {
        let keys: Vec<NodeKeys> = (0..n).map(|_| NodeKeys::generate().unwrap()).collect();
        let set = ActiveSet::new(
            keys.iter()
                .map(|k| Member {
                    id: NodeId::of(k.verifying_key()),
                    key: k.verifying_key().clone(),
                    weight: 1,
                })
                .collect(),
        )
        .unwrap();
        let votes: Vec<Vote> = keys.iter().map(|k| Vote::sign(precommit(k), k)).collect();
        let cement = Cement::from_votes(&votes).unwrap();
        let bytes = cement.encode();
        assert_eq!(bytes.len(), 83 + n * 3_341);
        println!("cement of {n} members: {} bytes", bytes.len());
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &cement, |b, cement| {
            b.iter(|| {
                cement
                    .verify(&NET, WINDOW, &set, Quorum::default())
                    .unwrap()
            })
        });
        // Decoding it from the wire, for comparison (no signature work).
        g.bench_with_input(BenchmarkId::new("decode", n), &bytes, |b, bytes| {
            b.iter(|| Cement::decode(bytes).unwrap())
        });
    }
    g.finish();
}

/// The joining rules' candidate chain for D = 8,000,000.
const CANDIDATE_STEPS: u64 = 80_000;
const CANDIDATE_K: u64 = 16;
const CANDIDATES: usize = 64;

fn candidate_batch(c: &mut Criterion) {
    use montana_backends::registry::compiled;
    use montana_vdf::{ChainParams, EvalControl, HashSuite, Operation, Proof, VerifyOptions};
    let suite = HashSuite::Sha256;
    let scalar = montana_backends::scalar::ScalarBackend;
    let chain = |seed: u8, params: ChainParams| {
        let start = Hash32([seed; 32]);
        let cps =
            montana_vdf::Backend::evaluate(&scalar, suite, &start, params, &EvalControl::none())
                .unwrap();
        Proof::new(suite, start, params, cps).unwrap()
    };
    let cand = ChainParams::new(CANDIDATE_STEPS, CANDIDATE_K).unwrap();
    let candidates: Vec<Proof> = (0..CANDIDATES).map(|i| chain(i as u8, cand)).collect();
    let total = CANDIDATE_STEPS * CANDIDATES as u64;
    let one = vec![chain(
        0xEE,
        ChainParams::new(total, CANDIDATES as u64).unwrap(),
    )];
    let opts = VerifyOptions::threads(1);
    let mut g = c.benchmark_group("candidate_batch/sha256");
    g.throughput(Throughput::Elements(total));
    g.sample_size(10);
    for backend in compiled() {
        // The GPU backend (lavapipe here) has its own figures (issue 4).
        if backend.name() == "gpu"
            || !backend.availability().is_available()
            || !backend.supports(suite, Operation::Verify)
        {
            continue;
        }
        g.bench_function(BenchmarkId::new("64_candidates", backend.name()), |b| {
            b.iter(|| backend.verify_proofs(&candidates, &opts).unwrap())
        });
        g.bench_function(
            BenchmarkId::new("one_proof_64_segments", backend.name()),
            |b| b.iter(|| backend.verify_proofs(&one, &opts).unwrap()),
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = signatures, cement, candidate_batch
}
criterion_main!(benches);
