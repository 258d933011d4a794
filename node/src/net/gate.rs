//! Who may hold a connection or start a handshake with us: the budgets,
//! and how often their refusals and failures are logged.
//!
//! - Members of the active set (a [`super::MemberSet`] the node updates;
//!   the genesis peers to start with) have `max_peers` connection slots that
//!   nobody else can take.
//! - Everyone else shares a separate pool of `max(4, max_peers / 4)` slots
//!   ([`pool_size`]): every inbound socket still in its handshake holds one,
//!   and so does every established connection of a non-member; at most
//!   [`PER_IP`] of them from one source address. Hence at most
//!   `max_peers + pool` connections and sockets in all.
//! - A source address is what [`source`] makes of the socket's IP: an
//!   IPv4 address however it arrives (as `::ffff:a.b.c.d` on a dual-stack
//!   `[::]` listener too), and an IPv6 address's /64 (one host is commonly
//!   given a whole /64, so counting per /128 would give it 2^64 budgets).
//!   Every budget and log limit below is per source address.
//! - An allowance per genesis address: an IP listed in the genesis for
//!   peers that dial us (lower ids) may run that many handshakes plus one
//!   outside the pool, so idle sockets from elsewhere can never lock a
//!   genesis peer out of its handshake (on a shared host or NAT the
//!   allowance is shared with whoever else uses that address).
//! - Each inbound handshake must finish within [`HANDSHAKE_DEADLINE`] (or
//!   the configured handshake timeout if shorter).
//!
//! A handshake's [`Ticket`] becomes a connection's [`Seat`] with
//! [`Gate::seat`]: a member's seat is one of the `max_peers`; a non-member
//! keeps (or takes) a pool slot.
//!
//! Refusals and failed handshakes are counted always but logged at most once
//! per [`LOG_EVERY`] per source IP, so a flood writes a few lines, not one
//! per socket. Sans-IO: the server asks, the gate answers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sockets in the pool (handshakes and non-member connections) from one
/// source IP.
pub const PER_IP: usize = 2;
/// Longest an inbound socket may take to authenticate.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
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

/// The pool shared by handshakes and non-members: `max(4, max_peers / 4)`.
pub fn pool_size(max_peers: usize) -> usize {
    (max_peers / 4).max(4)
}

/// Why a socket or a connection was refused; `name()` is the metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The pool (handshakes and non-members) is full.
    PoolFull,
    /// This source IP already holds [`PER_IP`] pool slots.
    PerIp,
    /// Every member slot is taken.
    MembersFull,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::PoolFull => "pool_full",
            Refusal::PerIp => "per_ip",
            Refusal::MembersFull => "members_full",
        }
    }
}

/// The slot a handshake holds; turn it into a [`Seat`] with [`Gate::seat`]
/// or give it back with [`Gate::release`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ticket {
    Reserved(IpAddr),
    General(IpAddr),
}

/// The slot a connection holds; give it back with [`Gate::unseat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seat {
    /// One of the `max_peers` member slots.
    Member,
    /// A pool slot, counted against this source IP.
    Guest(IpAddr),
}

/// See the module docs.
#[derive(Debug)]
pub struct Gate {
    max_peers: usize,
    pool: usize,
    /// Pool slots in use: general handshakes and guest connections.
    general: usize,
    per_ip: HashMap<IpAddr, usize>,
    allowance: HashMap<IpAddr, usize>,
    reserved: HashMap<IpAddr, usize>,
    members: usize,
    logged: crate::lograte::LogRate<IpAddr>,
}

impl Gate {
    /// `max_peers` member slots and a pool sized from it; `genesis_ips` are
    /// the addresses of the genesis peers that dial us (one entry per peer).
    pub fn new(max_peers: usize, genesis_ips: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut allowance = HashMap::new();
        for ip in genesis_ips {
            *allowance.entry(source(ip)).or_insert(1) += 1;
        }
        Gate {
            max_peers,
            pool: pool_size(max_peers),
            general: 0,
            per_ip: HashMap::new(),
            allowance,
            reserved: HashMap::new(),
            members: 0,
            logged: crate::lograte::LogRate::new(LOG_EVERY, MAX_LOGGED_IPS),
        }
    }

