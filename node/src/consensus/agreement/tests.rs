//! The agreement rules, on a simulated network of machines.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::consensus::active::{Member, NodeId};

fn ids(n: usize) -> Vec<NodeId> {
    (0..n).map(|i| NodeId([i as u8 + 1; 32])).collect()
}

/// An active set of `n` members with weight 1 (keys are irrelevant here:
/// the machine never checks signatures).
fn set(n: usize) -> ActiveSet {
    let key = crate::keys::NodeKeys::generate()
        .unwrap()
        .verifying_key()
        .clone();
    ActiveSet::new(
        ids(n)
            .into_iter()
            .map(|id| Member {
                id,
                key: key.clone(),
                weight: 1,
            })
            .collect(),
    )
    .unwrap()
}

/// A message in flight.
#[derive(Clone, Debug)]
enum Msg {
    Proposal {
        round: u32,
        value: Hash32,
        valid_round: Option<u32>,
        from: NodeId,
    },
    Vote(VoteIn),
    Validated(Hash32),
}

/// N machines, a pool of undelivered messages per node, armed timers.
struct Sim {
    ids: Vec<NodeId>,
    nodes: Vec<Agreement>,
    pool: Vec<(usize, Msg)>,
    timers: BTreeSet<(usize, Timeout, u32)>,
    decided: BTreeMap<usize, (Hash32, u32)>,
    /// Nodes that neither receive nor act.
    down: BTreeSet<usize>,
    /// Values that validate as invalid.
    invalid: BTreeSet<Hash32>,
    /// Votes each node signed, in order (never two for one (round, kind)).
    signed: Vec<Vec<(VoteKind, u32, Option<Hash32>)>>,
    proposals_made: usize,
}

