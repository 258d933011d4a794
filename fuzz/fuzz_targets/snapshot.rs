//! Fast-sync bytes from peers (node/src/snapshot/): the first byte picks
//! the decoder (0: a message of types 26-31, type and version in the next
//! two bytes; 1: a manifest; 2: a chunk; 3: a membership certificate).
//! Whatever decodes re-encodes to the bytes it came from (or, for a
//! message, decodes again to the same value).
#![no_main]
use libfuzzer_sys::fuzz_target;
use montana_node::snapshot::certificate::Certificate;
use montana_node::snapshot::format::{Chunk, Manifest};
use montana_node::snapshot::messages::SyncMessage;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if rest.len() < 2 {
                return;
            }
            if let Some(Ok(m)) = SyncMessage::decode(rest[0], rest[1], &rest[2..]) {
                let again = SyncMessage::decode(rest[0], rest[1], &m.encode());
                assert_eq!(again.map(|r| r.ok()), Some(Some(m)));
            }
        }
        1 => {
            if let Ok(m) = Manifest::decode(rest) {
                assert_eq!(m.encode(), rest);
            }
        }
        2 => {
            if let Ok(c) = Chunk::decode(rest) {
                assert_eq!(c.encode(), rest);
            }
        }
        _ => {
            if let Ok(c) = Certificate::decode(rest) {
                assert_eq!(c.encode(), rest);
            }
        }
    }
});
