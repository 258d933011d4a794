//! `montana`: the command line of the montana VDF node.
//!
//! Every subcommand lives in its own file under `cli/`; `cli::run` parses,
//! dispatches and turns errors into the exit-code contract (0 ok, 1 a check
//! failed, 2 bad input, one line on stderr).

mod cli;

fn main() -> std::process::ExitCode {
    // Before any thread exists (it sets an environment variable).
    #[cfg(feature = "gpu")]
    montana_backends::gpu::adapter::disable_device_select_layer();
    cli::run()
}
