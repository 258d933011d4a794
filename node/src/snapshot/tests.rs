//! End to end, without sockets: a node with a million accounts cements a
//! window, writes a snapshot from a checkpoint, serves it; another node
//! syncs from two peers, is killed half-way, resumes, installs, and holds
//! exactly the same state and tip.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use montana_vdf::HashSuite;

use super::disk::{self, Snapshots};
use super::staging::Staging;
use super::sync::{Action, Config, FastSync, PeerIndex, Resume};
use crate::genesis::{synthetic_accounts, ConsensusParams, Genesis};
use crate::keys::NodeKeys;
use crate::messages::Message;
use crate::proposal::Proposal;
use crate::storage::{Store, StoreReader};
use crate::testutil::cemented_chain;

fn genesis(accounts: u64) -> (Genesis, Vec<NodeKeys>) {
    let (peers, keys) = crate::genesis::tests::peers(4);
    let mut c = ConsensusParams::defaults(1.0);
    c.accounts = synthetic_accounts(accounts);
    (
        Genesis::new_with(peers, HashSuite::Sha256, 40, 4, 1.0, c).unwrap(),
        keys,
    )
}

/// The snapshots under `dir`, served as `g`'s nodes serve them.
fn serving(g: &Genesis, dir: &std::path::Path) -> Snapshots {
    Snapshots::serving(
        dir,
        disk::Certify {
            genesis_set: g.active_set(),
            quorum: g.quorum,
        },
    )
}

fn config(g: &Genesis, above: u64) -> Config {
    Config {
        network_id: g.network_id(),
        genesis_set: g.active_set(),
        quorum: g.quorum,
        above,
        in_flight_per_peer: 4,
        timeout: Duration::from_secs(10),
        certify_budget: Duration::from_secs(30),
    }
}

/// Runs `s` against peers 1 and 2 serving `snaps` (and the proposals of
/// `reader`) until it installs or `kill_after` chunks are stored. Returns
/// the chunk indexes asked and whether it finished.
fn drive(
    s: &mut FastSync,
    snaps: &Snapshots,
    reader: &StoreReader,
    staging: &mut Staging,
    kill_after: Option<usize>,
) -> (Vec<u64>, bool) {
    let now = Instant::now();
    let mut q: VecDeque<(PeerIndex, Action)> = s.begin().into_iter().map(|a| (1, a)).collect();
    for p in [1, 2] {
        q.extend(s.peer_up(p, now).into_iter().map(|a| (p, a)));
    }
    let (mut asked, mut stored, mut most) = (Vec::new(), 0usize, 0usize);
    let mut outstanding = 0usize;
    while let Some((_, a)) = q.pop_front() {
        match a {
            Action::Send { peer, msg } => {
                if let super::messages::SyncMessage::GetChunk { index, .. } = msg {
                    asked.push(index);
                    outstanding += 1;
                    most = most.max(outstanding);
                }
                let reply = snaps.answer(&msg).expect("a request");
                if matches!(reply, super::messages::SyncMessage::Chunk(_)) {
                    outstanding -= 1;
                }
                q.extend(
                    s.on_message(peer, reply, now)
                        .into_iter()
                        .map(|a| (peer, a)),
                );
            }
            Action::RequestProposal { peer, window } => {
                let b = reader.proposal_bytes(window).unwrap().unwrap();
                let m = Message::Proposals(vec![Proposal::from_bytes(&b).unwrap()]);
                q.extend(
                    s.on_node_message(peer, &m, now)
                        .into_iter()
                        .map(|a| (peer, a)),
                );
            }
            Action::Stage(m, t) => staging.reset(&m, &t).unwrap(),
            Action::StoreChunk(c) => {
                staging.put_chunk(&c).unwrap();
                stored += 1;
                if kill_after == Some(stored) {
                    return (asked, false);
                }
            }
            Action::CheckMembers { .. } => {
                // The member entries are in before most chunks are.
                assert!(stored < 4, "the members checked after {stored} chunks");
                assert_eq!(staging.untrusted().unwrap(), None);
            }
            Action::StoreProposal(p) => staging.put_proposal(&p).unwrap(),
            Action::Install { .. } => return (asked, true),
            Action::Demote {
                peer,
                reason,
                detail,
            } => panic!("peer {peer} demoted: {reason} {detail}"),
            Action::Note(n) => panic!("unexpected note: {n}"),
        }
    }
    assert!(most <= 2 * 4, "at most 4 requests per peer in flight");
    (asked, false)
}

