//! MTVP proof encoding (vdf/src/encoding.rs): strict decode, exact re-encode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use montana_vdf::encoding;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = encoding::decode(data) {
        assert_eq!(encoding::encode(&p), data);
    }
});
