//! Node ids, the active set and the quorum rule.
//!
//! - A node id is SHA-256 of the node's ML-DSA-65 public key (genesis peers
//!   included), so it names a signer in every format independently of any
//!   list's order.
//! - The active set of a window is a list of members (id, weight) sorted by
//!   id, at most [`MAX_ACTIVE`] of them, with a positive total weight.
//! - A weight `w` is a quorum iff `den * w > num * total` (default 2/3), and
//!   it can skip a round iff `den * w > (den - num) * total`: more weight than
//!   can ever be missing from a quorum, so at least one honest member is
//!   among it (Tendermint's f+1). Arithmetic is in u128: no overflow for any
//!   u64 weights.
//! - The failover order of window w+1: rank 0 is the proposer of window w
//!   (it has T(w) first, so it can start on T(w+1) at once), except in a
//!   window that hands over ([`hands_over`]: every `tenure`-th window),
//!   where nobody keeps rank 0; ranks 1.. (all ranks at a handover) are the
//!   other members sorted by SHA-256(T(w) || id). Round r is proposed by
//!   rank r mod n. Without handovers a member that makes every window it
//!   leads would lead for ever, and it alone picks each window's canonical
//!   bundle: whose precommits are paid and who counts as seen, so it could
//!   starve chosen members out of the set after `inactive_windows`.

use std::fmt;

use montana_vdf::{Hash32, HashSuite};

use crate::keys::VerifyingKey;

/// Most members of an active set (a quorum's signatures fit one message).
pub const MAX_ACTIVE: usize = 300;

/// Most windows in a row that one maker keeps rank 0 (the tenure is
/// shorter where members leave sooner: [`crate::consensus::joining::JoinRules::tenure`]).
pub const MAX_TENURE: u64 = 32;

/// `id`'s place in the draw that `t` makes: SHA-256(t || id), 64 bytes
/// hashed. Ordering by it is fair where ordering by id is not (ids can be
/// ground: anyone can make keys until one has a low id): a key can be
/// ground for it only by whoever knows `t` early. Ranks the failover order
/// (t = T of the window before: a VDF output, known early only to one
/// that evaluates the chain faster than the network), and the candidates
/// a proposal serves (t = the tip's proposal hash, SPEC 9.9).
pub fn draw(t: &Hash32, id: &NodeId) -> [u8; 32] {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(&t.0);
    buf[32..].copy_from_slice(&id.0);
    HashSuite::Sha256.hash(&buf).0
}

/// Whether rank 0 of `window` is handed over: nobody keeps it, and the
/// failover order is the hash order alone. Every `tenure`-th window but
/// window 1 (whose rank 0 is the genesis proposer).
pub fn hands_over(window: u64, tenure: u64) -> bool {
    window > 1 && window.is_multiple_of(tenure.max(1))
}

/// SHA-256 of a node's ML-DSA-65 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The id of the node whose ML-DSA-65 public key is `key`.
    pub fn of(key: &VerifyingKey) -> Self {
        NodeId(HashSuite::Sha256.hash(&key.to_bytes()).0)
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight digits are enough to tell members apart in logs and tests.
        write!(f, "NodeId({})", &self.to_hex()[..8])
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The fraction of the total weight a quorum must exceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    pub num: u16,
    pub den: u16,
}

impl Default for Quorum {
    fn default() -> Self {
        Quorum { num: 2, den: 3 }
    }
}

impl Quorum {
    /// Checks `1/2 <= num/den < 1`: below one half two disjoint quorums
    /// could cement different proposals.
    pub fn new(num: u16, den: u16) -> Result<Self, String> {
        if den == 0 || num >= den {
            return Err(format!("quorum {num}/{den} must be below 1"));
        }
        if 2 * (num as u32) < den as u32 {
            return Err(format!("quorum {num}/{den} must be at least 1/2"));
        }
        Ok(Quorum { num, den })
    }
    /// `den * weight > num * total`.
    pub fn reached(&self, weight: u64, total: u64) -> bool {
        self.den as u128 * weight as u128 > self.num as u128 * total as u128
    }
    /// `den * weight > (den - num) * total`: at least one honest member.
    pub fn skip(&self, weight: u64, total: u64) -> bool {
        self.den as u128 * weight as u128 > (self.den - self.num) as u128 * total as u128
    }
}

/// One member of the active set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub key: VerifyingKey,
    pub weight: u64,
}

/// Why an active set cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    #[error("the active set is empty")]
    Empty,
    #[error("the active set has {0} members (at most {MAX_ACTIVE})")]
    TooLarge(usize),
    #[error("member {0} is listed twice")]
    Duplicate(NodeId),
    #[error("member {0} has weight 0")]
    ZeroWeight(NodeId),
    #[error("the total weight overflows")]
    Overflow,
}

/// The members who vote in a window, sorted by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveSet {
    members: Vec<Member>,
    total: u64,
}

