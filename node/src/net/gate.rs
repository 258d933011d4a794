//! Who may hold a connection or start a handshake with us: the budgets,
//! and how often their refusals and failures are logged.
//!
//! Three budgets, none of which another can exhaust:
//! - Members of the active set (a [`super::MemberSet`] the node updates;
//!   the genesis peers to start with) have `max_peers` connection slots that
//!   nobody else can take. A member is known only once its handshake is
//!   done, and it then never needs a guest seat.
//! - Handshakes in progress: every inbound socket still in its handshake
//!   holds one of a pool of `max(4, max_peers / 4)` slots ([`pool_size`]),
//!   at most [`PER_IP`] from one source address, for at most
//!   [`HANDSHAKE_DEADLINE`] (or the configured handshake timeout if
//!   shorter). An IP listed in the genesis for peers that dial us (lower
//!   ids) may run that many handshakes plus one outside the pool, so idle
//!   sockets from elsewhere can never lock a genesis peer out of its
//!   handshake (on a shared host or NAT the allowance is shared with
//!   whoever else uses that address). When the pool is full, a newcomer
//!   takes the slot of the oldest handshake of the source address holding
//!   the most (ties: the one whose oldest is oldest), if that source holds
//!   at least two more than the newcomer's (the guests' rule below; the
//!   caller ends the evicted handshake, [`Gate::take_evicted`]); otherwise
//!   it is refused ([`Refusal::PoolFull`]). Two addresses reopening idle
//!   sockets, each freed only by the deadline, kept the pool full against
//!   every joiner and member outside the genesis; filling it now takes as
//!   many source addresses as it has slots.
//! - Guest seats: every established connection of a non-member holds one
//!   of [`guest_seats`] seats (as many as the handshake pool), at most
//!   [`PER_IP`] from one source address. Guests authenticated, so no
//!   deadline frees their seats: when they are all taken, a new guest
//!   takes the seat of the youngest guest of the source address holding
//!   the most seats (ties: the one whose youngest guest is youngest), if
//!   that source holds at least two more than the newcomer's; otherwise it
//!   is refused ([`Refusal::GuestsFull`]). The rule is Bitcoin Core's
//!   inbound eviction reduced to its netgroup step: what is taken is taken
//!   from the most represented source, never from a source holding as few
//!   as the newcomer's, so guest seats tend to one per source and churn
//!   stops there (a source cannot take back what it just lost); the oldest
//!   connections, the hardest for an attacker to have, are kept. Two
//!   addresses can no longer hold every guest seat against a third;
//!   holding them all takes as many source addresses as there are seats.
//!
//! Hence at most `max_peers + 2 pool` connections and sockets in all (and
//! briefly a few more: a reconnecting peer's new connection is seated
//! while its previous one closes, and an evicted guest closes just after
//! the newcomer is seated).
//!
//! - Handshake starts are rate-limited per source address (a token bucket
//!   of [`HANDSHAKE_BURST`] starts refilled one per [`HANDSHAKE_EVERY`];
//!   a genesis address with an allowance of n handshakes has n times
//!   both), so a source that opens a socket, fails its handshake at once
//!   and repeats costs us a bounded amount of ML-KEM and ML-DSA work. A
//!   socket over the rate is refused ([`Refusal::Rate`]) and closed before
//!   any cryptography. At most [`MAX_RATED_SOURCES`] sources are
//!   remembered besides the genesis addresses (never forgotten): a source
//!   whose bucket is full again is forgotten (it is as if new), and when
//!   all are in use a new source takes the place of the one whose bucket
//!   is fullest (as nginx's `limit_req` does with its least recently used
//!   state). Refusing new sources instead would let anyone with 4,096
//!   source addresses (a /52 of IPv6 /64s) lock every joiner out; the cost
//!   of the eviction is that a source with that many addresses gets more
//!   than one burst each, which it gets from using them anyway.
//! - A source address is what [`source`] makes of the socket's IP: an
//!   IPv4 address however it arrives (as `::ffff:a.b.c.d` on a dual-stack
//!   `[::]` listener too), and an IPv6 address's /64 (one host is commonly
//!   given a whole /64, so counting per /128 would give it 2^64 budgets).
//!   Every budget and log limit here is per source address.
//!
//! A handshake's [`Ticket`] is given back when the handshake ends; on
//! success [`Gate::seat`] gives the connection a [`Seat`]: a member's is
//! one of the `max_peers`; a non-member's a guest seat (and perhaps the
//! seat of a guest it evicted, whose connection the caller closes).
//!
//! Refusals and failed handshakes are counted always but logged at most once
//! per [`LOG_EVERY`] per source IP, so a flood writes a few lines, not one
//! per socket. Sans-IO: the server asks, the gate answers.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Handshakes in progress, and guest seats, from one source address.
pub const PER_IP: usize = 2;
/// Longest an inbound socket may take to authenticate.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// Handshakes a source address may start at once...
pub const HANDSHAKE_BURST: u32 = 16;
/// ... and then one per this period.
pub const HANDSHAKE_EVERY: Duration = Duration::from_millis(500);
/// Source addresses whose handshake starts are remembered (besides the
/// genesis addresses).
pub const MAX_RATED_SOURCES: usize = 4096;
/// At most one log line per source IP per this period.
pub use crate::lograte::LOG_EVERY;
/// Source IPs remembered for log rate-limiting; beyond this (and after
/// forgetting the stale ones) refusals are counted but not logged.
pub const MAX_LOGGED_IPS: usize = crate::lograte::MAX_LOG_KEYS;

