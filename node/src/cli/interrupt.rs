//! SIGINT and SIGTERM as a flag, for commands that stop cleanly and report
//! what they reached (exit 130) instead of dying mid-way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The flag, set by the first SIGINT or SIGTERM from now on. The handlers
/// are installed (once) before this returns, so no signal is missed.
pub fn flag() -> Arc<AtomicBool> {
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [libc::SIGINT, libc::SIGTERM] {
            install(sig, flag.clone());
        }
        flag
    })
    .clone()
}

fn install(sig: i32, flag: Arc<AtomicBool>) {
    // A small tokio runtime thread turns the signal into the flag; it says
    // when its handler is in place.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("signal-{sig}"))
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                let _ = ready_tx.send(());
                return;
            };
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let installed = signal(SignalKind::from_raw(sig));
                let _ = ready_tx.send(());
                if let Ok(mut s) = installed {
                    while s.recv().await.is_some() {
                        flag.store(true, Ordering::Relaxed);
                    }
                }
            });
        });
    if spawned.is_ok() {
        let _ = ready_rx.recv();
    }
}
