//! The handshake: who is on the other end, proven twice.
//!
//! 1. Noise `XX` with the hybrid post-quantum `hfs` modifier
//!    ([`DEFAULT_TRANSPORT`]), the 32-byte network id as the prologue: a peer
//!    of another network derives different keys and fails at the first
//!    encrypted handshake payload. Messages: `-> e, e1`;
//!    `<- e, ee, ekem1, s, es`; `-> s, se`. Each side learns the other's X25519
//!    static key and looks it up among the genesis peers.
//! 2. Each side takes the handshake hash `h` and sends, as its first transport
//!    message (the initiator first; the responder only after checking the
//!    initiator's), its identity ([`encode_identity`]): its ML-DSA-65 signature of
//!    `h` (context `montana/handshake/v1`), followed, for a node whose keys
//!    are not in the genesis, by its ML-DSA-65 public key. `h` commits to both
//!    Noise static keys, so the signature binds the signer's Noise key to its
//!    ML-DSA key for this very session (a signature from another session is
//!    over another `h` and fails). A genesis peer's signature is checked
//!    against its genesis key; any other node's against the key it sent, and
//!    its node id is SHA-256 of that key ([`check_identity`]).
//!
//! Policy enforced here: between genesis peers the lower [`PeerId`] dials,
//! so a genesis responder refuses a genesis initiator whose id is not lower
//! than its own (one connection per pair). Nodes outside the genesis dial;
//! whether they get a slot is the budget's business ([`super::gate`]).

use std::sync::Arc;

use snow::params::NoiseParams;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::connection::{LinkError, Opener, Sealer, Session};
use super::frame::{self, FrameError, MAX_MESSAGE};
use super::{PeerId, PeerInfo};
use crate::consensus::active::NodeId;
use crate::keys::{Domain, NodeKeys, VerifyingKey, SIGNATURE_LEN, SIGNING_PUBLIC_LEN};

/// The transport suite of genesis version 1. ML-KEM-768 replaces round-3
/// Kyber1024 when `snow` offers it; the name travels in the genesis.
pub const DEFAULT_TRANSPORT: &str = "Noise_XXhfs_25519+Kyber1024_ChaChaPoly_BLAKE2s";

/// Identity message of a genesis peer: its signature of the handshake hash.
pub const IDENTITY_GENESIS_LEN: usize = SIGNATURE_LEN;
/// Identity message of any other node: signature, then its ML-DSA-65 key.
pub const IDENTITY_JOINER_LEN: usize = SIGNATURE_LEN + SIGNING_PUBLIC_LEN;

/// Why the identity message of a node outside the genesis was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum IdentityError {
    #[error("identity message of {got} bytes (expected {expected})")]
    Length { got: usize, expected: usize },
    #[error("the ML-DSA-65 public key does not parse")]
    Key,
    #[error("the ML-DSA-65 key is {0}'s but the Noise key is not (a genesis key is used with its genesis Noise key)")]
    GenesisKey(PeerId),
    #[error("the signature of the handshake hash does not verify")]
    Signature,
    #[error("the peer is this node itself")]
    Myself,
}

/// Handshake failures; one line each.
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("unsupported transport {name:?}: {why}")]
    Suite { name: String, why: String },
    #[error("noise handshake failed (another network, or a corrupt message): {0}")]
    Noise(#[from] snow::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("static key {0}.. is not a genesis peer")]
    UnknownPeer(String),
    #[error("dialed {expected} but {got} answered")]
    WrongPeer { expected: PeerId, got: PeerId },
    #[error("{0} dialed us but peers with lower ids dial (one connection per pair)")]
    WrongDirection(PeerId),
    #[error("{0} sent a bad handshake signature")]
    BadSignature(PeerId),
    #[error("bad identity from a node outside the genesis: {0}")]
    Identity(IdentityError),
    #[error("handshake timed out")]
    Timeout,
    #[error("handshake message {0} carries a payload of {1} bytes (must be empty)")]
    UnexpectedPayload(u8, usize),
}

impl HandshakeError {
    /// A signature that did not verify (genesis peer or not).
    pub fn is_bad_signature(&self) -> bool {
        matches!(
            self,
            HandshakeError::BadSignature(_) | HandshakeError::Identity(IdentityError::Signature)
        )
    }
}

