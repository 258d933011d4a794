//! The window rules, driven with plain values and the scalar oracle.

use super::*;
use crate::genesis::tests::peers;
use crate::keys::NodeKeys;
use crate::testutil::{chain, corrupt_checkpoint};
use montana_backends::ScalarBackend;
use montana_vdf::{Backend, VerifyOptions};

struct Net {
    g: Genesis,
    keys: Vec<NodeKeys>,
}

fn net() -> Net {
    let (p, keys) = peers(3);
    let g = Genesis::new(p, HashSuite::Sha256, 64, 8, 1.0).unwrap();
    Net { g, keys }
}

fn follower(n: &Net) -> Chain {
    Chain::new(Rules::from_genesis(&n.g), 1, Tip::genesis(&n.g))
}

fn now() -> Instant {
    Instant::now()
}

/// Runs every Verify action through the scalar backend until none is left;
/// returns everything else that was asked for.
fn drive(c: &mut Chain, mut actions: Vec<Action>) -> Vec<Action> {
    let mut done = Vec::new();
    while let Some(a) = actions.pop() {
        match a {
            Action::Verify(b) => {
                let outcome = ScalarBackend
                    .verify_proofs(&b.proofs, &VerifyOptions::threads(1))
                    .map_err(|e| e.to_string());
                actions.extend(c.on_verified(b, outcome, now()));
            }
            other => done.push(other),
        }
    }
    done
}

fn applied(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Apply(ps) => Some(ps.iter().map(|p| p.window()).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn rejections(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Rejected { reason, .. } => Some(reason.kind()),
            _ => None,
        })
        .collect()
}

#[test]
fn follower_applies_verified_proposals_in_order() {
    let n = net();
    let ps = chain(&n.g, &n.keys[0], 3);
    let mut c = follower(&n);
    assert!(!c.is_proposer());
    assert!(c.start().is_empty(), "a follower does nothing on its own");
    let mut all = Vec::new();
    for p in &ps {
        let out = push(&mut c, p);
        all.extend(out);
    }
    assert_eq!(applied(&all), vec![1, 2, 3]);
    assert_eq!(c.tip().window, 3);
    assert_eq!(c.tip().t, ps[2].header.t);
    assert_eq!(c.tip().hash, ps[2].hash());
    assert_eq!(c.rejected_total(), 0);
    assert_eq!(c.lag(), 0);
    // Duplicates are ignored, not rejected and not applied twice.
    let out = push(&mut c, &ps[1]);
    assert!(applied(&out).is_empty() && rejections(&out).is_empty());
}

fn c_on_proposal(c: &mut Chain, p: &Proposal) -> Vec<Action> {
    c.on_proposal(0, p.clone(), now())
}

/// A proposal from the proposer, driven to completion.
fn push(c: &mut Chain, p: &Proposal) -> Vec<Action> {
    let a = c_on_proposal(c, p);
    drive(c, a)
}

#[test]
fn follower_never_advances_without_a_proposal() {
    let n = net();
    let mut c = follower(&n);
    let mut out = c.on_tick(now() + Duration::from_secs(60));
    out.extend(c.on_tip(0, 5, now()));
    out.extend(c.on_tick(now() + Duration::from_secs(120)));
    assert!(applied(&out).is_empty());
    assert_eq!(c.tip().window, 0);
    // It asked the peer that knows for the missing windows, never twice at
    // once; unanswered, the peer is demoted (its claim no longer counts).
    assert_eq!(requests(&out), vec![(0, 1, 5)]);
    assert!(c.is_demoted(0));
    assert_eq!(c.lag(), 0);
    // Its next Tip after the back-off is believed again and asked again.
    let out = c.on_tip(0, 5, now() + Duration::from_secs(240));
    assert_eq!(c.lag(), 5);
    assert_eq!(c.phase(), "catching-up");
    assert_eq!(requests(&out), vec![(0, 1, 5)]);
}

