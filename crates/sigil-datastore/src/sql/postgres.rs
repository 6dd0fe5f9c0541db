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
/// `postgresql://`) URL, or by libpq's `key=value` form that SPIRE's docs use
/// (`dbname=spire user=spire password=secret host=localhost sslmode=disable`).
pub(crate) async fn open(connection_string: &str) -> Result<Pool<Postgres>, DataStoreError> {
    let options = connect_options(connection_string)?;
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

/// Parses a URL or a libpq keyword/value connection string.
pub(crate) fn connect_options(s: &str) -> Result<PgConnectOptions, DataStoreError> {
    let trimmed = s.trim();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        return PgConnectOptions::from_str(trimmed).map_err(|e| {
            DataStoreError::InvalidConfig(format!(
                "postgres connection_string is not a usable URL: {e}"
            ))
        });
    }
    let bad = |m: String| DataStoreError::InvalidConfig(format!("postgres connection_string: {m}"));
    let mut options = PgConnectOptions::new_without_pgpass();
    for (key, value) in keyword_pairs(trimmed).map_err(bad)? {
        options = match key.as_str() {
            "host" => options.host(&value),
            "port" => options.port(
                value
                    .parse()
                    .map_err(|_| bad(format!("port {value:?} is not a number")))?,
            ),
            "user" => options.username(&value),
            "password" => options.password(&value),
            "dbname" => options.database(&value),
            "sslmode" => options.ssl_mode(
                value
                    .parse()
                    .map_err(|_| bad(format!("unknown sslmode {value:?}")))?,
            ),
            "sslrootcert" => options.ssl_root_cert(value.as_str()),
            "sslcert" => options.ssl_client_cert(value.as_str()),
            "sslkey" => options.ssl_client_key(value.as_str()),
            "application_name" => options.application_name(&value),
            "connect_timeout" => options,
            other => return Err(bad(format!("keyword {other:?} is not supported"))),
        };
    }
    Ok(options)
}

/// Splits `k=v k2='quoted v'` into pairs (libpq quoting: single quotes,
/// backslash escapes).
fn keyword_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("expected \"=\" after {key:?}"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value for {key:?}")),
                    Some('\'') => break,
                    Some('\\') => {
                        if let Some(c) = chars.next() {
                            value.push(c);
                        }
                    }
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spire_style_keyword_connection_strings_parse() {
        let o = connect_options(
            "dbname=spire user=spire password='se cret' host=db.example port=5433 sslmode=disable",
        )
        .unwrap();
        assert_eq!(o.get_host(), "db.example");
        assert_eq!(o.get_port(), 5433);
        assert_eq!(o.get_username(), "spire");
        assert_eq!(o.get_database(), Some("spire"));
        let url = connect_options("postgres://u:p@h:1/d").unwrap();
        assert_eq!(url.get_database(), Some("d"));
    }

    #[test]
    fn bad_keyword_strings_name_the_problem() {
        let e = connect_options("dbname=x bogus=1").unwrap_err().to_string();
        assert!(e.contains("\"bogus\""), "{e}");
        let e = connect_options("dbname").unwrap_err().to_string();
        assert!(e.contains("expected"), "{e}");
        let e = connect_options("port=abc").unwrap_err().to_string();
        assert!(e.contains("not a number"), "{e}");
        let e = connect_options("password='open").unwrap_err().to_string();
        assert!(e.contains("unterminated"), "{e}");
    }
}