/// Every handshake message of this protocol has an empty payload.
fn expect_empty(message: u8, n: usize) -> Result<(), HandshakeError> {
    match n {
        0 => Ok(()),
        n => Err(HandshakeError::UnexpectedPayload(message, n)),
    }
}

/// Parses and checks a transport suite name: a Noise `XX` pattern.
pub fn parse_suite(name: &str) -> Result<NoiseParams, HandshakeError> {
    let suite = |why: String| HandshakeError::Suite {
        name: name.to_string(),
        why,
    };
    let params: NoiseParams = name
        .parse()
        .map_err(|e: snow::Error| suite(e.to_string()))?;
    if !name.starts_with("Noise_XX") {
        return Err(suite("the handshake pattern must be XX".into()));
    }
    // Building a state proves this build has every primitive it names.
    snow::Builder::new(params.clone())
        .local_private_key(&[1; 32])
        .and_then(|b| b.build_initiator())
        .map_err(|e| suite(e.to_string()))?;
    Ok(params)
}

/// Who the other end proved to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// Its genesis index, if its keys are in the genesis.
    pub genesis: Option<PeerId>,
    /// SHA-256 of its ML-DSA-65 public key.
    pub node_id: NodeId,
    /// Its Noise static key.
    pub noise_public: [u8; 32],
}

/// What a handshake needs to know about us and the genesis.
pub struct Context<'a> {
    pub params: &'a NoiseParams,
    pub network_id: &'a [u8; 32],
    /// Our genesis index; `None` when our keys are not in the genesis.
    pub me: Option<PeerId>,
    pub keys: &'a NodeKeys,
    pub peers: &'a [PeerInfo],
}

/// Whom a dialer expects to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// This genesis peer (its genesis address was dialed).
    Genesis(PeerId),
    /// Anyone who proves an identity (a bootstrap or learned address).
    Any,
}

impl Context<'_> {
    fn builder(&self) -> Result<snow::Builder<'_>, HandshakeError> {
        Ok(snow::Builder::new(self.params.clone())
            .local_private_key(self.keys.noise_secret())?
            .prologue(self.network_id)?)
    }
}

/// The genesis peer owning a Noise static key, if any.
fn genesis_peer(peers: &[PeerInfo], key: &[u8]) -> Option<PeerId> {
    peers
        .iter()
        .find(|p| p.noise_public[..] == *key)
        .map(|p| p.id)
}

fn static_key(hs: &snow::HandshakeState) -> [u8; 32] {
    let mut k = [0u8; 32];
    if let Some(s) = hs.get_remote_static().filter(|s| s.len() == 32) {
        k.copy_from_slice(s);
    }
    k
}

fn short(key: &[u8]) -> String {
    hex::encode(&key[..key.len().min(8)])
}

/// Our identity message for handshake hash `hash`: the signature, then our
/// ML-DSA-65 public key when `with_key` (our keys are not in the genesis).
pub fn encode_identity(keys: &NodeKeys, hash: &[u8], with_key: bool) -> Vec<u8> {
    let mut out = keys.sign(Domain::Handshake, hash);
    if with_key {
        out.extend_from_slice(&keys.verifying_key().to_bytes());
    }
    out
}

