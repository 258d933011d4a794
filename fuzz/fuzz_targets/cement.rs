//! Cements (consensus/vote.rs): strict decode, exact re-encode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use montana_node::consensus::vote::Cement;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Cement::decode(data) {
        assert_eq!(c.encode(), data);
    }
});
