//! The `ClusterTrustBundle` (`certificates.k8s.io/v1`) of our signer: one
//! object named `<signer name with ':' for '/'>:<suffix>`, with
//! `spec.signerName` set to the signer and `spec.trustBundle` holding the
//! X.509 authorities of the trust bundle as PEM, so pods can trust what the
//! signer issues through a `clusterTrustBundle` projected volume.
//!
//! It is a [`BundlePublisher`], driven by the server's publishing loop
//! ([`crate::publish`]): written at start and after every change of the
//! trust bundle (authorities prepared, activated, tainted, revoked,
//! appended), retried with backoff until it succeeds. The write is a create,
//! or an update of the existing object when its contents differ (RBAC:
//! `get`, `create`, `update` on `clustertrustbundles`, and `attest` on the
//! signer).

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::certificates::v1::{ClusterTrustBundle, ClusterTrustBundleSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use sigil_plugin::bundlepublisher::{BundlePublisher, PublishError};
use sigil_spiffe::Bundle;

use super::SignerName;
use crate::k8s::ClusterClient;

/// The label set on the object, naming who keeps it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "sigil-server");

/// Keeps the signer's ClusterTrustBundle equal to the trust bundle's X.509
/// authorities.
#[derive(Debug)]
pub struct ClusterTrustBundlePublisher {
    client: Arc<ClusterClient>,
    signer: SignerName,
    name: String,
}

impl ClusterTrustBundlePublisher {
    /// A publisher writing the object `name` for `signer`.
    pub fn new(
        client: Arc<ClusterClient>,
        signer: SignerName,
        name: String,
    ) -> ClusterTrustBundlePublisher {
        ClusterTrustBundlePublisher {
            client,
            signer,
            name,
        }
    }

    /// The object for `pem`.
    pub fn object(&self, pem: String) -> ClusterTrustBundle {
        ClusterTrustBundle {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: ClusterTrustBundleSpec {
                signer_name: Some(self.signer.as_str().to_owned()),
                trust_bundle: pem,
            },
        }
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> PublishError {
    PublishError::Destination(format!("{what}: {e}"))
}

#[async_trait]
impl BundlePublisher for ClusterTrustBundlePublisher {
    fn name(&self) -> &'static str {
        "pod_certificates ClusterTrustBundle"
    }

    async fn publish(&self, bundle: &Bundle) -> Result<(), PublishError> {
        let pem = bundle.x509_authorities_pem();
        if pem.is_empty() {
            // The API refuses an empty bundle; the CA always has one.
            return Err(PublishError::Destination(
                "the trust bundle has no X.509 authorities".into(),
            ));
        }
        let client = self
            .client
            .client()
            .await
            .map_err(|e| failed("Kubernetes client", e))?;
        let api: Api<ClusterTrustBundle> = Api::all(client);
        let current = api
            .get_opt(&self.name)
            .await
            .map_err(|e| failed(&format!("get ClusterTrustBundle {}", self.name), e))?;
        match current {
            None => {
                api.create(&PostParams::default(), &self.object(pem))
                    .await
                    .map_err(|e| failed(&format!("create ClusterTrustBundle {}", self.name), e))?;
                tracing::info!(name = %self.name, signer = %self.signer, "Created ClusterTrustBundle");
            }
            Some(have)
                if have.spec.trust_bundle == pem
                    && have.spec.signer_name.as_deref() == Some(self.signer.as_str()) => {}
            Some(have) => {
                let mut want = self.object(pem);
                want.metadata.resource_version = have.metadata.resource_version;
                let mut labels = have.metadata.labels.unwrap_or_default();
                labels.extend(want.metadata.labels.take().unwrap_or_default());
                want.metadata.labels = Some(labels);
                want.metadata.annotations = have.metadata.annotations;
                api.replace(&self.name, &PostParams::default(), &want)
                    .await
                    .map_err(|e| failed(&format!("update ClusterTrustBundle {}", self.name), e))?;
                tracing::info!(name = %self.name, signer = %self.signer, "Updated ClusterTrustBundle");
            }
        }
        Ok(())
    }
}
