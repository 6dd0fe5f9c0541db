//! The health listener (`health_checks`) and the write status it reports.
//!
//! As in spiffe-helper: each file set starts `unwritten` and becomes
//! `written` or `failed` after each attempt; the process is live unless a
//! write failed, and ready once every set was written. Both paths answer
//! `200` or `503` with the JSON body
//! `{"status":"OK","health":{"file_write_statuses":{"x509_write_status":"written","jwt_write_status":{"<path>":"written"}}}}`
//! on every path of the listener's port, all interfaces.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::config::HealthConfig;

/// The state of one file set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStatus {
    /// Not tried yet.
    Unwritten,
    /// The last attempt failed.
    Failed,
    /// The last attempt succeeded.
    Written,
}

impl WriteStatus {
    fn as_str(self) -> &'static str {
        match self {
            WriteStatus::Unwritten => "unwritten",
            WriteStatus::Failed => "failed",
            WriteStatus::Written => "written",
        }
    }
}

#[derive(Debug, Default)]
struct Statuses {
    x509: Option<WriteStatus>,
    jwt: BTreeMap<String, WriteStatus>,
}

/// The write statuses, shared by the writers and the listener.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<Statuses>>,
}

impl Health {
    /// Statuses for an X.509 set (when `x509`) and the JWT files at
    /// `jwt_paths`, all unwritten.
    pub fn new(x509: bool, jwt_paths: impl IntoIterator<Item = String>) -> Self {
        let statuses = Statuses {
            x509: x509.then_some(WriteStatus::Unwritten),
            jwt: jwt_paths
                .into_iter()
                .map(|p| (p, WriteStatus::Unwritten))
                .collect(),
        };
        Health {
            inner: Arc::new(Mutex::new(statuses)),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Statuses) -> R) -> R {
        // A poisoned lock only means a writer panicked mid-update of a
        // plain enum; the data is still usable.
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Records an X.509 write.
    pub fn set_x509(&self, status: WriteStatus) {
        self.with(|s| s.x509 = Some(status));
    }

    /// Records a JWT file write.
    pub fn set_jwt(&self, path: &str, status: WriteStatus) {
        self.with(|s| {
            s.jwt.insert(path.to_owned(), status);
        });
    }

    /// Live: no write failed.
    pub fn live(&self) -> bool {
        self.with(|s| {
            s.x509 != Some(WriteStatus::Failed) && s.jwt.values().all(|v| *v != WriteStatus::Failed)
        })
    }

    /// Ready: everything written.
    pub fn ready(&self) -> bool {
        self.with(|s| {
            s.x509.is_none_or(|v| v == WriteStatus::Written)
                && s.jwt.values().all(|v| *v == WriteStatus::Written)
        })
    }

    /// The `health` part of the response body.
    pub fn to_json(&self) -> serde_json::Value {
        self.with(|s| {
            let jwt: serde_json::Map<String, serde_json::Value> = s
                .jwt
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().into()))
                .collect();
            let mut statuses = serde_json::Map::new();
            if let Some(x) = s.x509 {
                statuses.insert("x509_write_status".into(), x.as_str().into());
            }
            statuses.insert("jwt_write_status".into(), jwt.into());
            serde_json::json!({ "file_write_statuses": statuses })
        })
    }

    fn response(&self, good: bool) -> Response<Full<Bytes>> {
        let code = if good {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = serde_json::json!({
            "status": code.canonical_reason().unwrap_or_default(),
            "health": self.to_json(),
        });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = code;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// The listener on `port`, all interfaces, as spiffe-helper's `:port`.
pub async fn bind(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
}

/// Serves the liveness and readiness paths on `listener` until the task is
/// dropped.
pub async fn serve(listener: tokio::net::TcpListener, config: HealthConfig, health: Health) {
    tracing::info!(port = config.bind_port, "Starting health server");
    let config = Arc::new(config);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "Error serving health checks");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let health = health.clone();
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let path = req.uri().path();
                let response = if path == config.liveness_path {
                    health.response(health.live())
                } else if path == config.readiness_path {
                    health.response(health.ready())
                } else {
                    let mut r =
                        Response::new(Full::new(Bytes::from_static(b"404 page not found\n")));
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    r
                };
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_until_a_write_fails_and_ready_once_all_are_written() {
        let h = Health::new(true, ["certs/jwt.token".to_owned()]);
        assert!(h.live() && !h.ready());
        h.set_x509(WriteStatus::Written);
        assert!(!h.ready());
        h.set_jwt("certs/jwt.token", WriteStatus::Written);
        assert!(h.live() && h.ready());
        h.set_x509(WriteStatus::Failed);
        assert!(!h.live() && !h.ready());
        assert_eq!(
            h.to_json(),
            serde_json::json!({"file_write_statuses": {
                "x509_write_status": "failed",
                "jwt_write_status": {"certs/jwt.token": "written"}
            }})
        );
    }
}
