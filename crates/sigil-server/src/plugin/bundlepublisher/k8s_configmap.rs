//! BundlePublisher "k8s_configmap": keeps the trust bundle in one key of a
//! Kubernetes ConfigMap, in each configured cluster, as SPIRE's plugin of
//! the same name does: the same options (`clusters` keyed by an arbitrary
//! ID, each with `configmap_name`, `configmap_key`, `namespace`, optional
//! `kubeconfig_path`, and `format` = `spiffe` | `jwks` | `pem`), the same
//! document in each format, and the same write: a server-side apply of
//! that one key under the field manager `spire-bundlepublisher-k8s_configmap`,
//! which creates the ConfigMap when it is missing and leaves its other keys
//! alone.
//!
//! A bundle equal to the last one published everywhere is not sent again.
//! This file never decides how a client is made (that is [`crate::k8s`])
//! and never connects when built: `validate` builds it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use sigil_plugin::bundlepublisher::{BundlePublisher, PublishError};
use sigil_plugin::catalog::{PluginError, Problem, decode};
use sigil_spiffe::jwk::JwkPublicKey;
use sigil_spiffe::{Bundle, BundleError};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::catalog::ServerContext;
use crate::k8s::{ClusterClient, K8sError};

/// The plugin name.
pub const NAME: &str = "k8s_configmap";

/// The server-side apply field manager SPIRE's plugin writes as, so
/// ownership of the key carries over when one replaces the other.
pub const FIELD_MANAGER: &str = "spire-bundlepublisher-k8s_configmap";

const KIND: &str = "BundlePublisher";

/// Builds the plugin from SPIRE's options. Each cluster's client
/// configuration is loaded here (files only, no connection).
pub fn build(
    data: &serde_json::Value,
    _ctx: &ServerContext,
) -> Result<Arc<dyn BundlePublisher>, PluginError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {
        #[serde(default)]
        clusters: BTreeMap<String, ClusterOptions>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ClusterOptions {
        #[serde(default)]
        format: String,
        #[serde(default)]
        namespace: String,
        #[serde(default)]
        configmap_name: String,
        #[serde(default)]
        configmap_key: String,
        #[serde(default)]
        kubeconfig_path: String,
    }
    let err = |p| PluginError::new(KIND, NAME, p);
    let o: Options = decode(KIND, NAME, data, &[])?;
    let mut clusters = Vec::with_capacity(o.clusters.len());
    for (id, c) in o.clusters {
        // SPIRE's checks, in SPIRE's order and words.
        for (value, what) in [
            (&c.format, "bundle format"),
            (&c.namespace, "namespace"),
            (&c.configmap_name, "configmap name"),
            (&c.configmap_key, "configmap key"),
        ] {
            if value.is_empty() {
                return Err(err(Problem::Invalid(format!(
                    "missing {what} in cluster {id:?}"
                ))));
            }
        }
        let format = Format::parse(&c.format).ok_or_else(|| {
            err(Problem::Invalid(format!(
                "could not parse bundle format from cluster {id:?}: unknown bundle format: {:?}",
                c.format
            )))
        })?;
        let client = ClusterClient::load(&c.kubeconfig_path).map_err(|e| {
            err(Problem::Load(match e {
                K8sError::InCluster(e) => format!(
                    "failed to create Kubernetes client for cluster {id:?}: unable to load \
                     in-cluster configuration (set kubeconfig_path outside a cluster): {e}"
                ),
                e => format!("failed to create Kubernetes client for cluster {id:?}: {e}"),
            }))
        })?;
        clusters.push(Cluster {
            id,
            format,
            namespace: c.namespace,
            configmap_name: c.configmap_name,
            configmap_key: c.configmap_key,
            client,
        });
    }
    if clusters.is_empty() {
        tracing::info!("k8s_configmap: no clusters configured, bundle will not be published");
    }
    Ok(Arc::new(K8sConfigMapPublisher {
        clusters,
        published: tokio::sync::Mutex::new(None),
    }))
}

/// How the bundle is written into the ConfigMap key (SPIRE's
/// `bundleformat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The SPIFFE bundle document: a JWK Set with `use`, `spiffe_sequence`
    /// and `spiffe_refresh_hint`; X.509 and JWT authorities.
    Spiffe,
    /// A plain RFC 7517 JWK Set without the SPIFFE members: X.509
    /// authorities as keys with `x5c`, JWT authorities as keys with `kid`.
    Jwks,
    /// PEM `CERTIFICATE` blocks of the X.509 authorities only.
    Pem,
}

