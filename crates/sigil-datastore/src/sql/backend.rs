//! What differs between SQL engines, in one place: transaction openers, the few
//! statements whose syntax differs, how a [`Stmt`] is executed and a row read,
//! and how engine error codes map onto [`DataStoreError`]. A new engine (MySQL)
//! is one more `impl Backend`.
//!
//! Execution and row access live here, implemented per engine, so the shared
//! store code needs no bounds beyond `DB: Backend` (generic sqlx executor bounds
//! make async code fragile and noisy).

use std::future::Future;

use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::{Database, Encode, Postgres, QueryBuilder, Sqlite, Type};

use super::stmt::{Arg, Stmt};
use crate::error::DataStoreError;

/// Engine-specific facts the shared SQL code needs.
pub(crate) trait Backend: Database {
    /// Name used in messages (`sqlite3`, `postgres`).
    const LABEL: &'static str;

    /// Opens a transaction that will write. SQLite takes the write lock up front
    /// so two writers never deadlock upgrading read locks.
    const BEGIN_WRITE: &'static str;

    /// Opens a read transaction that sees one snapshot across its statements
    /// (an entry and its child rows are read by separate statements).
    const BEGIN_READ: &'static str;

    /// Run right before inserting a change-feed event, held to commit. Event
    /// IDs then become visible in ID order, so a reader never skips one that
    /// commits late. `None` where writers are serialised anyway.
    const LOCK_ENTRY_EVENTS: Option<&'static str>;

    /// As [`Backend::LOCK_ENTRY_EVENTS`], for node events.
    const LOCK_NODE_EVENTS: Option<&'static str>;

    /// Inserts or replaces a bundle; binds trust domain, then data.
    const UPSERT_BUNDLE: &'static str;

    /// Inserts a bundle unless one exists for the trust domain (then changes
    /// nothing); binds trust domain, then data.
    const INSERT_BUNDLE_IF_ABSENT: &'static str;

    /// Deletes a join token and returns its row in one statement; binds token.
    const TAKE_JOIN_TOKEN: &'static str;

