//! The misbehaviour policy: which offences a peer is scored for, and when
//! it is disconnected and its connections refused for a while (a ban).
//! Sans-IO: the node reports offences through the transport, which asks
//! here, closes the connection of a peer this bans, and refuses the
//! banned node's connections ([`super::gate::Refusal::Banned`]) and dials.
//!
//! Only *attributable* offences count: what no honest node sends or
//! forwards, whatever its view of the chain. A node forwards only what
//! passed its own checks (docs/SPEC.md 10.6), but its view (its tip, its
//! active set, its clock) may differ from ours, so what it forwards may
//! still be late, early, from a signer we do not know, or for a round or
//! window we do not count; none of that is an offence. What counts:
//! - [`Offence::Malformed`]: a message that does not decode;
//! - [`Offence::BadSignature`]: a signature that does not verify against
//!   its signer's key. A key is bound to its node id (SHA-256 of the
//!   key), so no view of the active set makes it valid; a node checks
//!   it before it forwards;
//! - [`Offence::WrongNetwork`]: a message naming another network's id,
//!   over a connection whose handshake proved ours;
//! - [`Offence::BadProof`]: a gossiped candidate proof whose chain does
//!   not verify (members forward one only once its chain verified).
//!
//! Which chain rejections are which offence is
//! [`crate::chain::Reject::offence`]; rejections of messages the node
//! forwards before the check that failed (a proposal's VDF, a candidate
//! proof or registration at a non-member) never are.
//!
//! Scoring is a leaky bucket per key ([`Source`]): each offence adds its
//! [`Offence::weight`], one point leaks away per [`LEAK_EVERY`]; a key
//! reaching [`THRESHOLD`] is banned: the connections it covers closed, and
//! any it would cover refused, for [`BAN_FIRST`], doubling with each ban up
//! to [`BAN_MAX`] ([`MEMBER_BAN_MAX`] for a genesis peer or a member of the
//! active set: an honest member with a bug is not cut off for long). A key
//! clean for [`FORGET_AFTER`] after its last ban starts over.
//!
//! The keys an offence is scored against are the sender's
//! ([`super::Sender::charged`]), fixed when its message was read, never
//! whoever holds its slot when the message is judged: its node id and, for
//! a guest (neither a genesis peer nor a member), its source address as
//! well, since anyone can mint node ids: a guest that reconnects under a
//! new id keeps its address's score and ban. A banned address refuses
//! guests only: a genesis peer or member behind it is judged by its own id.
//!
//! At most [`MAX_TRACKED`] keys are remembered; when full, forgotten first
//! are those clean again, then the one with the lowest score not banned,
//! then the ban ending soonest.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Source;

/// Score at which a node is banned.
pub const THRESHOLD: u32 = 100;
/// One point of score leaks away per this period (10 a minute).
pub const LEAK_EVERY: Duration = Duration::from_secs(6);
/// The first ban's length; each further ban doubles it...
pub const BAN_FIRST: Duration = Duration::from_secs(60);
/// ... up to this...
pub const BAN_MAX: Duration = Duration::from_secs(3600);
/// ... or this for a genesis peer or a member of the active set.
pub const MEMBER_BAN_MAX: Duration = Duration::from_secs(120);
/// A node with no offence for this long after its last ban ended starts
/// over (its next ban is [`BAN_FIRST`] again).
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Keys (node ids and source addresses) remembered at most.
pub const MAX_TRACKED: usize = 4096;

/// What a peer did that no honest node does (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Offence {
    /// A message that does not decode.
    Malformed,
    /// A signature that does not verify against its signer's key.
    BadSignature,
    /// A message for another network.
    WrongNetwork,
    /// A gossiped candidate proof whose chain does not verify (a node
    /// forwards one only once its chain verified; the chain starts at T of
    /// its window, fixed by the VDF, the same for every node that knows
    /// it). Judged after the message was handled: reported by the chain as
    /// `Action::Offence`, not through `Reject::offence`.
    BadProof,
}

impl Offence {
    /// Points added to the peer's score: [`THRESHOLD`] is reached by 10
    /// malformed messages, 4 bad signatures or bad candidate chains, or 2
    /// messages for another network in a burst; at a steady rate below 10 points a minute never.
    pub fn weight(self) -> u32 {
        match self {
            Offence::Malformed => 10,
            Offence::BadSignature => 25,
            Offence::WrongNetwork => 50,
            Offence::BadProof => 25,
        }
    }

    /// The log and metrics name.
    pub fn name(self) -> &'static str {
        match self {
            Offence::Malformed => "malformed",
            Offence::BadSignature => "bad_signature",
            Offence::WrongNetwork => "wrong_network",
            Offence::BadProof => "bad_proof",
        }
    }
}

