//! Starting a server from its configuration and running it until shutdown.

use std::sync::Arc;
use std::time::Duration;

use sigil_plugin::catalog::CatalogError;
use sigil_plugin::clock::{Clock, SystemClock};
use sigil_plugin::nodeattestor::JoinTokens;
use sigil_proto::MAX_MESSAGE_SIZE;
use sigil_proto::spire::api::server as srv;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, ApiState};
use crate::ca::{CaConfig, CaManager};
use crate::catalog::{Catalog, DataStoreJoinTokens, ServerContext};
use crate::config::ServerConfig;
use crate::endpoints;
use crate::federation::{self, FederationManager};
use crate::health;
use crate::k8s::K8sError;
use crate::podcert;
use crate::publish;

/// How often the CA checks whether to prepare or activate authorities.
pub const ROTATION_INTERVAL: Duration = Duration::from_secs(10);

/// A running server's handles, for tests and the dev quickstart.
#[derive(Debug)]
pub struct Running {
    /// The bound agent endpoint address.
    pub agent_addr: std::net::SocketAddr,
    /// The bound bundle endpoint address, when `federation.bundle_endpoint`
    /// is configured.
    pub bundle_endpoint_addr: Option<std::net::SocketAddr>,
    /// Shared API state.
    pub state: Arc<ApiState>,
    /// The bound `/metrics` address, when `telemetry { Prometheus { } }`
    /// is configured.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The bound health-check address, when `health_checks` has
    /// `listener_enabled`.
    pub health_addr: Option<std::net::SocketAddr>,
}

/// Why a configuration does not validate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidateError {
    /// A plugin declaration is wrong.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The Pod Certificates signer's Kubernetes client cannot be configured.
    #[error("pod_certificates: {0}")]
    PodCertificates(#[from] K8sError),
}

/// Checks everything in the config that can be checked without starting:
/// plugin counts, names and options, through the same catalog `start`
/// loads, and the Pod Certificates signer's client configuration.
pub fn validate(cfg: &ServerConfig) -> Result<(), ValidateError> {
    load_catalog(cfg, Arc::new(DataStoreJoinTokens::default()))?;
    if let Some(pc) = &cfg.pod_certificates {
        podcert::load_client(pc)?;
    }
    Ok(())
}

/// Loads the catalog for `cfg`; join tokens come from `join_tokens`.
fn load_catalog(
    cfg: &ServerConfig,
    join_tokens: Arc<dyn JoinTokens>,
) -> Result<Catalog, CatalogError> {
    Catalog::load(
        &cfg.plugins,
        &ServerContext {
            trust_domain: cfg.trust_domain.clone(),
            data_dir: cfg.data_dir.clone(),
            clock: Arc::new(SystemClock),
            join_tokens,
        },
    )
}

