//! Workspace-wide tests of thingcall. The tests live beside this file:
//!
//! * `architecture.rs` checks the crate layering over `cargo metadata`;
//! * `tidy.rs` checks source-level rules (no clock reads or sockets in the
//!   protocol crates, no `todo!`, every crate documented).

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The protocol crates: no IO, no runtime, no clock.
pub const PROTOCOL_CRATES: &[&str] = &[
    "thingcall-core",
    "thingcall-wire",
    "thingcall-sign",
    "thingcall-tsl",
];
