//! Configuration, as spire-controller-manager's `ControllerManagerConfig`
//! names it: a YAML (or JSON) file and/or flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::template::Template;

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
    /// Which kinds to reconcile (all when absent).
    #[serde(default)]
    pub reconcile: Option<ReconcileConfig>,
    /// Entries to delete while moving to `entryIDPrefix`: those with this
    /// prefix, or with "" every entry whose ID has no `.`.
    #[serde(rename = "entryIDPrefixCleanup", default)]
    pub entry_id_prefix_cleanup: Option<String>,
    /// Template of the parent ID of pod entries (node fields only).
    #[serde(rename = "parentIDTemplate", default)]
    pub parent_id_template: Option<String>,
    /// Health probes.
    #[serde(default)]
    pub health: Option<HealthFile>,
    /// Prometheus metrics (not served yet: only `bindAddress: "0"`).
    #[serde(default)]
    pub metrics: Option<MetricsFile>,
}

/// `health`, as spire-controller-manager's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthFile {
    /// Address of the probe listener (`:8081`, `0.0.0.0:8081`); "" or "0"
    /// serves none.
    #[serde(default)]
    pub health_probe_bind_address: Option<String>,
    /// Readiness path (default `readyz`).
    #[serde(default)]
    pub readiness_endpoint_name: Option<String>,
    /// Liveness path (default `healthz`).
    #[serde(default)]
    pub liveness_endpoint_name: Option<String>,
}

/// `metrics`, as spire-controller-manager's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsFile {
    /// Address of the metrics listener; only "0" (none) is accepted.
    #[serde(default)]
    pub bind_address: Option<String>,
}

/// Which kinds to reconcile, as spire-controller-manager's `reconcile`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// ClusterSPIFFEID objects.
    #[serde(rename = "clusterSPIFFEIDs", default)]
    pub cluster_spiffe_ids: bool,
    /// ClusterFederatedTrustDomain objects.
    #[serde(rename = "clusterFederatedTrustDomains", default)]
    pub cluster_federated_trust_domains: bool,
    /// ClusterStaticEntry objects.
    #[serde(rename = "clusterStaticEntries", default)]
    pub cluster_static_entries: bool,
}

impl ReconcileConfig {
    /// Every kind.
    pub const ALL: ReconcileConfig = ReconcileConfig {
        cluster_spiffe_ids: true,
        cluster_federated_trust_domains: true,
        cluster_static_entries: true,
    };
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
    /// Reads a YAML or JSON file; with `expand_env`, `$NAME` and `${NAME}`
    /// are first replaced by the environment's values (empty when unset),
    /// as spire-controller-manager's `-expand-env`.
    pub fn read(path: &Path, expand_env: bool) -> Result<FileConfig, ConfigError> {
        let mut text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        if expand_env {
            text = expand(&text, |name| std::env::var(name).ok());
        }
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

/// Replaces `$NAME` and `${NAME}` (NAME: letters, digits, `_`) with
/// `lookup(NAME)`, empty when it has none; any other `$` stays.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) if end > 0 && braced[..end].chars().all(is_name) => {
                    (&braced[..end], end + 2)
                }
                _ => ("", 0),
            }
        } else {
            let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
        } else {
            out.push_str(&lookup(name).unwrap_or_default());
            rest = &after[consumed..];
        }
    }
    out.push_str(rest);
    out
}

