//! `cargo xtask`: project automation that is written in Rust instead of shell.
//!
//! * `cargo xtask codegen` regenerates committed source files from the data
//!   files they are derived from; `--check` fails when a file is stale.
//! * `cargo xtask release --dry-run | VERSION` checks and cuts releases.
//! * `cargo xtask fuzz [--seconds N] [TARGET...]` runs the fuzz targets.
//!
//! Run `cargo xtask help` for the full list.

mod codegen;
mod fuzz;
mod release;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("codegen") => codegen::run(&args[1..]),
        Some("release") => release::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("help") | Some("--help") | Some("-h") | None => {
            print_help();
            Ok(())
        }
        Some(other) => Err(format!(
            "unknown xtask command `{other}`; try `cargo xtask help`"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    println!(
        "cargo xtask COMMAND\n\n\
         Commands:\n  \
         codegen [--check]   regenerate committed generated files (--check: fail if stale)\n  \
         release --dry-run   check every publishable crate and package it\n  \
         release VERSION     bump versions, update CHANGELOG.md, commit and tag\n  \
         fuzz [--seconds N] [TARGET...]\n                      run every fuzz target (or those named) N s each (20)\n  \
         help                this text"
    );
}

/// The workspace root: the parent of this crate's manifest directory.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
