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
///
/// libpq's `connect_timeout` (keyword, or URL query parameter) bounds how
/// long opening a connection may take, including waiting for a pooled one:
/// it becomes the pool's acquire timeout (10s when not set). As in libpq it
/// is in seconds, values below 2 count as 2, and 0 means no limit.
pub(crate) async fn open(connection_string: &str) -> Result<Pool<Postgres>, DataStoreError> {
    let PgSettings {
        options,
        connect_timeout,
    } = connect_options(connection_string)?;
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(connect_timeout.unwrap_or(ACQUIRE_TIMEOUT))
        .connect_with(options)
        .await
        .map_err(|e| map_err::<Postgres>("connecting to postgres", e))?;
    sqlx::migrate!("migrations/postgres")
        .run(&pool)
        .await
        .map_err(|e| migrate_err("postgres", e))?;
    Ok(pool)
}

/// What a connection string says: where and how to connect, and how long
/// connecting may take.
#[derive(Debug)]
pub(crate) struct PgSettings {
    /// sqlx's connection options.
    pub(crate) options: PgConnectOptions,
    /// libpq's `connect_timeout`, when given.
    pub(crate) connect_timeout: Option<Duration>,
}

/// A `connect_timeout = 0` (libpq: wait indefinitely) as a pool timeout.
const NO_CONNECT_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// libpq's `connect_timeout`: seconds; 0 (or negative) means no limit;
/// 1 counts as 2.
fn parse_connect_timeout(value: &str) -> Result<Duration, DataStoreError> {
    let secs: i64 = value.trim().parse().map_err(|_| {
        DataStoreError::InvalidConfig(format!(
            "postgres connection_string: connect_timeout {value:?} is not a number of seconds"
        ))
    })?;
    Ok(match secs {
        i64::MIN..=0 => NO_CONNECT_TIMEOUT,
        1 => Duration::from_secs(2),
        n => Duration::from_secs(n.unsigned_abs()),
    })
}

/// Parses a URL or a libpq keyword/value connection string.
pub(crate) fn connect_options(s: &str) -> Result<PgSettings, DataStoreError> {
    let trimmed = s.trim();
    let bad = |m: String| DataStoreError::InvalidConfig(format!("postgres connection_string: {m}"));
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        // sqlx ignores query parameters it does not know, connect_timeout
        // among them: read it here.
        let mut connect_timeout = None;
        if let Some((_, query)) = trimmed.split_once('?') {
            for pair in query.split('&') {
                if let Some(("connect_timeout", v)) = pair.split_once('=') {
                    connect_timeout = Some(parse_connect_timeout(v)?);
                }
            }
        }
        let options = PgConnectOptions::from_str(trimmed).map_err(|e| {
            DataStoreError::InvalidConfig(format!(
                "postgres connection_string is not a usable URL: {e}"
            ))
        })?;
        return Ok(PgSettings {
            options,
            connect_timeout,
        });
    }
    let mut connect_timeout = None;
    let mut options = PgConnectOptions::new_without_pgpass();
    for (key, value) in keyword_pairs(trimmed).map_err(|e| bad(e.to_string()))? {
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
            "connect_timeout" => {
                connect_timeout = Some(parse_connect_timeout(&value)?);
                options
            }
            other => return Err(bad(format!("keyword {other:?} is not supported"))),
        };
    }
    Ok(PgSettings {
        options,
        connect_timeout,
    })
}

/// Why a keyword/value connection string does not split into pairs; its text
/// goes into [`DataStoreError::InvalidConfig`].
#[derive(Debug, thiserror::Error)]
enum KeywordSyntaxError {
    /// A keyword not followed by `=`.
    #[error("expected \"=\" after {0:?}")]
    MissingEquals(String),
    /// A single-quoted value with no closing quote.
    #[error("unterminated quoted value for {0:?}")]
    UnterminatedQuote(String),
}

/// Splits `k=v k2='quoted v'` into pairs (libpq quoting: single quotes,
/// backslash escapes).
fn keyword_pairs(s: &str) -> Result<Vec<(String, String)>, KeywordSyntaxError> {
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
            return Err(KeywordSyntaxError::MissingEquals(key));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(KeywordSyntaxError::UnterminatedQuote(key)),
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
        .unwrap()
        .options;
        assert_eq!(o.get_host(), "db.example");
        assert_eq!(o.get_port(), 5433);
        assert_eq!(o.get_username(), "spire");
        assert_eq!(o.get_database(), Some("spire"));
        let url = connect_options("postgres://u:p@h:1/d").unwrap().options;
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
        let e = connect_options("connect_timeout=soon")
            .unwrap_err()
            .to_string();
        assert!(e.contains("connect_timeout"), "{e}");
    }

    #[test]
    fn connect_timeout_is_read_from_keywords_and_urls_as_libpq_does() {
        let t = |s: &str| connect_options(s).unwrap().connect_timeout;
        assert_eq!(
            t("dbname=x connect_timeout=5"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            t("dbname=x connect_timeout=1"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(t("dbname=x connect_timeout=0"), Some(NO_CONNECT_TIMEOUT));
        assert_eq!(t("dbname=x"), None);
        assert_eq!(
            t("postgres://u@h/d?sslmode=disable&connect_timeout=3"),
            Some(Duration::from_secs(3))
        );
    }

    /// A server that accepts TCP connections and never answers: opening
    /// the database gives up after `connect_timeout`, not the 10s default.
    #[tokio::test]
    async fn connect_timeout_bounds_opening_against_a_silent_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let started = std::time::Instant::now();
        let r = open(&format!(
            "host=127.0.0.1 port={port} dbname=x user=x sslmode=disable connect_timeout=2"
        ))
        .await;
        let took = started.elapsed();
        assert!(r.is_err(), "a silent server cannot be opened");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(6),
            "gave up after {took:?}, expected about 2s"
        );
    }
}