impl Format {
    /// Reads a format name as SPIRE does (case-insensitive).
    pub fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "spiffe" => Some(Format::Spiffe),
            "jwks" => Some(Format::Jwks),
            "pem" => Some(Format::Pem),
            _ => None,
        }
    }

    /// The name SPIRE uses for the format.
    pub fn name(self) -> &'static str {
        match self {
            Format::Spiffe => "spiffe",
            Format::Jwks => "jwks",
            Format::Pem => "pem",
        }
    }

    /// The bundle as the ConfigMap value in this format. Fails, as SPIRE
    /// does, when an authority cannot be written faithfully.
    pub fn render(self, bundle: &Bundle) -> Result<String, FormatError> {
        match self {
            Format::Pem => Ok(bundle.x509_authorities_pem()),
            Format::Spiffe => {
                // go-spiffe writes the document compact; member order is
                // not significant in JSON.
                let doc: Value = serde_json::from_slice(&bundle.try_to_jwks()?)
                    .map_err(|e| FormatError::Bundle(BundleError::InvalidJson(e.to_string())))?;
                Ok(doc.to_string())
            }
            Format::Jwks => {
                let mut keys = Vec::new();
                for (index, der) in bundle.x509_authorities.iter().enumerate() {
                    let (_, cert) = X509Certificate::from_der(der).map_err(|e| {
                        FormatError::Bundle(BundleError::InvalidX509Authority {
                            index,
                            reason: e.to_string(),
                        })
                    })?;
                    let key = JwkPublicKey::from_spki_der(cert.public_key().raw).map_err(|e| {
                        FormatError::X509Key {
                            index,
                            reason: e.to_string(),
                        }
                    })?;
                    let mut jwk = key.to_jwk();
                    jwk.insert("x5c".into(), json!([b64(der)]));
                    keys.push(Value::Object(jwk));
                }
                for a in &bundle.jwt_authorities {
                    let key = JwkPublicKey::from_spki_der(&a.public_key_der).map_err(|source| {
                        FormatError::Bundle(BundleError::UnrepresentableJwtAuthority {
                            kid: a.key_id.clone(),
                            source,
                        })
                    })?;
                    let mut jwk = key.to_jwk();
                    jwk.insert("kid".into(), Value::from(a.key_id.clone()));
                    keys.push(Value::Object(jwk));
                }
                Ok(json!({ "keys": keys }).to_string())
            }
        }
    }
}

/// Why the bundle could not be written in a cluster's format.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// An authority of the bundle has no faithful form in the document.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// An X.509 authority's public key has no JWK form.
    #[error("X.509 authority {index} has a key with no JWK form: {reason}")]
    X509Key {
        /// Its position among the X.509 authorities.
        index: usize,
        /// Why.
        reason: String,
    },
}

/// Why publishing to one cluster failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The bundle could not be formatted.
    #[error("could not format bundle when publishing to cluster {cluster:?}: {source}")]
    Format {
        /// The cluster ID.
        cluster: String,
        /// Why.
        #[source]
        source: FormatError,
    },
    /// The client could not be made.
    #[error("failed to apply ConfigMap for cluster {cluster:?}: {source}")]
    Client {
        /// The cluster ID.
        cluster: String,
        /// Why.
        #[source]
        source: K8sError,
    },
    /// The API server refused the apply or could not be reached.
    #[error("failed to apply ConfigMap for cluster {cluster:?}: {source}")]
    Apply {
        /// The cluster ID.
        cluster: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

/// One configured cluster.
#[derive(Debug)]
struct Cluster {
    id: String,
    format: Format,
    namespace: String,
    configmap_name: String,
    configmap_key: String,
    client: ClusterClient,
}

impl Cluster {
    async fn publish(&self, bundle: &Bundle) -> Result<(), ClusterError> {
        let value = self
            .format
            .render(bundle)
            .map_err(|source| ClusterError::Format {
                cluster: self.id.clone(),
                source,
            })?;
        let client = self
            .client
            .client()
            .await
            .map_err(|source| ClusterError::Client {
                cluster: self.id.clone(),
                source,
            })?;
        let api: Api<ConfigMap> = Api::namespaced(client, &self.namespace);
        // Only the one key is in the applied object, so the field manager
        // owns that key and nothing else in the ConfigMap.
        let applied = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": self.configmap_name, "namespace": self.namespace },
            "data": { self.configmap_key.as_str(): value },
        });
        api.patch(
            &self.configmap_name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&applied),
        )
        .await
        .map_err(|source| ClusterError::Apply {
            cluster: self.id.clone(),
            source,
        })?;
        tracing::debug!(
            cluster_id = %self.id,
            format = self.format.name(),
            kubeconfig_path = self.client.source(),
            namespace = %self.namespace,
            configmap = %self.configmap_name,
            key = %self.configmap_key,
            "Bundle published to Kubernetes ConfigMap"
        );
        Ok(())
    }
}

/// The plugin.
#[derive(Debug)]
pub struct K8sConfigMapPublisher {
    clusters: Vec<Cluster>,
    /// The bundle last published to every cluster.
    published: tokio::sync::Mutex<Option<Bundle>>,
}