fn requests(actions: &[Action]) -> Vec<(PeerIndex, u64, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Request { peer, from, count } => Some((*peer, *from, *count)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_lying_tip_is_dropped_when_its_request_times_out() {
    let n = net();
    let ps = chain(&n.g, &n.keys[0], 3);
    let mut c = follower(&n);
    let t0 = now();
    // Peer 2 claims the last possible window.
    let out = c.on_tip(2, u64::MAX, t0);
    assert_eq!(requests(&out), vec![(2, 1, MAX_REQUEST)]);
    assert_eq!(c.lag(), u64::MAX);
    // The honest proposer's tip meanwhile: one request at a time.
    assert!(requests(&c.on_tip(0, 3, t0)).is_empty());
    // Peer 2 never answers: demoted, its claim dropped, peer 0 asked.
    let out = c.on_tick(t0 + REQUEST_TIMEOUT);
    assert!(c.is_demoted(2));
    assert_eq!(c.lag(), 3);
    assert_eq!(requests(&out), vec![(0, 1, 3)]);
    // Its Tips are ignored while it is demoted.
    assert!(c.on_tip(2, u64::MAX, t0 + REQUEST_TIMEOUT).is_empty());
    assert_eq!(c.lag(), 3);
    let out = {
        let a = c.on_proposals(0, ps.clone(), t0 + REQUEST_TIMEOUT);
        drive(&mut c, a)
    };
    assert_eq!(applied(&out), vec![1, 2, 3]);
    assert_eq!(c.lag(), 0);
    assert_eq!(c.phase(), "following");
}

#[test]
fn empty_answers_demote_the_peer_instead_of_spinning() {
    let n = net();
    let ps = chain(&n.g, &n.keys[0], 2);
    let mut c = follower(&n);
    let t = now();
    let mut asked_liar = requests(&c.on_tip(2, u64::MAX, t)).len();
    // It answers nothing, as fast as it can, and keeps claiming.
    for _ in 0..100 {
        let mut out = c.on_proposals(2, vec![], t);
        out.extend(c.on_tip(2, u64::MAX, t));
        out.extend(c.on_tick(t));
        asked_liar += requests(&out).iter().filter(|r| r.0 == 2).count();
    }
    assert_eq!(asked_liar, 1, "one request, not a loop");
    assert!(c.is_demoted(2));
    assert_eq!(c.lag(), 0);
    // Catch-up from the honest proposer still works at once.
    let out = c.on_tip(0, 2, t);
    assert_eq!(requests(&out), vec![(0, 1, 2)]);
    let out = {
        let a = c.on_proposals(0, ps.clone(), t);
        drive(&mut c, a)
    };
    assert_eq!(applied(&out), vec![1, 2]);
    // Answering with what we already have is no answer either.
    let later = t + REQUEST_TIMEOUT;
    let out = c.on_tip(2, u64::MAX, later);
    assert_eq!(requests(&out), vec![(2, 3, MAX_REQUEST)]);
    assert!(requests(&c.on_proposals(2, ps, later)).is_empty());
    assert!(c.is_demoted(2));
    // Second strike: the back-off doubled (10 s).
    assert!(c.on_tip(2, u64::MAX, later + REQUEST_TIMEOUT).is_empty());
    assert!(c.is_demoted(2));
    assert_eq!(
        requests(&c.on_tip(2, u64::MAX, later + 2 * REQUEST_TIMEOUT)),
        vec![(2, 3, MAX_REQUEST)]
    );
}

#[test]
fn cheap_checks_come_before_the_signature() {
    let n = net();
    let ps = chain(&n.g, &n.keys[0], 2);
    let mut c = follower(&n);
    let pending = c_on_proposal(&mut c, &ps[0]);
    assert_eq!(c.signature_checks(), 1);
    // Replays while it is verified cost nothing.
    for _ in 0..10 {
        assert!(c_on_proposal(&mut c, &ps[0]).is_empty());
    }
    assert_eq!(c.signature_checks(), 1);
    assert_eq!(applied(&drive(&mut c, pending)), vec![1]);
    // Replays of an applied window, a forgery of one, a proposal too far
    // ahead, wrong parameters: no signature check, no counted rejection
    // except the parameters.
    let forged = Proposal::sign(
        &n.keys[2],
        n.g.hash,
        1,
        ps[0].header.link,
        n.g.d,
        0,
        ps[0].checkpoints.clone(),
    );
    let far = Proposal::sign(
        &n.keys[0],
        n.g.hash,
        2 + WAITING_HORIZON,
        [1; 32],
        n.g.d,
        0,
        ps[1].checkpoints.clone(),
    );
    let wrong_d = Proposal::sign(
        &n.keys[2],
        n.g.hash,
        2,
        ps[1].header.link,
        n.g.d * 2,
        0,
        ps[1].checkpoints.clone(),
    );
    let mut out = Vec::new();
    for p in [&ps[0], &ps[0], &forged, &far, &wrong_d] {
        out.extend(push(&mut c, p));
    }
    assert_eq!(rejections(&out), vec!["wrong_params"]);
    assert_eq!(c.signature_checks(), 1);
    assert!(c.waiting_bytes() == 0);
    // The next real window: one more check.
    assert_eq!(applied(&push(&mut c, &ps[1])), vec![2]);
    assert_eq!(c.signature_checks(), 2);
}

#[test]
fn the_waiting_room_is_bounded_in_bytes() {
    let n = net();
    let ps = chain(&n.g, &n.keys[0], 6);
    let mut c = follower(&n);
    let one = weight(&ps[0]);
    c.set_waiting_budget(3 * one);
    // Windows 2..=6 arrive before window 1: three fit.
    for p in &ps[1..] {
        c_on_proposal(&mut c, p);
    }
    assert_eq!(c.waiting_bytes(), 3 * one);
    // The next window always fits: the highest one held makes room.
    let out = {
        let a = c_on_proposal(&mut c, &ps[0]);
        drive(&mut c, a)
    };
    assert_eq!(applied(&out), vec![1, 2, 3]);
    assert_eq!(c.waiting_bytes(), 0);
}

#[test]
fn invalid_proposals_are_rejected_with_their_reason() {
    let n = net();
    let ps = chain(&n.g, &n.keys[0], 2);
    let mut c = follower(&n);

    // Forged: signed by a key that is not the proposer's.
    let forged = Proposal::sign(
        &n.keys[2],
        n.g.hash,
        1,
        ps[0].header.link,
        n.g.d,
        0,
        ps[0].checkpoints.clone(),
    );
    // Wrong proposer: peer 2 signs honestly as itself.
    let other = Proposal::sign(
        &n.keys[2],
        n.g.hash,
        1,
        ps[0].header.link,
        n.g.d,
        2,
        ps[0].checkpoints.clone(),
    );
    // Wrong previous: window 1 that does not link to the network id.
    let unlinked = Proposal::sign(
        &n.keys[0],
        n.g.hash,
        1,
        [7; 32],
        n.g.d,
        0,
        ps[0].checkpoints.clone(),
    );
    let bad_cp = corrupt_checkpoint(&ps[0], &n.keys[0], 5);
    // Wrong parameters: D differs from the genesis.
    let wrong_d = Proposal::sign(
        &n.keys[0],
        n.g.hash,
        1,
        ps[0].header.link,
        n.g.d * 2,
        0,
        ps[0].checkpoints.clone(),
    );

    let mut out = Vec::new();
    for p in [&forged, &other, &unlinked, &bad_cp, &wrong_d] {
        out.extend(push(&mut c, p));
    }
    let mut kinds = rejections(&out);
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            "bad_checkpoint",
            "bad_signature",
            "wrong_params",
            "wrong_previous",
            "wrong_proposer"
        ]
    );
    assert!(applied(&out).is_empty());
    assert_eq!(c.tip().window, 0);
    assert_eq!(c.rejected_total(), 5);
    let seg = out.iter().find_map(|a| match a {
        Action::Rejected {
            reason: Reject::BadCheckpoint { segment },
            ..
        } => Some(*segment),
        _ => None,
    });
    assert_eq!(seg, Some(5));

    // It keeps going: the real proposals still apply.
    for p in &ps {
        out = push(&mut c, p);
        assert_eq!(applied(&out), vec![p.window()]);
    }
    // A different signed proposal for the applied window: wrong window.
    let twin = corrupt_checkpoint(&ps[1], &n.keys[0], 0);
    out = push(&mut c, &twin);
    assert_eq!(rejections(&out), vec!["wrong_window"]);
    assert_eq!(c.rejected()["wrong_window"], 1);
    assert_eq!(c.tip().window, 2);
}

