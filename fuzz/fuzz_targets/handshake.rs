//! Handshakes (net/handshake.rs): the peer's side of a Noise `XXhfs`
//! handshake and signature exchange is arbitrary bytes. The first byte
//! picks our role: even, we respond (the peer's first message is fuzzed:
//! frame, ephemeral and Kyber keys, payload; a seed holds a valid one, so
//! the fuzzer reaches our reply and the peer's second message); odd, we
//! dial peer 1 (its reply is fuzzed). Whatever the bytes, the handshake
//! must end in an error, never a panic or a session: completing it needs
//! the genesis peer's secret keys and this session's ephemeral secrets.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use montana_node::keys::NodeKeys;
use montana_node::net::handshake::{self, Context};
use montana_node::net::{PeerId, PeerInfo, DEFAULT_TRANSPORT};

type Run = Box<dyn Fn(bool, &[u8]) + Send + Sync>;

/// Two genesis peers' keys, made once; a runtime for every input.
fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let params = handshake::parse_suite(DEFAULT_TRANSPORT).unwrap();
        let keys: Vec<NodeKeys> = (0..2).map(|_| NodeKeys::generate().unwrap()).collect();
        let peers: Vec<PeerInfo> = keys
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
        let network_id = [0x42u8; 32];
        Box::new(move |dial: bool, peer_bytes: &[u8]| {
            let me = if dial { 0 } else { 1 };
            let ctx = Context {
                params: &params,
                network_id: &network_id,
                me: Some(PeerId(me)),
                keys: &keys[me as usize],
                peers: &peers,
            };
            // Reads come from the fuzzed bytes, writes go nowhere.
            let mut io = tokio::io::join(peer_bytes, tokio::io::sink());
            let r = rt.block_on(async {
                if dial {
                    handshake::initiate(&mut io, &ctx, handshake::Expect::Genesis(PeerId(1))).await
                } else {
                    handshake::respond(&mut io, &ctx).await
                }
            });
            assert!(r.is_err(), "a handshake completed from fuzzed bytes");
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&role, rest)) = data.split_first() else {
        return;
    };
    run()(role & 1 == 1, rest);
});
