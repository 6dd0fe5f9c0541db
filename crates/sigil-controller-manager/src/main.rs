//! `sigil-controller-manager`: see the library documentation.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sigil_controller_manager::config::{Config, FileConfig};

/// Registers Kubernetes workloads with SPIRE from ClusterSPIFFEID objects.
#[derive(Parser, Debug)]
#[command(name = "sigil-controller-manager", version)]
struct Args {
    /// ControllerManagerConfig file (YAML or JSON); flags override it.
    #[arg(long = "config")]
    config: Option<PathBuf>,
    /// Expand $NAME and ${NAME} in the config file from the environment.
    #[arg(long = "expand-env")]
    expand_env: bool,
    /// Admin socket of the server (deprecated spire-controller-manager
    /// flag; the config file's spireServerSocketPath wins over it).
    #[arg(long = "spire-api-socket")]
    spire_api_socket: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long = "kubeconfig")]
    kubeconfig: Option<PathBuf>,
    /// Trust domain name.
    #[arg(long = "trust-domain")]
    trust_domain: Option<String>,
    /// Cluster name (as the agents' k8s_psat `cluster`).
    #[arg(long = "cluster-name")]
    cluster_name: Option<String>,
    /// Cluster DNS domain.
    #[arg(long = "cluster-domain")]
    cluster_domain: Option<String>,
    /// Admin socket of the server.
    #[arg(long = "spire-server-socket-path")]
    spire_server_socket_path: Option<String>,
    /// Namespace to ignore (regular expression; repeatable).
    #[arg(long = "ignore-namespace")]
    ignore_namespaces: Vec<String>,
    /// Only objects with this className.
    #[arg(long = "class-name")]
    class_name: Option<String>,
    /// Prefix of the IDs of the entries this controller owns.
    #[arg(long = "entry-id-prefix")]
    entry_id_prefix: Option<String>,
    /// Reconcile at least this often.
    #[arg(long = "gc-interval")]
    gc_interval: Option<String>,
    /// Log level.
    #[arg(long = "log-level")]
    log_level: Option<String>,
}

async fn kube_client(path: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| anyhow::anyhow!("unable to load kubeconfig {}: {e}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("unable to load kubeconfig {}: {e}", p.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("unable to find a Kubernetes configuration: {e}"))?,
    };
    Ok(kube::Client::try_from(config)?)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut f = match &args.config {
        Some(p) => FileConfig::read(p, args.expand_env)?,
        None => FileConfig::default(),
    };
    macro_rules! flag {
        ($($field:ident),*) => { $( if args.$field.is_some() { f.$field = args.$field.clone(); } )* };
    }
    flag!(
        trust_domain,
        cluster_name,
        cluster_domain,
        spire_server_socket_path,
        class_name,
        entry_id_prefix,
        gc_interval,
        log_level
    );
    if !args.ignore_namespaces.is_empty() {
        f.ignore_namespaces = Some(args.ignore_namespaces.clone());
    }
    let deprecated_socket_ignored = match &args.spire_api_socket {
        Some(s) if f.spire_server_socket_path.is_none() => {
            f.spire_server_socket_path = Some(s.clone());
            false
        }
        Some(_) => true,
        None => false,
    };
    let level = f.log_level.clone().unwrap_or_else(|| "info".to_owned());
    let _log = sigil_cli::init_logging(&level, "text");
    if deprecated_socket_ignored {
        tracing::warn!(
            "Ignoring the deprecated --spire-api-socket flag: the socket path is configured"
        );
    }
    let cfg = Config::resolve(f)?;
    let client = kube_client(args.kubeconfig.as_ref()).await?;
    let _health = match cfg.health.clone() {
        Some(h) => Some(
            sigil_controller_manager::health::serve(h.clone())
                .await
                .map_err(|e| anyhow::anyhow!("unable to serve health probes on {}: {e}", h.addr))?
                .1,
        ),
        None => None,
    };
    tracing::info!(
        trust_domain = %cfg.trust_domain,
        cluster_name = %cfg.cluster_name,
        socket = %cfg.socket_path.display(),
        "Starting sigil-controller-manager"
    );
    sigil_controller_manager::controller::run(cfg, client).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse_from(sigil_cli::normalize_go_flags(std::env::args_os()));
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