#[test]
fn a_bad_proposal_first_does_not_block_the_good_one() {
    let n = net();
    let ps = chain(&n.g, &n.keys[0], 1);
    let mut c = follower(&n);
    let bad = corrupt_checkpoint(&ps[0], &n.keys[0], 7);
    // Both arrive before the first verification finishes.
    let mut pending = c_on_proposal(&mut c, &bad);
    assert_eq!(c.phase(), "verifying");
    pending.extend(c_on_proposal(&mut c, &ps[0]));
    let out = drive(&mut c, pending);
    assert_eq!(rejections(&out), vec!["bad_checkpoint"]);
    assert_eq!(applied(&out), vec![1]);
    assert_eq!(c.tip().hash, ps[0].hash());
}

#[test]
fn catch_up_verifies_many_windows_per_call() {
    let n = net();
    let ps = chain(&n.g, &n.keys[0], 12);
    let mut c = follower(&n);
    let out = c.on_tip(0, 12, now());
    assert!(matches!(
        out.as_slice(),
        [Action::Request {
            peer: 0,
            from: 1,
            count: 12
        }]
    ));
    // The answer comes in two messages; each run is verified in one call.
    let first = c.on_proposals(0, ps[..7].to_vec(), now());
    let batch_sizes: Vec<usize> = first
        .iter()
        .filter_map(|a| match a {
            Action::Verify(b) => Some(b.proposals.len()),
            _ => None,
        })
        .collect();
    assert_eq!(batch_sizes, vec![7]);
    // While those verify, the rest is requested (pipelined).
    assert!(first.iter().any(|a| matches!(
        a,
        Action::Request {
            from: 8,
            count: 5,
            ..
        }
    )));
    let mut out = drive(&mut c, first);
    out.extend({
        let a = c.on_proposals(0, ps[7..].to_vec(), now());
        drive(&mut c, a)
    });
    assert_eq!(applied(&out), (1..=12).collect::<Vec<_>>());
    assert_eq!(c.tip().t, ps[11].header.t);
    assert_eq!(c.lag(), 0);
}

