//! PostgreSQL failures as store errors, by kind.

use tokio_postgres::error::SqlState;

use crate::store::{StoreError, StoreErrorKind};

/// Maps a driver error: what a retry may fix (a lost connection, a
/// database starting or shutting down, too many connections) is
/// `Unavailable`; a taken unique key is `Conflict`; a missing referenced
/// row is `NotFound`.
pub(crate) fn from_pg(e: tokio_postgres::Error) -> StoreError {
    let kind = match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreErrorKind::Conflict,
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => StoreErrorKind::NotFound,
        Some(c) if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => {
            StoreErrorKind::Corrupt
        }
        Some(c) => {
            let class = &c.code()[..2.min(c.code().len())];
            match class {
                // Connection exceptions, insufficient resources, operator
                // intervention (shutdown, cannot connect now), and a
                // read-only server (a standby during failover).
                "08" | "53" | "57" | "25" => StoreErrorKind::Unavailable,
                _ => StoreErrorKind::Internal,
            }
        }
        // No SQLSTATE: the connection failed or closed.
        None => StoreErrorKind::Unavailable,
    };
    StoreError::new(kind, format!("PostgreSQL: {}", describe(&e)))
}

/// The error and its causes on one line ("error connecting to server:
/// Connection refused (os error 111)"): the driver's own text stops at the
/// first. None of them carries the password.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Maps a failure to get a pooled connection.
pub(crate) fn from_pool(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => from_pg(e),
        other => StoreError::unavailable(format!("PostgreSQL pool: {other}")),
    }
}