    /// Runs a statement; returns how many rows it changed.
    fn execute(
        conn: &mut Self::Connection,
        stmt: Stmt,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + '_;

    /// Runs a query; returns all its rows.
    fn fetch_all(
        conn: &mut Self::Connection,
        stmt: Stmt,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send + '_;

    /// Reads a text column.
    fn text(row: &Self::Row, column: &str) -> Result<String, sqlx::Error>;
    /// Reads a 64-bit integer column.
    fn int(row: &Self::Row, column: &str) -> Result<i64, sqlx::Error>;
    /// Reads a 32-bit integer column.
    fn int32(row: &Self::Row, column: &str) -> Result<i32, sqlx::Error>;
    /// Reads a boolean column.
    fn boolean(row: &Self::Row, column: &str) -> Result<bool, sqlx::Error>;
    /// Reads a binary column.
    fn bytes(row: &Self::Row, column: &str) -> Result<Vec<u8>, sqlx::Error>;

    /// The engine says the failure is about availability: the database is
    /// locked, out of resources, shutting down or unreachable.
    fn is_unavailable(code: &str) -> bool;

    /// The engine aborted the transaction because a concurrent one won.
    fn is_conflict(code: &str) -> bool;
}

/// The per-engine bodies of [`Backend`]'s execution and row-access methods:
/// the same text, type-checked against each concrete engine.
macro_rules! engine_access {
    () => {
        fn execute(
            conn: &mut Self::Connection,
            stmt: Stmt,
        ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + '_ {
            async move {
                let mut query = render::<Self>(stmt);
                let result = query.build().execute(conn).await?;
                Ok(result.rows_affected())
            }
        }

        fn fetch_all(
            conn: &mut Self::Connection,
            stmt: Stmt,
        ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send + '_ {
            async move {
                let mut query = render::<Self>(stmt);
                query.build().fetch_all(conn).await
            }
        }

        fn text(row: &Self::Row, column: &str) -> Result<String, sqlx::Error> {
            sqlx::Row::try_get(row, column)
        }

        fn int(row: &Self::Row, column: &str) -> Result<i64, sqlx::Error> {
            sqlx::Row::try_get(row, column)
        }

        fn int32(row: &Self::Row, column: &str) -> Result<i32, sqlx::Error> {
            sqlx::Row::try_get(row, column)
        }

        fn boolean(row: &Self::Row, column: &str) -> Result<bool, sqlx::Error> {
            sqlx::Row::try_get(row, column)
        }

        fn bytes(row: &Self::Row, column: &str) -> Result<Vec<u8>, sqlx::Error> {
            sqlx::Row::try_get(row, column)
        }
    };
}

impl Backend for Sqlite {
    const LABEL: &'static str = "sqlite3";
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const BEGIN_READ: &'static str = "BEGIN";
    const LOCK_ENTRY_EVENTS: Option<&'static str> = None;
    const LOCK_NODE_EVENTS: Option<&'static str> = None;
    const UPSERT_BUNDLE: &'static str = "INSERT INTO bundles (trust_domain, data) VALUES (?, ?) \
         ON CONFLICT (trust_domain) DO UPDATE SET data = excluded.data";
    const INSERT_BUNDLE_IF_ABSENT: &'static str = "INSERT INTO bundles (trust_domain, data) \
         VALUES (?, ?) ON CONFLICT (trust_domain) DO NOTHING";
    const TAKE_JOIN_TOKEN: &'static str =
        "DELETE FROM join_tokens WHERE token = ? RETURNING token, expires_at";

    engine_access!();

    fn is_unavailable(code: &str) -> bool {
        // Extended result codes carry the primary code in the low byte.
        let Ok(code) = code.parse::<i64>() else {
            return false;
        };
        matches!(
            code & 0xff,
            5 /* BUSY */ | 6 /* LOCKED */ | 7 /* NOMEM */ | 10 /* IOERR */ | 13 /* FULL */
                | 14 /* CANTOPEN */
        )
    }

    fn is_conflict(_code: &str) -> bool {
        false
    }
}

impl Backend for Postgres {
    const LABEL: &'static str = "postgres";
    const BEGIN_WRITE: &'static str = "BEGIN";
    const BEGIN_READ: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    // Arbitrary constants, unique to this schema's two event tables.
    const LOCK_ENTRY_EVENTS: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(5163704501)");
    const LOCK_NODE_EVENTS: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(5163704502)");
    const UPSERT_BUNDLE: &'static str = "INSERT INTO bundles (trust_domain, data) VALUES (?, ?) \
         ON CONFLICT (trust_domain) DO UPDATE SET data = excluded.data";
    const INSERT_BUNDLE_IF_ABSENT: &'static str = "INSERT INTO bundles (trust_domain, data) \
         VALUES (?, ?) ON CONFLICT (trust_domain) DO NOTHING";
    const TAKE_JOIN_TOKEN: &'static str =
        "DELETE FROM join_tokens WHERE token = ? RETURNING token, expires_at";

    engine_access!();

    fn is_unavailable(code: &str) -> bool {
        // Class 08: connection exception; 53: insufficient resources;
        // 57P01..57P03: server shutting down or not yet accepting connections.
        code.starts_with("08")
            || code.starts_with("53")
            || matches!(code, "57P01" | "57P02" | "57P03")
    }

    fn is_conflict(code: &str) -> bool {
        // serialization_failure, deadlock_detected
        matches!(code, "40001" | "40P01")
    }
}

/// Turns a [`Stmt`] into the engine's query builder, each placeholder in the
/// engine's own syntax.
fn render<DB>(stmt: Stmt) -> QueryBuilder<DB>
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
{
    let (pieces, args) = stmt.into_parts();
    let mut pieces = pieces.into_iter();
    let mut query = QueryBuilder::new(pieces.next().unwrap_or_default());
    for (arg, piece) in args.into_iter().zip(pieces) {
        match arg {
            Arg::Int(v) => query.push_bind(v),
            Arg::Int32(v) => query.push_bind(v),
            Arg::Bool(v) => query.push_bind(v),
            Arg::Text(v) => query.push_bind(v),
            Arg::Bytes(v) => query.push_bind(v),
        };
        query.push(piece);
    }
    query
}

/// Maps an sqlx error onto the datastore's vocabulary. `what` names the
/// operation, for the message.
pub(crate) fn map_err<DB: Backend>(what: &str, err: sqlx::Error) -> DataStoreError {
    match err {
        sqlx::Error::Database(db) => map_db_err::<DB>(what, db.as_ref()),
        sqlx::Error::Io(e) => DataStoreError::Unavailable(format!("{what}: {e}")),
        sqlx::Error::Tls(e) => DataStoreError::Unavailable(format!("{what}: TLS: {e}")),
        sqlx::Error::PoolTimedOut => DataStoreError::Unavailable(format!(
            "{what}: timed out waiting for a {} connection",
            DB::LABEL
        )),
        sqlx::Error::PoolClosed => {
            DataStoreError::Unavailable(format!("{what}: the datastore has been closed"))
        }
        sqlx::Error::WorkerCrashed => DataStoreError::Unavailable(format!(
            "{what}: the {} connection worker stopped",
            DB::LABEL
        )),
        sqlx::Error::Protocol(e) => DataStoreError::Unavailable(format!("{what}: {e}")),
        other => DataStoreError::Internal(format!("{what}: {other}")),
    }
}

fn map_db_err<DB: Backend>(what: &str, err: &dyn DatabaseError) -> DataStoreError {
    let message = format!("{what}: {}", err.message());
    match err.kind() {
        ErrorKind::UniqueViolation => DataStoreError::AlreadyExists(message),
        ErrorKind::ForeignKeyViolation
        | ErrorKind::NotNullViolation
        | ErrorKind::CheckViolation => DataStoreError::InvalidArgument(message),
        _ => {
            let code = err.code().unwrap_or_default();
            if DB::is_conflict(&code) {
                DataStoreError::Conflict(message)
            } else if DB::is_unavailable(&code) {
                DataStoreError::Unavailable(message)
            } else {
                DataStoreError::Internal(message)
            }
        }
    }
}
