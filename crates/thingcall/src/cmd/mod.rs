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

/// Writes one line of a command's result to standard output. A reader
/// that went away (`thingcall device status ... | head -1`) is not an
/// error of the command: the process ends quietly, with status 0, where
/// `println!` would panic with a stack trace. Any other failure to write
/// (a full disk behind a redirection) is reported and ends the process
/// with status 2, since the output is incomplete.
pub(crate) fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = written {
        output_failed(&e);
    }
}

/// Ends the process after a failed write to standard output: quietly for
/// a closed pipe, with a message otherwise.
pub(crate) fn output_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    note!("error: cannot write to standard output: {e}");
    std::process::exit(2);
}

/// What a subcommand returns.
pub(crate) type Outcome = Result<std::process::ExitCode, String>;

/// Draws `[####      ] done/total label` over the current stderr line.
pub(crate) fn progress(done: u64, total: u64, label: &str) {
    let width = 30u64;
    let filled = (done.min(total) * width)
        .checked_div(total)
        .unwrap_or(width);
    use std::io::Write as _;
    let _ = write!(
        std::io::stderr(),
        "\r[{}{}] {done}/{total} {label}",
        "#".repeat(usize::try_from(filled).unwrap_or(0)),
        " ".repeat(usize::try_from(width - filled).unwrap_or(0)),
    );
}
