//! Wiring: the key source, the public router with its request limits, the
//! listener SPIRE's configuration names, the health listener, and shutdown on
//! SIGINT or SIGTERM. The only place that chooses where certificates come
//! from ([`https_resolver`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http::StatusCode;
use rustls::server::ResolvesServerCert;
use tokio_rustls::TlsAcceptor;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::{Config, Listener};
use crate::handler::{self, Discovery};
use crate::keys::KeyStore;
use crate::listen::{self, Bound, Limits, ListenError};
use crate::tls::{AcmeDomains, TlsError};
use crate::{health, source};
use sigil_acme::FileCertResolver;

/// Requests handled at once; more wait their turn.
pub const MAX_CONCURRENT_REQUESTS: usize = 256;
/// Longest a request may take once its headers are in.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the provider could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A listener could not be opened.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The serving certificate could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Signal handlers could not be installed.
    #[error("could not install signal handlers: {0}")]
    Signal(#[source] std::io::Error),
}

/// Where to serve, with the certificate resolver for HTTPS.
pub enum Endpoint {
    /// Plain HTTP on TCP.
    Tcp(SocketAddr),
    /// Plain HTTP on a Unix socket.
    Unix(PathBuf),
    /// HTTPS on TCP, certificates from the resolver.
    Https(SocketAddr, Arc<dyn ResolvesServerCert>),
    /// HTTPS on TCP port 443 (as SPIRE's provider), certificates from an
    /// ACME CA, which validates over TLS-ALPN-01 on the same listener.
    Acme(SocketAddr, Arc<AcmeDomains>),
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "Tcp({a})"),
            Endpoint::Unix(p) => write!(f, "Unix({})", p.display()),
            Endpoint::Https(a, _) => write!(f, "Https({a})"),
            Endpoint::Acme(a, _) => write!(f, "Acme({a})"),
        }
    }
}

/// SPIRE's provider serves ACME certificates on this port, all addresses.
pub const ACME_PORT: u16 = 443;

/// The endpoint `listener` names. The only place that chooses where
/// certificates come from: `serving_cert_file` starts its file watcher
/// here, and `acme` its managers, one per name in `domains`.
pub fn endpoint(listener: &Listener, domains: &[String]) -> Result<Endpoint, RunError> {
    match listener {
        Listener::Insecure(addr) => Ok(Endpoint::Tcp(*addr)),
        Listener::UnixSocket(path) => Ok(Endpoint::Unix(path.clone())),
        Listener::ServingCertFile(s) => {
            let r = FileCertResolver::new(&s.cert_file_path, &s.key_file_path)
                .map_err(TlsError::from)?;
            tokio::spawn(r.clone().watch(s.file_sync_interval));
            let r: Arc<dyn ResolvesServerCert> = r;
            Ok(Endpoint::Https(s.addr, r))
        }
        Listener::Acme(acme) => {
            let managers = AcmeDomains::new(acme, domains)?;
            managers.start();
            Ok(Endpoint::Acme(
                SocketAddr::from(([0, 0, 0, 0], ACME_PORT)),
                managers,
            ))
        }
    }
}

/// The public router with request limits applied.
pub fn app(d: Discovery) -> Router {
    handler::router(d)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(GlobalConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS))
}

/// Runs the provider until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;

    if cfg.allow_insecure_scheme {
        tracing::warn!(
            "allow_insecure_scheme is enabled. JWKS keys will be served over HTTP. Only enable this when the network path to the provider is trusted end-to-end"
        );
    }
    let endpoint = endpoint(&cfg.listener, cfg.domains.domains())?;

    let keys = KeyStore::new(cfg.set_key_use);
    let poll_interval = cfg.source.poll_interval();
    let poller = tokio::spawn(source::run(cfg.source.clone(), keys.clone()));

    let app = app(Discovery {
        keys: keys.clone(),
        domains: cfg.domains.clone(),
        allow_insecure_scheme: cfg.allow_insecure_scheme,
        jwt_issuer: cfg.jwt_issuer.clone(),
        jwks_uri: cfg.jwks_uri.clone(),
    });

    let (bound, tls) = match endpoint {
        Endpoint::Https(addr, resolver) => {
            let acceptor = TlsAcceptor::from(crate::tls::server_config(resolver, false)?);
            let b = Bound::tcp(addr).await?;
            tracing::info!(address = ?b.local_addr(), "Serving HTTPS");
            (b, Some(acceptor))
        }
        Endpoint::Acme(addr, managers) => {
            let resolver: Arc<dyn ResolvesServerCert> = managers;
            let acceptor = TlsAcceptor::from(crate::tls::server_config(resolver, true)?);
            let b = Bound::tcp(addr).await?;
            tracing::info!(address = ?b.local_addr(), "Serving HTTPS with ACME certificates");
            (b, Some(acceptor))
        }
        Endpoint::Tcp(addr) => {
            let b = Bound::tcp(addr).await?;
            tracing::warn!(address = ?b.local_addr(), "Serving HTTP (insecure)");
            (b, None)
        }
        Endpoint::Unix(path) => {
            let b = Bound::unix(&path)?;
            tracing::info!(network = "unix", address = %path.display(), "Serving HTTP");
            (b, None)
        }
    };

    let health = match &cfg.health_checks {
        Some(h) => {
            let router = health::router(h, keys.clone(), poll_interval);
            let b = Bound::tcp(SocketAddr::from(([0, 0, 0, 0], h.bind_port))).await?;
            tracing::info!(address = ?b.local_addr(), "Serving health checks");
            Some(tokio::spawn(listen::serve(
                b,
                None,
                router,
                Limits::default(),
                false,
            )))
        }
        None => None,
    };

    let serving = listen::serve(bound, tls, app, Limits::default(), cfg.log_requests);
    tokio::select! {
        () = serving => {}
        _ = term.recv() => tracing::info!("Received SIGTERM; stopping"),
        _ = int.recv() => tracing::info!("Received SIGINT; stopping"),
    }
    poller.abort();
    if let Some(h) = health {
        h.abort();
    }
    Ok(())
}
