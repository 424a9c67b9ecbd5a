//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs every fuzz target in
//! `fuzz/` (or the ones named) for a bounded time with `cargo fuzz`.
//!
//! The committed seeds in `fuzz/seeds/<target>/` are read, never written;
//! what the fuzzer learns goes to `target/fuzz/corpus/<target>/`, and a
//! crashing input to `target/fuzz/artifacts/<target>/`. Any crash fails the
//! command (after the other targets ran), naming the input to reproduce it.

use std::path::Path;
use std::process::Command;

use crate::workspace_root;

/// How long each target runs unless `--seconds` says otherwise.
const DEFAULT_SECONDS: u64 = 20;

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut seconds = DEFAULT_SECONDS;
    let mut wanted = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = rest.next().ok_or("--seconds needs a number")?;
                seconds = value
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("--seconds {value}: not a positive number"))?;
            }
            other if other.starts_with('-') => {
                return Err(format!(
                    "unknown option {other}; usage: cargo xtask fuzz [--seconds N] [TARGET...]"
                ));
            }
            target => wanted.push(target.to_owned()),
        }
    }
    let root = workspace_root();
    let all = targets(&root.join("fuzz"))?;
    for t in &wanted {
        if !all.contains(t) {
            return Err(format!(
                "no fuzz target {t}; the targets are {}",
                all.join(", ")
            ));
        }
    }
    let chosen = if wanted.is_empty() { all } else { wanted };
    check_tools()?;
    // Build every target once, then run them one by one.
    cargo_fuzz(&root, &["build", "-s", "none", "--debug-assertions"])?;
    let mut failed = Vec::new();
    for target in &chosen {
        let corpus = root.join("target/fuzz/corpus").join(target);
        let artifacts = root.join("target/fuzz/artifacts").join(target);
        for dir in [&corpus, &artifacts] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let seeds = root.join("fuzz/seeds").join(target);
        println!("== fuzz {target} for {seconds} s");
        let max_time = format!("-max_total_time={seconds}");
        let prefix = format!("-artifact_prefix={}/", artifacts.display());
        let outcome = cargo_fuzz(
            &root,
            &[
                "run",
                "-s",
                "none",
                "--debug-assertions",
                target,
                &corpus.display().to_string(),
                &seeds.display().to_string(),
                "--",
                &max_time,
                &prefix,
                // One input may take at most 10 s, and 2 GiB.
                "-timeout=10",
                "-rss_limit_mb=2048",
                "-print_final_stats=1",
            ],
        );
        if let Err(e) = outcome {
            eprintln!("fuzz target {target} failed: {e}");
            eprintln!(
                "reproduce with: cargo +nightly fuzz run -s none --debug-assertions {target} {}/<crash file>",
                artifacts.display()
            );
            failed.push(target.clone());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzz targets failed: {}", failed.join(", ")))
    }
}

/// The `[[bin]]` names of the fuzz crate.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>, String> {
    let manifest = fuzz_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let bins = doc
        .get("bin")
        .and_then(toml::Value::as_array)
        .ok_or_else(|| format!("{} lists no [[bin]] targets", manifest.display()))?;
    Ok(bins
        .iter()
        .filter_map(|b| b.get("name").and_then(toml::Value::as_str))
        .map(str::to_owned)
        .collect())
}

fn check_tools() -> Result<(), String> {
    let has = |args: &[&str]| {
        Command::new("cargo")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has(&["+nightly", "--version"]) {
        return Err(
            "fuzzing needs the nightly toolchain (rustup toolchain install nightly)".into(),
        );
    }
    if !has(&["fuzz", "--version"]) {
        return Err("fuzzing needs cargo-fuzz (cargo install cargo-fuzz)".into());
    }
    Ok(())
}

fn cargo_fuzz(root: &Path, args: &[&str]) -> Result<(), String> {
    let status = Command::new("cargo")
        .arg("+nightly")
        .arg("fuzz")
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo fuzz {} exited with {status}",
            args.first().unwrap_or(&"")
        ))
    }
}
