//! The subcommands. Each returns the exit code, or an error message that
//! `main` prints before exiting with status 2.

pub(crate) mod api;
pub(crate) mod device;
pub(crate) mod serve;
pub(crate) mod sign;
pub(crate) mod simulate;
pub(crate) mod tsl;

/// What a subcommand returns.
pub(crate) type Outcome = Result<std::process::ExitCode, String>;
