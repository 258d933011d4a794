//! `montana`: the command line of the montana VDF node.
//!
//! Every subcommand lives in its own file under `cli/`; `cli::run` parses,
//! dispatches and turns errors into the exit-code contract (0 ok, 1 a check
//! failed, 2 bad input, one line on stderr).

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