/// A prefix as spire-controller-manager uses it: ending in `.` unless empty.
fn dot_suffixed(p: String) -> String {
    if p.is_empty() || p.ends_with('.') {
        p
    } else {
        format!("{p}.")
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
    /// Entry ID prefix, ending in `.` ("" for none).
    pub entry_id_prefix: String,
    /// Idle reconciliation interval.
    pub gc_interval: Duration,
    /// Which kinds to reconcile.
    pub reconcile: ReconcileConfig,
    /// With `entryIDPrefix`: entries to delete although not owned (see
    /// [`Config::to_clean_up`]), dot-suffixed like the prefix.
    pub entry_id_prefix_cleanup: Option<String>,
    /// Health probes; `None` serves none.
    pub health: Option<crate::health::HealthConfig>,
    /// The parent ID template of pod entries; `None` for the `k8s_psat`
    /// agent ID of the node.
    pub parent_id_template: Option<Template>,
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
        if let Some(addr) = f.metrics.as_ref().and_then(|m| m.bind_address.as_deref())
            && addr != "0"
        {
            return Err(ConfigError::Invalid {
                field: "metrics.bindAddress",
                reason: format!(
                    "sigil-controller-manager serves no metrics yet; set it to \"0\" (got {addr:?})"
                ),
            });
        }
        let health = match f.health.clone().unwrap_or_default() {
            HealthFile {
                health_probe_bind_address: Some(addr),
                readiness_endpoint_name,
                liveness_endpoint_name,
            } if !addr.is_empty() && addr != "0" => {
                // Go's ":8081" listens on every interface.
                let full = if addr.starts_with(':') {
                    format!("0.0.0.0{addr}")
                } else {
                    addr.clone()
                };
                let addr = full.parse().map_err(|_| ConfigError::Invalid {
                    field: "health.healthProbeBindAddress",
                    reason: format!("{addr:?} is not an IP address and port"),
                })?;
                let name = |n: Option<String>, default: &str| {
                    n.filter(|n| !n.is_empty())
                        .unwrap_or_else(|| default.to_owned())
                };
                Some(crate::health::HealthConfig {
                    addr,
                    liveness: name(liveness_endpoint_name, "healthz"),
                    readiness: name(readiness_endpoint_name, "readyz"),
                })
            }
            _ => None,
        };
        let entry_id_prefix = dot_suffixed(f.entry_id_prefix.clone().unwrap_or_default());
        let entry_id_prefix_cleanup = f.entry_id_prefix_cleanup.clone().map(dot_suffixed);
        if let Some(cleanup) = &entry_id_prefix_cleanup {
            let reason = if entry_id_prefix.is_empty() {
                "it only applies with entryIDPrefix"
            } else if *cleanup == entry_id_prefix {
                "it cannot be the same as entryIDPrefix"
            } else {
                ""
            };
            if !reason.is_empty() {
                return Err(ConfigError::Invalid {
                    field: "entryIDPrefixCleanup",
                    reason: reason.to_owned(),
                });
            }
        }
        let parent_id_template = match f.parent_id_template.as_deref() {
            None | Some("") => None,
            Some(s) => {
                let t = Template::parse(s).map_err(|e| ConfigError::Invalid {
                    field: "parentIDTemplate",
                    reason: e.to_string(),
                })?;
                if t.reads_pod() {
                    return Err(ConfigError::Invalid {
                        field: "parentIDTemplate",
                        reason: "it may only use .TrustDomain, .ClusterName, .ClusterDomain, .NodeMeta and .NodeSpec fields".to_owned(),
                    });
                }
                if f.entry_id_prefix.as_deref().unwrap_or_default().is_empty() {
                    return Err(ConfigError::Invalid {
                        field: "parentIDTemplate",
                        reason: "sigil-controller-manager needs entryIDPrefix with it, to tell the entries it owns from others".to_owned(),
                    });
                }
                Some(t)
            }
        };
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
            entry_id_prefix,
            entry_id_prefix_cleanup,
            gc_interval,
            reconcile: f.reconcile.unwrap_or(ReconcileConfig::ALL),
            parent_id_template,
            health,
        })
    }

    /// True when `ns` matches `ignoreNamespaces`.
    pub fn is_ignored(&self, ns: &str) -> bool {
        self.ignore_namespaces.iter().any(|r| r.is_match(ns))
    }

    /// True when an object of class `class` is ours.
    pub fn wants_class(&self, class: &str) -> bool {
        if self.class_name.is_empty() {
            class.is_empty()
        } else {
            class == self.class_name || (self.watch_classless && class.is_empty())
        }
    }

    /// The ID prefix of the ClusterStaticEntry entries this controller
    /// creates: `entryIDPrefix` when set, else
    /// `clusterstaticentry.<clusterName>.`.
    pub fn static_entry_prefix(&self) -> String {
        if self.entry_id_prefix.is_empty() {
            format!("clusterstaticentry.{}.", self.cluster_name)
        } else {
            self.entry_id_prefix.clone()
        }
    }

    /// True when `entry` is not owned but `entryIDPrefixCleanup` says to
    /// delete it (moving from no prefix, or another prefix, to
    /// `entryIDPrefix`), as spire-controller-manager: with a cleanup prefix,
    /// entries with it; with an empty one, entries whose ID has no `.`.
    pub fn to_clean_up(&self, entry: &sigil_proto::spire::api::types::Entry) -> bool {
        match &self.entry_id_prefix_cleanup {
            Some(_) if self.owns(entry) => false,
            Some(p) if p.is_empty() => !entry.id.contains('.'),
            Some(p) => entry.id.starts_with(p.as_str()),
            None => false,
        }
    }

    /// True when this controller owns `entry`. With an `entryIDPrefix`,
    /// entries whose ID has it. Without, the shapes of the entries it
    /// creates: entries parented to a `k8s_psat` agent of this cluster that
    /// select a pod by UID (ClusterSPIFFEID entries, server-assigned IDs),
    /// and entries whose ID starts with [`Config::static_entry_prefix`]
    /// (ClusterStaticEntry entries, whose parents can be anything).
    pub fn owns(&self, entry: &sigil_proto::spire::api::types::Entry) -> bool {
        if !self.entry_id_prefix.is_empty() {
            return entry.id.starts_with(&self.entry_id_prefix);
        }
        if entry.id.starts_with(&self.static_entry_prefix()) {
            return true;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn file(yaml: &str) -> FileConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn expand_env_replaces_names_and_leaves_other_dollars() {
        let env = |n: &str| (n == "TD").then(|| "example.org".to_owned());
        assert_eq!(
            expand("trustDomain: ${TD}\nx: $TD/$NOPE/${}/$ /a$", env),
            "trustDomain: example.org\nx: example.org//${}/$ /a$"
        );
    }

    #[test]
    fn file_options_resolve_as_spire_controller_manager_reads_them() {
        let base = "trustDomain: example.org\nclusterName: prod\n";
        let c = Config::resolve(file(&format!("{base}entryIDPrefix: east\n"))).unwrap();
        assert_eq!(c.entry_id_prefix, "east.");
        assert_eq!(c.static_entry_prefix(), "east.");
        let c = Config::resolve(file(base)).unwrap();
        assert_eq!(c.static_entry_prefix(), "clusterstaticentry.prod.");
        assert_eq!(c.reconcile, ReconcileConfig::ALL);
        let tmpl = "parentIDTemplate: 'spiffe://{{ .TrustDomain }}/node/{{ .NodeMeta.Name }}'\n";
        let e = Config::resolve(file(&format!("{base}{tmpl}"))).unwrap_err();
        assert!(e.to_string().contains("entryIDPrefix"), "{e}");
        let c = Config::resolve(file(&format!("{base}{tmpl}entryIDPrefix: east.\n"))).unwrap();
        assert!(c.parent_id_template.is_some());
        let e = Config::resolve(file(&format!(
            "{base}entryIDPrefix: e\nparentIDTemplate: 'spiffe://x/{{{{ .PodMeta.Name }}}}'\n"
        )))
        .unwrap_err();
        assert!(e.to_string().contains("NodeMeta"), "{e}");
        let c = Config::resolve(file(&format!(
            "{base}reconcile:\n  clusterSPIFFEIDs: true\n"
        )))
        .unwrap();
        assert!(c.reconcile.cluster_spiffe_ids && !c.reconcile.cluster_static_entries);
        assert!(serde_saphyr::from_str::<FileConfig>("staticManifestPath: /x\n").is_err());
        let c = Config::resolve(file(&format!(
            "{base}health:\n  healthProbeBindAddress: ':8081'\nmetrics:\n  bindAddress: '0'\n"
        )))
        .unwrap();
        let h = c.health.unwrap();
        assert_eq!(h.addr.to_string(), "0.0.0.0:8081");
        assert_eq!(
            (h.liveness.as_str(), h.readiness.as_str()),
            ("healthz", "readyz")
        );
        let e = Config::resolve(file(&format!("{base}metrics:\n  bindAddress: ':8080'\n")))
            .unwrap_err();
        assert!(e.to_string().contains("metrics.bindAddress"), "{e}");

        let e = Config::resolve(file(&format!("{base}entryIDPrefixCleanup: ''\n"))).unwrap_err();
        assert!(e.to_string().contains("only applies"), "{e}");
        let e = Config::resolve(file(&format!(
            "{base}entryIDPrefix: a\nentryIDPrefixCleanup: a.\n"
        )))
        .unwrap_err();
        assert!(e.to_string().contains("same"), "{e}");
        let entry = |id: &str| sigil_proto::spire::api::types::Entry {
            id: id.to_owned(),
            ..Default::default()
        };
        let c = Config::resolve(file(&format!(
            "{base}entryIDPrefix: a\nentryIDPrefixCleanup: ''\n"
        )))
        .unwrap();
        assert!(c.to_clean_up(&entry("3f2a-uuid")));
        assert!(!c.to_clean_up(&entry("a.3f2a")));
        assert!(!c.to_clean_up(&entry("other.3f2a")));
        let c = Config::resolve(file(&format!(
            "{base}entryIDPrefix: a\nentryIDPrefixCleanup: old\n"
        )))
        .unwrap();
        assert!(c.to_clean_up(&entry("old.3f2a")));
        assert!(!c.to_clean_up(&entry("3f2a-uuid")));
    }
}
