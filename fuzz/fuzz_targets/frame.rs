//! Frames (net/frame.rs): read frames from arbitrary bytes until an error.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use montana_node::net::frame;

/// One runtime for every input (building one per input dominated the run).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let mut r = data;
        let mut buf = Vec::new();
        let mut n = 0usize;
        while frame::read(&mut r, &mut buf).await.is_ok() {
            assert!(!buf.is_empty() && buf.len() <= frame::MAX_MESSAGE);
            n += 1;
            assert!(n <= data.len() / 3 + 1);
        }
    });
});