impl Sim {
    fn new(n: usize) -> Self {
        let ids = ids(n);
        let s = set(n);
        let order = s.failover_order(&Hash32([0; 32]), Some(&ids[0]));
        let nodes = ids
            .iter()
            .map(|id| Agreement::new(s.clone(), Quorum::default(), order.clone(), Some(*id)))
            .collect();
        Sim {
            ids,
            nodes,
            pool: Vec::new(),
            timers: BTreeSet::new(),
            decided: BTreeMap::new(),
            down: BTreeSet::new(),
            invalid: BTreeSet::new(),
            signed: vec![Vec::new(); n],
            proposals_made: 0,
        }
    }
    fn index(&self, id: &NodeId) -> usize {
        self.ids.iter().position(|i| i == id).unwrap()
    }
    fn start(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.down.contains(&i) {
                let out = self.nodes[i].start();
                self.handle(i, out);
            }
        }
    }
    fn broadcast(&mut self, msg: Msg) {
        for to in 0..self.nodes.len() {
            self.pool.push((to, msg.clone()));
        }
    }
    fn handle(&mut self, i: usize, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Propose { round, value } => {
                    let (value, valid_round) = match value {
                        Some((v, vr)) => (v, Some(vr)),
                        None => {
                            self.proposals_made += 1;
                            let mut v = [0u8; 32];
                            v[0] = i as u8;
                            v[1..5].copy_from_slice(&round.to_le_bytes());
                            v[5..9].copy_from_slice(&(self.proposals_made as u32).to_le_bytes());
                            (Hash32(v), None)
                        }
                    };
                    self.broadcast(Msg::Proposal {
                        round,
                        value,
                        valid_round,
                        from: self.ids[i],
                    });
                }
                Output::Validate { value, .. } => self.pool.push((i, Msg::Validated(value))),
                Output::Vote { kind, round, value } => {
                    assert!(
                        !self.signed[i]
                            .iter()
                            .any(|(k, r, _)| *k == kind && *r == round),
                        "node {i} signed two {kind:?}s in round {round}"
                    );
                    self.signed[i].push((kind, round, value));
                    self.broadcast(Msg::Vote(VoteIn {
                        kind,
                        round,
                        value,
                        signer: self.ids[i],
                    }));
                }
                Output::Arm { timer, round } => {
                    self.timers.insert((i, timer, round));
                }
                Output::Round(_) => {}
                Output::Decide {
                    value,
                    round,
                    signers,
                } => {
                    let w: u64 = signers.len() as u64;
                    assert!(Quorum::default().reached(w, self.ids.len() as u64));
                    assert!(self.decided.insert(i, (value, round)).is_none());
                }
            }
        }
    }
    fn deliver(&mut self, k: usize) {
        let (to, msg) = self.pool.swap_remove(k);
        self.deliver_msg(to, msg);
    }
    /// Takes the messages at `ks` out of the pool, then delivers them.
    fn deliver_picked(&mut self, mut ks: Vec<usize>) {
        ks.sort();
        let mut taken: Vec<(usize, Msg)> =
            ks.into_iter().rev().map(|k| self.pool.remove(k)).collect();
        taken.reverse();
        for (to, msg) in taken {
            self.deliver_msg(to, msg);
        }
    }
    fn deliver_msg(&mut self, to: usize, msg: Msg) {
        if self.down.contains(&to) {
            return;
        }
        let mut out = Vec::new();
        match msg {
            Msg::Proposal {
                round,
                value,
                valid_round,
                from,
            } => {
                self.nodes[to].on_proposal(round, value, valid_round, from, &mut out);
            }
            Msg::Vote(v) => {
                let _ = self.nodes[to].on_vote(v, &mut out);
            }
            Msg::Validated(v) => {
                let ok = !self.invalid.contains(&v);
                self.nodes[to].on_validated(v, ok, &mut out);
            }
        }
        self.handle(to, out);
    }
    fn fire(&mut self, t: (usize, Timeout, u32)) {
        self.timers.remove(&t);
        if self.down.contains(&t.0) {
            return;
        }
        let mut out = Vec::new();
        self.nodes[t.0].on_timeout(t.1, t.2, &mut out);
        self.handle(t.0, out);
    }
    /// Delivers everything in order; fires the lowest timer when idle.
    fn run_fifo(&mut self, max_steps: usize) {
        for _ in 0..max_steps {
            if self.all_up_decided() {
                return;
            }
            if !self.pool.is_empty() {
                self.deliver(0);
            } else if let Some(t) = self.timers.iter().next().copied() {
                self.fire(t);
            } else {
                return;
            }
        }
    }
    /// Random delivery order; timers fire at random moments too.
    fn run_random(&mut self, rng: &mut StdRng, max_steps: usize) {
        for _ in 0..max_steps {
            if self.all_up_decided() {
                return;
            }
            let fire = !self.timers.is_empty() && (self.pool.is_empty() || rng.random_ratio(1, 8));
            if fire {
                let k = rng.random_range(0..self.timers.len());
                let t = *self.timers.iter().nth(k).unwrap();
                self.fire(t);
            } else if !self.pool.is_empty() {
                let k = rng.random_range(0..self.pool.len());
                self.deliver(k);
            } else {
                return;
            }
        }
    }
    /// Delivers every message matching `keep` (also those it causes), in
    /// order; the others stay in the pool.
    fn deliver_where(&mut self, keep: impl Fn(&Sim, usize, &Msg) -> bool) {
        loop {
            let Some(k) =
                (0..self.pool.len()).find(|&k| keep(self, self.pool[k].0, &self.pool[k].1))
            else {
                return;
            };
            self.deliver_picked(vec![k]);
        }
    }
    fn all_up_decided(&self) -> bool {
        (0..self.nodes.len()).all(|i| self.down.contains(&i) || self.decided.contains_key(&i))
    }
    /// Every decided node decided the same value.
    fn agreement(&self) -> Option<Hash32> {
        let values: BTreeSet<Hash32> = self.decided.values().map(|d| d.0).collect();
        assert!(values.len() <= 1, "two values decided: {values:?}");
        values.into_iter().next()
    }
}

#[test]
fn four_nodes_decide_the_proposers_value_in_round_zero() {
    let mut sim = Sim::new(4);
    sim.start();
    sim.run_fifo(10_000);
    assert!(sim.all_up_decided());
    let v = sim.agreement().unwrap();
    assert_eq!(v.0[0], 0, "node 0 proposes round 0");
    assert!(sim.decided.values().all(|d| d.1 == 0));
}

