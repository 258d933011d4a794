//! Peer discovery: bounded lists of addresses exchanged between peers, and
//! the bounded table of addresses a node may dial.
//!
//! `Addrs` (transport message type [`MSG_ADDRS`], version 1), little-endian:
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0 | 2 | listen port of the sender (u16; 0: it accepts no connections) |
//! | 2 | 1 | n, `0..=32` |
//! | 3 | n x 18 | n addresses: IPv6 address (16; IPv4 as `::ffff:a.b.c.d`), port (u16) |
//!
//! The length must be exactly `3 + 18 n`; an address with port 0, an
//! unspecified, multicast or broadcast IP, or listed twice, refuses the whole
//! message (a typed error, nothing kept). The receiver takes the sender's
//! listen port together with the IP the connection comes from as that
//! peer's address. Sans-IO: the codec and [`AddressBook`] do no I/O.
//!
//! A peer must not make us dial our own host's or our LAN's services: an
//! address learned from a peer is kept only if it is global, or in a
//! [`Scope`] this node is on itself (that of its listen address, of its
//! genesis peers' addresses, or of an address its operator gave it with
//! `--bootstrap`); loopback only when the node itself listens on loopback
//! (a node listening on an unspecified IP is not "on" loopback). Anything
//! else is skipped ([`Skip::OutOfScope`], counted as `addrs_out_of_scope`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::seq::IteratorRandom;
use thiserror::Error;

use super::dialer::{jittered, BACKOFF_MAX, BACKOFF_MIN};
use super::PeerId;

/// Transport message type of an address list.
pub const MSG_ADDRS: u8 = 3;
/// Version of its layout.
pub const ADDRS_VERSION: u8 = 1;
/// Most addresses in one message.
pub const MAX_ADDRS: usize = 32;
/// Bytes per address.
pub const ADDR_LEN: usize = 18;
/// Header bytes (listen port and count).
pub const ADDRS_HEADER: usize = 3;
/// A peer's address lists are read at most once per this period; the
/// others are ignored (and counted).
pub const ADDRS_MIN_GAP: Duration = Duration::from_secs(2);
/// Each side sends its list when a connection opens and then this often.
pub const ADDRS_EVERY: Duration = Duration::from_secs(30);
/// Addresses an [`AddressBook`] holds at most.
pub const MAX_BOOK: usize = 1024;
/// Addresses remembered as this node's own (never dialed again).
const MAX_SELF: usize = 64;

/// An address list.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Addrs {
    /// Port the sender accepts connections on (0: none).
    pub listen_port: u16,
    pub addrs: Vec<SocketAddr>,
}

/// Why an address list was refused; one line each.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AddrsError {
    #[error("address list of {0} bytes is shorter than its 3-byte header")]
    Truncated(usize),
    #[error("address list announces {0} addresses (at most {MAX_ADDRS})")]
    TooMany(usize),
    #[error("address list of {got} bytes for {n} addresses (expected {expected})")]
    Length {
        n: usize,
        got: usize,
        expected: usize,
    },
    #[error("address {0} cannot be dialed (port 0, or an unspecified, multicast or broadcast IP)")]
    Unusable(SocketAddr),
    #[error("address {0} is listed twice")]
    Duplicate(SocketAddr),
}

/// Whether an address could name a listening peer at all.
pub fn usable(a: &SocketAddr) -> bool {
    let ip = canonical(a.ip());
    a.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// IPv4-mapped IPv6 addresses as IPv4, so that one host has one spelling.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// How far an address reaches, as far as dialing it goes: whether it may
/// name a service of this host ([`Scope::Loopback`]), of its link or of its
/// private network, or anything else ([`Scope::Global`]; ranges reserved
/// for documentation, unroutable anywhere, count as global: dialing them
/// reaches nobody's local service).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// 127.0.0.0/8, 0.0.0.0/8, ::1.
    Loopback,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10 (carrier-grade NAT),
    /// fc00::/7 (unique local), fec0::/10 (site-local).
    Private,
    Global,
}

/// The [`Scope`] of `ip` (an IPv4-mapped IPv6 address as its IPv4).
pub fn scope(ip: IpAddr) -> Scope {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() || a == 0 {
                Scope::Loopback
            } else if v4.is_link_local() {
                Scope::LinkLocal
            } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                Scope::Private
            } else {
                Scope::Global
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() || v6.is_unspecified() {
                Scope::Loopback
            } else if first & 0xffc0 == 0xfe80 {
                Scope::LinkLocal
            } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
                Scope::Private
            } else {
                Scope::Global
            }
        }
    }
}