/// Checks the identity message `msg` of the peer whose Noise static key is
/// `remote_static`, for handshake hash `hash`. `me` is our own node id (a
/// connection to ourselves is refused).
pub fn check_identity(
    peers: &[PeerInfo],
    me: &NodeId,
    remote_static: &[u8; 32],
    hash: &[u8],
    msg: &[u8],
) -> Result<Remote, HandshakeError> {
    let remote = |genesis, key: &VerifyingKey| -> Result<Remote, HandshakeError> {
        let node_id = NodeId::of(key);
        if node_id == *me {
            return Err(HandshakeError::Identity(IdentityError::Myself));
        }
        Ok(Remote {
            genesis,
            node_id,
            noise_public: *remote_static,
        })
    };
    if let Some(id) = genesis_peer(peers, remote_static) {
        if msg.len() != IDENTITY_GENESIS_LEN {
            return Err(HandshakeError::Identity(IdentityError::Length {
                got: msg.len(),
                expected: IDENTITY_GENESIS_LEN,
            }));
        }
        let key = &peers[id.0 as usize].signing_public;
        if !key.verify(Domain::Handshake, hash, msg) {
            return Err(HandshakeError::BadSignature(id));
        }
        return remote(Some(id), key);
    }
    if msg.len() == IDENTITY_GENESIS_LEN {
        // A genesis-style identity from a key the genesis does not list.
        return Err(HandshakeError::UnknownPeer(short(remote_static)));
    }
    if msg.len() != IDENTITY_JOINER_LEN {
        return Err(HandshakeError::Identity(IdentityError::Length {
            got: msg.len(),
            expected: IDENTITY_JOINER_LEN,
        }));
    }
    let (signature, key) = msg.split_at(SIGNATURE_LEN);
    let key =
        VerifyingKey::from_bytes(key).map_err(|_| HandshakeError::Identity(IdentityError::Key))?;
    if let Some(p) = peers.iter().find(|p| p.signing_public == key) {
        return Err(HandshakeError::Identity(IdentityError::GenesisKey(p.id)));
    }
    if !key.verify(Domain::Handshake, hash, signature) {
        return Err(HandshakeError::Identity(IdentityError::Signature));
    }
    remote(None, &key)
}

/// Dials side: expects `expect` to answer.
pub async fn initiate<S>(
    io: &mut S,
    ctx: &Context<'_>,
    expect: Expect,
) -> Result<Session, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hs = ctx.builder()?.build_initiator()?;
    let mut msg = vec![0u8; MAX_MESSAGE];
    let mut payload = vec![0u8; MAX_MESSAGE];
    let mut inbuf = Vec::new();

    let n = hs.write_message(&[], &mut msg)?; // -> e, e1
    frame::write(io, &msg[..n]).await?;
    frame::read(io, &mut inbuf).await?; // <- e, ee, ekem1, s, es
    expect_empty(2, hs.read_message(&inbuf, &mut payload)?)?;
    let remote_static = static_key(&hs);
    if let Expect::Genesis(expected) = expect {
        match genesis_peer(ctx.peers, &remote_static) {
            Some(got) if got == expected => {}
            Some(got) => return Err(HandshakeError::WrongPeer { expected, got }),
            None => return Err(HandshakeError::UnknownPeer(short(&remote_static))),
        }
    }
    let n = hs.write_message(&[], &mut msg)?; // -> s, se
    frame::write(io, &msg[..n]).await?;
    exchange_identities(io, ctx, hs, remote_static).await
}

/// Accepting side.
pub async fn respond<S>(io: &mut S, ctx: &Context<'_>) -> Result<Session, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hs = ctx.builder()?.build_responder()?;
    let mut msg = vec![0u8; MAX_MESSAGE];
    let mut payload = vec![0u8; MAX_MESSAGE];
    let mut inbuf = Vec::new();

    frame::read(io, &mut inbuf).await?; // -> e, e1
    expect_empty(1, hs.read_message(&inbuf, &mut payload)?)?;
    let n = hs.write_message(&[], &mut msg)?; // <- e, ee, ekem1, s, es
    frame::write(io, &msg[..n]).await?;
    frame::read(io, &mut inbuf).await?; // -> s, se
    expect_empty(3, hs.read_message(&inbuf, &mut payload)?)?;
    let remote_static = static_key(&hs);
    if let (Some(peer), Some(me)) = (genesis_peer(ctx.peers, &remote_static), ctx.me) {
        if peer >= me {
            return Err(HandshakeError::WrongDirection(peer));
        }
    }
    exchange_identities(io, ctx, hs, remote_static).await
}

/// Both sides: the initiator sends its identity (signature of the
/// handshake hash, and its key if it is not in the genesis) first; the
/// responder checks it before it signs and sends its own, so a refused
/// initiator costs it no signature and learns nothing signed.
async fn exchange_identities<S>(
    io: &mut S,
    ctx: &Context<'_>,
    hs: snow::HandshakeState,
    remote_static: [u8; 32],
) -> Result<Session, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let initiator = hs.is_initiator();
    let hash = hs.get_handshake_hash().to_vec();
    let transport = Arc::new(hs.into_stateless_transport_mode()?);
    let mut sealer = Sealer::new(transport.clone());
    let mut opener = Opener::new(transport);
    let me = NodeId::of(ctx.keys.verifying_key());

    if initiator {
        send_identity(io, ctx, &hash, &mut sealer).await?;
    }
    let mut inbuf = Vec::new();
    frame::read(io, &mut inbuf).await?;
    let theirs = opener.open(&inbuf)?;
    let remote = check_identity(ctx.peers, &me, &remote_static, &hash, theirs)?;
    if !initiator {
        send_identity(io, ctx, &hash, &mut sealer).await?;
    }
    Ok(Session {
        remote,
        sealer,
        opener,
    })
}

