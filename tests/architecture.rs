//! Architecture invariants, checked over `cargo metadata`.
//!
//! * The protocol crates (core, wire, sign, tsl) never depend, even
//!   transitively, on an async runtime, an HTTP stack, an MQTT client, a
//!   database driver or a TLS stack.
//! * Within the workspace every crate only depends on crates below it: core
//!   on none; wire, sign, tsl and transport on core alone; tls on none; the
//!   gateway on core, sign, tsl, transport and tls (never on wire or the
//!   server); the client SDK on core, wire, sign and tls.
//! * The transport and the gateway never pull an HTTP stack.
//! * No two files of the server crate, nor of the command line, import
//!   each other, even through others.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;
use thingcall_tests::{PROTOCOL_CRATES, workspace_root};

const FORBIDDEN: &[&str] = &[
    "tokio",
    "hyper",
    "hyper-util",
    "h2",
    "mio",
    "socket2",
    "async-trait",
    "futures",
    "rumqttc",
    "reqwest",
    "rustls",
    "openssl",
    "native-tls",
    "rusqlite",
    "tokio-postgres",
    "sqlx",
];

struct Graph {
    names: BTreeMap<String, String>,
    normal_deps: BTreeMap<String, Vec<String>>,
}

fn graph() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let normal_deps = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            let deps = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().unwrap().to_owned())
                .collect();
            (node["id"].as_str().unwrap().to_owned(), deps)
        })
        .collect();
    Graph { names, normal_deps }
}

impl Graph {
    fn id_of(&self, name: &str) -> String {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(id, _)| id.clone())
            .unwrap()
    }

    /// Names of every crate reachable through normal dependencies.
    fn closure(&self, name: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![self.id_of(name)];
        while let Some(id) = stack.pop() {
            for dep in self.normal_deps.get(&id).into_iter().flatten() {
                if seen.insert(self.names[dep].clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        seen
    }
}

#[test]
fn protocol_crates_do_no_io() {
    let g = graph();
    for krate in PROTOCOL_CRATES {
        let reach = g.closure(krate);
        let bad: Vec<&String> = reach
            .iter()
            .filter(|n| FORBIDDEN.contains(&n.as_str()))
            .collect();
        assert!(
            bad.is_empty(),
            "Architecture Invariant: {krate} must not depend on {bad:?}"
        );
    }
}

#[test]
fn transport_and_gateway_have_no_http_stack() {
    let g = graph();
    let http = ["hyper", "hyper-util", "h2", "reqwest"];
    for krate in ["thingcall-transport", "thingcall-gateway"] {
        let bad: Vec<String> = g
            .closure(krate)
            .into_iter()
            .filter(|n| http.contains(&n.as_str()))
            .collect();
        assert!(
            bad.is_empty(),
            "Architecture Invariant: {krate} must not depend on {bad:?}"
        );
    }
}

#[test]
fn protocol_crates_only_depend_downwards() {
    let g = graph();
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("thingcall-core", &[][..]),
        ("thingcall-wire", &["thingcall-core"][..]),
        ("thingcall-sign", &["thingcall-core"][..]),
        ("thingcall-tsl", &["thingcall-core"][..]),
        ("thingcall-transport", &["thingcall-core"][..]),
        // TLS certificates know nothing of the protocol.
        ("thingcall-tls", &[][..]),
        // Server-side subscription: the AMQP signature and TLS, never the
        // store or the HTTP edge (the server hands it both as traits).
        (
            "thingcall-amqp",
            &["thingcall-core", "thingcall-sign", "thingcall-tls"][..],
        ),
        // The device side: its TLS client trusts what `thingcall-tls`
        // builds, as every client of thingcall does.
        (
            "thingcall-gateway",
            &[
                "thingcall-core",
                "thingcall-sign",
                "thingcall-tsl",
                "thingcall-transport",
                "thingcall-tls",
            ][..],
        ),
        // The SDK: signing and the wire model, TLS trust; never the server.
        (
            "thingcall-client",
            &[
                "thingcall-core",
                "thingcall-wire",
                "thingcall-sign",
                "thingcall-tls",
            ][..],
        ),
    ]);
    for (krate, ok) in allowed {
        let ours: Vec<String> = g
            .closure(krate)
            .into_iter()
            .filter(|n| n.starts_with("thingcall"))
            .collect();
        let bad: Vec<&String> = ours.iter().filter(|n| !ok.contains(&n.as_str())).collect();
        assert!(
            bad.is_empty(),
            "Architecture Invariant: {krate} may only depend on {ok:?}, found {bad:?}"
        );
    }
}