    /// Size of the pool.
    pub fn pool(&self) -> usize {
        self.pool
    }

    /// Member connections held.
    pub fn members(&self) -> usize {
        self.members
    }

    /// Whether a member slot is free (dialers wait for one).
    pub fn member_room(&self) -> bool {
        self.members < self.max_peers
    }

    /// Guest connections and general handshakes holding pool slots.
    pub fn pool_used(&self) -> usize {
        self.general
    }

    fn take_general(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= PER_IP {
            return Err(Refusal::PerIp);
        }
        if self.general >= self.pool {
            return Err(Refusal::PoolFull);
        }
        self.general += 1;
        *self.per_ip.entry(ip).or_insert(0) += 1;
        Ok(())
    }

    fn give_general(&mut self, ip: IpAddr) {
        self.general -= 1;
        dec(&mut self.per_ip, ip);
    }

    /// May a socket from `ip` start a handshake?
    pub fn admit(&mut self, ip: IpAddr) -> Result<Ticket, Refusal> {
        let ip = source(ip);
        let allowed = self.allowance.get(&ip).copied().unwrap_or(0);
        let reserved = self.reserved.entry(ip).or_insert(0);
        if *reserved < allowed {
            *reserved += 1;
            return Ok(Ticket::Reserved(ip));
        }
        if *reserved == 0 {
            self.reserved.remove(&ip);
        }
        self.take_general(ip)?;
        Ok(Ticket::General(ip))
    }

    /// The handshake ended without a connection.
    pub fn release(&mut self, t: Ticket) {
        match t {
            Ticket::Reserved(ip) => dec(&mut self.reserved, ip),
            Ticket::General(ip) => self.give_general(ip),
        }
    }

    /// A handshake (`ticket`: inbound; `None`: one we dialed) with a peer
    /// at `ip` succeeded: seats the connection, as a member or in the pool.
    /// `replacing`: this peer's previous connection is still open and will
    /// close now, freeing its seat, so no new room is needed for it. The
    /// ticket is consumed either way.
    pub fn seat(
        &mut self,
        ticket: Option<Ticket>,
        ip: IpAddr,
        member: bool,
        replacing: bool,
    ) -> Result<Seat, Refusal> {
        let ip = source(ip);
        if member {
            if let Some(t) = ticket {
                self.release(t);
            }
            if !replacing && self.members >= self.max_peers {
                return Err(Refusal::MembersFull);
            }
            self.members += 1;
            return Ok(Seat::Member);
        }
        match ticket {
            // The handshake's pool slot becomes the connection's.
            Some(Ticket::General(held)) if held == ip => Ok(Seat::Guest(ip)),
            other => {
                if let Some(t) = other {
                    self.release(t);
                }
                if replacing {
                    self.general += 1;
                    *self.per_ip.entry(ip).or_insert(0) += 1;
                } else {
                    self.take_general(ip)?;
                }
                Ok(Seat::Guest(ip))
            }
        }
    }

    /// A connection ended.
    pub fn unseat(&mut self, seat: Seat) {
        match seat {
            Seat::Member => self.members -= 1,
            Seat::Guest(ip) => self.give_general(ip),
        }
    }