#[test]
fn dead_proposer_is_replaced_by_the_next_rank() {
    let mut sim = Sim::new(4);
    sim.down.insert(0);
    sim.start();
    sim.run_fifo(10_000);
    assert!(sim.all_up_decided());
    let v = sim.agreement().unwrap();
    let (_, round) = sim.decided[&1];
    assert!(round >= 1);
    let proposer = sim.nodes[1].proposer(round);
    assert_eq!(v.0[0] as usize, sim.index(&proposer));
}

#[test]
fn two_of_four_down_decides_nothing_then_resumes_when_one_returns() {
    let mut sim = Sim::new(4);
    sim.down.extend([2, 3]);
    sim.start();
    sim.run_fifo(5_000);
    assert!(sim.decided.is_empty(), "no quorum, no decision");
    // Node 2 comes back (it restarts its machine: a new instance that has
    // signed nothing yet, as its persisted guard would say).
    sim.down.remove(&2);
    let out = sim.nodes[2].start();
    sim.handle(2, out);
    // It hears what it missed: the others re-send their current-round votes
    // and proposals (the runtime's re-broadcast on reconnect). Simulate by
    // replaying every vote the live nodes signed.
    for i in [0usize, 1] {
        for (kind, round, value) in sim.signed[i].clone() {
            sim.pool.push((
                2,
                Msg::Vote(VoteIn {
                    kind,
                    round,
                    value,
                    signer: sim.ids[i],
                }),
            ));
        }
    }
    sim.run_fifo(50_000);
    assert!(sim.all_up_decided(), "decided: {:?}", sim.decided);
    sim.agreement().unwrap();
}

#[test]
fn split_vote_between_a_late_proposer_and_the_backup_decides_exactly_one() {
    // Round 0: node 0's proposal reaches nodes 0 and 1 only; nodes 2 and 3
    // time out and prevote nil. Then the backup (rank 1) proposes in round 1
    // and node 0's late proposal reaches 2 and 3 as well.
    let mut sim = Sim::new(4);
    sim.start();
    let p0 = sim.pool.clone();
    sim.pool.clear();
    for (to, m) in p0 {
        match (&m, to) {
            (Msg::Proposal { .. }, 2 | 3) => {} // held back: late
            _ => sim.pool.push((to, m)),
        }
    }
    for i in [2usize, 3] {
        sim.fire((i, Timeout::Propose, 0));
    }
    sim.run_fifo(100_000);
    assert!(sim.all_up_decided(), "decided: {:?}", sim.decided);
    let v = sim.agreement().unwrap();
    // The late proposal now arrives: nothing changes.
    let late = Msg::Proposal {
        round: 0,
        value: v,
        valid_round: None,
        from: sim.ids[0],
    };
    sim.pool.push((2, late));
    sim.run_fifo(1_000);
    assert_eq!(sim.agreement(), Some(v));
}

#[test]
fn invalid_proposal_gets_nil_prevotes_and_the_next_round_decides() {
    let mut sim = Sim::new(4);
    // Whatever node 0 proposes first is invalid.
    let mut v = [0u8; 32];
    v[1..5].copy_from_slice(&0u32.to_le_bytes());
    v[5..9].copy_from_slice(&1u32.to_le_bytes());
    sim.invalid.insert(Hash32(v));
    sim.start();
    sim.run_fifo(50_000);
    assert!(sim.all_up_decided());
    let d = sim.agreement().unwrap();
    assert_ne!(d, Hash32(v));
    assert!(sim.decided.values().all(|x| x.1 >= 1));
}

