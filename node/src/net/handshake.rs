//! The handshake: who is on the other end, proven twice.
//!
//! 1. Noise `XX` with the hybrid post-quantum `hfs` modifier
//!    ([`DEFAULT_TRANSPORT`]), the 32-byte network id as the prologue: a peer
//!    of another network derives different keys and fails at the first
//!    encrypted handshake payload. Messages: `-> e, e1`;
//!    `<- e, ee, ekem1, s, es`; `-> s, se`. Each side learns the other's X25519
//!    static key and looks it up among the genesis peers; an unknown key is
//!    dropped before anything more is sent.
//! 2. Each side takes the handshake hash and sends, as its first transport
//!    message, its ML-DSA-65 signature of that hash (context
//!    `montana/handshake/v1`). It is checked against the genesis signing key
//!    of the peer whose static key was presented; a bad one is dropped. This
//!    binds the (post-quantum) signing identity to this very session.
//!
//! Policy enforced here: the lower [`PeerId`] dials, so a responder refuses
//! an initiator whose id is not lower than its own (one connection per pair).

use std::sync::Arc;

use snow::params::NoiseParams;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::connection::{LinkError, Opener, Sealer, Session};
use super::frame::{self, FrameError, MAX_MESSAGE};
use super::{PeerId, PeerInfo};
use crate::keys::{Domain, NodeKeys};

/// The transport suite of genesis version 1. ML-KEM-768 replaces round-3
/// Kyber1024 when `snow` offers it; the name travels in the genesis.
pub const DEFAULT_TRANSPORT: &str = "Noise_XXhfs_25519+Kyber1024_ChaChaPoly_BLAKE2s";

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
    #[error("handshake timed out")]
    Timeout,
    #[error("handshake message {0} carries a payload of {1} bytes (must be empty)")]
    UnexpectedPayload(u8, usize),
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

/// What a handshake needs to know about us and the genesis.
pub struct Context<'a> {
    pub params: &'a NoiseParams,
    pub network_id: &'a [u8; 32],
    pub me: PeerId,
    pub keys: &'a NodeKeys,
    pub peers: &'a [PeerInfo],
}

impl Context<'_> {
    fn builder(&self) -> Result<snow::Builder<'_>, HandshakeError> {
        Ok(snow::Builder::new(self.params.clone())
            .local_private_key(self.keys.noise_secret())?
            .prologue(self.network_id)?)
    }

    /// The genesis peer owning a Noise static key.
    fn identify(&self, remote_static: Option<&[u8]>) -> Result<PeerId, HandshakeError> {
        let key = remote_static.unwrap_or_default();
        self.peers
            .iter()
            .find(|p| p.noise_public[..] == *key)
            .map(|p| p.id)
            .ok_or_else(|| HandshakeError::UnknownPeer(hex::encode(&key[..key.len().min(8)])))
    }
}

/// Dials side: expects `expected` to answer.
pub async fn initiate<S>(
    io: &mut S,
    ctx: &Context<'_>,
    expected: PeerId,
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
    let peer = ctx.identify(hs.get_remote_static())?;
    if peer != expected {
        return Err(HandshakeError::WrongPeer {
            expected,
            got: peer,
        });
    }
    let n = hs.write_message(&[], &mut msg)?; // -> s, se
    frame::write(io, &msg[..n]).await?;
    exchange_signatures(io, ctx, hs, peer).await
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
    let peer = ctx.identify(hs.get_remote_static())?;
    if peer >= ctx.me {
        return Err(HandshakeError::WrongDirection(peer));
    }
    exchange_signatures(io, ctx, hs, peer).await
}

/// Both sides: send our signature of the handshake hash, check theirs.
async fn exchange_signatures<S>(
    io: &mut S,
    ctx: &Context<'_>,
    hs: snow::HandshakeState,
    peer: PeerId,
) -> Result<Session, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hash = hs.get_handshake_hash().to_vec();
    let transport = Arc::new(hs.into_stateless_transport_mode()?);
    let mut sealer = Sealer::new(transport.clone());
    let mut opener = Opener::new(transport);

    let mut out = Vec::new();
    sealer.seal(&ctx.keys.sign(Domain::Handshake, &hash), &mut out)?;
    io.write_all(&out).await.map_err(FrameError::from)?;
    io.flush().await.map_err(FrameError::from)?;

    let mut inbuf = Vec::new();
    frame::read(io, &mut inbuf).await?;
    let signature = opener.open(&inbuf)?;
    let key = &ctx.peers[peer.0 as usize].signing_public;
    if !key.verify(Domain::Handshake, &hash, signature) {
        return Err(HandshakeError::BadSignature(peer));
    }
    Ok(Session {
        peer,
        sealer,
        opener,
    })
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
            me: from.1,
            keys: &from.0.keys[from.1 .0 as usize],
            peers: &from.0.peers,
        };
        let cr = Context {
            params: &params,
            network_id: &to.2,
            me: to.1,
            keys: &to.0.keys[to.1 .0 as usize],
            peers: &to.0.peers,
        };
        let init = async move {
            let r = initiate(&mut a, &ci, expected).await;
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
        assert_eq!((i.peer, r.peer), (PeerId(1), PeerId(0)));
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
        // The responder signed before it checked; the initiator learns of the
        // refusal when the connection closes.
        drop(i);
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
            me: PeerId(1),
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
