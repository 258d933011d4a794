//! Who may start a handshake with us: the budget for unauthenticated
//! sockets, and how often their refusals and failures are logged.
//!
//! A socket that has not finished its handshake proves nothing, so it gets
//! its own small budget, separate from the genesis peers' connections:
//! - a general pool of `max(4, max_inbound / 4)` handshakes at once, at most
//!   [`PER_IP`] from one source address;
//! - an allowance per genesis address: an IP listed in the genesis for
//!   peers that dial us (lower ids) may run that many handshakes plus one,
//!   outside the general pool, so idle sockets from elsewhere can never
//!   lock a genesis peer out (on a shared host or NAT the allowance is
//!   shared with whoever else uses that address);
//! - each handshake must finish within [`HANDSHAKE_DEADLINE`] (or the
//!   configured handshake timeout if shorter).
//!
//! Refusals and failed handshakes are counted always but logged at most once
//! per [`LOG_EVERY`] per source IP, so a flood writes a few lines, not one
//! per socket. Sans-IO: the server asks, the gate answers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Handshakes in progress from one source IP (general pool).
pub const PER_IP: usize = 2;
/// Longest an inbound socket may take to authenticate.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// At most one log line per source IP per this period.
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// Source IPs remembered for log rate-limiting; beyond this (and after
/// forgetting the stale ones) refusals are counted but not logged.
pub const MAX_LOGGED_IPS: usize = 4096;

/// Why a socket was refused before its handshake; `name()` is the metrics
/// label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The general pool of unauthenticated sockets is full.
    PoolFull,
    /// This source IP already runs [`PER_IP`] handshakes.
    PerIp,
    /// Every authenticated inbound slot is taken.
    InboundFull,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::PoolFull => "pool_full",
            Refusal::PerIp => "per_ip",
            Refusal::InboundFull => "inbound_full",
        }
    }
}

/// The slot a handshake holds; give it back with [`Gate::release`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ticket {
    Reserved(IpAddr),
    General(IpAddr),
}

/// See the module docs.
#[derive(Debug)]
pub struct Gate {
    pool: usize,
    general: usize,
    per_ip: HashMap<IpAddr, usize>,
    allowance: HashMap<IpAddr, usize>,
    reserved: HashMap<IpAddr, usize>,
    logged: HashMap<IpAddr, Instant>,
}

impl Gate {
    /// `max_inbound` sizes the general pool; `genesis_ips` are the addresses
    /// of the genesis peers that dial us (one entry per peer).
    pub fn new(max_inbound: usize, genesis_ips: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut allowance = HashMap::new();
        for ip in genesis_ips {
            *allowance.entry(ip).or_insert(1) += 1;
        }
        Gate {
            pool: (max_inbound / 4).max(4),
            general: 0,
            per_ip: HashMap::new(),
            allowance,
            reserved: HashMap::new(),
            logged: HashMap::new(),
        }
    }

    /// Size of the general pool.
    pub fn pool(&self) -> usize {
        self.pool
    }

    /// May a socket from `ip` start a handshake?
    pub fn admit(&mut self, ip: IpAddr) -> Result<Ticket, Refusal> {
        let allowed = self.allowance.get(&ip).copied().unwrap_or(0);
        let reserved = self.reserved.entry(ip).or_insert(0);
        if *reserved < allowed {
            *reserved += 1;
            return Ok(Ticket::Reserved(ip));
        }
        if *reserved == 0 {
            self.reserved.remove(&ip);
        }
        let from_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= PER_IP {
            return Err(Refusal::PerIp);
        }
        if self.general >= self.pool {
            return Err(Refusal::PoolFull);
        }
        self.general += 1;
        *self.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Ticket::General(ip))
    }

    /// The handshake ended (either way).
    pub fn release(&mut self, t: Ticket) {
        let dec = |m: &mut HashMap<IpAddr, usize>, ip: IpAddr| {
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        };
        match t {
            Ticket::Reserved(ip) => dec(&mut self.reserved, ip),
            Ticket::General(ip) => {
                self.general -= 1;
                dec(&mut self.per_ip, ip);
            }
        }
    }

    /// Handshakes in progress (both kinds).
    pub fn in_progress(&self) -> usize {
        self.general + self.reserved.values().sum::<usize>()
    }

    /// Whether to log an event from `ip` now: at most once per
    /// [`LOG_EVERY`] per IP, and never while [`MAX_LOGGED_IPS`] recent IPs
    /// are remembered.
    pub fn should_log(&mut self, ip: IpAddr, now: Instant) -> bool {
        if let Some(last) = self.logged.get(&ip) {
            if now.saturating_duration_since(*last) < LOG_EVERY {
                return false;
            }
        } else if self.logged.len() >= MAX_LOGGED_IPS {
            self.logged
                .retain(|_, last| now.saturating_duration_since(*last) < LOG_EVERY);
            if self.logged.len() >= MAX_LOGGED_IPS {
                return false;
            }
        }
        self.logged.insert(ip, now);
        true
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