impl ActiveSet {
    pub fn new(mut members: Vec<Member>) -> Result<Self, SetError> {
        if members.is_empty() {
            return Err(SetError::Empty);
        }
        if members.len() > MAX_ACTIVE {
            return Err(SetError::TooLarge(members.len()));
        }
        members.sort_by_key(|m| m.id);
        let mut total = 0u64;
        for (i, m) in members.iter().enumerate() {
            if i > 0 && members[i - 1].id == m.id {
                return Err(SetError::Duplicate(m.id));
            }
            if m.weight == 0 {
                return Err(SetError::ZeroWeight(m.id));
            }
            total = total.checked_add(m.weight).ok_or(SetError::Overflow)?;
        }
        Ok(ActiveSet { members, total })
    }
    pub fn members(&self) -> &[Member] {
        &self.members
    }
    pub fn len(&self) -> usize {
        self.members.len()
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
    pub fn total(&self) -> u64 {
        self.total
    }
    /// The member's position in id order, if it is one.
    /// The members' ids, in id order.
    pub fn ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.id).collect()
    }
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.members.binary_search_by(|m| m.id.cmp(id)).ok()
    }
    pub fn get(&self, id: &NodeId) -> Option<&Member> {
        self.index_of(id).map(|i| &self.members[i])
    }
    pub fn weight(&self, id: &NodeId) -> u64 {
        self.get(id).map_or(0, |m| m.weight)
    }

    /// The failover order for the window after the one whose value is
    /// `prev_t` and whose proposer was `prev_proposer` (see the module docs).
    pub fn failover_order(&self, prev_t: &Hash32, prev_proposer: Option<&NodeId>) -> Vec<NodeId> {
        let mut rest: Vec<([u8; 32], NodeId)> = self
            .members
            .iter()
            .filter(|m| Some(&m.id) != prev_proposer)
            .map(|m| (draw(prev_t, &m.id), m.id))
            .collect();
        rest.sort();
        let mut order = Vec::with_capacity(self.members.len());
        if let Some(p) = prev_proposer.filter(|p| self.index_of(p).is_some()) {
            order.push(*p);
        }
        order.extend(rest.into_iter().map(|(_, id)| id));
        order
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::NodeKeys;

    /// `n` members with fresh keys and weight 1, and their keys.
    pub(crate) fn set_of(n: usize) -> (ActiveSet, Vec<NodeKeys>) {
        let keys: Vec<NodeKeys> = (0..n).map(|_| NodeKeys::generate().unwrap()).collect();
        let members = keys
            .iter()
            .map(|k| Member {
                id: NodeId::of(k.verifying_key()),
                key: k.verifying_key().clone(),
                weight: 1,
            })
            .collect();
        (ActiveSet::new(members).unwrap(), keys)
    }

    #[test]
    fn quorum_rule_is_strictly_more_than_the_fraction() {
        let q = Quorum::default();
        // 4 members: 3 is a quorum (9 > 8), 2 is not (6 > 8 fails).
        assert!(q.reached(3, 4));
        assert!(!q.reached(2, 4));
        // 3 members: exactly 2/3 is not more than 2/3.
        assert!(!q.reached(2, 3));
        assert!(q.reached(3, 3));
        // f+1: 2 of 4 can skip (6 > 4), 1 of 4 cannot (3 > 4 fails).
        assert!(q.skip(2, 4));
        assert!(!q.skip(1, 4));
        // No overflow at the edges.
        assert!(q.reached(u64::MAX, u64::MAX));
        assert!(!q.reached(0, u64::MAX));
    }

    #[test]
    fn quorum_bounds_are_checked() {
        assert!(Quorum::new(2, 3).is_ok());
        assert!(Quorum::new(1, 2).is_ok());
        assert!(Quorum::new(1, 3).is_err());
        assert!(Quorum::new(3, 3).is_err());
        assert!(Quorum::new(0, 0).is_err());
    }

    #[test]
    fn set_is_sorted_and_rejects_bad_members() {
        let (set, keys) = set_of(4);
        assert!(set.members().windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(set.total(), 4);
        let id = NodeId::of(keys[0].verifying_key());
        assert_eq!(set.weight(&id), 1);
        assert_eq!(set.weight(&NodeId([7; 32])), 0);

        let m = set.members()[0].clone();
        assert_eq!(
            ActiveSet::new(vec![m.clone(), m.clone()]),
            Err(SetError::Duplicate(m.id))
        );
        let zero = Member {
            weight: 0,
            ..m.clone()
        };
        assert_eq!(ActiveSet::new(vec![zero]), Err(SetError::ZeroWeight(m.id)));
        assert_eq!(ActiveSet::new(vec![]), Err(SetError::Empty));
        let big = Member {
            weight: u64::MAX,
            ..m
        };
        let other = Member {
            id: NodeId([0xff; 32]),
            ..big.clone()
        };
        assert_eq!(ActiveSet::new(vec![big, other]), Err(SetError::Overflow));
    }

    #[test]
    fn failover_order_keeps_the_proposer_first_and_depends_on_t() {
        let (set, _) = set_of(5);
        let p = set.members()[2].id;
        let a = set.failover_order(&Hash32([1; 32]), Some(&p));
        let b = set.failover_order(&Hash32([2; 32]), Some(&p));
        assert_eq!(a[0], p);
        assert_eq!(b[0], p);
        assert_eq!(a.len(), 5);
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 5, "every member exactly once");
        // Deterministic for one T; some T gives another order of the rest.
        assert_eq!(a, set.failover_order(&Hash32([1; 32]), Some(&p)));
        let differs = (0..16u8).any(|i| set.failover_order(&Hash32([i; 32]), Some(&p)) != a);
        assert!(differs);
        // A previous proposer that left the set is not ranked.
        let gone = NodeId([9; 32]);
        let c = set.failover_order(&Hash32([1; 32]), Some(&gone));
        assert_eq!(c.len(), 5);
        assert!(!c.contains(&gone));
    }

    #[test]
    fn rank_0_is_handed_over_every_tenure_but_never_in_window_1() {
        let over: Vec<u64> = (0..=100).filter(|w| hands_over(*w, 32)).collect();
        assert_eq!(over, vec![32, 64, 96]);
        assert!(!hands_over(1, 1));
        assert!((2..50).all(|w| hands_over(w, 1)));
        // A tenure of 0 (never produced by the rules) counts as 1, no panic.
        assert!(hands_over(7, 0));
    }
}
