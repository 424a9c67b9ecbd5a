//! `thingcall store copy`: moves a deployment's store into PostgreSQL;
//! `thingcall store new-key`: makes a key that seals a store's secrets.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use thingcall_server::{CopyKeys, PostgresUrl, SecretsKeySource};

use super::Outcome;

/// Store commands.
#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Copy a SQLite data directory (registry and records) into PostgreSQL.
    Copy(CopyArgs),
    /// Make a new key that seals a store's secrets, in a new file (mode
    /// 0600), for --secrets-key-file; every node of a cluster needs the same.
    NewKey(NewKeyArgs),
}

#[derive(Args)]
pub(crate) struct NewKeyArgs {
    /// The file to write; it must not exist.
    file: PathBuf,
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
    /// The key the source's secrets are sealed with (default: FROM/secrets.key).
    #[arg(long, value_name = "FILE")]
    from_secrets_key_file: Option<PathBuf>,
    /// The key to seal the target's secrets with (default: the source's).
    /// Every server on the target needs it.
    #[arg(long, value_name = "FILE")]
    to_secrets_key_file: Option<PathBuf>,
}

impl StoreCommand {
    pub(crate) fn run(self) -> Outcome {
        match self {
            StoreCommand::Copy(a) => copy(a),
            StoreCommand::NewKey(a) => new_key(a),
        }
    }
}

fn new_key(a: NewKeyArgs) -> Outcome {
    let key = thingcall_server::new_secrets_key();
    match thingcall_server::write_key_file(&a.file, &key) {
        Ok(()) => {
            out!(
                "wrote a new secrets key to {} (give it with --secrets-key-file; keep a copy apart from the store)",
                a.file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            note!("error: {}: {e}", a.file.display());
            Ok(ExitCode::from(1))
        }
    }
}

fn copy(a: CopyArgs) -> Outcome {
    let to = PostgresUrl::parse(&a.to).map_err(|e| format!("--to: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let keys = CopyKeys {
        from: a
            .from_secrets_key_file
            .clone()
            .map_or(SecretsKeySource::DataDir, SecretsKeySource::File),
        to: a.to_secrets_key_file.clone().map(SecretsKeySource::File),
    };
    let bar = std::io::stderr().is_terminal();
    let mut stage = "";
    let outcome = runtime.block_on(thingcall_server::copy_store(
        &a.from,
        &keys,
        &to,
        a.force,
        |p| {
            if bar {
                if stage != p.stage && !stage.is_empty() {
                    note!();
                }
                super::progress(p.done, p.total, p.stage);
            }
            stage = p.stage;
        },
    ));
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