#[test]
fn a_bad_window_in_a_batch_keeps_the_good_prefix() {
    let n = net();
    let mut ps = chain(&n.g, &n.keys[0], 5);
    ps[3] = corrupt_checkpoint(&ps[3], &n.keys[0], 2);
    let mut c = follower(&n);
    c.on_tip(0, 5, now());
    let out = {
        let a = c.on_proposals(0, ps.clone(), now());
        drive(&mut c, a)
    };
    assert_eq!(applied(&out), vec![1, 2, 3]);
    assert_eq!(rejections(&out), vec!["bad_checkpoint"]);
    assert_eq!(c.tip().window, 3);
    // And asks again for what is still missing.
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Request { from: 4, .. })));
}

#[test]
fn a_backend_failure_blames_nobody_and_retries() {
    let n = net();
    let ps = chain(&n.g, &n.keys[0], 1);
    let mut c = follower(&n);
    let out = c_on_proposal(&mut c, &ps[0]);
    let Some(Action::Verify(b)) = out.into_iter().next() else {
        panic!("expected a verification");
    };
    let out = c.on_verified(b, Err("device lost".into()), now());
    assert!(rejections(&out).is_empty());
    assert_eq!(c.tip().window, 0);
    let out = {
        let a = c.on_tick(now());
        drive(&mut c, a)
    };
    assert_eq!(applied(&out), vec![1]);
}

