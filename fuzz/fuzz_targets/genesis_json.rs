//! Genesis manifests (genesis.rs): parse, validate, and for a valid one the
//! network id and canonical JSON are stable.
#![no_main]
use libfuzzer_sys::fuzz_target;
use montana_node::genesis::Genesis;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(g) = serde_json::from_str::<Genesis>(text) else { return };
    if g.validate().is_ok() {
        let back: Genesis = serde_json::from_str(&g.to_json()).unwrap();
        assert_eq!(back.network_id(), g.network_id());
    }
});
