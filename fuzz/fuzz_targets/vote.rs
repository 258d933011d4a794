//! Consensus votes (consensus/vote.rs): strict decode, exact re-encode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use montana_node::consensus::vote::Vote;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = Vote::decode(data) {
        assert_eq!(v.encode(), data);
    }
});