/// The source address `ip` is counted as (see the module docs): IPv4 for
/// an IPv4-mapped IPv6 address, the /64 prefix (the rest zero) for IPv6.
pub fn source(ip: IpAddr) -> IpAddr {
    match super::discovery::canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// The pool of handshakes in progress: `max(4, max_peers / 4)`.
pub fn pool_size(max_peers: usize) -> usize {
    (max_peers / 4).max(4)
}

/// Guest seats (established connections of non-members): as many as the
/// handshake pool.
pub fn guest_seats(max_peers: usize) -> usize {
    pool_size(max_peers)
}

/// Why a socket or a connection was refused; `name()` is the metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The pool of handshakes in progress is full.
    PoolFull,
    /// This source address already holds [`PER_IP`] handshakes, or
    /// [`PER_IP`] guest seats.
    PerIp,
    /// Every guest seat is taken, and no source holds two more than this
    /// one's (nobody to evict).
    GuestsFull,
    /// Every member slot is taken.
    MembersFull,
    /// This source address started handshakes faster than its rate.
    Rate,
    /// The node is banned for misbehaviour ([`super::misbehaviour`]).
    Banned,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::PoolFull => "pool_full",
            Refusal::PerIp => "per_ip",
            Refusal::GuestsFull => "guests_full",
            Refusal::MembersFull => "members_full",
            Refusal::Rate => "rate",
            Refusal::Banned => "banned",
        }
    }
}

/// The slot a handshake holds; give it back with [`Gate::release`] (or
/// hand it to [`Gate::seat`], which gives it back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ticket {
    Reserved(IpAddr),
    /// A slot of the pool: the source, and the handshake's identity.
    General(IpAddr, HandshakeId),
}

/// A handshake in the pool: the order in which handshakes started.
pub type HandshakeId = u64;

/// A guest seat's identity: the order in which guests were seated.
pub type GuestId = u64;

/// The slot a connection holds; give it back with [`Gate::unseat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seat {
    /// One of the `max_peers` member slots.
    Member,
    /// A guest seat, counted against this source address.
    Guest { id: GuestId, source: IpAddr },
}

/// Per-source token buckets on handshake starts, as GCRA: per source the
/// time its bucket is full again ("theoretical arrival time").
#[derive(Debug)]
struct Rate {
    /// Genesis addresses: their factor (allowance), and their time.
    genesis: HashMap<IpAddr, (u32, Option<Instant>)>,
    others: HashMap<IpAddr, Instant>,
}

impl Rate {
    /// One handshake start from `src` at `now`, if within its rate.
    fn allow(&mut self, src: IpAddr, now: Instant) -> bool {
        let (factor, tat) = match self.genesis.get_mut(&src) {
            Some((f, tat)) => (*f, tat),
            None => {
                if !self.others.contains_key(&src) && self.others.len() >= MAX_RATED_SOURCES {
                    self.others.retain(|_, tat| *tat > now);
                    if self.others.len() >= MAX_RATED_SOURCES {
                        let fullest = self.others.iter().min_by_key(|(_, tat)| **tat);
                        if let Some(ip) = fullest.map(|(ip, _)| *ip) {
                            self.others.remove(&ip);
                        }
                    }
                }
                let tat = self.others.entry(src).or_insert(now);
                return Self::take(tat, 1, now);
            }
        };
        let t = tat.get_or_insert(now);
        Self::take(t, factor, now)
    }