async fn send_identity<S>(
    io: &mut S,
    ctx: &Context<'_>,
    hash: &[u8],
    sealer: &mut Sealer,
) -> Result<(), HandshakeError>
where
    S: AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    let mine = encode_identity(ctx.keys, hash, ctx.me.is_none());
    sealer.seal(&mine, &mut out)?;
    io.write_all(&out).await.map_err(FrameError::from)?;
    io.flush().await.map_err(FrameError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::connection::Session;
    use crate::net::envelope::Envelope;
    use tokio::io::DuplexStream;

    struct Genesis {
        keys: Vec<Arc<NodeKeys>>,
        peers: Vec<PeerInfo>,
    }

    fn genesis(n: u16) -> Genesis {
        let keys: Vec<Arc<NodeKeys>> = (0..n)
            .map(|_| Arc::new(NodeKeys::generate().unwrap()))
            .collect();
        let peers = keys
            .iter()
            .enumerate()
            .map(|(i, k)| PeerInfo {
                id: PeerId(i as u16),
                label: format!("n{i}"),
                address: "127.0.0.1:9".parse().unwrap(),
                noise_public: *k.noise_public(),
                signing_public: k.verifying_key().clone(),
            })
            .collect();
        Genesis { keys, peers }
    }

    type Side = (Result<Session, HandshakeError>, Option<DuplexStream>);

    /// `from` (its genesis view, its id, its network id) dials `to`,
    /// expecting `expected`. A side drops its stream when it fails, as a
    /// node does, so the other side sees the connection close.
    async fn run(
        from: (&Genesis, PeerId, [u8; 32]),
        to: (&Genesis, PeerId, [u8; 32]),
        expected: PeerId,
    ) -> (Side, Side) {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let params = parse_suite(DEFAULT_TRANSPORT).unwrap();
        let ci = Context {
            params: &params,
            network_id: &from.2,
            me: Some(from.1),
            keys: &from.0.keys[from.1 .0 as usize],
            peers: &from.0.peers,
        };
        let cr = Context {
            params: &params,
            network_id: &to.2,
            me: Some(to.1),
            keys: &to.0.keys[to.1 .0 as usize],
            peers: &to.0.peers,
        };
        let init = async move {
            let r = initiate(&mut a, &ci, Expect::Genesis(expected)).await;
            let keep = r.is_ok().then_some(a);
            (r, keep)
        };
        let resp = async move {
            let r = respond(&mut b, &cr).await;
            let keep = r.is_ok().then_some(b);
            (r, keep)
        };
        tokio::join!(init, resp)
    }

    const NET: [u8; 32] = [7; 32];

    #[tokio::test]
    async fn sessions_authenticate_and_carry_envelopes() {
        let g = genesis(2);
        let ((i, a), (r, b)) = run((&g, PeerId(0), NET), (&g, PeerId(1), NET), PeerId(1)).await;
        let (i, r) = (i.unwrap(), r.unwrap());
        assert_eq!(
            (i.remote.genesis, r.remote.genesis),
            (Some(PeerId(1)), Some(PeerId(0)))
        );
        assert_eq!(i.remote.node_id, NodeId::of(g.keys[1].verifying_key()));
        let (ar, aw) = tokio::io::split(a.unwrap());
        let (br, bw) = tokio::io::split(b.unwrap());
        let (_, mut writer) = i.into_halves(ar, aw);
        let (mut reader, _) = r.into_halves(br, bw);
        let big = Envelope::new(
            20,
            1,
            9,
            (0..crate::net::MAX_PAYLOAD).map(|x| x as u8).collect(),
        );
        let small = Envelope::new(16, 1, 10, b"tip".to_vec());
        // Concurrently: the 1 MiB envelope does not fit the pipe's buffer.
        let sending = async {
            writer.send(&big).await.unwrap();
            writer.send(&small).await.unwrap();
        };
        let receiving = async {
            assert_eq!(reader.next().await.unwrap(), Some(big.clone()));
            assert_eq!(reader.next().await.unwrap(), Some(small.clone()));
        };
        tokio::join!(sending, receiving);
    }

    #[tokio::test]
    async fn another_network_fails_the_noise_handshake() {
        let g = genesis(2);
        let ((i, _), (r, _)) = run((&g, PeerId(0), NET), (&g, PeerId(1), [8; 32]), PeerId(1)).await;
        assert!(matches!(i, Err(HandshakeError::Noise(_))), "{:?}", i.err());
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn a_key_outside_the_genesis_is_refused() {
        let g = genesis(2);
        // The responder's genesis has another key at index 0.
        let mut view = genesis(2);
        view.keys[1] = g.keys[1].clone();
        view.peers[1] = g.peers[1].clone();
        // The initiator knows the responder; the responder does not know it.
        let ((i, _), (r, _)) = run((&g, PeerId(0), NET), (&view, PeerId(1), NET), PeerId(1)).await;
        assert!(
            matches!(r, Err(HandshakeError::UnknownPeer(_))),
            "{:?}",
            r.err()
        );
        assert!(i.is_err());
    }

    #[tokio::test]
    async fn a_bad_handshake_signature_is_refused() {
        let g = genesis(2);
        let mut view = Genesis {
            keys: g.keys.clone(),
            peers: g.peers.clone(),
        };
        // Peer 0's genesis signing key is someone else's.
        view.peers[0].signing_public = NodeKeys::generate().unwrap().verifying_key().clone();
        let ((i, _), (r, _)) = run((&g, PeerId(0), NET), (&view, PeerId(1), NET), PeerId(1)).await;
        assert!(
            matches!(r, Err(HandshakeError::BadSignature(PeerId(0)))),
            "{:?}",
            r.err()
        );
        // The responder checks before it signs: the initiator gets nothing.
        assert!(i.is_err());
    }

    #[tokio::test]
    async fn direction_and_identity_are_enforced() {
        let g = genesis(3);
        // Higher id dialing a lower one.
        let ((_, _), (r, _)) = run((&g, PeerId(2), NET), (&g, PeerId(1), NET), PeerId(1)).await;
        assert!(
            matches!(r, Err(HandshakeError::WrongDirection(PeerId(2)))),
            "{:?}",
            r.err()
        );
        // Expected peer 2, peer 1 answered.
        let ((i, _), (_, _)) = run((&g, PeerId(0), NET), (&g, PeerId(1), NET), PeerId(2)).await;
        assert!(
            matches!(
                i,
                Err(HandshakeError::WrongPeer {
                    expected: PeerId(2),
                    got: PeerId(1)
                })
            ),
            "{:?}",
            i.err()
        );
    }

    #[tokio::test]
    async fn handshake_payloads_must_be_empty() {
        let g = genesis(2);
        let params = parse_suite(DEFAULT_TRANSPORT).unwrap();
        let cr = Context {
            params: &params,
            network_id: &NET,
            me: Some(PeerId(1)),
            keys: &g.keys[1],
            peers: &g.peers,
        };
        // An initiator (peer 0) that smuggles bytes into its last message.
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let keys = g.keys[0].clone();
        let p2 = params.clone();
        let init = async move {
            let mut hs = snow::Builder::new(p2)
                .local_private_key(keys.noise_secret())
                .unwrap()
                .prologue(&NET)
                .unwrap()
                .build_initiator()
                .unwrap();
            let mut msg = vec![0u8; MAX_MESSAGE];
            let mut inbuf = Vec::new();
            let n = hs.write_message(&[], &mut msg).unwrap();
            frame::write(&mut a, &msg[..n]).await.unwrap();
            frame::read(&mut a, &mut inbuf).await.unwrap();
            hs.read_message(&inbuf, &mut vec![0u8; MAX_MESSAGE])
                .unwrap();
            let n = hs.write_message(b"smuggled", &mut msg).unwrap();
            frame::write(&mut a, &msg[..n]).await.unwrap();
            a
        };
        let (_a, r) = tokio::join!(init, respond(&mut b, &cr));
        assert!(
            matches!(r, Err(HandshakeError::UnexpectedPayload(3, 8))),
            "{:?}",
            r.err()
        );
    }

    /// A node outside the genesis `g`: its keys and its context.
    fn outsider_ctx<'a>(
        params: &'a NoiseParams,
        keys: &'a NodeKeys,
        g: &'a Genesis,
    ) -> Context<'a> {
        Context {
            params,
            network_id: &NET,
            me: None,
            keys,
            peers: &g.peers,
        }
    }

    #[tokio::test]
    async fn a_node_outside_the_genesis_is_identified_by_its_node_id() {
        let g = genesis(2);
        let params = parse_suite(DEFAULT_TRANSPORT).unwrap();
        let joiner = NodeKeys::generate().unwrap();
        let cj = outsider_ctx(&params, &joiner, &g);
        let cr = Context {
            params: &params,
            network_id: &NET,
            me: Some(PeerId(0)),
            keys: &g.keys[0],
            peers: &g.peers,
        };
        // The joiner dials genesis peer 0 (lowest id: no direction rule for
        // nodes outside the genesis), once expecting it, once anyone.
        for expect in [Expect::Genesis(PeerId(0)), Expect::Any] {
            let (mut a, mut b) = tokio::io::duplex(1 << 20);
            let (i, r) = tokio::join!(initiate(&mut a, &cj, expect), respond(&mut b, &cr));
            let (i, r) = (i.unwrap(), r.unwrap());
            assert_eq!(i.remote.genesis, Some(PeerId(0)));
            assert_eq!(i.remote.node_id, NodeId::of(g.keys[0].verifying_key()));
            assert_eq!(r.remote.genesis, None);
            assert_eq!(r.remote.node_id, NodeId::of(joiner.verifying_key()));
            assert_eq!(r.remote.noise_public, *joiner.noise_public());
        }
        // Two nodes outside the genesis also know each other.
        let other = NodeKeys::generate().unwrap();
        let co = outsider_ctx(&params, &other, &g);
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let (i, r) = tokio::join!(initiate(&mut a, &cj, Expect::Any), respond(&mut b, &co));
        assert_eq!(i.unwrap().remote.node_id, NodeId::of(other.verifying_key()));
        assert_eq!(
            r.unwrap().remote.node_id,
            NodeId::of(joiner.verifying_key())
        );
        // Dialing one's own address is refused once the identity is known
        // (the responder sees it first and hangs up).
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let cj2 = outsider_ctx(&params, &joiner, &g);
        let resp = async move {
            let r = respond(&mut b, &cj2).await;
            drop(b);
            r
        };
        let (i, r) = tokio::join!(initiate(&mut a, &cj, Expect::Any), resp);
        assert!(
            matches!(r, Err(HandshakeError::Identity(IdentityError::Myself))),
            "{:?}",
            r.err()
        );
        assert!(i.is_err());
    }

    /// The identity layout, without I/O: what is accepted and what is not.
    #[test]
    fn identity_messages_round_trip_and_bad_ones_are_refused() {
        let g = genesis(2);
        let me = NodeId::of(g.keys[0].verifying_key());
        let joiner = NodeKeys::generate().unwrap();
        let js = *joiner.noise_public();
        let h1 = [1u8; 32];
        let h2 = [2u8; 32];
        let check =
            |stat: &[u8; 32], h: &[u8], msg: &[u8]| check_identity(&g.peers, &me, stat, h, msg);

        // Round trip: a joiner, and a genesis peer.
        let msg = encode_identity(&joiner, &h1, true);
        assert_eq!(msg.len(), IDENTITY_JOINER_LEN);
        assert_eq!(
            &msg[SIGNATURE_LEN..],
            &joiner.verifying_key().to_bytes()[..]
        );
        let r = check(&js, &h1, &msg).unwrap();
        assert_eq!(
            r,
            Remote {
                genesis: None,
                node_id: NodeId::of(joiner.verifying_key()),
                noise_public: js
            }
        );
        let gmsg = encode_identity(&g.keys[1], &h1, false);
        assert_eq!(gmsg.len(), IDENTITY_GENESIS_LEN);
        let r = check(g.keys[1].noise_public(), &h1, &gmsg).unwrap();
        assert_eq!(r.genesis, Some(PeerId(1)));

        let id_err = |r: Result<Remote, HandshakeError>| match r {
            Err(HandshakeError::Identity(e)) => e,
            other => panic!("expected an identity error, got {other:?}"),
        };
        // Replayed from another session (another handshake hash).
        assert_eq!(id_err(check(&js, &h2, &msg)), IdentityError::Signature);
        assert!(matches!(
            check(g.keys[1].noise_public(), &h2, &gmsg),
            Err(HandshakeError::BadSignature(PeerId(1)))
        ));
        // Bad signature: one bit flipped.
        let mut bad = msg.clone();
        bad[10] ^= 1;
        assert_eq!(id_err(check(&js, &h1, &bad)), IdentityError::Signature);
        // Key mismatch: another node's key after this node's signature.
        let other = NodeKeys::generate().unwrap();
        let mut swapped = msg[..SIGNATURE_LEN].to_vec();
        swapped.extend_from_slice(&other.verifying_key().to_bytes());
        assert_eq!(id_err(check(&js, &h1, &swapped)), IdentityError::Signature);
        // Key mismatch: a genesis peer's ML-DSA key with another Noise key.
        let mut stolen = g.keys[1].sign(Domain::Handshake, &h1);
        stolen.extend_from_slice(&g.keys[1].verifying_key().to_bytes());
        assert_eq!(
            id_err(check(&js, &h1, &stolen)),
            IdentityError::GenesisKey(PeerId(1))
        );
        // Trailing bytes, for either kind.
        let mut long = msg.clone();
        long.push(0);
        assert_eq!(
            id_err(check(&js, &h1, &long)),
            IdentityError::Length {
                got: IDENTITY_JOINER_LEN + 1,
                expected: IDENTITY_JOINER_LEN
            }
        );
        let mut glong = gmsg.clone();
        glong.push(0);
        assert_eq!(
            id_err(check(g.keys[1].noise_public(), &h1, &glong)),
            IdentityError::Length {
                got: IDENTITY_GENESIS_LEN + 1,
                expected: IDENTITY_GENESIS_LEN
            }
        );
        // Wrong lengths: short, empty, and a genesis peer sending a key.
        for n in [0, 1, SIGNATURE_LEN + 1, IDENTITY_JOINER_LEN - 1] {
            assert!(matches!(
                id_err(check(&js, &h1, &msg[..n.min(msg.len())])),
                IdentityError::Length { .. }
            ));
        }
        let mut gkey = gmsg.clone();
        gkey.extend_from_slice(&g.keys[1].verifying_key().to_bytes());
        assert!(matches!(
            id_err(check(g.keys[1].noise_public(), &h1, &gkey)),
            IdentityError::Length { .. }
        ));
        // A signature alone from a key outside the genesis: unknown peer.
        assert!(matches!(
            check(&js, &h1, &msg[..SIGNATURE_LEN]),
            Err(HandshakeError::UnknownPeer(_))
        ));
        // A key that does not parse: the right length, garbage inside.
        let mut junk = msg[..SIGNATURE_LEN].to_vec();
        junk.extend_from_slice(&[0xff; SIGNING_PUBLIC_LEN]);
        let e = check(&js, &h1, &junk);
        assert!(
            matches!(
                e,
                Err(HandshakeError::Identity(
                    IdentityError::Key | IdentityError::Signature
                ))
            ),
            "{e:?}"
        );
        // Our own identity.
        let mine = encode_identity(&g.keys[0], &h1, true);
        let mut keyless = g.peers.clone();
        keyless.remove(0);
        assert!(matches!(
            check_identity(&keyless, &me, &[9; 32], &h1, &mine),
            Err(HandshakeError::Identity(IdentityError::Myself))
        ));
    }

    #[test]
    fn suites() {
        assert!(parse_suite(DEFAULT_TRANSPORT).is_ok());
        assert!(parse_suite("Noise_XX_25519_ChaChaPoly_BLAKE2s").is_ok());
        assert!(matches!(
            parse_suite("Noise_NN_25519_ChaChaPoly_BLAKE2s"),
            Err(HandshakeError::Suite { .. })
        ));
        assert!(matches!(
            parse_suite("nonsense"),
            Err(HandshakeError::Suite { .. })
        ));
    }
}
