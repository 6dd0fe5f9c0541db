//! The `k8s` workload attestor: SPIRE's Kubernetes selectors for a process
//! running in a pod on this node.
//!
//! How a caller is attested, as SPIRE does it:
//!
//! 1. Its pod UID and container ID come from `/proc/<pid>/cgroup` (falling
//!    back to the cgroup mounts in `/proc/<pid>/mountinfo`), see [`cgroup`].
//!    A process in no container gets no selectors; that is not an error.
//! 2. The kubelet's `/pods` is fetched ([`kubelet`]) and the container is
//!    looked up by ID in that pod's status (all pods when the cgroup path
//!    names no pod). While it is not there yet (a container that has just
//!    started), the pod list is fetched again every `poll_retry_interval`, up
//!    to `max_poll_attempts` times. With `disable_container_selectors`, a
//!    known pod whose container is not listed yet gets its pod selectors at
//!    once.
//! 3. Selectors are built from the pod and the container ([`selectors`]).
//!
//! Where sigil differs: concurrent attestations share one `/pods` request and
//! reuse a list younger than `poll_retry_interval` (SPIRE does the same since
//! v1.15.3); the bearer token is read for every request, not every
//! `reload_interval`; a pod list over 64 MiB is refused; image and label
//! selectors come out sorted. As in SPIRE, only app and init containers are
//! attested, never ephemeral (`kubectl debug`) ones. `sigstore`,
//! `experimental`, `disable_kubelet_client = true` and
//! `enable_namespace_labels = true` are refused as not supported yet.
//!
//! PID reuse: `/proc/<pid>` is opened as a directory handle while the
//! caller's pidfd shows it alive and the cgroup files are read through it
//! (see [`super::unix`]), the pidfd is checked again after reading, before
//! every poll of the kubelet and before answering. A caller that exited is
//! reported as [`AttestError::ProcessGone`], never attested.

pub mod cgroup;
pub mod kubelet;
pub mod selectors;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sigil_spiffe::Selector;

use super::unix::ProcReader;
use super::{AttestError, WorkloadAttestor};
use crate::uds::PeerInfo;
use cgroup::{ContainerRef, LocateError};
use kubelet::{KubeletClient, KubeletError, PodList, SharedPodList};

/// The options of the `k8s` attestor's `plugin_data` block, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sAttestorConfig {
    /// Which kubelet port, and how to talk to it.
    pub kubelet: KubeletEndpoint,
    /// The node name: `node_name`, else the variable named by
    /// `node_name_env` (default `MY_NODE_NAME`). With the secure port it is
    /// the host contacted and the name the kubelet's certificate must carry;
    /// without it the kubelet is reached on 127.0.0.1.
    pub node_name: Option<String>,
    /// How many times to look for the container in the pod list.
    pub max_poll_attempts: u32,
    /// Time between two pod list requests, and how long one is reused.
    pub poll_retry_interval: Duration,
    /// How often the CA and client certificate are reloaded from disk.
    pub reload_interval: Duration,
    /// Emit only pod selectors, and attest a known pod even before its
    /// container shows in the status.
    pub disable_container_selectors: bool,
    /// SPIRE's current container locator (true, the default) or its legacy
    /// pattern matcher.
    pub use_new_container_locator: bool,
    /// Log every cgroup path and mount examined, at debug level.
    pub verbose_container_locator_logs: bool,
}

/// The kubelet port to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeletEndpoint {
    /// `kubelet_read_only_port`: plain HTTP to 127.0.0.1, no authentication.
    ReadOnly {
        /// The port.
        port: u16,
    },
    /// `kubelet_secure_port` (default 10250): HTTPS.
    Secure {
        /// The port.
        port: u16,
        /// How the kubelet's certificate is checked.
        verification: KubeletVerification,
        /// How the agent authenticates.
        auth: KubeletAuth,
    },
}

/// How the kubelet's serving certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeletVerification {
    /// `skip_kubelet_verification = true`.
    Skip,
    /// Against the CA certificates in this file (`kubelet_ca_path`, default
    /// the service account's `ca.crt`).
    CaFile(PathBuf),
}

/// How the agent authenticates to the kubelet's secure port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeletAuth {
    /// `use_anonymous_authentication = true`.
    Anonymous,
    /// `certificate_path` and `private_key_path` (PEM).
    ClientCertificate {
        /// The client certificate chain.
        certificate_path: PathBuf,
        /// Its private key.
        private_key_path: PathBuf,
    },
    /// The bearer token in `token_path` (default the service account token).
    BearerToken {
        /// The token file, read for every request.
        token_path: PathBuf,
    },
}