#[test]
fn proposer_evaluates_applies_and_broadcasts() {
    let n = net();
    let mut c = Chain::new(Rules::from_genesis(&n.g), 0, Tip::genesis(&n.g));
    assert!(c.is_proposer());
    assert!(c.on_tick(now()).is_empty(), "nothing before start");
    let out = c.start();
    let [Action::Evaluate {
        window: 1,
        start,
        link,
    }] = out.as_slice()
    else {
        panic!("{out:?}");
    };
    assert_eq!(*start, n.g.timechain().t0());
    assert_eq!(*link, n.g.network_id());
    assert!(c.start().is_empty(), "one evaluation at a time");
    let ps = chain(&n.g, &n.keys[0], 2);
    let out = c.on_evaluated(ps[0].clone(), now());
    assert_eq!(applied(&out), vec![1]);
    assert!(out.iter().any(|a| matches!(a, Action::Broadcast(_))));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Evaluate { window: 2, .. })));
    // With a last window, it stops proposing there.
    c.set_last_window(Some(2));
    let out = c.on_evaluated(ps[1].clone(), now());
    assert_eq!(applied(&out), vec![2]);
    assert!(!out.iter().any(|a| matches!(a, Action::Evaluate { .. })));
    assert_eq!(c.phase(), "done");
    // Nobody else proposes to the proposer.
    let out = c.on_proposal(1, ps[1].clone(), now());
    assert_eq!(rejections(&out), vec!["not_from_proposer"]);
    assert_eq!(c.tip().window, 2);
    c.stop();
    c.on_evaluation_failed();
    assert!(c.on_tick(now()).is_empty());
    assert_eq!(c.phase(), "stopped");
}

fn proposer(n: &Net) -> Chain {
    Chain::new(Rules::from_genesis(&n.g), 0, Tip::genesis(&n.g))
}

#[test]
fn a_proposer_that_lost_its_data_catches_up_before_proposing() {
    let n = net();
    let ps = chain(&n.g, &n.keys[0], 5);
    let mut c = proposer(&n);
    // Its peers are at window 5; it restarted from an empty data dir. It
    // asks for them at once, and starting does not make it propose.
    assert_eq!(requests(&c.on_tip(1, 5, now())), vec![(1, 1, 5)]);
    assert!(c.start().is_empty());
    assert_eq!(c.phase(), "catching-up");
    let out = {
        let a = c.on_proposals(1, ps.clone(), now());
        drive(&mut c, a)
    };
    assert_eq!(applied(&out), vec![1, 2, 3, 4, 5]);
    // Caught up: it proposes window 6, and takes no proposals any more.
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Evaluate { window: 6, .. })));
    assert_eq!(c.phase(), "proposing");
    let out = c.on_proposal(1, ps[4].clone(), now());
    assert_eq!(rejections(&out), vec!["not_from_proposer"]);
}

#[test]
fn a_lying_tip_delays_a_restarted_proposer_only_until_its_request_times_out() {
    let n = net();
    let mut c = proposer(&n);
    let t = now();
    assert_eq!(
        requests(&c.on_tip(2, u64::MAX, t)),
        vec![(2, 1, MAX_REQUEST)]
    );
    assert!(c.start().is_empty());
    let out = c.on_tick(t + REQUEST_TIMEOUT);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Evaluate { window: 1, .. })));
    // Once proposing, claims no longer hold it back.
    let ps = chain(&n.g, &n.keys[0], 1);
    c.on_evaluated(ps[0].clone(), t + REQUEST_TIMEOUT);
    c.on_tip(1, 1000, t + REQUEST_TIMEOUT);
    assert_eq!(c.phase(), "proposing");
}