/// A ban just decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ban {
    pub until: Instant,
    pub lasts: Duration,
    /// This node's bans so far, this one included.
    pub strikes: u32,
}

#[derive(Clone, Debug)]
struct Record {
    score: u32,
    /// When `score` was last leaked.
    leaked_at: Instant,
    strikes: u32,
    /// The end of the last ban, if any.
    banned_until: Option<Instant>,
}

impl Record {
    fn leak(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.leaked_at);
        let points = (elapsed.as_millis() / LEAK_EVERY.as_millis()) as u64;
        if points >= self.score as u64 {
            self.score = 0;
            self.leaked_at = now;
        } else {
            self.score -= points as u32;
            self.leaked_at += LEAK_EVERY * points as u32;
        }
    }

    fn banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|t| now < t)
    }

    /// Nothing left to remember: no score, and no ban for `FORGET_AFTER`.
    fn clean(&mut self, now: Instant) -> bool {
        self.leak(now);
        self.score == 0 && self.banned_until.is_none_or(|t| now >= t + FORGET_AFTER)
    }
}

/// Scores and bans by key (see the module docs).
#[derive(Debug, Default)]
pub struct Misbehaviour {
    records: HashMap<Source, Record>,
}

impl Misbehaviour {
    pub fn new() -> Self {
        Self::default()
    }

    /// `node` (a genesis peer's or a member's if `member`) is charged
    /// `offence` at `now`: the ban it earns, if this offence reaches the
    /// threshold. Offences of a key already banned (messages sent before,
    /// still on their way) are not scored.
    pub fn offence(
        &mut self,
        node: Source,
        offence: Offence,
        member: bool,
        now: Instant,
    ) -> Option<Ban> {
        if !self.records.contains_key(&node) {
            self.make_room(now);
        }
        let r = self.records.entry(node).or_insert(Record {
            score: 0,
            leaked_at: now,
            strikes: 0,
            banned_until: None,
        });
        if r.banned(now) {
            return None;
        }
        if r.clean(now) {
            r.strikes = 0;
        }
        r.score = r.score.saturating_add(offence.weight());
        if r.score < THRESHOLD {
            return None;
        }
        r.strikes += 1;
        let cap = if member { MEMBER_BAN_MAX } else { BAN_MAX };
        let lasts = BAN_FIRST
            .saturating_mul(1 << (r.strikes - 1).min(16))
            .min(cap);
        let until = now + lasts;
        r.score = 0;
        r.leaked_at = now;
        r.banned_until = Some(until);
        Some(Ban {
            until,
            lasts,
            strikes: r.strikes,
        })
    }

