//! `thingcall store copy`: moves a deployment's store into PostgreSQL.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use thingcall_server::PostgresUrl;

use super::Outcome;

/// Store commands.
#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Copy a SQLite data directory (registry and records) into PostgreSQL.
    Copy(CopyArgs),
}

#[derive(Args)]
pub(crate) struct CopyArgs {
    /// The data directory of the SQLite store (no server may be running on it).
    #[arg(long)]
    from: PathBuf,
    /// The PostgreSQL database: postgres://USER[:PASSWORD]@HOST[:PORT]/DB.
    #[arg(
        long,
        value_name = "URL",
        hide_env_values = true,
        env = "THINGCALL_STORE"
    )]
    to: String,
    /// Replace what the target holds (it is refused when not empty).
    #[arg(long)]
    force: bool,
}

impl StoreCommand {
    pub(crate) fn run(self) -> Outcome {
        match self {
            StoreCommand::Copy(a) => copy(a),
        }
    }
}

fn copy(a: CopyArgs) -> Outcome {
    let to = PostgresUrl::parse(&a.to).map_err(|e| format!("--to: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let bar = std::io::stderr().is_terminal();
    let mut stage = "";
    let outcome = runtime.block_on(thingcall_server::copy_store(&a.from, &to, a.force, |p| {
        if bar {
            if stage != p.stage && !stage.is_empty() {
                note!();
            }
            super::progress(p.done, p.total, p.stage);
        }
        stage = p.stage;
    }));
    if bar && !stage.is_empty() {
        note!();
    }
    match outcome {
        Ok(s) => {
            out!(
                "copied {} AccessKeys, {} products, {} devices and {} records from {} to {to}",
                s.access_keys,
                s.products,
                s.devices,
                s.records,
                a.from.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            note!("error: {}", e.message());
            Ok(ExitCode::from(1))
        }
    }
}