#[async_trait]
impl BundlePublisher for K8sConfigMapPublisher {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn publish(&self, bundle: &Bundle) -> Result<(), PublishError> {
        // Held across the writes so two publishes never interleave and the
        // older bundle cannot land last.
        let mut published = self.published.lock().await;
        if published.as_ref() == Some(bundle) {
            return Ok(());
        }
        let mut errors = Vec::new();
        for cluster in &self.clusters {
            if let Err(e) = cluster.publish(bundle).await {
                errors.push(e.to_string());
            }
        }
        if !errors.is_empty() {
            // Some clusters may hold it already; the next attempt writes
            // all of them again (an unchanged apply is a no-op there).
            *published = None;
            return Err(PublishError::Destination(errors.join("; ")));
        }
        *published = Some(bundle.clone());
        Ok(())
    }
}

fn b64(der: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(der)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sigil_plugin::clock::SystemClock;
    use sigil_spiffe::TrustDomain;

    use super::*;
    use crate::catalog::DataStoreJoinTokens;

    fn ctx() -> ServerContext {
        ServerContext {
            trust_domain: TrustDomain::new("example.org").unwrap(),
            data_dir: std::env::temp_dir(),
            clock: Arc::new(SystemClock),
            join_tokens: Arc::new(DataStoreJoinTokens::default()),
        }
    }

    fn problem(cluster: serde_json::Value) -> Problem {
        build(&json!({ "clusters": { "c": cluster } }), &ctx())
            .unwrap_err()
            .problem
    }

    #[test]
    fn options_are_checked_as_spire_checks_them() {
        let full = json!({
            "configmap_name": "b", "configmap_key": "k", "namespace": "spire",
            "kubeconfig_path": "/no/such/kubeconfig", "format": "spiffe",
        });
        for (missing, words) in [
            ("format", "missing bundle format in cluster \"c\""),
            ("namespace", "missing namespace in cluster \"c\""),
            ("configmap_name", "missing configmap name in cluster \"c\""),
            ("configmap_key", "missing configmap key in cluster \"c\""),
        ] {
            let mut c = full.clone();
            c.as_object_mut().unwrap().remove(missing);
            assert_eq!(problem(c), Problem::Invalid(words.into()));
        }
        let mut c = full.clone();
        c["format"] = json!("der");
        assert_eq!(
            problem(c),
            Problem::Invalid(
                "could not parse bundle format from cluster \"c\": unknown bundle format: \"der\""
                    .into()
            )
        );
        let p = problem(full.clone());
        assert!(
            matches!(&p, Problem::Load(m) if m.contains("cluster \"c\"") && m.contains("/no/such/kubeconfig")),
            "{p:?}"
        );
        let mut c = full;
        c["colour"] = json!(1);
        assert_eq!(problem(c), Problem::UnknownOption("colour".into()));
        // No clusters: valid, publishes nowhere.
        build(&json!({}), &ctx()).unwrap();
    }

    #[test]
    fn format_names_are_spires_and_case_insensitive() {
        assert_eq!(Format::parse("SPIFFE"), Some(Format::Spiffe));
        assert_eq!(Format::parse("jwks"), Some(Format::Jwks));
        assert_eq!(Format::parse("Pem"), Some(Format::Pem));
        assert_eq!(Format::parse(""), None);
    }

    #[test]
    fn each_format_writes_what_spire_writes() {
        let td = TrustDomain::new("example.org").unwrap();
        let (_, b) = crate::catalog::tests::two_bundles(&td);

        let spiffe = Format::Spiffe.render(&b).unwrap();
        assert!(!spiffe.contains('\n'), "compact, as go-spiffe writes it");
        assert_eq!(Bundle::parse_jwks(&td, spiffe.as_bytes()).unwrap(), b);

        // JWKS: every authority, no SPIFFE members.
        let jwks: Value = serde_json::from_str(&Format::Jwks.render(&b).unwrap()).unwrap();
        assert_eq!(jwks.as_object().unwrap().len(), 1, "{jwks}");
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 4);
        for (i, der) in b.x509_authorities.iter().enumerate() {
            assert_eq!(keys[i]["x5c"], json!([b64(der)]));
            assert!(keys[i].get("use").is_none() && keys[i].get("kid").is_none());
        }
        assert_eq!(keys[1]["kty"], "RSA");
        for (i, a) in b.jwt_authorities.iter().enumerate() {
            let k = &keys[2 + i];
            assert_eq!(k["kid"], a.key_id.as_str());
            assert!(k.get("use").is_none() && k.get("x5c").is_none());
            let key = JwkPublicKey::from_jwk(k.as_object().unwrap()).unwrap();
            assert_eq!(key.to_spki_der(), a.public_key_der);
        }

        // PEM: the X.509 authorities only.
        let pem = Format::Pem.render(&b).unwrap();
        assert_eq!(
            sigil_spiffe::bundle::certificates_from_pem(pem.as_bytes()).unwrap(),
            b.x509_authorities
        );
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
    }
}