#[test]
fn votes_are_counted_once_per_signer_and_non_members_never() {
    let s = set(4);
    let ids = ids(4);
    let order = s.failover_order(&Hash32([0; 32]), Some(&ids[0]));
    let mut a = Agreement::new(s, Quorum::default(), order, Some(ids[1]));
    let mut out = a.start();
    let v = Hash32([5; 32]);
    let vote = |signer, value| VoteIn {
        kind: VoteKind::Precommit,
        round: 0,
        value,
        signer,
    };
    assert_eq!(
        a.on_vote(vote(NodeId([99; 32]), Some(v)), &mut out),
        Err(VoteReject::NotMember)
    );
    a.on_vote(vote(ids[2], Some(v)), &mut out).unwrap();
    assert_eq!(
        a.on_vote(vote(ids[2], Some(v)), &mut out),
        Err(VoteReject::Duplicate)
    );
    assert_eq!(
        a.on_vote(vote(ids[2], None), &mut out),
        Err(VoteReject::Conflicting { first: Some(v) })
    );
    // Two distinct signers are not a quorum of 4, even with the replays.
    a.on_vote(vote(ids[3], Some(v)), &mut out).unwrap();
    a.on_proposal(0, v, None, ids[0], &mut out);
    a.on_validated(v, true, &mut out);
    assert_eq!(a.decided(), None);
    a.on_vote(vote(ids[0], Some(v)), &mut out).unwrap();
    assert_eq!(a.decided(), Some((v, 0)));
}

#[test]
fn proposals_from_the_wrong_proposer_or_far_rounds_are_ignored() {
    let s = set(4);
    let ids = ids(4);
    let order = s.failover_order(&Hash32([0; 32]), Some(&ids[0]));
    let mut a = Agreement::new(s, Quorum::default(), order, Some(ids[1]));
    let mut out = a.start();
    let wrong = if a.proposer(0) == ids[2] {
        ids[3]
    } else {
        ids[2]
    };
    assert!(!a.on_proposal(0, Hash32([1; 32]), None, wrong, &mut out));
    assert!(!a.on_proposal(0, Hash32([1; 32]), Some(0), a.proposer(0), &mut out));
    let far = MAX_ROUNDS_AHEAD + 1;
    assert!(!a.on_proposal(far, Hash32([1; 32]), None, a.proposer(far), &mut out));
    assert!(a.on_proposal(0, Hash32([1; 32]), None, a.proposer(0), &mut out));
    assert!(!a.on_proposal(0, Hash32([2; 32]), None, a.proposer(0), &mut out));
}

#[test]
fn a_beacon_from_the_proposer_rearms_the_propose_timer() {
    let s = set(4);
    let ids = ids(4);
    let order = s.failover_order(&Hash32([0; 32]), Some(&ids[0]));
    let mut a = Agreement::new(s, Quorum::default(), order, Some(ids[1]));
    a.start();
    let mut out = Vec::new();
    a.on_beacon(0, ids[2], &mut out);
    assert!(out.is_empty(), "only the round's proposer may extend it");
    a.on_beacon(0, ids[0], &mut out);
    assert_eq!(
        out,
        vec![Output::Arm {
            timer: Timeout::Propose,
            round: 0
        }]
    );
}

