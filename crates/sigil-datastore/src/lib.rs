//! Persistent state of the sigil server: registration entries, attested nodes,
//! join tokens, trust bundles and federation relationships, with a change
//! feed of entry and node events.
//!
//! [`DataStore`] is the interface the server holds (`Arc<dyn DataStore>`);
//! [`open`] builds the SQL implementation for a SPIRE-style `database_type` and
//! `connection_string`, migrating the schema first. This crate knows nothing of
//! certificates or bundle formats: bundles are opaque bytes. It never decides
//! policy (who may see which entry); it stores and filters.
#![forbid(unsafe_code)]

mod error;
mod model;
mod sql;
mod store;
mod validate;

use std::sync::Arc;

pub use error::DataStoreError;
pub use model::{
    AttestedNode, BundleEndpointProfile, EntryMask, FederationRelationship,
    FederationRelationshipMask, JoinToken, ListEntriesRequest, ListEntriesResponse,
    ListNodesRequest, MatchMode, NodeMask, NodeSerials, RegistrationEntry, StoredBundle,
};
pub use store::{DataStore, Result};
pub use validate::MAX_ENTRY_ID_LEN;

/// The `database_type` values [`open`] accepts.
pub const SUPPORTED_DATABASE_TYPES: &[&str] = &["sqlite3", "postgres"];

/// Opens the datastore SPIRE's `DataStore "sql"` plugin would open for the same
/// `database_type` and `connection_string`, and brings its schema up to date.
///
/// - `sqlite3`: a file path, `file:` URI or `sqlite:` URL; the file is created
///   if missing. WAL journal, `synchronous=FULL`, foreign keys on.
/// - `postgres`: a `postgres://user:pass@host:port/db?sslmode=...` URL, or
///   libpq's keyword form (`dbname=db user=u password=p host=h sslmode=disable`).
/// - `mysql`: not supported yet (an `InvalidConfig` error says so).
pub async fn open(
    database_type: &str,
    connection_string: &str,
) -> Result<Arc<dyn DataStore>, DataStoreError> {
    match database_type {
        "sqlite3" => {
            let pool = sql::sqlite::open(connection_string).await?;
            Ok(Arc::new(sql::store::SqlStore::new(pool)))
        }
        "postgres" => {
            let pool = sql::postgres::open(connection_string).await?;
            Ok(Arc::new(sql::store::SqlStore::new(pool)))
        }
        "mysql" => Err(DataStoreError::InvalidConfig(
            "database_type \"mysql\" is not supported yet; use \"sqlite3\" or \"postgres\"".into(),
        )),
        other => Err(DataStoreError::InvalidConfig(format!(
            "unknown database_type {other:?}; expected one of {}",
            SUPPORTED_DATABASE_TYPES.join(", ")
        ))),
    }
}
