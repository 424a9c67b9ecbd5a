//! Architecture invariants, checked over `cargo metadata`.
//!
//! * The protocol crates (core, wire, sign, tsl) never depend, even
//!   transitively, on an async runtime, an HTTP stack, an MQTT client, a
//!   database driver or a TLS stack.
//! * Within the workspace every crate only depends on crates below it: core
//!   on none; wire, sign, tsl and transport on core alone; the gateway on
//!   core, sign, tsl and transport (never on wire or the server).
//! * The transport and the gateway never pull an HTTP stack.

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
        (
            "thingcall-gateway",
            &[
                "thingcall-core",
                "thingcall-sign",
                "thingcall-tsl",
                "thingcall-transport",
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
