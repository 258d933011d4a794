//! Envelopes (net/envelope.rs): the first byte picks a split size, the rest
//! is pushed in pieces of that size; every envelope that comes out
//! re-encodes to the bytes it came from.
#![no_main]
use libfuzzer_sys::fuzz_target;
use montana_node::net::envelope::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let step = split as usize + 1;
    let mut d = Decoder::new();
    let mut consumed = 0usize;
    for piece in rest.chunks(step) {
        d.push(piece);
        loop {
            match d.next_envelope() {
                Ok(Some(e)) => {
                    let bytes = e.encode().expect("a decoded envelope re-encodes");
                    assert_eq!(&rest[consumed..consumed + bytes.len()], &bytes[..]);
                    consumed += bytes.len();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = d.finish();
});
