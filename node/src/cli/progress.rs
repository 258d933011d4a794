//! A progress bar for long evaluations, on stderr, only when a person is
//! watching: piped or redirected runs (CI, scripts) stay silent.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Below this many steps an evaluation is too short to need a bar.
const MIN_STEPS: u64 = 20_000_000;

/// A bar for `total` steps, or `None` when stderr is not a terminal or the
/// run is short.
pub fn steps_bar(total: u64) -> Option<ProgressBar> {
    if total < MIN_STEPS || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {percent:>3}% {human_pos}/{human_len} steps, eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    Some(bar)
}