fn snapshot_sync_end_to_end(accounts: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (g, keys) = genesis(accounts);
    // The serving node: two cemented windows, then a snapshot of window 2.
    let (ws, state) = cemented_chain(&g, &keys, 0, 2, |_, _| {});
    let mut a = Store::open(&dir.path().join("a"), &g).unwrap();
    a.cement(&ws, &state).unwrap();
    let snapdir = dir.path().join("a/snapshots");
    let ckpt = dir.path().join("a/checkpoint-2");
    a.checkpoint(&ckpt).unwrap();
    let t = Instant::now();
    let info = disk::build(&ckpt, &snapdir, 2).unwrap();
    eprintln!(
        "snapshot of {} entries built in {:?}",
        info.entries,
        t.elapsed()
    );
    assert_eq!(info.window, 2);
    assert_eq!(
        info.entries,
        accounts + 4 + 4 + 4,
        "accounts, paid members' accounts, members, when each member was seen"
    );
    assert_eq!(info.root, state.root());
    assert!(!ckpt.exists(), "the checkpoint is removed once built");
    let snaps = serving(&g, &snapdir);
    assert_eq!(snaps.windows(), vec![2]);
    let reader = a.reader();

    // The syncing node: killed after a third of the chunks, then resumed.
    let bdir = dir.path().join("b");
    let mut b = Store::open(&bdir, &g).unwrap();
    assert_eq!(b.tip().window, 0);
    let chunks = info.entries.div_ceil(super::format::CHUNK_SIZE);
    let t = Instant::now();
    let staging_dir = bdir.join("staging");
    let first: BTreeSet<u64> = {
        let mut staging = Staging::open(&staging_dir).unwrap();
        let mut s = FastSync::new(config(&g, 0), None, Instant::now());
        let (_, done) = drive(
            &mut s,
            &snaps,
            &reader,
            &mut staging,
            Some(chunks as usize / 3),
        );
        assert!(!done);
        staging.held().unwrap().into_iter().collect()
    };
    assert_eq!(first.len() as u64, chunks / 3);
    let mut staging = Staging::open(&staging_dir).unwrap();
    let resume = Resume {
        manifest: staging.target().unwrap().clone(),
        held: staging.held_chunks().unwrap(),
        proposal: staging.proposal().unwrap().is_some(),
    };
    let mut s = FastSync::new(config(&g, 0), Some(resume), Instant::now());
    let (asked, done) = drive(&mut s, &snaps, &reader, &mut staging, None);
    assert!(done, "installs");
    let asked: BTreeSet<u64> = asked.into_iter().collect();
    assert!(
        asked.is_disjoint(&first),
        "verified chunks are not fetched again"
    );
    assert_eq!(asked.len() as u64 + first.len() as u64, chunks);
    assert!(s.rejected().is_empty());
    let tip = b.install_snapshot(&staging).unwrap();
    eprintln!("{chunks} chunks synced and installed in {:?}", t.elapsed());
    staging.clear().unwrap();
    assert_eq!(tip, a.tip());
    drop(b);
    // After a restart the node holds the same tip and state as the server.
    let b = Store::open(&bdir, &g).unwrap();
    assert_eq!(b.tip(), a.tip());
    assert_eq!(b.snapshot_window().unwrap(), Some(2));
    assert_eq!(b.pending_install().unwrap(), None);
    let (st, proposer, cement) = b.consensus(&g).unwrap();
    assert_eq!(st.root(), state.root());
    assert_eq!(proposer.proposer, ws[1].proposal.header.proposer);
    // T(1) is not stored (its proposal is not): unknown, not T(0).
    assert_eq!(proposer.prev_t, None);
    assert_eq!(cement.as_ref(), Some(&ws[1].cement));
    // Nothing of the snapshot stays in memory or in staging.
    assert_eq!(staging.entries().count(), 0);
}

#[test]
fn a_hundred_thousand_accounts_sync_resume_and_install() {
    snapshot_sync_end_to_end(100_000);
}

/// The scale (about 10 s in a release build on a small host).
#[test]
fn a_million_accounts_sync_resume_and_install() {
    snapshot_sync_end_to_end(1_000_000);
}

#[test]
fn snapshots_are_pruned_to_the_newest_two() {
    let dir = tempfile::tempdir().unwrap();
    let (g, keys) = genesis(10);
    let (ws, _) = cemented_chain(&g, &keys, 0, 4, |_, _| {});
    let mut a = Store::open(&dir.path().join("a"), &g).unwrap();
    let snapdir = dir.path().join("snapshots");
    for w in 1..=4usize {
        let (_, st) = cemented_chain(&g, &keys, 0, w as u64, |_, _| {});
        a.cement(&ws[w - 1..w], &st).unwrap();
        let ckpt = dir.path().join(format!("ckpt-{w}"));
        a.checkpoint(&ckpt).unwrap();
        let info = disk::build(&ckpt, &snapdir, 2).unwrap();
        assert_eq!(info.root, st.root());
    }
    let snaps = serving(&g, &snapdir);
    assert_eq!(snaps.windows(), vec![3, 4]);
    // The newest is served for window 0; a pruned one is not served.
    let m = super::format::Manifest::decode(&snaps.manifest(0).unwrap()).unwrap();
    assert_eq!(m.window, 4);
    assert!(snaps.manifest(2).is_none());
    assert!(snaps.chunk(2, &m.root, 0).is_none());
    assert!(snaps.chunk(4, &m.root, 0).is_some());
    assert!(snaps.chunk(4, &m.root, 1).is_none(), "past the last chunk");
    assert!(
        snaps.chunk(4, &montana_vdf::Hash32([0; 32]), 0).is_none(),
        "another root"
    );
}