/// The modules of a crate's `src/` as paths (`store::sqlite`), each with
/// its file's text. `lib.rs` (or a binary's `main.rs`) is the root, `[]`.
fn modules(src: &std::path::Path) -> BTreeMap<Vec<String>, String> {
    fn walk(dir: &std::path::Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut p = prefix.to_vec();
                p.push(name);
                walk(&path, &p, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut p = prefix.to_vec();
                if name != "mod" && name != "lib" && name != "main" {
                    p.push(name);
                }
                out.insert(p, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// The module paths a file names: `crate::a::b`, `super::c`, and the
/// items of `use crate::a::{b, c}` groups, resolved to the longest prefix
/// that is a module.
fn references(
    this: &[String],
    text: &str,
    all: &BTreeMap<Vec<String>, String>,
) -> BTreeSet<Vec<String>> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let resolve = |mut path: Vec<String>| -> Option<Vec<String>> {
        while !path.is_empty() {
            if all.contains_key(&path) {
                return Some(path);
            }
            path.pop();
        }
        None
    };
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for (start, anchor) in [("crate::", None), ("super::", Some(()))] {
            let mut rest = code;
            while let Some(at) = rest.find(start) {
                let before = rest[..at].chars().last();
                rest = &rest[at + start.len()..];
                if before.is_some_and(is_ident) {
                    continue;
                }
                // The base: the crate root, or this file's parent (a
                // `mod.rs` is its own directory's module).
                let mut base: Vec<String> = match anchor {
                    None => Vec::new(),
                    Some(()) => this[..this.len().saturating_sub(1)].to_vec(),
                };
                let mut tail = rest;
                let mut more_super = tail.starts_with("super::");
                while more_super {
                    base.pop();
                    tail = &tail["super::".len()..];
                    more_super = tail.starts_with("super::");
                }
                let path_text: String = tail
                    .chars()
                    .take_while(|c| is_ident(*c) || *c == ':')
                    .collect();
                let mut path = base.clone();
                path.extend(
                    path_text
                        .split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
                if let Some(p) = resolve(path.clone()) {
                    out.insert(p);
                }
                // `prefix::{a, b}`: each item may be a module itself.
                let after = &tail[path_text.len()..];
                if let Some(group) = after.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or_default();
                    for item in group.split(',') {
                        let item = item.trim().split("::").next().unwrap_or_default().trim();
                        let mut p = path.clone();
                        p.push(item.to_owned());
                        if all.contains_key(&p) {
                            out.insert(p);
                        }
                    }
                }
            }
        }
    }
    out.remove(this);
    out
}

/// No two files of the server import each other, directly or through
/// others. A parent module naming its own children (`dispatch` calling
/// `invoke::invoke`, `lib.rs` assembling the server) is the module tree,
/// not an import, and is not counted.
#[test]
fn the_server_s_files_import_in_no_circle() {
    let edges = import_edges("crates/thingcall-server/src");
    assert_no_circle(&edges);
    // The check sees imports at all: the engine uses the store.
    assert!(edges[&vec!["engine".to_owned()]].contains(&vec!["store".to_owned()]));
}

/// The same for the command line: one command's module may use another's
/// (`device` runs `simulate`), never the other way round as well.
#[test]
fn the_command_line_s_files_import_in_no_circle() {
    let edges = import_edges("crates/thingcall/src");
    assert_no_circle(&edges);
    // The check sees imports at all: `device` runs `simulate`.
    let device = vec!["cmd".to_owned(), "device".to_owned()];
    assert!(edges[&device].contains(&vec!["cmd".to_owned(), "simulate".to_owned()]));
}

/// Each module of a crate's source folder with the modules it imports
/// (its own children left out).
fn import_edges(src: &str) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let all = modules(&workspace_root().join(src));
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (path, text) in &all {
        let targets = references(path, text, &all)
            .into_iter()
            .filter(|t| !t.starts_with(path))
            .collect();
        edges.insert(path.clone(), targets);
    }
    edges
}

/// Fails with the first import circle among `edges`, named file by file.
fn assert_no_circle(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) {
    // Depth-first search for a back edge.
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        let mut stack = Vec::new();
        if let Some(cycle) = visit(node, edges, &mut stack, &mut done) {
            let names: Vec<String> = cycle
                .iter()
                .map(|p| {
                    if p.is_empty() {
                        "lib".into()
                    } else {
                        p.join("::")
                    }
                })
                .collect();
            panic!("an import circle: {}", names.join(" -> "));
        }
    }
}
