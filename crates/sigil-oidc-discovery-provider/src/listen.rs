//! Accepting connections and serving HTTP/1.1 on them: TCP or a Unix
//! socket, optionally behind TLS, with a bound on open connections and on
//! how long a client may take to send its headers or finish a handshake.
//!
//! Each request gets a [`ConnInfo`] extension (is the connection TLS?) and,
//! with `log_requests`, a debug log line. This module knows nothing of the
//! endpoints it serves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::handler::ConnInfo;

/// Why a listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Binding a TCP address failed.
    #[error("could not listen on {addr}: {source}")]
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Binding or opening up a Unix socket failed.
    #[error("could not listen on {path}: {source}")]
    Unix {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A bound listener.
#[derive(Debug)]
pub enum Bound {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix socket; the file is removed when this is dropped.
    Unix(UnixListener, PathBuf),
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Bound::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Bound {
    /// Binds a TCP address.
    pub async fn tcp(addr: SocketAddr) -> Result<Bound, ListenError> {
        TcpListener::bind(addr)
            .await
            .map(Bound::Tcp)
            .map_err(|source| ListenError::Tcp { addr, source })
    }

    /// Binds a Unix socket at `path`, replacing a stale file, open to every
    /// local user (SPIRE makes it mode 0777: a web server in front connects).
    pub fn unix(path: &Path) -> Result<Bound, ListenError> {
        use std::os::unix::fs::PermissionsExt as _;
        let err = |source| ListenError::Unix {
            path: path.to_owned(),
            source,
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let l = UnixListener::bind(path).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).map_err(err)?;
        Ok(Bound::Unix(l, path.to_owned()))
    }

    /// The bound TCP address (for logs and tests).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Bound::Tcp(l) => l.local_addr().ok(),
            Bound::Unix(..) => None,
        }
    }
}

/// Limits on connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; further clients wait in the backlog.
    pub max_connections: usize,
    /// Time allowed for a TLS handshake and for each request's headers.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `bound` until the task is dropped.
pub async fn serve(
    bound: Bound,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    log_requests: bool,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let accepted: std::io::Result<(Box<dyn Conn>, String)> = match &bound {
            Bound::Tcp(l) => l.accept().await.map(|(s, a)| {
                let _ = s.set_nodelay(true);
                (Box::new(s) as Box<dyn Conn>, a.to_string())
            }),
            Bound::Unix(l, _) => l
                .accept()
                .await
                .map(|(s, _)| (Box::new(s) as Box<dyn Conn>, "@".to_owned())),
        };
        let (stream, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "Failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_conn(stream, false, remote, app, limits, log_requests).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => serve_conn(s, true, remote, app, limits, log_requests).await,
                        Ok(Err(e)) => {
                            tracing::debug!(remote_addr = %remote, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(remote_addr = %remote, "TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
}

/// A byte stream we can serve HTTP on.
trait Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn for T {}

async fn serve_conn<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(
    stream: S,
    tls: bool,
    remote: String,
    app: Router,
    limits: Limits,
    log_requests: bool,
) {
    let info = ConnInfo { tls };
    let remote = Arc::new(remote);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info);
        if log_requests {
            tracing::debug!(
                remote_addr = %remote,
                method = %req.method(),
                url = %req.uri(),
                user_agent = req
                    .headers()
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
                "Incoming request"
            );
        }
        app.clone().oneshot(req.map(Body::new))
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "Connection ended with an error");
    }
}
