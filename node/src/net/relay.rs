//! Relay: forward each message once to the connected peers that do not
//! have it yet, so no node needs a connection to everyone.
//!
//! A layer of its own, sans-IO, that a gossip library could later replace:
//! once a message from a peer passed the node's cheap checks, the node
//! tells it so and learns whom to forward it to ([`Relay::accepted`]; for
//! its own messages [`Relay::observe`] and [`Relay::forward_to`]); the node
//! does the sending. What does not decode or is refused never enters the
//! cache, so junk cannot push real ids out.
//!
//! - A message is identified by [`message_id`]: SHA-256 of its type and
//!   payload (or any 32-byte id the caller prefers, e.g. a vote's
//!   `(kind, window, round, value, signer)` digest, since one vote can be
//!   re-signed into many byte strings).
//! - The seen-cache is bounded: two generations of at most `capacity / 2`
//!   ids each; when the current one is full it becomes the previous one and
//!   the oldest generation is forgotten (an approximate LRU with O(1) work
//!   per message and at most `capacity` ids in memory). For each id it keeps
//!   up to [`MAX_TRACKED_PEERS`] peers known to have it (they sent it to us,
//!   or we sent it to them).
//! - A message is forwarded once, to every connected peer not known to
//!   have it. A copy seen again goes only to the peers that connected since
//!   ([`Relay::forward_missing`]); a peer whose connection comes up again
//!   is forgotten as having anything ([`Relay::forget`], O(1): the peer
//!   moves to its next epoch and entries noted in an earlier epoch count
//!   as absent; it used to walk the whole cache), so the copies
//!   resent while a window is undecided reach a restarted node through
//!   nodes that already had them, without flooding the network again. A message forgotten by the cache and seen again is treated
//!   as new (at worst one more round of forwarding, which the receivers'
//!   caches stop).

use std::collections::HashMap;

use montana_vdf::HashSuite;

/// A message's identity in the cache.
pub type MessageId = [u8; 32];

/// Peers remembered per message (more are possible; they may get a copy
/// they already have).
pub const MAX_TRACKED_PEERS: usize = 64;
/// Default capacity: ids remembered at most.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// SHA-256 of `msg_type || payload`.
pub fn message_id(msg_type: u8, payload: &[u8]) -> MessageId {
    let mut b = Vec::with_capacity(1 + payload.len());
    b.push(msg_type);
    b.extend_from_slice(payload);
    HashSuite::Sha256.hash(&b).0
}

/// The epoch of each peer id: [`Relay::forget`] moves a peer to its next
/// epoch, and what was remembered of it in an earlier one no longer counts.
#[derive(Debug, Default)]
struct Epochs(HashMap<u16, u32>);

impl Epochs {
    fn of(&self, peer: u16) -> u32 {
        self.0.get(&peer).copied().unwrap_or(0)
    }

    fn has(&self, known: (u16, u32)) -> bool {
        self.of(known.0) == known.1
    }
}

#[derive(Clone, Debug, Default)]
struct Seen {
    /// Peers known to have the message, each with its epoch when it was
    /// noted (an entry of an earlier epoch is stale: as if absent).
    peers: Vec<(u16, u32)>,
    forwarded: bool,
}

impl Seen {
    fn has(&self, peer: u16, epochs: &Epochs) -> bool {
        self.peers.iter().any(|&k| k.0 == peer && epochs.has(k))
    }

    fn note(&mut self, peer: u16, epochs: &Epochs) {
        let now = (peer, epochs.of(peer));
        if let Some(k) = self.peers.iter_mut().find(|k| k.0 == peer) {
            *k = now;
        } else if self.peers.len() < MAX_TRACKED_PEERS {
            self.peers.push(now);
        } else if let Some(k) = self.peers.iter_mut().find(|k| !epochs.has(**k)) {
            // A forgotten peer's place.
            *k = now;
        }
    }

    /// The peers among `connected` not known to have it, remembered as
    /// having it from now on (they are about to be sent it).
    fn lacking(&mut self, connected: &[u16], epochs: &Epochs) -> Vec<u16> {
        let out: Vec<u16> = connected
            .iter()
            .copied()
            .filter(|&p| !self.has(p, epochs))
            .collect();
        for &p in &out {
            self.note(p, epochs);
        }
        out
    }
}

/// The relay's state: a bounded seen-cache. See the module docs.
#[derive(Debug)]
pub struct Relay {
    current: HashMap<MessageId, Seen>,
    previous: HashMap<MessageId, Seen>,
    generation: usize,
    epochs: Epochs,
    /// Cache entries visited by [`Relay::forget`] (tests: its cost; none
    /// since peers have epochs, where it visited every cached id).
    #[cfg(test)]
    forget_visits: usize,
}

impl Default for Relay {
    fn default() -> Self {
        Relay::new(DEFAULT_CAPACITY)
    }
}