/// SPIRE's defaults.
const DEFAULT_SECURE_PORT: u16 = 10250;
const DEFAULT_MAX_POLL_ATTEMPTS: u32 = 60;
const DEFAULT_POLL_RETRY_INTERVAL: Duration = Duration::from_millis(500);
const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_CA_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
const DEFAULT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const DEFAULT_NODE_NAME_ENV: &str = "MY_NODE_NAME";

impl K8sAttestorConfig {
    /// Option names this attestor accepts.
    pub const KEYS: [&'static str; 16] = [
        "kubelet_read_only_port",
        "kubelet_secure_port",
        "skip_kubelet_verification",
        "kubelet_ca_path",
        "token_path",
        "certificate_path",
        "private_key_path",
        "use_anonymous_authentication",
        "node_name_env",
        "node_name",
        "max_poll_attempts",
        "poll_retry_interval",
        "reload_interval",
        "disable_container_selectors",
        "use_new_container_locator",
        "verbose_container_locator_logs",
    ];

    /// SPIRE options that sigil does not implement yet: present (or, for the
    /// booleans, true) they are an error naming them.
    pub const NOT_SUPPORTED: [&'static str; 4] = [
        "sigstore",
        "experimental",
        "disable_kubelet_client",
        "enable_namespace_labels",
    ];

    /// Reads `plugin_data` (as JSON, however the HCL was parsed), taking the
    /// node name from the process environment when the block does not set
    /// it. Unknown keys are an error naming every one of them.
    pub fn from_plugin_data(data: &serde_json::Value) -> Result<K8sAttestorConfig, AttestError> {
        Self::from_plugin_data_with_env(data, |name| std::env::var(name).ok())
    }

    /// [`K8sAttestorConfig::from_plugin_data`] with the environment given as
    /// a function (for tests).
    pub fn from_plugin_data_with_env(
        data: &serde_json::Value,
        getenv: impl Fn(&str) -> Option<String>,
    ) -> Result<K8sAttestorConfig, AttestError> {
        let empty = serde_json::Map::new();
        let map = match data {
            serde_json::Value::Null => &empty,
            serde_json::Value::Object(map) => map,
            other => return Err(invalid(format!("plugin_data must be a block, got {other}"))),
        };
        let mut unknown: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !Self::KEYS.contains(k) && !Self::NOT_SUPPORTED.contains(k))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(invalid(format!(
                "unknown option(s) {} (supported: {})",
                unknown.join(", "),
                Self::KEYS.join(", ")
            )));
        }
        let opts = Options(map);
        for key in ["sigstore", "experimental"] {
            if map.contains_key(key) {
                return Err(not_supported(key));
            }
        }
        for key in ["disable_kubelet_client", "enable_namespace_labels"] {
            if opts.bool(key)? {
                return Err(not_supported(key));
            }
        }

        let read_only_port = opts.port("kubelet_read_only_port")?;
        let secure_port = opts.port("kubelet_secure_port")?;
        let kubelet = match (read_only_port, secure_port) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "cannot use both the read-only and secure port (kubelet_read_only_port and kubelet_secure_port)"
                        .into(),
                ));
            }
            (Some(port), None) => KubeletEndpoint::ReadOnly { port },
            (None, secure) => {
                let verification = if opts.bool("skip_kubelet_verification")? {
                    KubeletVerification::Skip
                } else {
                    KubeletVerification::CaFile(
                        opts.path("kubelet_ca_path")?
                            .unwrap_or_else(|| DEFAULT_CA_PATH.into()),
                    )
                };
                let certificate_path = opts.path("certificate_path")?;
                let private_key_path = opts.path("private_key_path")?;
                let auth = if opts.bool("use_anonymous_authentication")? {
                    KubeletAuth::Anonymous
                } else {
                    match (certificate_path, private_key_path) {
                        (Some(certificate_path), Some(private_key_path)) => {
                            KubeletAuth::ClientCertificate {
                                certificate_path,
                                private_key_path,
                            }
                        }
                        (Some(_), None) => {
                            return Err(invalid(
                                "private_key_path is required with certificate_path".into(),
                            ));
                        }
                        (None, Some(_)) => {
                            return Err(invalid(
                                "certificate_path is required with private_key_path".into(),
                            ));
                        }
                        (None, None) => KubeletAuth::BearerToken {
                            token_path: opts
                                .path("token_path")?
                                .unwrap_or_else(|| DEFAULT_TOKEN_PATH.into()),
                        },
                    }
                };
                KubeletEndpoint::Secure {
                    port: secure.unwrap_or(DEFAULT_SECURE_PORT),
                    verification,
                    auth,
                }
            }
        };

        let node_name = match opts.string("node_name")?.filter(|n| !n.is_empty()) {
            Some(name) => Some(name.to_owned()),
            None => {
                let env = opts
                    .string("node_name_env")?
                    .filter(|e| !e.is_empty())
                    .unwrap_or(DEFAULT_NODE_NAME_ENV);
                getenv(env).filter(|n| !n.is_empty())
            }
        };

        // Values of 0 or less mean the default, as in SPIRE.
        let max_poll_attempts = opts
            .int("max_poll_attempts")?
            .filter(|n| *n > 0)
            .map_or(Ok(DEFAULT_MAX_POLL_ATTEMPTS), u32::try_from)
            .map_err(|_| invalid("max_poll_attempts is too large".into()))?;

        Ok(K8sAttestorConfig {
            kubelet,
            node_name,
            max_poll_attempts,
            poll_retry_interval: opts
                .duration("poll_retry_interval")?
                .unwrap_or(DEFAULT_POLL_RETRY_INTERVAL),
            reload_interval: opts
                .duration("reload_interval")?
                .unwrap_or(DEFAULT_RELOAD_INTERVAL),
            disable_container_selectors: opts.bool("disable_container_selectors")?,
            use_new_container_locator: opts
                .optional_bool("use_new_container_locator")?
                .unwrap_or(true),
            verbose_container_locator_logs: opts.bool("verbose_container_locator_logs")?,
        })
    }
}

