//! Node messages (messages.rs): type and version from the first two bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use montana_node::messages::Message;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    if let Some(Ok(m)) = Message::decode(data[0], data[1], &data[2..]) {
        // What decodes re-encodes and decodes to the same message.
        let again = Message::decode(data[0], data[1], &m.encode());
        assert_eq!(again.map(|r| r.ok()), Some(Some(m)));
    }
});