fn canonical_addr(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(a.ip()), a.port())
}

impl Addrs {
    pub fn encode(&self) -> Result<Vec<u8>, AddrsError> {
        if self.addrs.len() > MAX_ADDRS {
            return Err(AddrsError::TooMany(self.addrs.len()));
        }
        let mut out = Vec::with_capacity(ADDRS_HEADER + ADDR_LEN * self.addrs.len());
        out.extend_from_slice(&self.listen_port.to_le_bytes());
        out.push(self.addrs.len() as u8);
        for a in &self.addrs {
            let v6 = match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.extend_from_slice(&v6.octets());
            out.extend_from_slice(&a.port().to_le_bytes());
        }
        Ok(out)
    }

    /// Decodes and checks a list: the count and length before anything is
    /// allocated, then every address.
    pub fn decode(b: &[u8]) -> Result<Addrs, AddrsError> {
        if b.len() < ADDRS_HEADER {
            return Err(AddrsError::Truncated(b.len()));
        }
        let listen_port = u16::from_le_bytes([b[0], b[1]]);
        let n = b[2] as usize;
        if n > MAX_ADDRS {
            return Err(AddrsError::TooMany(n));
        }
        let expected = ADDRS_HEADER + ADDR_LEN * n;
        if b.len() != expected {
            return Err(AddrsError::Length {
                n,
                got: b.len(),
                expected,
            });
        }
        let mut addrs = Vec::with_capacity(n);
        let mut seen = HashSet::with_capacity(n);
        for e in b[ADDRS_HEADER..].chunks_exact(ADDR_LEN) {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&e[..16]);
            let port = u16::from_le_bytes([e[16], e[17]]);
            let a = canonical_addr(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port));
            if !usable(&a) {
                return Err(AddrsError::Unusable(a));
            }
            if !seen.insert(a) {
                return Err(AddrsError::Duplicate(a));
            }
            addrs.push(a);
        }
        Ok(Addrs { listen_port, addrs })
    }
}

/// Where an address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Given by the operator (`--bootstrap`): never evicted.
    Bootstrap,
    /// Learned from a peer.
    Learned,
}

#[derive(Clone, Debug)]
struct Entry {
    source: Source,
    failures: u32,
    next_try: Instant,
    dialing: bool,
    /// The connection this address gave us, while it lasts.
    connected: Option<PeerId>,
}

/// Why an address was not added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    Unusable,
    Myself,
    Known,
    /// Learned from a peer, and in a [`Scope`] (loopback, link-local,
    /// private) this node is not on: a peer could make us dial our own
    /// host's or LAN's services.
    OutOfScope,
    Full,
}

/// The addresses a node may dial: bounded, deduplicated, never its own;
/// each with its own backoff. Sans-IO: the dialer asks, the book answers.
#[derive(Debug)]
pub struct AddressBook {
    entries: HashMap<SocketAddr, Entry>,
    /// Our own listen addresses (configured, or found by dialing ourselves).
    myself: HashSet<SocketAddr>,
    /// Addresses not to add (genesis peers dialed by their own loops).
    excluded: HashSet<SocketAddr>,
    /// The scopes this node is on, besides [`Scope::Global`]: learned
    /// addresses in any other are skipped (see the module docs).
    scopes: HashSet<Scope>,
    cap: usize,
}

impl AddressBook {
    /// `me`: our listen address (a port on an unspecified IP means any
    /// local IP at that port, loopback included); `excluded`: addresses
    /// dialed elsewhere. Both put the node on their scopes (an unspecified
    /// IP on none).
    pub fn new(me: SocketAddr, excluded: impl IntoIterator<Item = SocketAddr>, cap: usize) -> Self {
        let mut myself = HashSet::new();
        myself.insert(canonical_addr(me));
        if me.ip().is_unspecified() {
            myself.insert(SocketAddr::from(([127, 0, 0, 1], me.port())));
            myself.insert(SocketAddr::from((Ipv6Addr::LOCALHOST, me.port())));
        }
        let excluded: HashSet<SocketAddr> = excluded.into_iter().map(canonical_addr).collect();
        let mut book = AddressBook {
            entries: HashMap::new(),
            myself,
            scopes: HashSet::new(),
            cap,
            excluded: HashSet::new(),
        };
        if !canonical(me.ip()).is_unspecified() {
            book.on_networks_of([me]);
        }
        book.on_networks_of(excluded.iter().copied());
        book.excluded = excluded;
        book
    }

