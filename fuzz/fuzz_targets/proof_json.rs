//! Proof JSON (vdf/src/json.rs), as `montana vdf verify` reads it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = montana_vdf::json::from_str(text);
    }
});
