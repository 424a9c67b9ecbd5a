//! `cargo xtask release`: checks and cuts a release.
//!
//! * `--dry-run` checks every publishable crate, in dependency order: the
//!   required metadata (description, license, repository, readme), one
//!   version across the workspace, and that `cargo package` builds the
//!   crate files (offline, without verification builds).
//! * `VERSION` sets the version everywhere, moves the `Unreleased` notes of
//!   `CHANGELOG.md` under the new version, commits and tags `vVERSION`.
//!
//! See `docs/RELEASING.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Entry point for `cargo xtask release`.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let root = crate::workspace_root();
    match args {
        [flag] if flag == "--dry-run" => dry_run(&root).map(|_| ()),
        [version] if !version.starts_with('-') => cut(&root, version),
        _ => Err("usage: cargo xtask release --dry-run | cargo xtask release VERSION".to_owned()),
    }
}

struct Krate {
    name: String,
    version: String,
    deps: BTreeSet<String>,
}

fn metadata(root: &Path) -> Result<Value, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))
}

/// Checks metadata and versions; returns the publishable crates in
/// dependency order.
fn check(root: &Path) -> Result<Vec<String>, String> {
    let meta = metadata(root)?;
    let packages = meta["packages"]
        .as_array()
        .ok_or("cargo metadata has no packages")?;
    let mut problems = Vec::new();
    let mut crates: BTreeMap<String, Krate> = BTreeMap::new();
    for p in packages {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        // `publish = false` shows as an empty registry list.
        if p["publish"].as_array().is_some_and(Vec::is_empty) {
            continue;
        }
        for field in ["description", "license", "repository", "readme"] {
            if p[field].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{name}: missing `{field}`"));
            }
        }
        if let Some(readme) = p["readme"].as_str() {
            let dir = Path::new(p["manifest_path"].as_str().unwrap_or_default())
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            if !dir.join(readme).exists() {
                problems.push(format!("{name}: readme {readme} does not exist"));
            }
        }
        let deps = p["dependencies"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter(|d| d["kind"].is_null())
                    .filter_map(|d| d["name"].as_str())
                    .filter(|n| n.starts_with("thingcall"))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        crates.insert(
            name.clone(),
            Krate {
                name,
                version: p["version"].as_str().unwrap_or_default().to_owned(),
                deps,
            },
        );
    }
    let versions: BTreeSet<&str> = crates.values().map(|k| k.version.as_str()).collect();
    if versions.len() > 1 {
        problems.push(format!(
            "publishable crates disagree on the version: {versions:?}"
        ));
    }
    for k in crates.values() {
        for d in &k.deps {
            if !crates.contains_key(d) {
                problems.push(format!(
                    "{}: depends on {d}, which is not publishable",
                    k.name
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "release checks failed:\n  {}",
            problems.join("\n  ")
        ));
    }
    // Topological order: a crate after everything it depends on.
    let mut order = Vec::new();
    let mut placed = BTreeSet::new();
    while placed.len() < crates.len() {
        let ready: Vec<String> = crates
            .values()
            .filter(|k| !placed.contains(&k.name) && k.deps.iter().all(|d| placed.contains(d)))
            .map(|k| k.name.clone())
            .collect();
        if ready.is_empty() {
            return Err("the crates depend on each other in a cycle".to_owned());
        }
        for n in ready {
            placed.insert(n.clone());
            order.push(n);
        }
    }
    Ok(order)
}

fn dry_run(root: &Path) -> Result<Vec<String>, String> {
    let order = check(root)?;
    println!("publish order: {}", order.join(" -> "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["package", "--no-verify", "--allow-dirty", "--offline"])
        .current_dir(root);
    for name in &order {
        cmd.args(["-p", name]);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo package: {e}"))?;
    if !status.success() {
        return Err("cargo package failed".to_owned());
    }
    println!("release dry run: {} crates ready", order.len());
    Ok(order)
}

fn is_version(v: &str) -> bool {
    let core = v.split_once('-').map_or(v, |(c, _)| c);
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Replaces the workspace version and the versions of our own crates in
/// `[workspace.dependencies]`.
pub(crate) fn bump_manifest(text: &str, version: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut in_package = false;
    let mut bumped = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_package = trimmed.starts_with("[workspace.package]");
        }
        if in_package && trimmed.starts_with("version") && trimmed.contains('=') {
            out.push_str(&format!("version = \"{version}\"\n"));
            bumped = true;
            continue;
        }
        if trimmed.starts_with("thingcall")
            && trimmed.contains("path = \"crates/")
            && trimmed.contains("version = \"")
        {
            let start = line.find("version = \"").unwrap_or(0) + "version = \"".len();
            let end = line[start..].find('"').map_or(line.len(), |e| start + e);
            out.push_str(&line[..start]);
            out.push_str(version);
            out.push_str(&line[end..]);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !bumped {
        return Err("no version in [workspace.package]".to_owned());
    }
    Ok(out)
}

/// Moves the `## Unreleased` notes under `## VERSION - DATE`.
pub(crate) fn bump_changelog(text: &str, version: &str, date: &str) -> Result<String, String> {
    let marker = "## Unreleased";
    let i = text
        .find(marker)
        .ok_or("CHANGELOG.md has no `## Unreleased` section")?;
    let after = i + marker.len();
    Ok(format!(
        "{}{marker}\n\n## {version} - {date}{}",
        &text[..i],
        &text[after..]
    ))
}

fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let stamp = thingcall_core::UnixMillis::from_secs(i64::try_from(secs).unwrap_or(0))
        .to_iso8601_seconds();
    stamp[..10].to_owned()
}

fn cut(root: &Path, version: &str) -> Result<(), String> {
    if !is_version(version) {
        return Err(format!("{version:?} is not a version like 1.2.3"));
    }
    let git = |args: &[&str]| -> Result<String, String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .map_err(|e| format!("git: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    if !git(&["status", "--porcelain"])?.trim().is_empty() {
        return Err("the working tree has uncommitted changes".to_owned());
    }
    let manifest = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).map_err(|e| e.to_string())?;
    std::fs::write(&manifest, bump_manifest(&text, version)?).map_err(|e| e.to_string())?;
    let changelog = root.join("CHANGELOG.md");
    let text = std::fs::read_to_string(&changelog).map_err(|e| format!("CHANGELOG.md: {e}"))?;
    std::fs::write(&changelog, bump_changelog(&text, version, &today())?)
        .map_err(|e| e.to_string())?;
    // Refresh Cargo.lock for the new versions, then check everything.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(root)
        .stdout(std::process::Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        return Err("cargo could not resolve the workspace after the bump".to_owned());
    }
    dry_run(root)?;
    git(&["commit", "-am", &format!("Release {version}")])?;
    git(&[
        "tag",
        "-a",
        &format!("v{version}"),
        "-m",
        &format!("thingcall {version}"),
    ])?;
    println!(
        "released {version}: commit and tag v{version} created; push them with `git push --follow-tags`"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_the_manifest() {
        let text = "[workspace.package]\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace.dependencies]\nthingcall-core = { path = \"crates/thingcall-core\", version = \"0.1.0\" }\nserde = \"1\"\n";
        let out = bump_manifest(text, "0.2.0").unwrap();
        assert!(out.contains("[workspace.package]\nversion = \"0.2.0\"\n"));
        assert!(out.contains(
            "thingcall-core = { path = \"crates/thingcall-core\", version = \"0.2.0\" }"
        ));
        assert!(out.contains("serde = \"1\""));
        assert!(bump_manifest("[package]\nname = \"x\"\n", "1.0.0").is_err());
    }

    #[test]
    fn bumps_the_changelog() {
        let out = bump_changelog(
            "# Changelog\n\n## Unreleased\n\n- thing\n",
            "0.2.0",
            "2026-11-26",
        )
        .unwrap();
        assert_eq!(
            out,
            "# Changelog\n\n## Unreleased\n\n## 0.2.0 - 2026-11-26\n\n- thing\n"
        );
        assert!(bump_changelog("# Changelog\n", "0.2.0", "d").is_err());
    }

    #[test]
    fn versions() {
        assert!(is_version("1.2.3") && is_version("0.1.0-rc.1"));
        assert!(!is_version("1.2") && !is_version("v1.2.3") && !is_version("1.x.3"));
        assert_eq!(today().len(), 10);
    }

    #[test]
    fn the_workspace_passes_the_release_checks() {
        let order = check(&crate::workspace_root()).unwrap();
        let pos = |n: &str| order.iter().position(|o| o == n).unwrap();
        assert!(pos("thingcall-core") < pos("thingcall-wire"));
        assert!(pos("thingcall-server") < pos("thingcall"));
        assert!(!order.contains(&"xtask".to_owned()));
    }
}
