//! The CLI's exit-code contract, in one type.
//!
//! - 0: success.
//! - 1: the command ran and its check failed (an invalid proof, a backend
//!   disagreeing with the oracle).
//! - 2: bad input (bad hex, out-of-bounds parameters, unknown or unavailable
//!   backend, malformed proof); one line on stderr, no panic, no backtrace.
//! - 3: `montana calibrate` only: this host cannot follow the network.
//! - 130: interrupted (SIGINT or SIGTERM) before the command finished: what
//!   it had measured or reached is still reported.

use std::fmt;

/// An error to print (one line) and exit with.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

/// Exit code for bad input.
pub const BAD_INPUT: u8 = 2;
/// Exit code for a failed check.
pub const CHECK_FAILED: u8 = 1;
/// Exit code for a run stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
pub const INTERRUPTED: u8 = 130;

impl CliError {
    pub fn bad_input(message: impl fmt::Display) -> Self {
        CliError {
            code: BAD_INPUT,
            message: one_line(message),
        }
    }

    pub fn interrupted(message: impl fmt::Display) -> Self {
        CliError {
            code: INTERRUPTED,
            message: one_line(message),
        }
    }

    pub fn check_failed(message: impl fmt::Display) -> Self {
        CliError {
            code: CHECK_FAILED,
            message: one_line(message),
        }
    }
}

fn one_line(m: impl fmt::Display) -> String {
    m.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Everything the library crates report as errors is the caller's input
/// being wrong from the CLI's point of view, except where a command says
/// otherwise.
macro_rules! bad_input_from {
    ($($t:ty),*) => {$(
        impl From<$t> for CliError {
            fn from(e: $t) -> Self {
                CliError::bad_input(e)
            }
        }
    )*};
}

bad_input_from!(
    montana_vdf::ParamError,
    montana_vdf::DecodeError,
    montana_vdf::ParseError
);

impl From<montana_backends::SelectError> for CliError {
    fn from(e: montana_backends::SelectError) -> Self {
        CliError::bad_input(e)
    }
}

/// A choice error already names the flag or variable it came from.
impl From<montana_backends::ChoiceError> for CliError {
    fn from(e: montana_backends::ChoiceError) -> Self {
        CliError::bad_input(e)
    }
}

impl From<montana_vdf::BackendError> for CliError {
    fn from(e: montana_vdf::BackendError) -> Self {
        use montana_vdf::BackendError::*;
        match e {
            Device { .. } | Cancelled => CliError::check_failed(e),
            _ => CliError::bad_input(e),
        }
    }
}
