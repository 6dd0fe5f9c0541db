//! The SQL implementation of [`crate::DataStore`]: one engine-neutral store
//! ([`store::SqlStore`]) over engine adapters ([`backend::Backend`]), plus the
//! code that opens and migrates each engine's database.

pub(crate) mod backend;
pub(crate) mod filter;
pub(crate) mod postgres;
pub(crate) mod sqlite;
pub(crate) mod stmt;
pub(crate) mod store;

use sqlx::migrate::MigrateError;

use crate::error::DataStoreError;

/// Maps a migration failure; a database migrated by a newer sigil is called
/// out, since the fix is upgrading this binary.
pub(crate) fn migrate_err(engine: &str, err: MigrateError) -> DataStoreError {
    match err {
        MigrateError::VersionMissing(v) => DataStoreError::Internal(format!(
            "the {engine} database has schema migration {v}, which this version of sigil \
             does not know; it was written by a newer sigil"
        )),
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => {
            match backend_neutral_unavailable(&e) {
                Some(msg) => {
                    DataStoreError::Unavailable(format!("migrating {engine} database: {msg}"))
                }
                None => DataStoreError::Internal(format!("migrating {engine} database: {e}")),
            }
        }
        other => DataStoreError::Internal(format!("migrating {engine} database: {other}")),
    }
}

/// Connection-level failures that mean "cannot reach the database".
fn backend_neutral_unavailable(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Some(err.to_string()),
        _ => None,
    }
}