/// The locking rule at work: round 0 decides v at one node only; the
/// proposer of round 1 never saw v's prevote quorum and proposes another
/// value. Nodes locked on v must prevote nil, or two values are decided.
#[test]
fn a_node_locked_on_a_value_never_helps_decide_another() {
    let mut sim = Sim::new(4);
    let p0 = sim.index(&sim.nodes[0].proposer(0));
    let p1 = sim.index(&sim.nodes[0].proposer(1));
    assert_ne!(p0, p1);
    let others: Vec<usize> = (0..4).filter(|i| *i != p0 && *i != p1).collect();
    sim.start();
    // The proposal and its validations reach everyone but p1.
    sim.deliver_where(|_, to, m| to != p1 && !matches!(m, Msg::Vote(_)));
    // Prevotes for v: p0 and the others see all three (quorum: they lock
    // and precommit v). p1 sees none of them.
    sim.deliver_where(|_, to, m| {
        to != p1
            && matches!(
                m,
                Msg::Vote(VoteIn {
                    kind: VoteKind::Prevote,
                    ..
                })
            )
    });
    assert!(others.iter().all(|i| sim.nodes[*i].locked().is_some()));
    // p1 times out on the proposal and prevotes nil; it hears two v
    // prevotes (quorum of "any" with its own), times out, precommits nil.
    sim.pool
        .retain(|(to, m)| !(*to == p1 && matches!(m, Msg::Proposal { .. })));
    sim.fire((p1, Timeout::Propose, 0));
    let v_prevotes_to_p1: Vec<usize> = sim
        .pool
        .iter()
        .enumerate()
        .filter(|(_, (to, m))| {
            *to == p1
                && matches!(
                    m,
                    Msg::Vote(VoteIn {
                        kind: VoteKind::Prevote,
                        value: Some(_),
                        ..
                    })
                )
        })
        .map(|(k, _)| k)
        .take(2)
        .collect();
    sim.deliver_picked(v_prevotes_to_p1);
    sim.deliver_where(|s, to, m| {
        to == p1 && matches!(m, Msg::Vote(VoteIn { signer, .. }) if *signer == s.ids[p1])
    });
    sim.fire((p1, Timeout::Prevote, 0));
    // p0 gets every precommit of round 0 and decides v.
    sim.deliver_where(|_, to, m| {
        to == p0
            && matches!(
                m,
                Msg::Vote(VoteIn {
                    kind: VoteKind::Precommit,
                    ..
                })
            )
    });
    let (v, _) = sim.decided[&p0];
    // Everyone else: precommits are lost; they time out into round 1
    // after seeing p1's nil and one v precommit (quorum of "any").
    for &i in others.iter().chain([p1].iter()) {
        let picks: Vec<usize> = sim
            .pool
            .iter()
            .enumerate()
            .filter(|(_, (to, m))| {
                *to == i
                    && matches!(
                        m,
                        Msg::Vote(VoteIn {
                            kind: VoteKind::Precommit,
                            ..
                        })
                    )
            })
            .map(|(k, _)| k)
            .collect();
        let mut nil = None;
        let mut vals = Vec::new();
        for k in picks {
            if let Msg::Vote(VoteIn { value: None, .. }) = sim.pool[k].1 {
                nil = Some(k)
            } else {
                vals.push(k)
            }
        }
        sim.deliver_picked(nil.into_iter().chain(vals.into_iter().take(2)).collect());
        assert!(
            !sim.decided.contains_key(&i),
            "node {i} (p0 {p0}, p1 {p1}) decided: {:?}",
            sim.decided
        );
        sim.fire((i, Timeout::Precommit, 0));
    }
    sim.down.insert(p0); // p0 has moved on to the next window
                         // Drop every leftover round-0 message to the three, then let round 1 run.
    sim.pool.retain(|(to, m)| {
        *to == p0
            || !matches!(
                m,
                Msg::Vote(VoteIn { round: 0, .. }) | Msg::Proposal { round: 0, .. }
            )
    });
    sim.run_fifo(10_000);
    let decided: BTreeSet<Hash32> = sim.decided.values().map(|d| d.0).collect();
    assert_eq!(
        decided.into_iter().collect::<Vec<_>>(),
        vec![v],
        "only v may be decided"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// Any delivery order, any timer firings, up to f crashed nodes and an
    /// invalid first proposal: never two decided values, nobody signs twice,
    /// and with at most f down everyone up decides.
    #[test]
    fn random_schedules_never_decide_two_values(
        seed in any::<u64>(),
        n in 4usize..8,
        crash in any::<bool>(),
        bad_first in any::<bool>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut sim = Sim::new(n);
        let f = (n - 1) / 3;
        if crash {
            for _ in 0..f {
                let k = rng.random_range(0..n);
                sim.down.insert(k);
            }
        }
        if bad_first {
            let mut v = [0u8; 32];
            v[1..5].copy_from_slice(&0u32.to_le_bytes());
            v[5..9].copy_from_slice(&1u32.to_le_bytes());
            sim.invalid.insert(Hash32(v));
        }
        sim.start();
        sim.run_random(&mut rng, 200_000);
        sim.agreement();
        // Liveness once the schedule is fair: deliver in order to the end.
        sim.run_fifo(200_000);
        prop_assert!(sim.all_up_decided(), "decided {:?} of {} (down {:?})", sim.decided, n, sim.down);
        sim.agreement();
    }
}