    /// Whether `node` is banned at `now`.
    pub fn banned(&self, node: &Source, now: Instant) -> bool {
        self.records.get(node).is_some_and(|r| r.banned(now))
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Below [`MAX_TRACKED`] records: the clean ones forgotten, then if
    /// need be the lowest score not banned, else the ban ending soonest.
    fn make_room(&mut self, now: Instant) {
        if self.records.len() < MAX_TRACKED {
            return;
        }
        self.records.retain(|_, r| !r.clean(now));
        if self.records.len() < MAX_TRACKED {
            return;
        }
        let victim = self
            .records
            .iter()
            .filter(|(_, r)| !r.banned(now))
            .min_by_key(|(_, r)| r.score)
            .or_else(|| {
                self.records
                    .iter()
                    .min_by_key(|(_, r)| r.banned_until.expect("banned"))
            })
            .map(|(n, _)| *n);
        if let Some(n) = victim {
            self.records.remove(&n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u16) -> Source {
        let mut b = [0u8; 32];
        b[..2].copy_from_slice(&i.to_be_bytes());
        Source::Node(crate::net::NodeId(b))
    }

    /// Four forged signatures in a burst ban; three do not, and the score
    /// leaks away: the same three spread over time never ban.
    #[test]
    fn a_burst_of_offences_bans_and_a_trickle_does_not() {
        let mut m = Misbehaviour::new();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(m.offence(node(1), Offence::BadSignature, false, t0), None);
        }
        let ban = m
            .offence(node(1), Offence::BadSignature, false, t0)
            .unwrap();
        assert_eq!(ban.lasts, BAN_FIRST);
        assert_eq!(ban.strikes, 1);
        assert!(m.banned(&node(1), t0));
        assert!(m.banned(&node(1), t0 + BAN_FIRST - Duration::from_millis(1)));
        assert!(!m.banned(&node(1), t0 + BAN_FIRST));
        assert!(!m.banned(&node(2), t0), "nobody else");

        // One bad signature a minute (25 points, 10 leak a minute): the
        // score settles below the threshold.
        let mut t = t0;
        for i in 0..60 {
            assert_eq!(
                m.offence(node(2), Offence::BadSignature, false, t),
                None,
                "offence {i}"
            );
            t += Duration::from_secs(150);
        }
        // Ten malformed messages at once ban; nine do not.
        for _ in 0..9 {
            assert_eq!(m.offence(node(3), Offence::Malformed, false, t0), None);
        }
        assert!(m.offence(node(3), Offence::Malformed, false, t0).is_some());
        // Two messages for another network.
        assert_eq!(m.offence(node(4), Offence::WrongNetwork, false, t0), None);
        assert!(m
            .offence(node(4), Offence::WrongNetwork, false, t0)
            .is_some());
    }

    /// While banned, what the node sent before is not scored (no second
    /// ban); each ban doubles the last, up to the cap; a member's cap is
    /// short; a node clean long enough starts over.
    #[test]
    fn bans_double_up_to_a_cap_shorter_for_members_and_are_forgotten() {
        let mut m = Misbehaviour::new();
        let burst = |m: &mut Misbehaviour, n: Source, member: bool, at: Instant| {
            (0..4)
                .filter_map(|_| m.offence(n, Offence::BadSignature, member, at))
                .last()
        };
        let mut t = Instant::now();
        let mut lengths = Vec::new();
        for _ in 0..8 {
            let ban = burst(&mut m, node(1), false, t).expect("banned");
            assert_eq!(
                m.offence(node(1), Offence::WrongNetwork, false, t),
                None,
                "not scored while banned"
            );
            lengths.push(ban.lasts.as_secs());
            t = ban.until;
        }
        assert_eq!(lengths, [60, 120, 240, 480, 960, 1920, 3600, 3600]);

        let mut t = Instant::now();
        let mut lengths = Vec::new();
        for _ in 0..3 {
            let ban = burst(&mut m, node(2), true, t).expect("banned");
            lengths.push(ban.lasts.as_secs());
            t = ban.until;
        }
        assert_eq!(lengths, [60, 120, 120], "a member's bans stay short");

        // Clean for FORGET_AFTER after the last ban: the first length again.
        let ban = burst(&mut m, node(2), true, t + FORGET_AFTER).unwrap();
        assert_eq!(ban.lasts, BAN_FIRST);
    }

    /// At most MAX_TRACKED node ids: a flood of identities forgets the
    /// least offending first and keeps the banned.
    #[test]
    fn at_most_max_tracked_node_ids_are_remembered_and_bans_kept_first() {
        let mut m = Misbehaviour::new();
        let t = Instant::now();
        for _ in 0..4 {
            m.offence(node(0), Offence::BadSignature, false, t);
        }
        assert!(m.banned(&node(0), t));
        for i in 1..(2 * MAX_TRACKED) as u16 {
            m.offence(node(i), Offence::Malformed, false, t);
        }
        assert_eq!(m.len(), MAX_TRACKED);
        assert!(m.banned(&node(0), t), "the ban kept");
    }

    /// Source addresses are keys like node ids, counted as the gate counts
    /// them (an IPv6 /64 is one source): a guest's address is banned
    /// whichever host of its /64 it comes from, and a flood of /64s (an
    /// IPv6 /48 holds 65,536) is bounded with the node ids, the banned
    /// kept.
    #[test]
    fn source_addresses_are_scored_per_source_and_bounded_with_node_ids() {
        use std::net::{IpAddr, Ipv6Addr};
        let host = |net: u16, h: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, h));
        let mut m = Misbehaviour::new();
        let t = Instant::now();
        for h in 1..=4 {
            m.offence(Source::addr(host(1, h)), Offence::BadSignature, false, t);
        }
        assert!(m.banned(&Source::addr(host(1, 999)), t), "the whole /64");
        assert!(!m.banned(&Source::addr(host(2, 1)), t), "not the next /64");
        m.offence(node(0), Offence::WrongNetwork, false, t);
        m.offence(node(0), Offence::WrongNetwork, false, t);
        for net in 2..(2 * MAX_TRACKED) as u16 {
            m.offence(Source::addr(host(net, 1)), Offence::Malformed, false, t);
        }
        assert_eq!(m.len(), MAX_TRACKED);
        assert!(
            m.banned(&Source::addr(host(1, 7)), t),
            "the address ban kept"
        );
        assert!(m.banned(&node(0), t), "the node ban kept");
    }
}
