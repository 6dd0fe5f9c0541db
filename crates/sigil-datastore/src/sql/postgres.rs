//! Opening a PostgreSQL database: connection URL, pool shape and migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Pool, Postgres};

use super::backend::map_err;
use super::migrate_err;
use crate::error::DataStoreError;

const MAX_CONNECTIONS: u32 = 16;
/// How long a caller waits for a pooled connection before `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to and migrates the database named by a `postgres://` (or
/// `postgresql://`) URL.
pub(crate) async fn open(connection_string: &str) -> Result<Pool<Postgres>, DataStoreError> {
    let options = PgConnectOptions::from_str(connection_string).map_err(|e| {
        DataStoreError::InvalidConfig(format!(
            "postgres connection_string is not a usable URL: {e}"
        ))
    })?;
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| map_err::<Postgres>("connecting to postgres", e))?;
    sqlx::migrate!("migrations/postgres")
        .run(&pool)
        .await
        .map_err(|e| migrate_err("postgres", e))?;
    Ok(pool)
}