    /// This node is on the networks of `addrs` (its genesis peers'
    /// addresses, its bootstrap addresses): learned addresses in their
    /// scopes are kept.
    pub fn on_networks_of(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) {
        for a in addrs {
            if usable(&canonical_addr(a)) {
                self.scopes.insert(scope(a.ip()));
            }
        }
    }

    /// Whether a learned address in `a`'s scope is kept.
    pub fn in_scope(&self, a: &SocketAddr) -> bool {
        let s = scope(a.ip());
        s == Scope::Global || self.scopes.contains(&s)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, a: &SocketAddr) -> bool {
        self.entries.contains_key(&canonical_addr(*a))
    }

    /// Checks an address and adds it, due now.
    pub fn add(&mut self, a: SocketAddr, source: Source, now: Instant) -> Result<(), Skip> {
        let a = canonical_addr(a);
        if !usable(&a) {
            return Err(Skip::Unusable);
        }
        if self.myself.contains(&a) {
            return Err(Skip::Myself);
        }
        if self.entries.contains_key(&a) || self.excluded.contains(&a) {
            return Err(Skip::Known);
        }
        match source {
            Source::Bootstrap => self.on_networks_of([a]),
            Source::Learned if !self.in_scope(&a) => return Err(Skip::OutOfScope),
            Source::Learned => {}
        }
        if self.entries.len() >= self.cap {
            // Make room by forgetting a learned address that keeps failing.
            let victim = self
                .entries
                .iter()
                .filter(|(_, e)| {
                    e.source == Source::Learned
                        && e.failures > 0
                        && !e.dialing
                        && e.connected.is_none()
                })
                .max_by_key(|(_, e)| e.failures)
                .map(|(a, _)| *a);
            match victim {
                Some(v) if source == Source::Bootstrap || self.entries[&v].failures > 2 => {
                    self.entries.remove(&v);
                }
                _ => return Err(Skip::Full),
            }
        }
        self.entries.insert(
            a,
            Entry {
                source,
                failures: 0,
                next_try: now,
                dialing: false,
                connected: None,
            },
        );
        Ok(())
    }

    /// A random address due for a dial (not connected, not being dialed,
    /// past its backoff), now marked as being dialed.
    pub fn next_dial(&mut self, now: Instant) -> Option<SocketAddr> {
        let a = self
            .entries
            .iter()
            .filter(|(_, e)| !e.dialing && e.connected.is_none() && e.next_try <= now)
            .map(|(a, _)| *a)
            .choose(&mut rand::rng())?;
        self.entries
            .get_mut(&a)
            .expect("chosen from the table")
            .dialing = true;
        Some(a)
    }

    /// The dial of `a` gave connection `peer`.
    pub fn connected(&mut self, a: SocketAddr, peer: PeerId) {
        if let Some(e) = self.entries.get_mut(&canonical_addr(a)) {
            e.dialing = false;
            e.failures = 0;
            e.connected = Some(peer);
        }
    }

    /// The dial of `a` failed: back off (exponentially, with jitter).
    pub fn failed(&mut self, a: SocketAddr, now: Instant) {
        if let Some(e) = self.entries.get_mut(&canonical_addr(a)) {
            e.dialing = false;
            e.connected = None;
            e.failures = e.failures.saturating_add(1);
            let backoff = BACKOFF_MIN
                .saturating_mul(1 << e.failures.min(16))
                .min(BACKOFF_MAX);
            e.next_try = now + jittered(backoff);
        }
    }

    /// The connection dialed at `a` ended: redial after the shortest backoff.
    pub fn disconnected(&mut self, a: SocketAddr, now: Instant) {
        if let Some(e) = self.entries.get_mut(&canonical_addr(a)) {
            e.dialing = false;
            e.connected = None;
            e.next_try = now + jittered(BACKOFF_MIN);
        }
    }

    /// `a` turned out to be this node: forget it and never add it again.
    pub fn is_myself(&mut self, a: SocketAddr) {
        let a = canonical_addr(a);
        self.entries.remove(&a);
        if self.myself.len() < MAX_SELF {
            self.myself.insert(a);
        }
    }

