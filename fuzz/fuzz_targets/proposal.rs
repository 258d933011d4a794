//! Proposals (proposal.rs): strict decode, exact re-encode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use montana_node::proposal::Proposal;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Proposal::from_bytes(data) {
        assert_eq!(p.to_bytes(), data);
    }
});