impl Relay {
    /// A relay remembering at most `capacity` ids (at least 2).
    pub fn new(capacity: usize) -> Self {
        Relay {
            current: HashMap::new(),
            previous: HashMap::new(),
            generation: (capacity / 2).max(1),
            epochs: Epochs::default(),
            #[cfg(test)]
            forget_visits: 0,
        }
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry for `id`, created if new (the bool says so), and the
    /// peers' epochs; a hit in the previous generation moves it to the
    /// current one.
    fn entry(&mut self, id: MessageId) -> (&mut Seen, &Epochs, bool) {
        let mut new = false;
        if !self.current.contains_key(&id) {
            let seen = match self.previous.remove(&id) {
                Some(s) => s,
                None => {
                    new = true;
                    Seen::default()
                }
            };
            if self.current.len() >= self.generation {
                self.previous = std::mem::take(&mut self.current);
            }
            self.current.insert(id, seen);
        }
        (
            self.current.get_mut(&id).expect("just inserted"),
            &self.epochs,
            new,
        )
    }

    /// Whether `id` is seen for the first time (and remembers it).
    pub fn first_seen(&mut self, id: MessageId) -> bool {
        self.entry(id).2
    }

    /// `id` arrived from `from` (`None`: we made it). Returns whether it is
    /// new: the caller checks a new message and then calls
    /// [`Relay::forward_to`]; a copy seen before is dropped (its sender is
    /// remembered, so it is not sent back).
    pub fn observe(&mut self, id: MessageId, from: Option<u16>) -> bool {
        let (seen, epochs, new) = self.entry(id);
        if let Some(p) = from {
            seen.note(p, epochs);
        }
        new
    }

    /// The peers among `connected` to forward `id` to: those not known to
    /// have it, the first time this is asked for `id`; nothing after. They
    /// are remembered as having it.
    pub fn forward_to(&mut self, id: MessageId, connected: &[u16]) -> Vec<u16> {
        let (seen, epochs, _) = self.entry(id);
        if seen.forwarded {
            return Vec::new();
        }
        seen.forwarded = true;
        seen.lacking(connected, epochs)
    }

    /// For a copy seen again: the peers among `connected` not known to have
    /// `id`, if it was forwarded before (peers that connected since then;
    /// they are remembered as having it). Nothing for a message that was
    /// never forwarded (refused, or still being checked).
    pub fn forward_missing(&mut self, id: MessageId, connected: &[u16]) -> Vec<u16> {
        let (seen, epochs, _) = self.entry(id);
        if !seen.forwarded {
            return Vec::new();
        }
        seen.lacking(connected, epochs)
    }

    /// `peer`'s connection came up (again): it is no longer known to have
    /// any message (a restarted node lost what it had). O(1): the peer
    /// moves to its next epoch, and what the cache remembers of it from
    /// earlier epochs counts as absent (no entry is visited, so a peer
    /// reconnecting in a loop costs nothing per cached id).
    pub fn forget(&mut self, peer: u16) {
        let e = self.epochs.0.entry(peer).or_insert(0);
        *e = e.wrapping_add(1);
    }

    /// A copy of `id` from `from` that passed the node's checks: remembers
    /// the sender and returns whom to forward it to ([`Relay::forward_to`]
    /// for a new id, [`Relay::forward_missing`] for a copy seen before).
    /// Only what passed the checks may enter the cache: ids of junk (what
    /// does not decode, or is refused) would push real ids out, and the
    /// next resend of a real one would go to every peer again.
    pub fn accepted(&mut self, id: MessageId, from: u16, connected: &[u16]) -> Vec<u16> {
        if self.observe(id, Some(from)) {
            self.forward_to(id, connected)
        } else {
            self.forward_missing(id, connected)
        }
    }

    /// [`Relay::observe`] and, if new, [`Relay::forward_to`] in one call:
    /// for a message that needs no check before it is forwarded.
    pub fn should_forward(
        &mut self,
        id: MessageId,
        from: Option<u16>,
        connected: &[u16],
    ) -> Vec<u16> {
        if self.observe(id, from) {
            self.forward_to(id, connected)
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> MessageId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_le_bytes());
        b
    }

    #[test]
    fn ids_hash_type_and_payload() {
        assert_ne!(message_id(16, b"x"), message_id(17, b"x"));
        assert_ne!(message_id(16, b"x"), message_id(16, b"y"));
        assert_eq!(message_id(16, b"x"), message_id(16, b"x"));
        // Not ambiguous across the type/payload boundary.
        assert_eq!(message_id(16, &[17]), HashSuite::Sha256.hash(&[16, 17]).0);
    }

    #[test]
    fn a_message_goes_once_to_each_peer_that_lacks_it() {
        let mut r = Relay::new(100);
        let m = id(1);
        assert!(r.observe(m, Some(3)));
        // While it is checked, peer 5 sends it too.
        assert!(!r.observe(m, Some(5)));
        assert_eq!(r.forward_to(m, &[1, 3, 5, 7]), vec![1, 7]);
        assert_eq!(r.forward_to(m, &[1, 3, 5, 7, 9]), Vec::<u16>::new());
        assert!(!r.observe(m, Some(9)));
        // Seen again: only a peer that connected since gets it, once.
        assert_eq!(r.forward_missing(m, &[1, 3, 5, 7, 9, 11]), vec![11]);
        assert_eq!(
            r.forward_missing(m, &[1, 3, 5, 7, 9, 11]),
            Vec::<u16>::new()
        );
        // Peer 7 reconnected (a restart): the next copy goes to it again.
        r.forget(7);
        assert_eq!(r.forward_missing(m, &[1, 3, 5, 7, 9, 11]), vec![7]);
        // A message never forwarded (refused) is not forwarded again.
        assert!(r.observe(id(4), Some(1)));
        assert_eq!(r.forward_missing(id(4), &[1, 2]), Vec::<u16>::new());
        // Our own message goes to everyone.
        assert_eq!(r.should_forward(id(2), None, &[1, 3]), vec![1, 3]);
        assert_eq!(r.should_forward(id(2), Some(1), &[1, 3]), Vec::<u16>::new());
        assert!(r.first_seen(id(3)));
        assert!(!r.first_seen(id(3)));
    }

    #[test]
    fn an_accepted_copy_is_forwarded_once_then_only_to_newcomers() {
        let mut r = Relay::new(100);
        assert_eq!(r.accepted(id(1), 3, &[1, 3]), vec![1]);
        assert_eq!(r.accepted(id(1), 1, &[1, 3]), Vec::<u16>::new());
        assert_eq!(r.accepted(id(1), 1, &[1, 3, 5]), vec![5]);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_recent_ids() {
        let mut r = Relay::new(100);
        for n in 0..10_000 {
            assert!(r.first_seen(id(n)));
            assert!(r.len() <= 100, "{} ids held", r.len());
        }
        // The last 50 are surely remembered; the first long forgotten.
        for n in 9_950..10_000 {
            assert!(!r.first_seen(id(n)), "{n} forgotten too early");
        }
        assert!(r.first_seen(id(0)));
        // A message kept hot survives many generations.
        let mut r = Relay::new(10);
        r.first_seen(id(999));
        for n in 0..1000 {
            r.first_seen(id(n));
            if n % 4 == 0 {
                assert!(!r.first_seen(id(999)), "hot id forgotten at {n}");
            }
        }
    }

    /// A peer reconnecting in a loop made every reconnection walk the
    /// whole cache (up to 65,536 ids): forgetting a peer must cost the
    /// same however many ids are cached, and still work.
    #[test]
    fn forgetting_a_peer_does_not_walk_the_cache() {
        let visits = |cached: u32| {
            let mut r = Relay::new(2 * cached as usize);
            for n in 0..cached {
                r.observe(id(n), Some(7));
            }
            let before = r.forget_visits;
            for _ in 0..100 {
                r.forget(7);
            }
            // Forgotten: every cached id goes to peer 7 again, once.
            for n in 0..cached {
                assert_eq!(r.forward_to(id(n), &[7, 8]), vec![7, 8], "id {n}");
            }
            r.forget_visits - before
        };
        assert_eq!(visits(10), visits(10_000));
        assert!(visits(10_000) <= 100, "{} entries visited", visits(10_000));
        // A forgotten peer that sends an id again is known to have it again;
        // other peers are not forgotten with it.
        let mut r = Relay::new(100);
        r.observe(id(1), Some(7));
        r.observe(id(1), Some(8));
        r.forget(7);
        r.observe(id(1), Some(7));
        assert_eq!(r.forward_to(id(1), &[7, 8, 9]), vec![9]);
        r.forget(8);
        assert_eq!(r.forward_missing(id(1), &[7, 8, 9]), vec![8]);
        // Forgetting frees the tracking room a peer took: with every place
        // held by forgotten peers, new ones are still tracked.
        let mut r = Relay::new(10);
        for p in 0..MAX_TRACKED_PEERS as u16 {
            r.observe(id(2), Some(p));
            r.forget(p);
        }
        r.observe(id(2), Some(1000));
        assert_eq!(r.forward_to(id(2), &[1000, 1001]), vec![1001]);
    }

    #[test]
    fn peers_tracked_per_message_are_bounded() {
        let mut r = Relay::new(10);
        let m = id(1);
        for p in 0..1000u16 {
            r.observe(m, Some(p));
        }
        let connected: Vec<u16> = (0..1000).collect();
        // The first 64 senders are known to have it; the rest get a copy.
        assert_eq!(r.forward_to(m, &connected).len(), 1000 - MAX_TRACKED_PEERS);
    }
}