    fn take(tat: &mut Instant, factor: u32, now: Instant) -> bool {
        let every = HANDSHAKE_EVERY / factor;
        let tolerance = every * (HANDSHAKE_BURST * factor - 1);
        let t = (*tat).max(now);
        if t > now + tolerance {
            return false;
        }
        *tat = t + every;
        true
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Gate {
    max_peers: usize,
    pool: usize,
    seats: usize,
    /// General handshakes in progress (in the pool), in all and per source.
    pending: BTreeMap<HandshakeId, IpAddr>,
    pending_per: HashMap<IpAddr, usize>,
    next_handshake: HandshakeId,
    /// The handshake the last [`Gate::admit`] evicted, if any.
    evicted: Option<HandshakeId>,
    allowance: HashMap<IpAddr, usize>,
    reserved: HashMap<IpAddr, usize>,
    /// Guest seats by id (the oldest first), and per source.
    guests: BTreeMap<GuestId, IpAddr>,
    guests_per: HashMap<IpAddr, usize>,
    next_guest: GuestId,
    members: usize,
    rate: Rate,
    logged: crate::lograte::LogRate<IpAddr>,
}

impl Gate {
    /// `max_peers` member slots, a handshake pool and guest seats sized
    /// from it; `genesis_ips` are the addresses of the genesis peers that
    /// dial us (one entry per peer).
    pub fn new(max_peers: usize, genesis_ips: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut allowance = HashMap::new();
        for ip in genesis_ips {
            *allowance.entry(source(ip)).or_insert(1) += 1;
        }
        let genesis = allowance
            .iter()
            .map(|(ip, n)| (*ip, (*n as u32, None)))
            .collect();
        Gate {
            max_peers,
            pool: pool_size(max_peers),
            seats: guest_seats(max_peers),
            pending: BTreeMap::new(),
            pending_per: HashMap::new(),
            next_handshake: 0,
            evicted: None,
            allowance,
            reserved: HashMap::new(),
            guests: BTreeMap::new(),
            guests_per: HashMap::new(),
            next_guest: 0,
            members: 0,
            rate: Rate {
                genesis,
                others: HashMap::new(),
            },
            logged: crate::lograte::LogRate::new(LOG_EVERY, MAX_LOGGED_IPS),
        }
    }

    /// Size of the handshake pool.
    pub fn pool(&self) -> usize {
        self.pool
    }

    /// Number of guest seats.
    pub fn guest_seats(&self) -> usize {
        self.seats
    }

    /// Member connections held.
    pub fn members(&self) -> usize {
        self.members
    }

    /// Whether a member slot is free (dialers wait for one).
    pub fn member_room(&self) -> bool {
        self.members < self.max_peers
    }

    /// Guest seats held.
    pub fn guests(&self) -> usize {
        self.guests.len()
    }

    /// May a socket from `ip` start a handshake at `now`? The pool and
    /// the per-source bound are checked first (a socket they refuse costs
    /// no token), then the source's rate.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<Ticket, Refusal> {
        let ip = source(ip);
        let allowed = self.allowance.get(&ip).copied().unwrap_or(0);
        let reserved = self.reserved.get(&ip).copied().unwrap_or(0) < allowed;
        let mut victim = None;
        if !reserved {
            let held = self.pending_per.get(&ip).copied().unwrap_or(0);
            if held >= PER_IP {
                return Err(Refusal::PerIp);
            }
            if self.pending.len() >= self.pool {
                victim = Some(self.oldest_of_most(held).ok_or(Refusal::PoolFull)?);
            }
        }
        if !self.rate.allow(ip, now) {
            return Err(Refusal::Rate);
        }
        if reserved {
            *self.reserved.entry(ip).or_insert(0) += 1;
            return Ok(Ticket::Reserved(ip));
        }
        if let Some(v) = victim {
            let src = self.pending[&v];
            self.release(Ticket::General(src, v));
        }
        self.evicted = victim;
        let id = self.next_handshake;
        self.next_handshake += 1;
        self.pending.insert(id, ip);
        *self.pending_per.entry(ip).or_insert(0) += 1;
        Ok(Ticket::General(ip, id))
    }

    /// The handshake the last [`Gate::admit`] evicted for its newcomer
    /// (its slot is gone; the caller ends it), once.
    pub fn take_evicted(&mut self) -> Option<HandshakeId> {
        self.evicted.take()
    }

    /// The handshake to evict from a full pool for a newcomer whose source
    /// holds `held`: the oldest of the source holding most, if that is at
    /// least `held + 2` (ties: the source whose oldest is oldest).
    fn oldest_of_most(&self, held: usize) -> Option<HandshakeId> {
        let most = self.pending_per.values().copied().max()?;
        if most < held + 2 {
            return None;
        }
        self.pending
            .iter()
            .find(|(_, ip)| self.pending_per[*ip] == most)
            .map(|(id, _)| *id)
    }

    /// The handshake ended.
    pub fn release(&mut self, t: Ticket) {
        match t {
            Ticket::Reserved(ip) => dec(&mut self.reserved, ip),
            Ticket::General(ip, id) => {
                // (An evicted handshake's slot is gone already.)
                if self.pending.remove(&id).is_some() {
                    dec(&mut self.pending_per, ip);
                }
            }
        }
    }

    /// A handshake (`ticket`: inbound, given back here; `None`: one we
    /// dialed) with a peer at `ip` succeeded: seats the connection, as a
    /// member or as a guest, and names the guest it evicted for it, if any
    /// (its seat is gone; the caller closes its connection). `replacing`:
    /// this peer's previous connection is still open and will close now,
    /// freeing its seat, so no new room is needed for it.
    pub fn seat(
        &mut self,
        ticket: Option<Ticket>,
        ip: IpAddr,
        member: bool,
        replacing: bool,
    ) -> Result<(Seat, Option<GuestId>), Refusal> {
        let ip = source(ip);
        if let Some(t) = ticket {
            self.release(t);
        }
        if member {
            if !replacing && self.members >= self.max_peers {
                return Err(Refusal::MembersFull);
            }
            self.members += 1;
            return Ok((Seat::Member, None));
        }
        let mut evicted = None;
        if !replacing {
            let held = self.guests_per.get(&ip).copied().unwrap_or(0);
            if held >= PER_IP {
                return Err(Refusal::PerIp);
            }
            if self.guests.len() >= self.seats {
                let victim = self.victim(held).ok_or(Refusal::GuestsFull)?;
                self.unseat(Seat::Guest {
                    id: victim,
                    source: self.guests[&victim],
                });
                evicted = Some(victim);
            }
        }
        let id = self.next_guest;
        self.next_guest += 1;
        self.guests.insert(id, ip);
        *self.guests_per.entry(ip).or_insert(0) += 1;
        Ok((Seat::Guest { id, source: ip }, evicted))
    }

    /// The guest to evict for a newcomer whose source holds `held` seats:
    /// the youngest guest of the source holding most, if that is at least
    /// `held + 2` (see the module docs).
    fn victim(&self, held: usize) -> Option<GuestId> {
        let most = self.guests_per.values().copied().max()?;
        if most < held + 2 {
            return None;
        }
        self.guests
            .iter()
            .rev()
            .find(|(_, ip)| self.guests_per[*ip] == most)
            .map(|(id, _)| *id)
    }

    /// A connection ended (an evicted guest's seat is already gone).
    pub fn unseat(&mut self, seat: Seat) {
        match seat {
            Seat::Member => self.members -= 1,
            Seat::Guest { id, source } => {
                if self.guests.remove(&id).is_some() {
                    dec(&mut self.guests_per, source);
                }
            }
        }
    }

    /// Handshakes in progress: in the pool, and reserved.
    pub fn in_progress(&self) -> usize {
        self.pending.len() + self.reserved.values().sum::<usize>()
    }

    /// Whether to log an event from `ip` now: at most once per
    /// [`LOG_EVERY`] per IP, and never while [`MAX_LOGGED_IPS`] recent IPs
    /// are remembered.
    pub fn should_log(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.logged.allow(source(ip), now).is_some()
    }
}

fn dec(m: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = m.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            m.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    /// A guest seated from `from` through its handshake.
    fn guest(g: &mut Gate, from: IpAddr, now: Instant) -> (Seat, Option<GuestId>) {
        let t = g.admit(from, now).unwrap();
        g.seat(Some(t), from, false, false).unwrap()
    }

    #[test]
    fn the_pool_and_the_per_ip_bound_hold() {
        let now = Instant::now();
        let mut g = Gate::new(64, []);
        assert_eq!(g.pool(), 16);
        assert_eq!(Gate::new(1, []).pool(), 4);
        let a = g.admit(ip(1), now).unwrap();
        let b = g.admit(ip(1), now).unwrap();
        assert_eq!(g.admit(ip(1), now), Err(Refusal::PerIp));
        g.release(b);
        let mut held = vec![a];
        for i in 2..=16 {
            held.push(g.admit(ip(i), now).unwrap());
        }
        assert_eq!(g.in_progress(), 16);
        // Nobody holds two: nobody gives way.
        assert_eq!(g.admit(ip(99), now), Err(Refusal::PoolFull));
        g.release(held.pop().unwrap());
        assert!(g.admit(ip(99), now).is_ok());
        // Released per-IP slots come back.
        assert_eq!(g.admit(ip(200), now), Err(Refusal::PoolFull));
        g.release(a);
        assert!(matches!(g.admit(ip(1), now), Ok(Ticket::General(a, _)) if a == ip(1)));
        assert_eq!(g.in_progress(), 16);
    }

    #[test]
    fn v4_mapped_addresses_count_as_ipv4() {
        let now = Instant::now();
        let peer = ip(7);
        let mapped = |a: IpAddr| match a {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            v6 => v6,
        };
        // Genesis addresses are IPv4; a dual-stack `[::]` listener sees them
        // mapped. The pool is full of idle sockets from elsewhere.
        let mut g = Gate::new(64, [peer]);
        for i in 0..16u8 {
            g.admit(mapped(IpAddr::from([10, 1, i / 2, i])), now)
                .unwrap();
        }
        let t = g.admit(mapped(peer), now).unwrap();
        assert_eq!(t, Ticket::Reserved(peer));
        // The same address, mapped or not, is one source for the per-IP bound.
        let mut g = Gate::new(64, []);
        g.admit(ip(1), now).unwrap();
        g.admit(mapped(ip(1)), now).unwrap();
        assert_eq!(g.admit(ip(1), now), Err(Refusal::PerIp));
        assert_eq!(g.admit(mapped(ip(1)), now), Err(Refusal::PerIp));
        // A guest from a mapped address is a guest of its IPv4 address.
        let mut g = Gate::new(64, []);
        let (seat, _) = guest(&mut g, mapped(ip(2)), now);
        assert_eq!(
            seat,
            Seat::Guest {
                id: 0,
                source: ip(2)
            }
        );
        guest(&mut g, ip(2), now);
        assert_eq!(
            g.seat(None, mapped(ip(2)), false, false),
            Err(Refusal::PerIp)
        );
        assert_eq!((g.guests(), g.in_progress()), (2, 0));
    }

    #[test]
    fn ipv6_sources_are_counted_per_64() {
        let now = Instant::now();
        let mut g = Gate::new(64, []);
        let host = |prefix: u16, low: u64| {
            IpAddr::V6(((u128::from(prefix) << 112) | u128::from(low)).into())
        };
        // One /64, many addresses: PER_IP in all.
        g.admit(host(0x2001, 1), now).unwrap();
        g.admit(host(0x2001, 2), now).unwrap();
        assert_eq!(g.admit(host(0x2001, 3), now), Err(Refusal::PerIp));
        assert_eq!(g.admit(host(0x2001, u64::MAX), now), Err(Refusal::PerIp));
        // Another /64 has its own.
        g.admit(host(0x2002, 3), now).unwrap();
        // Logged once per /64 too.
        assert!(g.should_log(host(0x2003, 1), now));
        assert!(!g.should_log(host(0x2003, 2), now));
        // Rate-limited per /64 as well.
        let mut g = Gate::new(64, []);
        for i in 0..HANDSHAKE_BURST {
            let t = g.admit(host(0x2004, u64::from(i)), now).unwrap();
            g.release(t);
        }
        assert_eq!(g.admit(host(0x2004, 999), now), Err(Refusal::Rate));
    }

    #[test]
    fn genesis_addresses_are_never_locked_out() {
        let now = Instant::now();
        let peer = ip(7);
        let mut g = Gate::new(64, [peer, peer]);
        // The general pool is full of idle sockets from elsewhere.
        for i in 0..16u8 {
            g.admit(IpAddr::from([10, 1, i / 2, i]), now).unwrap();
        }
        assert_eq!(g.admit(ip(50), now), Err(Refusal::PoolFull));
        // Two genesis peers at that address, plus one spare.
        let t: Vec<_> = (0..3).map(|_| g.admit(peer, now).unwrap()).collect();
        assert!(t.iter().all(|t| matches!(t, Ticket::Reserved(_))));
        assert_eq!(g.admit(peer, now), Err(Refusal::PoolFull));
        g.release(t[0]);
        assert_eq!(g.admit(peer, now), Ok(Ticket::Reserved(peer)));
    }

    /// Two source addresses reopening idle sockets (each freed by the
    /// handshake deadline) kept the pool full for good: a joiner or a member
    /// outside the genesis could not start a handshake. Now a newcomer from
    /// an address holding none takes the place of the oldest handshake of
    /// the address holding most (two); an address holding one does not, so
    /// the evicted source cannot take its place back at once.
    #[test]
    fn two_sources_reopening_idle_sockets_lock_nobody_out_of_the_pool() {
        let now = Instant::now();
        let mut g = Gate::new(16, []);
        assert_eq!(g.pool(), 4);
        let mut idle = Vec::new();
        for i in [1, 1, 2, 2] {
            idle.push(g.admit(ip(i), now).unwrap());
            assert_eq!(g.take_evicted(), None);
        }
        // A newcomer gets in, in place of ip(1)'s oldest.
        let t = g
            .admit(ip(3), now)
            .expect("the newcomer starts its handshake");
        let Ticket::General(_, oldest) = idle[0] else {
            panic!()
        };
        assert_eq!(g.take_evicted(), Some(oldest));
        assert_eq!(g.take_evicted(), None, "once");
        assert_eq!(g.in_progress(), 4);
        // The evicted handshake's end gives nothing back twice.
        g.release(idle[0]);
        assert_eq!(g.in_progress(), 4);
        // ip(1) holds one now, as many as ip(3): it cannot take a place
        // back; ip(2) still holds two, so another newcomer gets in.
        assert_eq!(g.admit(ip(1), now), Err(Refusal::PoolFull));
        g.admit(ip(4), now).expect("a second newcomer");
        let Ticket::General(_, oldest_of_2) = idle[2] else {
            panic!()
        };
        assert_eq!(g.take_evicted(), Some(oldest_of_2));
        // Everyone holds one: full, nobody evicted.
        assert_eq!(g.admit(ip(5), now), Err(Refusal::PoolFull));
        assert_eq!(g.take_evicted(), None);
        // The newcomer's handshake ends normally.
        g.release(t);
        assert_eq!(g.in_progress(), 3);
        // A socket over its rate evicts nobody.
        let mut g = Gate::new(16, []);
        for _ in 0..HANDSHAKE_BURST {
            let t = g.admit(ip(9), now).unwrap();
            g.release(t);
        }
        for i in [1, 1, 2, 2] {
            g.admit(ip(i), now).unwrap();
        }
        assert_eq!(g.admit(ip(9), now), Err(Refusal::Rate));
        assert_eq!(g.take_evicted(), None);
        assert_eq!(g.in_progress(), 4);
    }

    /// Two source addresses holding two idle guests each (authenticated:
    /// no deadline frees them) held every slot a handshake needed, for
    /// good: a candidate joiner, or a member outside the genesis (known as
    /// a member only after its handshake), could never get in.
    #[test]
    fn two_sources_holding_every_guest_seat_lock_nobody_out() {
        let now = Instant::now();
        let mut g = Gate::new(16, []);
        assert_eq!((g.pool(), g.guest_seats()), (4, 4));
        let mut seats = Vec::new();
        for i in [1, 1, 2, 2] {
            let (seat, evicted) = guest(&mut g, ip(i), now);
            assert_eq!(evicted, None);
            seats.push(seat);
        }
        assert_eq!((g.guests(), g.in_progress()), (4, 0));
        // A member outside the genesis: its handshake starts, and it
        // takes a member slot, not a guest seat.
        let t = g.admit(ip(3), now).expect("a handshake starts");
        assert_eq!(
            g.seat(Some(t), ip(3), true, false),
            Ok((Seat::Member, None))
        );
        assert_eq!((g.guests(), g.members(), g.in_progress()), (4, 1, 0));
        // A candidate joiner from a third address takes the seat of the
        // youngest guest of the address holding most (a tie: the one with
        // the youngest guest).
        let (_, evicted) = guest(&mut g, ip(3), now);
        assert_eq!(evicted, Some(3), "{seats:?}");
        // Then ip(1) holds most: its youngest gives way to a fourth address.
        let (_, evicted) = guest(&mut g, ip(4), now);
        assert_eq!(evicted, Some(1));
        assert_eq!(g.guests(), 4);
        // One each now: a fifth address finds nobody to evict, and an
        // address holding one cannot take from another holding one.
        let t = g.admit(ip(5), now).unwrap();
        assert_eq!(
            g.seat(Some(t), ip(5), false, false),
            Err(Refusal::GuestsFull)
        );
        assert_eq!(g.in_progress(), 0, "the refused ticket was given back");
        assert_eq!(g.seat(None, ip(1), false, false), Err(Refusal::GuestsFull));
        // The evicted guests' connections end later: their seats are
        // gone already, and giving them back changes nothing.
        g.unseat(seats[3]);
        g.unseat(seats[1]);
        assert_eq!(g.guests(), 4);
        // The per-address bound holds for guests too.
        g.unseat(seats[0]);
        guest(&mut g, ip(3), now);
        assert_eq!(g.seat(None, ip(3), false, false), Err(Refusal::PerIp));
        // A reconnecting guest, whose previous connection closes now, is
        // seated whatever the room.
        assert!(g.seat(None, ip(3), false, true).is_ok());
        assert_eq!(g.guests(), 5);
    }

    #[test]
    fn members_have_slots_guests_never_take() {
        let now = Instant::now();
        // max_peers 6: 6 member slots, 4 guest seats, a pool of 4.
        let mut g = Gate::new(6, []);
        assert_eq!((g.pool(), g.guest_seats()), (4, 4));
        assert_eq!(pool_size(16), 4);
        assert_eq!(pool_size(64), 16);
        assert_eq!(pool_size(0), 4);
        // Four guests from four addresses fill the guest seats.
        let mut guests = Vec::new();
        for i in [1, 2, 3, 4] {
            guests.push(guest(&mut g, ip(i), now).0);
        }
        assert_eq!(g.guests(), 4);
        // A fifth non-member is refused after its handshake, or when dialed.
        assert_eq!(g.seat(None, ip(5), false, false), Err(Refusal::GuestsFull));
        // Members still get all six of theirs (dialed: no ticket).
        for _ in 0..6 {
            assert!(g.member_room());
            assert_eq!(g.seat(None, ip(9), true, false), Ok((Seat::Member, None)));
        }
        assert!(!g.member_room());
        assert_eq!(g.seat(None, ip(9), true, false), Err(Refusal::MembersFull));
        // ... except a reconnecting member, whose old seat is freed as it closes.
        assert_eq!(g.seat(None, ip(9), true, true), Ok((Seat::Member, None)));
        g.unseat(Seat::Member);
        assert_eq!(g.members(), 6);
        // A guest leaving makes room for one more, a member leaving for a member.
        g.unseat(guests.pop().unwrap());
        assert!(g.seat(None, ip(5), false, false).is_ok());
        g.unseat(Seat::Member);
        assert_eq!(g.seat(None, ip(6), false, false), Err(Refusal::GuestsFull));
        assert_eq!(g.seat(None, ip(6), true, false), Ok((Seat::Member, None)));
    }

    #[test]
    fn a_handshake_ticket_is_given_back_when_seated() {
        let now = Instant::now();
        let peer = ip(7);
        let mut g = Gate::new(8, [peer]);
        // General ticket -> guest: the pool slot back, a guest seat taken.
        let t = g.admit(ip(1), now).unwrap();
        assert_eq!(g.in_progress(), 1);
        assert!(matches!(
            g.seat(Some(t), ip(1), false, false),
            Ok((Seat::Guest { .. }, None))
        ));
        assert_eq!((g.in_progress(), g.guests()), (0, 1));
        // General ticket -> member.
        let t = g.admit(ip(2), now).unwrap();
        assert_eq!(
            g.seat(Some(t), ip(2), true, false),
            Ok((Seat::Member, None))
        );
        assert_eq!((g.in_progress(), g.guests(), g.members()), (0, 1, 1));
        // Reserved ticket (a genesis address) -> member.
        let t = g.admit(peer, now).unwrap();
        assert_eq!(t, Ticket::Reserved(peer));
        assert_eq!(g.seat(Some(t), peer, true, false), Ok((Seat::Member, None)));
        // A refused seat gives the ticket back too.
        for i in 10..13 {
            g.seat(None, ip(i), false, false).unwrap();
        }
        let t = g.admit(peer, now).unwrap();
        assert_eq!(
            g.seat(Some(t), peer, false, false),
            Err(Refusal::GuestsFull)
        );
        assert_eq!(g.in_progress(), 0, "the refused ticket was given back");
    }

    /// A source opening sockets and failing its handshake at once, again
    /// and again, made us do ML-KEM and ML-DSA work each time.
    #[test]
    fn handshake_starts_are_rate_limited_per_source() {
        let t0 = Instant::now();
        let mut g = Gate::new(64, [ip(7)]);
        let start =
            |g: &mut Gate, from: IpAddr, at: Instant| g.admit(from, at).map(|t| g.release(t));
        for _ in 0..HANDSHAKE_BURST {
            start(&mut g, ip(1), t0).unwrap();
        }
        assert_eq!(start(&mut g, ip(1), t0), Err(Refusal::Rate));
        // Other sources have their own budget.
        start(&mut g, ip(2), t0).unwrap();
        // One more per period, and no more.
        let t1 = t0 + HANDSHAKE_EVERY;
        start(&mut g, ip(1), t1).unwrap();
        assert_eq!(start(&mut g, ip(1), t1), Err(Refusal::Rate));
        // A socket refused by the pool or the per-IP bound costs no token.
        let held: Vec<_> = (0..2).map(|_| g.admit(ip(3), t0).unwrap()).collect();
        for _ in 0..100 {
            assert_eq!(g.admit(ip(3), t0), Err(Refusal::PerIp));
        }
        held.into_iter().for_each(|t| g.release(t));
        for _ in 2..HANDSHAKE_BURST {
            start(&mut g, ip(3), t0).unwrap();
        }
        assert_eq!(start(&mut g, ip(3), t0), Err(Refusal::Rate));
        // The full burst again once refilled.
        let t2 = t1 + HANDSHAKE_EVERY * HANDSHAKE_BURST;
        for _ in 0..HANDSHAKE_BURST {
            start(&mut g, ip(1), t2).unwrap();
        }
        assert_eq!(start(&mut g, ip(1), t2), Err(Refusal::Rate));
        // A genesis address (one peer dials us from it: an allowance of 2)
        // has twice the burst and twice the rate.
        for _ in 0..2 * HANDSHAKE_BURST {
            start(&mut g, ip(7), t0).unwrap();
        }
        assert_eq!(start(&mut g, ip(7), t0), Err(Refusal::Rate));
        start(&mut g, ip(7), t0 + HANDSHAKE_EVERY / 2).unwrap();
        assert_eq!(
            start(&mut g, ip(7), t0 + HANDSHAKE_EVERY / 2),
            Err(Refusal::Rate)
        );
    }

    #[test]
    fn the_sources_rate_limited_are_bounded_and_stale_ones_forgotten() {
        let t0 = Instant::now();
        let mut g = Gate::new(64, [ip(7)]);
        let start =
            |g: &mut Gate, from: IpAddr, at: Instant| g.admit(from, at).map(|t| g.release(t));
        let src = |i: u32| IpAddr::from((i + 1000).to_be_bytes());
        let us = Duration::from_micros(1);
        for i in 0..MAX_RATED_SOURCES as u32 {
            start(&mut g, src(i), t0 + us * i).unwrap();
        }
        let t1 = t0 + us * MAX_RATED_SOURCES as u32;
        // Full of sources that started a handshake just now. A new one
        // still gets in (refusing it would lock every new source out): it
        // takes the place of the source whose bucket is fullest, the one
        // that started longest ago.
        start(&mut g, ip(1), t1).unwrap();
        assert_eq!(g.rate.others.len(), MAX_RATED_SOURCES);
        assert!(!g.rate.others.contains_key(&src(0)));
        assert!(g.rate.others.contains_key(&src(1)));
        // A known source keeps what it spent, a genesis address its own.
        for _ in 1..HANDSHAKE_BURST {
            start(&mut g, ip(1), t1).unwrap();
        }
        assert_eq!(start(&mut g, ip(1), t1), Err(Refusal::Rate));
        start(&mut g, ip(7), t1).unwrap();
        assert_eq!(g.rate.genesis.len(), 1);
        // Once their buckets are full again they are forgotten.
        let later = t1 + HANDSHAKE_EVERY * HANDSHAKE_BURST;
        start(&mut g, ip(2), later).unwrap();
        assert_eq!(g.rate.others.len(), 1);
        assert_eq!(g.rate.genesis.len(), 1);
    }

    #[test]
    fn logging_is_rate_limited_per_ip_and_bounded() {
        let mut g = Gate::new(64, []);
        let t0 = Instant::now();
        assert!(g.should_log(ip(1), t0));
        assert!(!g.should_log(ip(1), t0 + Duration::from_secs(59)));
        assert!(g.should_log(ip(2), t0));
        assert!(g.should_log(ip(1), t0 + LOG_EVERY));
        for i in 0..MAX_LOGGED_IPS as u32 {
            g.should_log(IpAddr::from((i + 1000).to_be_bytes()), t0 + LOG_EVERY);
        }
        assert!(!g.should_log(ip(3), t0 + LOG_EVERY), "bounded memory");
        assert!(
            g.should_log(ip(3), t0 + 3 * LOG_EVERY),
            "stale ones forgotten"
        );
    }
}
