//! Health probes, as spire-controller-manager serves them on
//! `health.healthProbeBindAddress`: a liveness and a readiness endpoint
//! (`/healthz` and `/readyz` unless renamed), both plain pings answering
//! `200 ok`, so a Deployment's probes written for spire-controller-manager
//! work unchanged. Nothing else is served there.

use std::net::SocketAddr;

use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Where and under which names the probes are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Listening address.
    pub addr: SocketAddr,
    /// Liveness path, without the leading `/`.
    pub liveness: String,
    /// Readiness path, without the leading `/`.
    pub readiness: String,
}

/// Binds the probe listener (so a bad address fails at startup) and serves
/// it in the background; returns the bound address.
pub async fn serve(
    cfg: HealthConfig,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(cfg.addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "Serving health probes");
    let paths = [format!("/{}", cfg.liveness), format!("/{}", cfg.readiness)];
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "Failed to accept a health probe connection");
                    continue;
                }
            };
            let paths = paths.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    let known = paths.iter().any(|p| p == req.uri().path());
                    let (status, body): (StatusCode, &'static [u8]) = if known {
                        (StatusCode::OK, b"ok")
                    } else {
                        (StatusCode::NOT_FOUND, b"not found")
                    };
                    async move {
                        let mut resp = Response::new(Full::new(body));
                        *resp.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn probes_answer_ok_under_their_names_and_nothing_else_is_served() {
        let (addr, _task) = serve(HealthConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            liveness: "healthz".to_owned(),
            readiness: "ready".to_owned(),
        })
        .await
        .unwrap();
        for path in ["/healthz", "/ready"] {
            let r = get(addr, path).await;
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
            assert!(r.ends_with("ok"), "{r}");
        }
        let r = get(addr, "/readyz").await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    }
}