    /// Handshakes and guests in the pool, plus reserved handshakes.
    pub fn in_progress(&self) -> usize {
        self.general + self.reserved.values().sum::<usize>()
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

    #[test]
    fn the_pool_and_the_per_ip_bound_hold() {
        let mut g = Gate::new(64, []);
        assert_eq!(g.pool(), 16);
        assert_eq!(Gate::new(1, []).pool(), 4);
        let a = g.admit(ip(1)).unwrap();
        g.admit(ip(1)).unwrap();
        assert_eq!(g.admit(ip(1)), Err(Refusal::PerIp));
        let mut held = vec![a];
        for i in 2..=15 {
            held.push(g.admit(ip(i)).unwrap());
        }
        assert_eq!(g.in_progress(), 16);
        assert_eq!(g.admit(ip(99)), Err(Refusal::PoolFull));
        g.release(held.pop().unwrap());
        assert!(g.admit(ip(99)).is_ok());
        // Released per-IP slots come back.
        assert_eq!(g.admit(ip(200)), Err(Refusal::PoolFull));
        g.release(a);
        assert_eq!(g.admit(ip(1)), Ok(Ticket::General(ip(1))));
        assert_eq!(g.in_progress(), 16);
    }

    #[test]
    fn v4_mapped_addresses_count_as_ipv4() {
        let peer = ip(7);
        let mapped = |a: IpAddr| match a {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            v6 => v6,
        };
        // Genesis addresses are IPv4; a dual-stack `[::]` listener sees them
        // mapped. The pool is full of idle sockets from elsewhere.
        let mut g = Gate::new(64, [peer]);
        for i in 0..16u8 {
            g.admit(mapped(IpAddr::from([10, 1, i / 2, i]))).unwrap();
        }
        let t = g.admit(mapped(peer)).unwrap();
        assert_eq!(t, Ticket::Reserved(peer));
        // The same address, mapped or not, is one source for the per-IP bound.
        let mut g = Gate::new(64, []);
        g.admit(ip(1)).unwrap();
        g.admit(mapped(ip(1))).unwrap();
        assert_eq!(g.admit(ip(1)), Err(Refusal::PerIp));
        assert_eq!(g.admit(mapped(ip(1))), Err(Refusal::PerIp));
        // A seat from a mapped address takes over the handshake's pool slot.
        let mut g = Gate::new(64, []);
        let t = g.admit(mapped(ip(2))).unwrap();
        assert_eq!(
            g.seat(Some(t), mapped(ip(2)), false, false),
            Ok(Seat::Guest(ip(2)))
        );
        assert_eq!(g.pool_used(), 1);
    }

    #[test]
    fn ipv6_sources_are_counted_per_64() {
        let mut g = Gate::new(64, []);
        let host = |prefix: u16, low: u64| {
            IpAddr::V6(((u128::from(prefix) << 112) | u128::from(low)).into())
        };
        // One /64, many addresses: PER_IP in all.
        g.admit(host(0x2001, 1)).unwrap();
        g.admit(host(0x2001, 2)).unwrap();
        assert_eq!(g.admit(host(0x2001, 3)), Err(Refusal::PerIp));
        assert_eq!(g.admit(host(0x2001, u64::MAX)), Err(Refusal::PerIp));
        // Another /64 has its own.
        g.admit(host(0x2002, 3)).unwrap();
        // Logged once per /64 too.
        let now = Instant::now();
        assert!(g.should_log(host(0x2003, 1), now));
        assert!(!g.should_log(host(0x2003, 2), now));
    }

    #[test]
    fn genesis_addresses_are_never_locked_out() {
        let peer = ip(7);
        let mut g = Gate::new(64, [peer, peer]);
        // The general pool is full of idle sockets from elsewhere.
        for i in 0..16u8 {
            g.admit(IpAddr::from([10, 1, i / 2, i])).unwrap();
        }
        assert_eq!(g.admit(ip(50)), Err(Refusal::PoolFull));
        // Two genesis peers at that address, plus one spare.
        let t: Vec<_> = (0..3).map(|_| g.admit(peer).unwrap()).collect();
        assert!(t.iter().all(|t| matches!(t, Ticket::Reserved(_))));
        assert_eq!(g.admit(peer), Err(Refusal::PoolFull));
        g.release(t[0]);
        assert_eq!(g.admit(peer), Ok(Ticket::Reserved(peer)));
    }

    #[test]
    fn members_have_slots_guests_never_take() {
        // max_peers 6: 6 member slots, a pool of 4 for everyone else.
        let mut g = Gate::new(6, []);
        assert_eq!(g.pool(), 4);
        assert_eq!(pool_size(16), 4);
        assert_eq!(pool_size(64), 16);
        assert_eq!(pool_size(0), 4);
        // Four guests from two addresses fill the pool.
        let mut guests = Vec::new();
        for i in [1, 1, 2, 2] {
            let t = g.admit(ip(i)).unwrap();
            guests.push(g.seat(Some(t), ip(i), false, false).unwrap());
        }
        assert_eq!(g.pool_used(), 4);
        // A fifth non-member is refused at its handshake and when dialed.
        assert_eq!(g.admit(ip(3)), Err(Refusal::PoolFull));
        assert_eq!(g.seat(None, ip(3), false, false), Err(Refusal::PoolFull));
        assert_eq!(g.seat(None, ip(1), false, false), Err(Refusal::PerIp));
        // Members still get all six of theirs (dialed: no ticket).
        for _ in 0..6 {
            assert!(g.member_room());
            assert_eq!(g.seat(None, ip(9), true, false), Ok(Seat::Member));
        }
        assert!(!g.member_room());
        assert_eq!(g.seat(None, ip(9), true, false), Err(Refusal::MembersFull));
        // ... except a reconnecting member, whose old seat is freed as it closes.
        assert_eq!(g.seat(None, ip(9), true, true), Ok(Seat::Member));
        g.unseat(Seat::Member);
        assert_eq!(g.members(), 6);
        // A guest leaving makes room for one more, a member leaving for a member.
        g.unseat(guests.pop().unwrap());
        assert_eq!(g.seat(None, ip(3), false, false), Ok(Seat::Guest(ip(3))));
        g.unseat(Seat::Member);
        assert_eq!(g.seat(None, ip(4), false, false), Err(Refusal::PoolFull));
        assert_eq!(g.seat(None, ip(4), true, false), Ok(Seat::Member));
    }

    #[test]
    fn a_handshake_ticket_becomes_a_seat() {
        let peer = ip(7);
        let mut g = Gate::new(8, [peer]);
        // General ticket -> guest: the same pool slot, no double count.
        let t = g.admit(ip(1)).unwrap();
        assert_eq!(g.pool_used(), 1);
        assert_eq!(g.seat(Some(t), ip(1), false, false), Ok(Seat::Guest(ip(1))));
        assert_eq!(g.pool_used(), 1);
        // General ticket -> member: the pool slot is given back.
        let t = g.admit(ip(2)).unwrap();
        assert_eq!(g.seat(Some(t), ip(2), true, false), Ok(Seat::Member));
        assert_eq!((g.pool_used(), g.members()), (1, 1));
        // Reserved ticket (a genesis address) -> member.
        let t = g.admit(peer).unwrap();
        assert_eq!(t, Ticket::Reserved(peer));
        assert_eq!(g.seat(Some(t), peer, true, false), Ok(Seat::Member));
        assert_eq!(g.in_progress(), 1);
        // Reserved ticket -> guest: must find a pool slot of its own.
        for i in 10..13 {
            g.seat(None, ip(i), false, false).unwrap();
        }
        let t = g.admit(peer).unwrap();
        assert_eq!(g.seat(Some(t), peer, false, false), Err(Refusal::PoolFull));
        assert_eq!(g.in_progress(), 4, "the refused ticket was given back");
        g.unseat(Seat::Guest(ip(1)));
        g.unseat(Seat::Guest(ip(10)));
        g.unseat(Seat::Guest(ip(11)));
        g.unseat(Seat::Guest(ip(12)));
        g.unseat(Seat::Member);
        g.unseat(Seat::Member);
        assert_eq!((g.in_progress(), g.members()), (0, 0));
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
