//! The subcommands. Each returns the exit code, or an error message that
//! `main` prints before exiting with status 2.

pub(crate) mod api;
pub(crate) mod device;
pub(crate) mod serve;
pub(crate) mod sign;
pub(crate) mod simulate;
pub(crate) mod store;
pub(crate) mod subscribe;
pub(crate) mod tsl;

/// What a subcommand returns.
pub(crate) type Outcome = Result<std::process::ExitCode, String>;

/// Draws `[####      ] done/total label` over the current stderr line.
pub(crate) fn progress(done: u64, total: u64, label: &str) {
    let width = 30u64;
    let filled = (done.min(total) * width)
        .checked_div(total)
        .unwrap_or(width);
    eprint!(
        "\r[{}{}] {done}/{total} {label}",
        "#".repeat(usize::try_from(filled).unwrap_or(0)),
        " ".repeat(usize::try_from(width - filled).unwrap_or(0)),
    );
}
