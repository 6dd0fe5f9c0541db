//! Configuration, as spire-controller-manager's `ControllerManagerConfig`
//! names it: a YAML (or JSON) file and/or flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// SPIRE's default admin socket for the controller manager.
pub const DEFAULT_SOCKET_PATH: &str = "/spire-server/api.sock";

/// Namespaces ignored when the configuration names none.
pub const DEFAULT_IGNORE_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "spire-system"];

/// The configuration file, field names as spire-controller-manager's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    /// Trust domain name.
    #[serde(default)]
    pub trust_domain: Option<String>,
    /// Cluster name (the `k8s_psat` cluster of the agents).
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// Cluster DNS domain for `{{ .ClusterDomain }}`.
    #[serde(default)]
    pub cluster_domain: Option<String>,
    /// Admin socket of the server.
    #[serde(default)]
    pub spire_server_socket_path: Option<String>,
    /// Namespace regular expressions to skip.
    #[serde(default)]
    pub ignore_namespaces: Option<Vec<String>>,
    /// Only objects of this class.
    #[serde(default)]
    pub class_name: Option<String>,
    /// With `className`, also objects without a class.
    #[serde(default)]
    pub watch_classless: Option<bool>,
    /// Prefix of the IDs of the entries this controller owns.
    #[serde(rename = "entryIDPrefix", default)]
    pub entry_id_prefix: Option<String>,
    /// Reconcile at least this often (a Go duration).
    #[serde(default)]
    pub gc_interval: Option<String>,
    /// Log level.
    #[serde(default)]
    pub log_level: Option<String>,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("unable to read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid configuration (unknown fields included).
    #[error("unable to parse config file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A required field is missing.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A field has a bad value.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl FileConfig {
    /// Reads a YAML or JSON file.
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let c: FileConfig = serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if let Some(kind) = c
            .kind
            .as_deref()
            .filter(|k| *k != "ControllerManagerConfig")
        {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                reason: format!("kind {kind:?} is not ControllerManagerConfig"),
            });
        }
        let _ = (&c.api_version, &c.metadata);
        Ok(c)
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Trust domain name.
    pub trust_domain: String,
    /// Cluster name.
    pub cluster_name: String,
    /// Cluster DNS domain.
    pub cluster_domain: String,
    /// Admin socket.
    pub socket_path: PathBuf,
    /// Ignored namespaces (anchored regular expressions).
    pub ignore_namespaces: Vec<regex::Regex>,
    /// Class name ("" for none).
    pub class_name: String,
    /// With a class name, also classless objects.
    pub watch_classless: bool,
    /// Entry ID prefix ("" for none).
    pub entry_id_prefix: String,
    /// Idle reconciliation interval.
    pub gc_interval: Duration,
}

impl Config {
    /// Resolves a file configuration (flags already merged into it).
    pub fn resolve(f: FileConfig) -> Result<Config, ConfigError> {
        let trust_domain = f
            .trust_domain
            .filter(|s| !s.is_empty())
            .ok_or(ConfigError::Missing("trustDomain"))?;
        sigil_spiffe::TrustDomain::new(&trust_domain).map_err(|e| ConfigError::Invalid {
            field: "trustDomain",
            reason: e.to_string(),
        })?;
        let cluster_name = f
            .cluster_name
            .filter(|s| !s.is_empty())
            .ok_or(ConfigError::Missing("clusterName"))?;
        let ignore = f.ignore_namespaces.unwrap_or_else(|| {
            DEFAULT_IGNORE_NAMESPACES
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        });
        let ignore_namespaces = ignore
            .iter()
            .map(|p| {
                regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| ConfigError::Invalid {
                    field: "ignoreNamespaces",
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        let gc_interval = match f.gc_interval.as_deref() {
            None | Some("") => Duration::from_secs(10),
            Some(s) => sigil_cli::parse_duration(s).map_err(|e| ConfigError::Invalid {
                field: "gcInterval",
                reason: e.to_string(),
            })?,
        };
        let class_name = f.class_name.unwrap_or_default();
        Ok(Config {
            trust_domain,
            cluster_name,
            cluster_domain: f.cluster_domain.unwrap_or_default(),
            socket_path: PathBuf::from(
                f.spire_server_socket_path
                    .unwrap_or_else(|| DEFAULT_SOCKET_PATH.to_owned()),
            ),
            ignore_namespaces,
            watch_classless: f.watch_classless.unwrap_or(false),
            class_name,
            entry_id_prefix: f.entry_id_prefix.unwrap_or_default(),
            gc_interval,
        })
    }

    /// True when `ns` matches `ignoreNamespaces`.
    pub fn is_ignored(&self, ns: &str) -> bool {
        self.ignore_namespaces.iter().any(|r| r.is_match(ns))
    }

    /// True when an object of class `class` is ours.
    pub fn wants_class(&self, class: &str) -> bool {
        crate::spec::class_selected(&self.class_name, self.watch_classless, class)
    }

    /// True when this controller owns `entry`: with an `entryIDPrefix`,
    /// entries whose ID has it; without, entries parented to a `k8s_psat`
    /// agent of this cluster and selecting a pod by UID, the shape of every
    /// entry it creates.
    pub fn owns(&self, entry: &sigil_proto::spire::api::types::Entry) -> bool {
        if !self.entry_id_prefix.is_empty() {
            return entry.id.starts_with(&self.entry_id_prefix);
        }
        let agent_prefix = format!("/spire/agent/k8s_psat/{}/", self.cluster_name);
        entry.parent_id.as_ref().is_some_and(|p| {
            p.trust_domain == self.trust_domain && p.path.starts_with(&agent_prefix)
        }) && entry
            .selectors
            .iter()
            .any(|s| s.r#type == "k8s" && s.value.starts_with("pod-uid:"))
    }
}
