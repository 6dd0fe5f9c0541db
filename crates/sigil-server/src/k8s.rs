//! Kubernetes API clients for the server's plugins, as SPIRE's plugins
//! configure them: from a `kube_config_file`, or, when that option is
//! empty, from the in-cluster service account.
//!
//! This module owns client construction only. Loading the configuration
//! (reading the kubeconfig and its CA, or the in-cluster environment) is
//! done when a plugin is built, so a bad file is a startup error; the HTTP
//! client itself is made on first use, because it needs the async runtime,
//! and nothing here connects before a plugin asks a question.

use std::path::PathBuf;

use kube::config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError};

/// How long one request may wait for the API server's answer.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a Kubernetes client cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum K8sError {
    /// The kubeconfig file cannot be read or parsed, or names no usable
    /// cluster.
    #[error("unable to load kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: KubeconfigError,
    },
    /// No kubeconfig was given and this process is not in a cluster (or
    /// the service account files are unreadable).
    #[error(
        "unable to load in-cluster configuration (set kube_config_file outside a cluster): {0}"
    )]
    InCluster(#[source] InClusterError),
    /// The HTTP client cannot be made from the configuration (its TLS
    /// settings, for instance).
    #[error("unable to create a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A lazily connected client for one cluster.
pub struct ClusterClient {
    source: String,
    config: kube::Config,
    client: tokio::sync::OnceCell<kube::Client>,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("source", &self.source)
            .field("cluster_url", &self.config.cluster_url.to_string())
            .finish_non_exhaustive()
    }
}

impl ClusterClient {
    /// Loads the configuration from `kube_config_file`, or from the
    /// in-cluster environment when it is empty. Reads files only.
    pub fn load(kube_config_file: &str) -> Result<ClusterClient, K8sError> {
        let (source, mut config) = if kube_config_file.is_empty() {
            (
                String::from("in-cluster"),
                kube::Config::incluster().map_err(K8sError::InCluster)?,
            )
        } else {
            let path = PathBuf::from(kube_config_file);
            let err = |source| K8sError::Kubeconfig {
                path: path.clone(),
                source,
            };
            let kubeconfig = Kubeconfig::read_from(&path).map_err(err)?;
            // `from_custom_kubeconfig` is async in signature only: it reads
            // the parsed file and runs nothing, so it completes at once.
            let config = futures::executor::block_on(kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &KubeConfigOptions::default(),
            ))
            .map_err(err)?;
            (kube_config_file.to_owned(), config)
        };
        // A stuck API server must not hold an agent's attestation forever.
        config.read_timeout = Some(READ_TIMEOUT);
        Ok(ClusterClient {
            source,
            config,
            client: tokio::sync::OnceCell::new(),
        })
    }

    /// Where the configuration came from (the kubeconfig path, or
    /// `in-cluster`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The client, made on first call (no request is sent here).
    pub async fn client(&self) -> Result<kube::Client, K8sError> {
        self.client
            .get_or_try_init(|| async {
                kube::Client::try_from(self.config.clone()).map_err(K8sError::Client)
            })
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_missing_or_malformed_kubeconfig_is_a_load_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let e = ClusterClient::load(missing.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, K8sError::Kubeconfig { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.yaml"), "{e}");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "apiVersion: v1\nkind: Config\nclusters: 5\n").unwrap();
        let e = ClusterClient::load(bad.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("bad.yaml"), "{e}");
    }

    #[tokio::test]
    async fn a_valid_kubeconfig_loads_without_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        // Port 9 (discard) on a documentation address: nothing answers.
        std::fs::write(
            &path,
            "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://192.0.2.1:9
contexts:
- name: c
  context:
    cluster: c
    user: u
users:
- name: u
  user:
    token: t
current-context: c
",
        )
        .unwrap();
        let c = ClusterClient::load(path.to_str().unwrap()).unwrap();
        assert_eq!(c.source(), path.to_str().unwrap());
        c.client().await.unwrap();
    }
}
