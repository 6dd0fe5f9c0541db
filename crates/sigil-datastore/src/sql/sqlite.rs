//! Opening a SQLite database: connection-string forms, durability pragmas,
//! pool shape and migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};

use super::backend::map_err;
use super::migrate_err;
use crate::error::DataStoreError;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// SQLite allows one writer at a time; a few connections serve concurrent reads.
const MAX_CONNECTIONS: u32 = 4;

/// Opens (creating if missing) and migrates the database named by
/// `connection_string`: a file path (`/var/lib/sigil/datastore.sqlite3`, as in
/// SPIRE configs), a `file:` URI or a `sqlite:` URL.
pub(crate) async fn open(connection_string: &str) -> Result<Pool<Sqlite>, DataStoreError> {
    let options = parse(connection_string)?
        .create_if_missing(true)
        // WAL lets readers run beside the writer; FULL syncs the WAL on every
        // commit, so a committed change survives a crash or kill -9.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let in_memory =
        connection_string.contains(":memory:") || connection_string.contains("mode=memory");
    let mut pool = SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS);
    if in_memory {
        // An in-memory database lives only while a connection is open.
        pool = pool
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    }
    let pool = pool
        .connect_with(options)
        .await
        .map_err(|e| open_err(connection_string, e))?;
    sqlx::migrate!("migrations/sqlite")
        .run(&pool)
        .await
        .map_err(|e| migrate_err("sqlite3", e))?;
    Ok(pool)
}

fn parse(connection_string: &str) -> Result<SqliteConnectOptions, DataStoreError> {
    if connection_string.is_empty() {
        return Err(DataStoreError::InvalidConfig(
            "sqlite3 connection_string is empty; give the database file path".into(),
        ));
    }
    let url = if connection_string == ":memory:" {
        // SQLite's own spelling; sqlx's form gives every pooled connection the
        // same (shared-cache) database rather than one each.
        "sqlite::memory:".to_owned()
    } else if connection_string.starts_with("sqlite:") {
        connection_string.to_owned()
    } else if let Some(rest) = connection_string.strip_prefix("file:") {
        // file:/abs/path, file:///abs/path, file:relative/path (RFC 8089 and
        // SQLite's URI filenames); the query parameters sqlx knows still apply.
        let rest = rest
            .strip_prefix("//localhost")
            .or_else(|| rest.strip_prefix("//"))
            .unwrap_or(rest);
        format!("sqlite:{rest}")
    } else {
        return Ok(SqliteConnectOptions::new().filename(connection_string));
    };
    SqliteConnectOptions::from_str(&url).map_err(|e| {
        DataStoreError::InvalidConfig(format!(
            "sqlite3 connection_string {connection_string:?} is not usable: {e}"
        ))
    })
}

fn open_err(connection_string: &str, err: sqlx::Error) -> DataStoreError {
    match map_err::<Sqlite>(
        &format!("opening sqlite3 database {connection_string:?}"),
        err,
    ) {
        // A file that cannot be opened is a configuration problem, not a blip.
        DataStoreError::Unavailable(msg) => DataStoreError::InvalidConfig(msg),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_path_is_used_as_filename() {
        let o = parse("/var/lib/sigil/datastore.sqlite3").expect("valid");
        assert_eq!(
            o.get_filename().to_str(),
            Some("/var/lib/sigil/datastore.sqlite3")
        );
    }

    #[test]
    fn file_uri_forms_resolve_to_the_same_path() {
        for s in [
            "file:/tmp/x.db",
            "file:///tmp/x.db",
            "file://localhost/tmp/x.db",
            "sqlite:///tmp/x.db",
        ] {
            let o = parse(s).expect("valid");
            assert_eq!(o.get_filename().to_str(), Some("/tmp/x.db"), "{s}");
        }
    }

    #[test]
    fn unknown_uri_parameter_is_a_config_error() {
        let err = parse("file:/tmp/x.db?bogus=1").expect_err("must fail");
        assert!(matches!(err, DataStoreError::InvalidConfig(_)), "{err:?}");
    }

    #[test]
    fn empty_connection_string_is_a_config_error() {
        assert!(matches!(parse(""), Err(DataStoreError::InvalidConfig(_))));
    }
}