/// Starts every part of the server and returns once both listeners are up.
pub async fn start(cfg: ServerConfig) -> anyhow::Result<Running> {
    // The catalog is loaded (and so the config validated) before anything
    // touches the disk or the database; the datastore it describes is
    // then opened and handed to the plugins that read it.
    let join_tokens = Arc::new(DataStoreJoinTokens::default());
    let catalog = load_catalog(&cfg, join_tokens.clone())?;
    let pod_cert_client = match &cfg.pod_certificates {
        Some(pc) => {
            Some(podcert::load_client(pc).map_err(|e| anyhow::anyhow!("pod_certificates: {e}"))?)
        }
        None => None,
    };
    let metrics_addr =
        sigil_telemetry::metrics::start(&cfg.telemetry, "spire_server", cfg.trust_domain.name())
            .await?;
    sigil_cli::secure_fs::prepare_dir(&cfg.data_dir, 0o700, false)
        .map_err(|e| anyhow::anyhow!("could not use data_dir {}: {e}", cfg.data_dir.display()))?;
    // Writes a crash cut short (the CA journal); before anything here
    // writes again.
    let stale = sigil_cli::secure_fs::remove_stale_temp_files(&cfg.data_dir)
        .map_err(|e| anyhow::anyhow!("could not clean data_dir {}: {e}", cfg.data_dir.display()))?;
    if stale > 0 {
        tracing::info!(count = stale, data_dir = %cfg.data_dir.display(), "Removed temporary files left by an interrupted write");
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ds = sigil_datastore::open(
        &catalog.datastore.database_type,
        &catalog.datastore.connection_string,
    )
    .await
    .map_err(|e| anyhow::anyhow!("DataStore \"sql\": {e}"))?;
    join_tokens.connect(ds.clone());

    let ca = CaManager::start(
        CaConfig {
            trust_domain: cfg.trust_domain.clone(),
            ca_ttl: cfg.ca_ttl,
            x509_key_type: cfg.ca_key_type,
            jwt_key_type: cfg.jwt_key_type,
            subject: cfg.ca_subject.clone(),
            jwt_issuer: cfg.jwt_issuer.clone(),
            journal_path: cfg.data_dir.join("journal.json"),
            upstream: catalog.upstream_authority.clone(),
        },
        catalog.key_manager.clone(),
        ds.clone(),
        clock.clone(),
    )
    .await?;
    tokio::spawn(ca.clone().run_rotation(ROTATION_INTERVAL));
    let health_addr = sigil_telemetry::health::start(
        &cfg.health_checks,
        vec![
            Arc::new(health::DataStoreCheck { ds: ds.clone() }),
            Arc::new(health::CaCheck {
                ca: ca.clone(),
                clock: clock.clone(),
            }),
        ],
    )
    .await?;
    publish::spawn(
        &catalog.bundle_publishers,
        &ca.subscribe_bundle(),
        publish::Backoff::default(),
    );
    if let (Some(pc), Some(client)) = (&cfg.pod_certificates, pod_cert_client) {
        podcert::spawn(
            podcert::Signer {
                cfg: pc.clone(),
                td: cfg.trust_domain.clone(),
                ca: ca.clone(),
                default_ttl: cfg.default_x509_svid_ttl,
                clock: clock.clone(),
            },
            client,
            &ca.subscribe_bundle(),
        );
    }

    let index =
        crate::index::EntryIndex::load(ds.clone(), cfg.server_id(), clock.clone(), cfg.index)
            .await?;
    index.spawn();
    let (changes, _) = watch::channel(0u64);
    let (server_svid_tx, server_svid) = watch::channel(Vec::new());
    let federation = FederationManager::new(
        ds.clone(),
        cfg.trust_domain.clone(),
        cfg.federation.federates_with.clone(),
        changes.clone(),
    );
    tokio::spawn(federation.clone().run());
    let state = Arc::new(ApiState {
        td: cfg.trust_domain.clone(),
        server_id: cfg.server_id(),
        ds: ds.clone(),
        ca: ca.clone(),
        clock: clock.clone(),
        default_x509_svid_ttl: cfg.default_x509_svid_ttl,
        default_jwt_svid_ttl: cfg.default_jwt_svid_ttl,
        agent_svid_ttl: cfg.default_x509_svid_ttl,
        admin_ids: cfg.admin_ids.clone(),
        index,
        changes,
        server_svid,
        federation,
        node_attestors: catalog.node_attestors.clone(),
        limits: api::limits::RateLimits::new(cfg.ratelimit),
    });

    // Housekeeping: expired entries and join tokens, old events, and
    // expired agents when configured.
    Arc::new(crate::prune::Pruner::new(
        ds.clone(),
        clock.clone(),
        cfg.prune,
    ))
    .spawn();

    let tls = endpoints::server_tls_configs(
        ca.clone(),
        cfg.server_id(),
        cfg.default_x509_svid_ttl,
        clock.clone(),
        server_svid_tx,
        endpoints::ForeignAdmins {
            ids: cfg
                .admin_ids
                .iter()
                .filter(|id| !id.is_member_of(&cfg.trust_domain))
                .cloned()
                .collect(),
            ds: ds.clone(),
            warned: Default::default(),
        },
    )
    .await?;

    let listener = TcpListener::bind((cfg.bind_address, cfg.bind_port))
        .await
        .map_err(|e| {
            anyhow::anyhow!("could not bind {}:{}: {e}", cfg.bind_address, cfg.bind_port)
        })?;
    let agent_addr = listener.local_addr()?;
    let bundle_endpoint_addr = match &cfg.federation.bundle_endpoint {
        None => None,
        Some(be) => {
            let listener = TcpListener::bind((be.address, be.port))
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "could not bind bundle endpoint {}:{}: {e}",
                        be.address,
                        be.port
                    )
                })?;
            let addr = listener.local_addr()?;
            federation::endpoint::spawn(
                listener,
                federation::serving::serving_cert(be, &cfg.data_dir, tls.clone())?,
                ca.subscribe_bundle(),
                be.refresh_hint,
            )
            .map_err(|e| anyhow::anyhow!("bundle endpoint TLS: {e}"))?;
            tracing::info!(
                addr = %addr,
                refresh_hint = ?be.refresh_hint,
                profile = be.profile.name(),
                "Serving bundle endpoint"
            );
            Some(addr)
        }
    };
    let admin =
        endpoints::admin_incoming(&cfg.socket_path, &cfg.admin_socket_bounds).map_err(|e| {
            anyhow::anyhow!(
                "could not bind admin socket {}: {e}",
                cfg.socket_path.display()
            )
        })?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let routes = |state: &Arc<ApiState>| {
        tonic::service::Routes::new(
            srv::agent::v1::agent_server::AgentServer::new(api::agent::AgentService::new(
                state.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            srv::entry::v1::entry_server::EntryServer::new(api::entry::EntryService::new(
                state.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            srv::svid::v1::svid_server::SvidServer::new(api::svid::SvidService::new(state.clone()))
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            srv::bundle::v1::bundle_server::BundleServer::new(api::bundle::BundleService::new(
                state.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            sigil_proto::sigil::api::server::sync::v1::sync_server::SyncServer::new(
                api::sync::SyncService::new(state.clone()),
            )
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            srv::debug::v1::debug_server::DebugServer::new(api::debug::DebugService::new(
                state.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            srv::logger::v1::logger_server::LoggerServer::new(api::logger::LoggerService::new(
                state.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            srv::localauthority::v1::local_authority_server::LocalAuthorityServer::new(
                api::localauthority::LocalAuthorityService::new(state.clone()),
            )
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            srv::trustdomain::v1::trust_domain_server::TrustDomainServer::new(
                api::trustdomain::TrustDomainService::new(state.clone()),
            )
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
    };

    let audit = crate::audit::AuditLayer::new(cfg.audit_log_enabled);
    let tcp_routes = routes(&state).add_service(health_service.clone());
    let tls_incoming = endpoints::tls_incoming(listener, tls, &cfg.agent_endpoint_bounds);
    let mut tcp_server = grpc_server(&cfg.agent_endpoint_bounds)
        .layer(audit)
        .layer(sigil_telemetry::rpc::RpcMetricsLayer);
    tokio::spawn(async move {
        if let Err(e) = tcp_server
            .add_routes(tcp_routes)
            .serve_with_incoming(tls_incoming)
            .await
        {
            tracing::error!(error = %e, "agent endpoint stopped");
        }
    });
    let admin_routes = routes(&state).add_service(health_service);
    let mut admin_server = grpc_server(&cfg.admin_socket_bounds)
        .layer(audit)
        .layer(sigil_telemetry::rpc::RpcMetricsLayer);
    tokio::spawn(async move {
        if let Err(e) = admin_server
            .add_routes(admin_routes)
            .serve_with_incoming(admin)
            .await
        {
            tracing::error!(error = %e, "admin endpoint stopped");
        }
    });

    tracing::info!(
        trust_domain = %cfg.trust_domain,
        address = %agent_addr,
        socket_path = %cfg.socket_path.display(),
        "Starting Server APIs"
    );
    Ok(Running {
        agent_addr,
        bundle_endpoint_addr,
        state,
        metrics_addr,
        health_addr,
    })
}

/// A gRPC server builder with the HTTP/2 side of `bounds`. Only the age is
/// given to tonic (it sends GOAWAY then); the connection itself closes once
/// the grace is over too (see `endpoints`), because tonic 0.14 given a grace
/// waits for age plus grace and closes without a GOAWAY.
fn grpc_server(bounds: &endpoints::ConnectionBounds) -> tonic::transport::Server {
    let builder =
        tonic::transport::Server::builder().max_concurrent_streams(bounds.max_concurrent_streams);
    match bounds.max_connection_age {
        Some(age) => builder.max_connection_age(age),
        None => builder,
    }
}
