//! `sigil-agent run`: wiring the configuration to the manager and the
//! Workload API, and running until SIGINT/SIGTERM.
//!
//! Order matters: the agent attests (or reloads its SVID) before the
//! Workload API socket appears, so a workload that can connect always finds
//! an agent with an identity. On shutdown the socket file is removed.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use sigil_plugin::clock::SystemClock;
use sigil_plugin::keymanager::{self, Role};

use crate::attestor::{UnixAttestor, WorkloadAttestor};
use crate::config::{AgentConfig, KeyManagerConfig};
use crate::manager::client::TonicServerApi;
use crate::manager::{Manager, ManagerConfig};

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("could not create data_dir {}", cfg.data_dir.display()))?;

    let km = keymanager::build(
        cfg.key_manager.name(),
        &cfg.key_manager.plugin_data(),
        Role::Agent,
    )
    .context("could not load the KeyManager plugin")?;
    if cfg.key_manager == KeyManagerConfig::Memory {
        tracing::warn!(
            "Node attestation is not reattestable and the 'memory' key manager is in use; if the agent process is restarted, it will be unable to obtain a new SVID and will need to be manually evicted to be able to re-attest."
        );
    }

    let api = Arc::new(TonicServerApi::new(
        &cfg.server_address,
        cfg.server_port,
        cfg.trust_domain.clone(),
    ));
    tracing::info!(
        trust_domain = %cfg.trust_domain,
        server_address = %format!("{}:{}", cfg.server_address, cfg.server_port),
        data_dir = %cfg.data_dir.display(),
        "Starting agent"
    );
    let manager = Manager::start(
        ManagerConfig::from_agent_config(&cfg),
        api,
        km,
        Arc::new(SystemClock),
    )
    .await
    .context("agent failed to start")?;

    let attestor: Arc<dyn WorkloadAttestor> = Arc::new(UnixAttestor::new(cfg.unix_attestor));
    if let Some(dir) = cfg.socket_path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create socket directory {}", dir.display()))?;
    }
    tracing::info!(address = %cfg.socket_path.display(), network = "unix", "Starting Workload and SDS APIs");

    let serve = crate::workload::serve(&cfg.socket_path, manager.cache_handle(), attestor);
    let result = tokio::select! {
        r = serve => r.context("Workload API server stopped"),
        signal = shutdown_signal() => {
            tracing::info!(signal, "Shutting down");
            Ok(())
        }
    };
    manager.shutdown();
    remove_socket(&cfg.socket_path);
    result
}

/// Sets up logging from `log_level` / `log_format` (text or json). Does
/// nothing if a subscriber is already installed.
pub fn init_logging(level: &str, format: &str) {
    let level = match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        other => other.to_owned(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if format.eq_ignore_ascii_case("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn shutdown_signal() -> &'static str {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = ctrl_c => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the agent");
            let _ = ctrl_c.await;
            "SIGINT"
        }
    }
}

fn remove_socket(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not remove the Workload API socket"),
    }
}