fn invalid(reason: String) -> AttestError {
    AttestError::Config {
        plugin: K8sAttestor::NAME,
        reason,
    }
}

fn not_supported(key: &str) -> AttestError {
    invalid(format!(
        "{key} is a SPIRE option that is not supported by sigil yet; remove it"
    ))
}

/// Typed reads of `plugin_data` values, each error naming the option.
struct Options<'a>(&'a serde_json::Map<String, serde_json::Value>);

impl Options<'_> {
    fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>, AttestError> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| invalid(format!("{key} must be true or false, got {v}")))
            })
            .transpose()
    }

    fn bool(&self, key: &str) -> Result<bool, AttestError> {
        Ok(self.optional_bool(key)?.unwrap_or(false))
    }

    fn string(&self, key: &str) -> Result<Option<&str>, AttestError> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| invalid(format!("{key} must be a string, got {v}")))
            })
            .transpose()
    }

    fn path(&self, key: &str) -> Result<Option<PathBuf>, AttestError> {
        Ok(self
            .string(key)?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from))
    }

    /// An integer, also accepted as a string of digits (HCL 1 decodes
    /// either into an int).
    fn int(&self, key: &str) -> Result<Option<i64>, AttestError> {
        self.get(key)
            .map(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .ok_or_else(|| invalid(format!("{key} must be an integer, got {v}")))
            })
            .transpose()
    }

    /// A port; 0 or less means unset, as in SPIRE.
    fn port(&self, key: &str) -> Result<Option<u16>, AttestError> {
        match self.int(key)? {
            Some(n) if n > 0 => u16::try_from(n)
                .map(Some)
                .map_err(|_| invalid(format!("{key} must be a TCP port (1-65535), got {n}"))),
            _ => Ok(None),
        }
    }

    /// A Go duration string; empty, zero or negative means the default.
    fn duration(&self, key: &str) -> Result<Option<Duration>, AttestError> {
        let Some(text) = self.string(key)?.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        match sigil_cli::duration::parse_duration(text) {
            Ok(d) if d.is_zero() => Ok(None),
            Ok(d) => Ok(Some(d)),
            Err(sigil_cli::duration::DurationError::Negative(_)) => Ok(None),
            Err(e) => Err(invalid(format!("{key}: {e}"))),
        }
    }
}

