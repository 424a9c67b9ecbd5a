//! Source-level rules, checked as tests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::{Path, PathBuf};

use thingcall_tests::{PROTOCOL_CRATES, workspace_root};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The non-test part of a source file (everything before `#[cfg(test)]`).
fn production_code(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

#[test]
fn protocol_crates_read_no_clock_and_open_no_socket() {
    let banned = [
        "SystemTime::now",
        "Instant::now",
        "std::net::",
        "std::fs::",
        "tokio",
        "thread_rng",
        "rand::",
        "std::thread::sleep",
    ];
    for krate in PROTOCOL_CRATES {
        let mut files = Vec::new();
        rust_files(
            &workspace_root().join("crates").join(krate).join("src"),
            &mut files,
        );
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for b in banned {
                assert!(
                    !production_code(&text).contains(b),
                    "{}: protocol code must not use {b}",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn no_stubs_left_behind() {
    let mut files = Vec::new();
    rust_files(&workspace_root().join("crates"), &mut files);
    rust_files(&workspace_root().join("xtask"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for b in ["todo!(", "unimplemented!(", "dbg!("] {
            assert!(!text.contains(b), "{}: contains {b}", file.display());
        }
    }
}

#[test]
fn every_crate_has_a_readme_and_module_docs() {
    for entry in std::fs::read_dir(workspace_root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        assert!(
            dir.join("README.md").exists(),
            "{} has no README.md",
            dir.display()
        );
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let generated = text.starts_with("// @generated");
            assert!(
                generated || text.trim_start().starts_with("//!"),
                "{} has no //! module doc",
                file.display()
            );
        }
    }
}