    /// Dials in progress.
    pub fn dialing(&self) -> usize {
        self.entries.values().filter(|e| e.dialing).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, a], port))
    }

    #[test]
    fn address_lists_round_trip() {
        let list = Addrs {
            listen_port: 9000,
            addrs: vec![
                v4(1, 1),
                "[2001:db8::7]:65535".parse().unwrap(),
                "127.0.0.1:30333".parse().unwrap(),
            ],
        };
        let b = list.encode().unwrap();
        assert_eq!(b.len(), 3 + 3 * 18);
        assert_eq!(&b[..3], &[0x28, 0x23, 3]);
        // IPv4 travels as ::ffff:a.b.c.d.
        assert_eq!(
            &b[3..19],
            &Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0x0a00, 1]).octets()
        );
        assert_eq!(Addrs::decode(&b).unwrap(), list);
        let full = Addrs {
            listen_port: 0,
            addrs: (1..=32).map(|i| v4(i, 7)).collect(),
        };
        assert_eq!(Addrs::decode(&full.encode().unwrap()).unwrap(), full);
        assert_eq!(Addrs::decode(&[0, 0, 0]).unwrap(), Addrs::default());
    }

    #[test]
    fn bad_address_lists_are_refused() {
        let list = Addrs {
            listen_port: 1,
            addrs: vec![v4(1, 1), v4(2, 2)],
        };
        let b = list.encode().unwrap();
        assert_eq!(Addrs::decode(&b[..2]), Err(AddrsError::Truncated(2)));
        // Trailing and missing bytes.
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(
            Addrs::decode(&long),
            Err(AddrsError::Length { .. })
        ));
        assert!(matches!(
            Addrs::decode(&b[..b.len() - 1]),
            Err(AddrsError::Length { .. })
        ));
        // A count over 32, refused from the header alone.
        let mut many = vec![0, 0, 33];
        many.resize(3 + 33 * 18, 0);
        assert_eq!(Addrs::decode(&many), Err(AddrsError::TooMany(33)));
        assert_eq!(Addrs::decode(&[0, 0, 255]), Err(AddrsError::TooMany(255)));
        let too_many = Addrs {
            listen_port: 0,
            addrs: (0..33).map(|i| v4(i, 1)).collect(),
        };
        assert_eq!(too_many.encode(), Err(AddrsError::TooMany(33)));
        // Duplicates, also when one is spelled as an IPv4-mapped IPv6.
        let dup = Addrs {
            listen_port: 0,
            addrs: vec![v4(1, 1), "[::ffff:10.0.0.1]:1".parse().unwrap()],
        };
        assert_eq!(
            Addrs::decode(&dup.encode().unwrap()),
            Err(AddrsError::Duplicate(v4(1, 1)))
        );
        // Addresses that name nobody.
        for bad in [
            "10.0.0.1:0",
            "0.0.0.0:1",
            "[::]:1",
            "224.0.0.1:1",
            "255.255.255.255:1",
            "[ff02::1]:1",
        ] {
            let a: SocketAddr = bad.parse().unwrap();
            let l = Addrs {
                listen_port: 0,
                addrs: vec![v4(9, 9), a],
            };
            assert!(
                matches!(
                    Addrs::decode(&l.encode().unwrap()),
                    Err(AddrsError::Unusable(_))
                ),
                "{bad}"
            );
        }
    }

    /// A peer could fill the book with loopback, LAN or link-local
    /// addresses and make the node dial its own host's services.
    #[test]
    fn learned_addresses_outside_this_nodes_networks_are_skipped() {
        let now = Instant::now();
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let local = [
            "127.0.0.1:22",
            "127.9.9.9:6379",
            "0.1.2.3:1",
            "[::1]:22",
            "[::ffff:127.0.0.1]:22",
            "10.0.0.1:80",
            "172.16.0.1:80",
            "172.31.255.1:80",
            "192.168.1.1:80",
            "[::ffff:192.168.0.1]:80",
            "100.64.0.1:80",
            "169.254.169.254:80",
            "[fe80::1]:80",
            "[fd00::1]:80",
            "[fec0::1]:80",
        ];
        // A node on a global address, its genesis peers too.
        let mut b = AddressBook::new(a("1.2.3.4:4000"), [a("5.6.7.8:4000")], 64);
        for l in local {
            assert_eq!(
                b.add(a(l), Source::Learned, now),
                Err(Skip::OutOfScope),
                "{l}"
            );
        }
        for g in [
            "9.9.9.9:1",
            "172.32.0.1:1",
            "100.128.0.1:1",
            "[2001:4860::1]:1",
            "[2001:db8::1]:1",
        ] {
            assert_eq!(b.add(a(g), Source::Learned, now), Ok(()), "{g}");
        }
        assert_eq!(b.len(), 5);
        // The operator's bootstrap address is kept whatever it is, and puts
        // the node on its network (but not on loopback).
        b.add(a("192.168.1.7:4000"), Source::Bootstrap, now)
            .unwrap();
        b.add(a("192.168.1.1:80"), Source::Learned, now).unwrap();
        b.add(a("10.0.0.1:80"), Source::Learned, now).unwrap();
        assert_eq!(
            b.add(a("127.0.0.1:22"), Source::Learned, now),
            Err(Skip::OutOfScope)
        );
        // Listening on an unspecified IP is not listening on loopback;
        // genesis peers on a LAN put the node on it.
        let mut b = AddressBook::new(a("0.0.0.0:4000"), [], 64);
        assert_eq!(
            b.add(a("127.0.0.1:4001"), Source::Learned, now),
            Err(Skip::OutOfScope)
        );
        assert_eq!(
            b.add(a("10.0.0.1:80"), Source::Learned, now),
            Err(Skip::OutOfScope)
        );
        b.on_networks_of([a("10.1.2.3:4000")]);
        b.add(a("10.0.0.1:80"), Source::Learned, now).unwrap();
        assert_eq!(
            b.add(a("[fe80::1]:80"), Source::Learned, now),
            Err(Skip::OutOfScope)
        );
        // A node listening on loopback (the devnet, the tests) keeps
        // loopback addresses, and only those besides the global ones.
        let mut b = AddressBook::new(a("127.0.0.1:4000"), [], 64);
        b.add(a("127.0.0.1:4001"), Source::Learned, now).unwrap();
        b.add(a("127.0.6.1:9999"), Source::Learned, now).unwrap();
        b.add(a("[::1]:4001"), Source::Learned, now).unwrap();
        assert_eq!(
            b.add(a("192.168.1.1:80"), Source::Learned, now),
            Err(Skip::OutOfScope)
        );
        assert_eq!(scope(a("[::ffff:10.0.0.1]:1").ip()), Scope::Private);
        assert_eq!(scope(a("[::]:1").ip()), Scope::Loopback);
    }

    #[test]
    fn the_book_is_bounded_deduplicated_and_never_dials_itself() {
        let now = Instant::now();
        let me: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        let genesis = v4(50, 1);
        let mut b = AddressBook::new(me, [genesis], 4);
        assert_eq!(
            b.add("127.0.0.1:4000".parse().unwrap(), Source::Learned, now),
            Err(Skip::Myself)
        );
        assert_eq!(
            b.add("0.0.0.0:4001".parse().unwrap(), Source::Learned, now),
            Err(Skip::Unusable)
        );
        assert_eq!(b.add(genesis, Source::Learned, now), Err(Skip::Known));
        b.add(v4(1, 1), Source::Bootstrap, now).unwrap();
        assert_eq!(
            b.add("[::ffff:10.0.0.1]:1".parse().unwrap(), Source::Learned, now),
            Err(Skip::Known)
        );
        for i in 2..=4 {
            b.add(v4(i, 1), Source::Learned, now).unwrap();
        }
        assert_eq!(b.add(v4(5, 1), Source::Learned, now), Err(Skip::Full));
        assert_eq!(b.len(), 4);
        // Dials come in random order, each once until it ends.
        let mut dialed = HashSet::new();
        while let Some(a) = b.next_dial(now) {
            assert!(dialed.insert(a));
        }
        assert_eq!(dialed.len(), 4);
        assert_eq!(b.dialing(), 4);
        // Failures back off; a connection is not redialed while it lasts.
        b.failed(v4(2, 1), now);
        b.connected(v4(1, 1), PeerId(7));
        assert_eq!(b.next_dial(now), None);
        assert_eq!(b.next_dial(now + BACKOFF_MAX), Some(v4(2, 1)));
        b.disconnected(v4(1, 1), now);
        assert_eq!(b.next_dial(now + BACKOFF_MIN), Some(v4(1, 1)));
        // A learned address that keeps failing makes room for a new one.
        for _ in 0..3 {
            b.failed(v4(3, 1), now);
        }
        b.add(v4(5, 1), Source::Learned, now).unwrap();
        assert!(!b.contains(&v4(3, 1)) && b.contains(&v4(5, 1)));
        // An address that turns out to be us is dropped for good.
        b.is_myself(v4(4, 1));
        assert!(!b.contains(&v4(4, 1)));
        assert_eq!(b.add(v4(4, 1), Source::Learned, now), Err(Skip::Myself));
    }
}