/// Why a Kubernetes workload could not be attested.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum K8sError {
    /// The process's cgroups could not be read as one container.
    #[error("locating the container of process {pid}: {source}")]
    Locate {
        /// The caller's PID.
        pid: i32,
        /// What was wrong.
        #[source]
        source: LocateError,
    },
    /// The kubelet client could not be set up (configuration time).
    #[error("setting up the kubelet client: {0}")]
    KubeletSetup(#[source] KubeletError),
    /// The last pod list request failed and no attempts are left.
    #[error("no pod list from the kubelet after {attempts} attempt(s): {source}")]
    Kubelet {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        source: KubeletError,
    },
    /// The container never showed in its pod's status.
    #[error(
        "no selectors found after max poll attempts: container {container_id} (pod {}) not found in the kubelet's pod list after {attempts} attempt(s)",
        pod_uid.as_deref().unwrap_or("unknown")
    )]
    ContainerNotFound {
        /// The container ID from the cgroups.
        container_id: String,
        /// The pod UID from the cgroups, when known.
        pod_uid: Option<String>,
        /// Attempts made.
        attempts: u32,
    },
    /// Two pods list the container (only possible when the cgroups name no
    /// pod).
    #[error("two pods found with same container ID {container_id}")]
    ContainerInTwoPods {
        /// The container ID.
        container_id: String,
    },
    /// The kubelet's entry for the pod is not a valid Pod.
    #[error("unable to decode pod {pod_uid} from the kubelet response: {source}")]
    PodDecode {
        /// The pod's UID.
        pod_uid: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// The `k8s` workload attestor.
#[derive(Debug, Clone)]
pub struct K8sAttestor {
    config: Arc<K8sAttestorConfig>,
    pods: SharedPodList,
    proc_root: PathBuf,
}

impl K8sAttestor {
    /// The plugin name, and the type of every selector it produces.
    pub const NAME: &'static str = "k8s";

    /// Builds the attestor for the catalog.
    pub fn build(
        data: &serde_json::Value,
        _ctx: &crate::catalog::AgentContext,
    ) -> Result<std::sync::Arc<dyn WorkloadAttestor>, sigil_plugin::PluginError> {
        let attestor =
            K8sAttestor::from_plugin_data(data).map_err(|e| super::plugin_error(Self::NAME, e))?;
        Ok(std::sync::Arc::new(attestor))
    }

    /// Parses `plugin_data` and sets up the kubelet client (reading its CA,
    /// client certificate or token once, so unreadable files fail here).
    pub fn from_plugin_data(data: &serde_json::Value) -> Result<K8sAttestor, AttestError> {
        K8sAttestor::new(K8sAttestorConfig::from_plugin_data(data)?)
    }

    /// An attestor with this configuration, reading `/proc`.
    pub fn new(config: K8sAttestorConfig) -> Result<K8sAttestor, AttestError> {
        let client = KubeletClient::new(&config).map_err(K8sError::KubeletSetup)?;
        Ok(K8sAttestor {
            pods: SharedPodList::new(client, config.poll_retry_interval),
            config: Arc::new(config),
            proc_root: PathBuf::from("/proc"),
        })
    }

    /// Reads process information from another procfs mount (for tests, or
    /// an agent in a container looking at the host's `/proc`).
    pub fn with_proc_root(mut self, proc_root: impl Into<PathBuf>) -> K8sAttestor {
        self.proc_root = proc_root.into();
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &K8sAttestorConfig {
        &self.config
    }

    /// The URL pods are fetched from.
    pub fn kubelet_url(&self) -> &str {
        self.pods.client().url()
    }

    /// Selectors for the peer (see the module docs).
    pub async fn attest(&self, peer: &PeerInfo) -> Result<Vec<Selector>, AttestError> {
        if peer.pid <= 0 {
            return Err(AttestError::PidUnknown { pid: peer.pid });
        }
        let container = {
            let this = self.clone();
            let peer = peer.clone();
            tokio::task::spawn_blocking(move || this.locate(&peer))
                .await
                .map_err(|e| AttestError::Task(e.to_string()))??
        };
        let Some(container) = container else {
            return Ok(Vec::new());
        };
        let gone = || AttestError::ProcessGone { pid: peer.pid };

        let mut seen_version = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if !peer.still_alive() {
                return Err(gone());
            }
            let failure = match self.pods.fetch_newer_than(seen_version).await {
                Ok(list) => {
                    seen_version = list.version;
                    if let Some(selectors) = self.select(&list.pods, &container)? {
                        if !peer.still_alive() {
                            return Err(gone());
                        }
                        return Ok(selectors);
                    }
                    None
                }
                Err(e) => Some(e),
            };
            if attempt >= self.config.max_poll_attempts {
                let err = match failure {
                    Some(source) => K8sError::Kubelet {
                        attempts: attempt,
                        source,
                    },
                    None => K8sError::ContainerNotFound {
                        container_id: container.container_id.clone(),
                        pod_uid: container.pod_uid.clone(),
                        attempts: attempt,
                    },
                };
                tracing::warn!(pid = peer.pid, error = %err, "k8s attestation giving up");
                return Err(err.into());
            }
            match failure {
                Some(e) => tracing::warn!(
                    pid = peer.pid,
                    attempt,
                    error = %e,
                    "unable to get the pod list from the kubelet; will retry"
                ),
                None => tracing::debug!(
                    pid = peer.pid,
                    attempt,
                    container_id = %container.container_id,
                    "container not in the pod list yet; will retry"
                ),
            }
        }
    }

    /// The pod and container of the caller, read through a handle on its
    /// `/proc/<pid>` (blocking).
    fn locate(&self, peer: &PeerInfo) -> Result<Option<ContainerRef>, AttestError> {
        let proc_dir = self.proc_root.join(peer.pid.to_string());
        let reader = ProcReader {
            peer,
            proc_dir: &proc_dir,
        };
        let dir = reader.open_dir()?;
        reader.ensure_alive()?;
        let located = |r: Result<Option<ContainerRef>, LocateError>| {
            r.map_err(|source| K8sError::Locate {
                pid: peer.pid,
                source,
            })
        };
        let verbose = self.config.verbose_container_locator_logs;

        let cgroups = read_if_present(&reader, &dir, "cgroup")?;
        if verbose {
            for (i, line) in cgroups.iter().flat_map(|t| t.lines()).enumerate() {
                tracing::debug!(
                    pid = peer.pid,
                    index = i + 1,
                    cgroup = line,
                    "PID cgroup enumerated"
                );
            }
        }
        let mut found = match &cgroups {
            Some(text) if self.config.use_new_container_locator => {
                located(cgroup::locate_in_cgroups(text))?
            }
            Some(text) => located(cgroup::locate_legacy(text))?,
            None => None,
        };
        if found.is_none()
            && self.config.use_new_container_locator
            && let Some(text) = read_if_present(&reader, &dir, "mountinfo")?
        {
            if verbose {
                for line in text.lines() {
                    tracing::debug!(pid = peer.pid, mount = line, "PID mount enumerated");
                }
            }
            found = located(cgroup::locate_in_mountinfo(&text))?;
        }
        reader.ensure_alive()?;
        Ok(found)
    }

    /// The selectors of the container in this pod list, or `None` when it is
    /// not listed (yet).
    fn select(
        &self,
        pods: &PodList,
        container: &ContainerRef,
    ) -> Result<Option<Vec<Selector>>, AttestError> {
        let candidates: Box<dyn Iterator<Item = _>> = match &container.pod_uid {
            Some(uid) => Box::new(pods.pod(uid).map(|pod| (uid.as_str(), pod)).into_iter()),
            None => Box::new(pods.pods()),
        };
        let mut result: Option<Vec<Selector>> = None;
        for (uid, pod) in candidates {
            let pod = pod.map_err(|source| K8sError::PodDecode {
                pod_uid: uid.to_owned(),
                source,
            })?;
            let status = pod
                .status
                .as_ref()
                .and_then(|s| selectors::find_container(s, &container.container_id));
            let found = match status {
                Some(status) => {
                    let mut found = selectors::pod_selectors(&pod)?;
                    if !self.config.disable_container_selectors {
                        found.extend(selectors::container_selectors(status)?);
                    }
                    found
                }
                None if container.pod_uid.is_some() && self.config.disable_container_selectors => {
                    selectors::pod_selectors(&pod)?
                }
                None => continue,
            };
            if result.is_some() {
                return Err(K8sError::ContainerInTwoPods {
                    container_id: container.container_id.clone(),
                }
                .into());
            }
            result = Some(found);
        }
        Ok(result)
    }
}

/// A file under `/proc/<pid>`, or `None` when the kernel does not provide
/// it (SPIRE treats a missing cgroup or mountinfo file as "not in a
/// container"). A caller that is gone is still an error.
fn read_if_present(
    reader: &ProcReader<'_>,
    dir: &std::os::fd::OwnedFd,
    name: &str,
) -> Result<Option<String>, AttestError> {
    match reader.read_to_string(dir, name) {
        Ok(text) => Ok(Some(text)),
        Err(AttestError::Proc { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[async_trait]
impl WorkloadAttestor for K8sAttestor {
    fn name(&self) -> &str {
        K8sAttestor::NAME
    }

    async fn attest(&self, peer: &PeerInfo) -> Result<Vec<Selector>, AttestError> {
        K8sAttestor::attest(self, peer).await
    }
}

#[cfg(test)]
mod tests;
