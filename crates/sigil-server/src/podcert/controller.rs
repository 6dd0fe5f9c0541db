//! The signing loop: watch every `PodCertificateRequest`
//! (`certificates.k8s.io/v1`), take those naming our signer that are not
//! yet `Issued`, `Denied` or `Failed`, and move each to one of those
//! states through its `status` subresource:
//!
//! 1. the key and its proof of possession ([`super::pop`]);
//! 2. the pod, its service account, its node and namespace, read from the
//!    API server at that moment, and the ClusterSPIFFEIDs
//!    ([`super::identity`]);
//! 3. an X509-SVID from the CA's current authority
//!    ([`CaManager::sign_x509_svid`](crate::ca::CaManager::sign_x509_svid)),
//!    with the lifetime of [`super::lifetime`].
//!
//! A wrong request is `Denied` with a reason; a certificate the CA cannot
//! make (or the API refuses) is `Failed`; an API server that cannot be
//! reached is retried with backoff, and never turns into a terminal state.
//! The status is written with an update carrying the resourceVersion read,
//! so two servers signing the same request cannot both win.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::Signer;
use super::identity::{self, Claims, ClusterSpiffeId, Denial, Settings};
use super::lifetime;
use super::pop::{self, KeyProof};
use crate::k8s::ClusterClient;

/// API group of PodCertificateRequest and ClusterTrustBundle.
pub const GROUP: &str = "certificates.k8s.io";
/// The version served by default since Kubernetes 1.37.
pub const VERSION: &str = "v1";

/// The `Failed` reason when the CA cannot issue a valid certificate.
pub const SIGNING_FAILED: &str = "SigningFailed";
/// The `Issued` reason.
pub const ISSUED: &str = "Issued";

/// The condition types the API defines.
pub mod condition {
    /// The certificate is in the status.
    pub const ISSUED: &str = "Issued";
    /// The signer refuses the request.
    pub const DENIED: &str = "Denied";
    /// The signer could not issue.
    pub const FAILED: &str = "Failed";
}

/// `spec` of a PodCertificateRequest, with both key shapes (the `v1`
/// stub CSR, the `v1beta1` PKIX key and proof) and every other field kept
/// as it came.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PcrSpec {
    /// `signerName`.
    #[serde(default)]
    pub signer_name: String,
    /// `podName`.
    #[serde(default)]
    pub pod_name: String,
    /// `podUID`.
    #[serde(rename = "podUID", default)]
    pub pod_uid: String,
    /// `serviceAccountName`.
    #[serde(default)]
    pub service_account_name: String,
    /// `serviceAccountUID`.
    #[serde(rename = "serviceAccountUID", default)]
    pub service_account_uid: String,
    /// `nodeName`.
    #[serde(default)]
    pub node_name: String,
    /// `nodeUID`.
    #[serde(rename = "nodeUID", default)]
    pub node_uid: String,
    /// `maxExpirationSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_expiration_seconds: Option<i32>,
    /// `stubPKCS10Request` (DER, base64 in JSON).
    #[serde(
        rename = "stubPKCS10Request",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stub_pkcs10_request: Option<ByteString>,
    /// `pkixPublicKey` (DER, base64 in JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkix_public_key: Option<ByteString>,
    /// `proofOfPossession` (base64 in JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_of_possession: Option<ByteString>,
    /// Everything else (`unverifiedUserAnnotations`, later fields).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// One status condition, as `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Issued`, `Denied` or `Failed`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`.
    pub status: String,
    /// CamelCase reason.
    #[serde(default)]
    pub reason: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// RFC 3339.
    #[serde(default)]
    pub last_transition_time: String,
    /// The object generation the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// `status` of a PodCertificateRequest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PcrStatus {
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// PEM chain, leaf first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_chain: Option<String>,
    /// The leaf's notBefore, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// The leaf's notAfter, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// When the kubelet should start refreshing, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin_refresh_at: Option<String>,
}

impl PcrStatus {
    /// True once `Issued`, `Denied` or `Failed` is set (the status is then
    /// immutable).
    pub fn is_terminal(&self) -> bool {
        self.conditions.iter().any(|c| {
            c.status == "True"
                && [condition::ISSUED, condition::DENIED, condition::FAILED]
                    .contains(&c.type_.as_str())
        })
    }
}

/// A PodCertificateRequest.
pub type Pcr = kube::core::Object<PcrSpec, PcrStatus>;

/// The resource of PodCertificateRequests.
pub fn pcr_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "PodCertificateRequest"),
        "podcertificaterequests",
    )
}

fn csid_resource() -> ApiResource {
    sigil_controller_manager::cluster_spiffe_id::CRD.api_resource()
}

/// Whole-second RFC 3339 UTC, as `metav1.Time` is written.
pub fn rfc3339_seconds(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::ca::rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
}

/// What to write: a terminal status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Certificate issued.
    Issued(PcrStatus),
    /// Denied with a reason.
    Denied(Denial),
    /// The signer could not issue.
    Failed(String),
}

/// Why a request must be looked at again later.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// The API server did not answer a lookup.
    #[error("{what}: {source}")]
    Api {
        /// What was being read or written.
        what: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
}

fn condition(
    type_: &str,
    reason: &str,
    message: &str,
    now: SystemTime,
    generation: Option<i64>,
) -> Condition {
    // The API limits messages to 32768 bytes.
    let mut message = message.to_owned();
    if message.len() > 32000 {
        let mut cut = 32000;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    Condition {
        type_: type_.to_owned(),
        status: "True".to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: rfc3339_seconds(now),
        observed_generation: generation,
    }
}

impl Outcome {
    /// The status this outcome writes.
    pub fn status(&self, now: SystemTime, generation: Option<i64>) -> PcrStatus {
        match self {
            Outcome::Issued(s) => s.clone(),
            Outcome::Denied(d) => PcrStatus {
                conditions: vec![condition(
                    condition::DENIED,
                    d.reason,
                    &d.message,
                    now,
                    generation,
                )],
                ..PcrStatus::default()
            },
            Outcome::Failed(message) => PcrStatus {
                conditions: vec![condition(
                    condition::FAILED,
                    SIGNING_FAILED,
                    message,
                    now,
                    generation,
                )],
                ..PcrStatus::default()
            },
        }
    }
}

async fn get<K>(api: Api<K>, name: &str, what: &str) -> Result<Option<K>, RetryError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(|source| RetryError::Api {
        what: format!("get {what} {name}"),
        source,
    })
}

async fn cluster_spiffe_ids(client: &kube::Client) -> Result<Vec<ClusterSpiffeId>, RetryError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &csid_resource());
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l,
        // No CRD installed (the group is unknown: a plain-text 404, not a
        // NotFound status): no ClusterSPIFFEIDs.
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Vec::new()),
        Err(source) => {
            return Err(RetryError::Api {
                what: "list ClusterSPIFFEIDs".into(),
                source,
            });
        }
    };
    Ok(list
        .items
        .iter()
        .map(|o| {
            let spec = o.data.get("spec").cloned().unwrap_or_default();
            let c = ClusterSpiffeId::new(
                o.metadata.name.as_deref().unwrap_or_default(),
                o.metadata.uid.as_deref().unwrap_or_default(),
                &o.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
                &spec,
            );
            if let Err(e) = &c.object.spec {
                tracing::debug!(cluster_spiffe_id = %c.object.name, error = %e, "Skipping ClusterSPIFFEID with an invalid spec");
            }
            c
        })
        .collect())
}

fn bytes(b: &Option<ByteString>) -> Option<&[u8]> {
    b.as_ref().map(|b| b.0.as_slice())
}

/// Decides one request: reads what it needs from the API server and signs
/// through the CA.
pub async fn decide(
    signer: &Signer,
    client: &kube::Client,
    pcr: &Pcr,
) -> Result<Outcome, RetryError> {
    let spec = &pcr.spec;
    let namespace = pcr.metadata.namespace.as_deref().unwrap_or_default();

    let proof = match KeyProof::from_fields(
        bytes(&spec.stub_pkcs10_request),
        bytes(&spec.pkix_public_key),
        bytes(&spec.proof_of_possession),
    )
    .and_then(|p| pop::verify(p, &spec.pod_uid))
    {
        Ok(k) => k,
        Err(e) => {
            return Ok(Outcome::Denied(Denial {
                reason: e.reason(),
                message: e.to_string(),
            }));
        }
    };

    let pod: Option<Pod> = get(
        Api::namespaced(client.clone(), namespace),
        &spec.pod_name,
        "pod",
    )
    .await?;
    let sa: Option<ServiceAccount> = get(
        Api::namespaced(client.clone(), namespace),
        &spec.service_account_name,
        "service account",
    )
    .await?;
    let node: Option<Node> = get(Api::all(client.clone()), &spec.node_name, "node").await?;
    let claims = Claims {
        namespace,
        pod_name: &spec.pod_name,
        pod_uid: &spec.pod_uid,
        service_account_name: &spec.service_account_name,
        service_account_uid: &spec.service_account_uid,
        node_name: &spec.node_name,
        node_uid: &spec.node_uid,
    };
    if let Err(d) = identity::check_claims(&claims, pod.as_ref(), sa.as_ref(), node.as_ref()) {
        return Ok(Outcome::Denied(d));
    }
    let (Some(pod), Some(node)) = (pod, node) else {
        // check_claims denies both; this keeps the types honest.
        return Ok(Outcome::Failed("pod or node vanished".into()));
    };
    let Some(ns) = get::<Namespace>(Api::all(client.clone()), namespace, "namespace").await? else {
        return Ok(Outcome::Denied(Denial {
            reason: identity::POD_NOT_FOUND,
            message: format!("namespace {namespace} does not exist"),
        }));
    };
    let objects = cluster_spiffe_ids(client).await?;
    let cfg = &signer.cfg;
    let settings = Settings {
        trust_domain: &signer.td,
        cluster_name: &cfg.cluster_name,
        cluster_domain: &cfg.cluster_domain,
        class_name: &cfg.class_name,
        default_spiffe_id: cfg.default_spiffe_id,
    };
    let id = match identity::decide(&settings, &objects, &ns, &pod, &node) {
        Ok(id) => id,
        Err(d) => return Ok(Outcome::Denied(d)),
    };

    // The API's limit for signers outside kubernetes.io is 91 days; it is
    // required, so the fallback is only for objects that somehow lack it.
    let max_seconds = spec.max_expiration_seconds.unwrap_or(86400);
    let max = Duration::from_secs(u64::try_from(max_seconds).unwrap_or(0));
    let wanted = lifetime::requested(id.ttl.unwrap_or(signer.default_ttl), max_seconds);
    // The CA backdates notBefore; ask for that much less so the whole
    // validity is the lifetime decided.
    let ttl = wanted.saturating_sub(crate::ca::BACKDATE);
    let chain = match signer
        .ca
        .sign_x509_svid(&id.id, &proof.spki_der, ttl, &id.dns_names)
        .await
    {
        Ok((chain, _)) => chain,
        Err(e) => {
            return Ok(Outcome::Failed(format!(
                "signing the X509-SVID failed: {e}"
            )));
        }
    };
    let Some(Ok((_, leaf))) = chain.first().map(|d| X509Certificate::from_der(d)) else {
        return Ok(Outcome::Failed(
            "the CA returned no parseable certificate".into(),
        ));
    };
    let ts = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    let not_before = ts(leaf.validity().not_before.timestamp());
    let not_after = ts(leaf.validity().not_after.timestamp());
    let refresh = match lifetime::begin_refresh_at(not_before, not_after, max) {
        Ok(r) => r,
        Err(e) => return Ok(Outcome::Failed(e.to_string())),
    };
    let pem = chain
        .iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
        .collect::<String>();
    let source = match &id.source {
        identity::Source::ClusterSpiffeId(name) => format!("ClusterSPIFFEID {name:?}"),
        identity::Source::Default => "the default rule".to_owned(),
    };
    tracing::info!(
        namespace,
        pod = %spec.pod_name,
        spiffe_id = %id.id,
        not_after = %rfc3339_seconds(not_after),
        "Issued pod certificate"
    );
    let now = signer.clock.now();
    Ok(Outcome::Issued(PcrStatus {
        conditions: vec![condition(
            condition::ISSUED,
            ISSUED,
            &format!("issued X509-SVID {} from {source}", id.id),
            now,
            pcr.metadata.generation,
        )],
        certificate_chain: Some(pem),
        not_before: Some(rfc3339_seconds(not_before)),
        not_after: Some(rfc3339_seconds(not_after)),
        begin_refresh_at: Some(rfc3339_seconds(refresh)),
    }))
}

/// Decides `pcr` and writes the result; `Err` when it must be retried.
async fn handle(signer: &Signer, client: &kube::Client, pcr: Pcr) -> Result<(), RetryError> {
    if pcr.spec.signer_name != signer.cfg.signer_name.as_str()
        || pcr.status.as_ref().is_some_and(PcrStatus::is_terminal)
    {
        return Ok(());
    }
    let namespace = pcr.metadata.namespace.clone().unwrap_or_default();
    let name = pcr.metadata.name.clone().unwrap_or_default();
    let outcome = decide(signer, client, &pcr).await?;
    if let Outcome::Denied(d) = &outcome {
        tracing::warn!(namespace, request = %name, reason = d.reason, message = %d.message, "Denied pod certificate request");
    }
    if let Outcome::Failed(m) = &outcome {
        tracing::error!(namespace, request = %name, message = %m, "Failed pod certificate request");
    }
    let api: Api<Pcr> = Api::namespaced_with(client.clone(), &namespace, &pcr_resource());
    let now = signer.clock.now();
    let mut obj = pcr.clone();
    obj.status = Some(outcome.status(now, pcr.metadata.generation));
    match api
        .replace_status(&name, &PostParams::default(), &obj)
        .await
    {
        Ok(_) => Ok(()),
        // Changed since read (another server signed it, or it was
        // replaced): the watch brings the new version.
        Err(kube::Error::Api(s)) if s.code == 409 || s.is_not_found() => Ok(()),
        // The API refused the certificate: say so on the request rather
        // than retrying the same thing forever.
        Err(kube::Error::Api(s)) if s.code == 422 && matches!(outcome, Outcome::Issued(_)) => {
            let failed = Outcome::Failed(format!(
                "the API server refused the issued certificate: {}",
                s.message
            ));
            obj.status = Some(failed.status(now, pcr.metadata.generation));
            tracing::error!(namespace, request = %name, error = %s.message, "API server refused the issued certificate");
            match api
                .replace_status(&name, &PostParams::default(), &obj)
                .await
            {
                Ok(_) => Ok(()),
                Err(source) => Err(RetryError::Api {
                    what: format!("update status of {namespace}/{name}"),
                    source,
                }),
            }
        }
        Err(source) => Err(RetryError::Api {
            what: format!("update status of {namespace}/{name}"),
            source,
        }),
    }
}

/// The first wait before a request is looked at again after an API error,
/// doubled each time up to [`RETRY_MAX`].
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// The longest wait between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Watches and signs until the process ends.
pub async fn run(signer: Signer, client: Arc<ClusterClient>) {
    let client = match client.client().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Pod Certificates signer cannot start");
            return;
        }
    };
    tracing::info!(signer_name = %signer.cfg.signer_name, "Signing PodCertificateRequests");
    let ar = pcr_resource();
    let api: Api<Pcr> = Api::all_with(client.clone(), &ar);
    let (retry_tx, mut retry_rx) =
        tokio::sync::mpsc::unbounded_channel::<(String, String, Duration)>();
    let schedule = |ns: String, name: String, wait: Duration, e: &RetryError| {
        tracing::warn!(namespace = %ns, request = %name, error = %e, retry_in = ?wait, "Pod certificate request will be retried");
        let tx = retry_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = tx.send((ns, name, (wait * 2).min(RETRY_MAX)));
        });
    };
    // The API server indexes requests by signer: only ours are sent.
    let selector = format!("spec.signerName={}", signer.cfg.signer_name);
    let stream = watcher(api, watcher::Config::default().fields(&selector))
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(pcr)) => {
                    let ns = pcr.metadata.namespace.clone().unwrap_or_default();
                    let name = pcr.metadata.name.clone().unwrap_or_default();
                    if let Err(e) = handle(&signer, &client, pcr).await {
                        schedule(ns, name, RETRY_INITIAL, &e);
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "PodCertificateRequest watch failed; retrying"),
                None => return,
            },
            Some((ns, name, next)) = retry_rx.recv() => {
                let api: Api<Pcr> = Api::namespaced_with(client.clone(), &ns, &ar);
                let result = match api.get_opt(&name).await {
                    Ok(Some(pcr)) => handle(&signer, &client, pcr).await,
                    Ok(None) => Ok(()),
                    Err(source) => Err(RetryError::Api { what: format!("get {ns}/{name}"), source }),
                };
                if let Err(e) = result {
                    schedule(ns, name, next, &e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn both_request_shapes_deserialize_and_unknown_fields_survive() {
        let v1: Pcr = serde_json::from_value(json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "PodCertificateRequest",
            "metadata": {"name": "r", "namespace": "team-a"},
            "spec": {
                "signerName": "spiffe.io/x509-svid",
                "podName": "web-0", "podUID": "u1",
                "serviceAccountName": "web", "serviceAccountUID": "u2",
                "nodeName": "node-1", "nodeUID": "u3",
                "maxExpirationSeconds": 86400,
                "stubPKCS10Request": "AQID",
                "unverifiedUserAnnotations": {"a": "b"},
            },
        }))
        .unwrap();
        assert_eq!(bytes(&v1.spec.stub_pkcs10_request), Some(&[1u8, 2, 3][..]));
        assert_eq!(v1.spec.pod_uid, "u1");
        assert_eq!(
            v1.spec.other["unverifiedUserAnnotations"],
            json!({"a": "b"})
        );
        let out = serde_json::to_value(&v1).unwrap();
        assert_eq!(out["spec"]["unverifiedUserAnnotations"], json!({"a": "b"}));
        assert_eq!(out["spec"]["stubPKCS10Request"], "AQID");
        let beta: PcrSpec = serde_json::from_value(json!({
            "signerName": "spiffe.io/x509-svid",
            "pkixPublicKey": "BAU=", "proofOfPossession": "Bg==",
        }))
        .unwrap();
        assert_eq!(bytes(&beta.pkix_public_key), Some(&[4u8, 5][..]));
        assert_eq!(bytes(&beta.proof_of_possession), Some(&[6u8][..]));
        assert!(beta.stub_pkcs10_request.is_none());
    }

    #[test]
    fn denied_and_failed_statuses_carry_only_their_condition() {
        let now = UNIX_EPOCH + Duration::from_millis(1_800_000_000_500);
        let s = Outcome::Denied(Denial {
            reason: identity::NO_IDENTITY,
            message: "nobody".into(),
        })
        .status(now, Some(1));
        assert!(s.is_terminal());
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"conditions": [{
                "type": "Denied", "status": "True", "reason": "NoIdentity",
                "message": "nobody", "lastTransitionTime": "2027-01-15T08:00:00Z",
                "observedGeneration": 1,
            }]})
        );
        let f = Outcome::Failed("x".repeat(40000)).status(now, None);
        assert_eq!(f.conditions[0].type_, "Failed");
        assert_eq!(f.conditions[0].reason, SIGNING_FAILED);
        assert!(f.conditions[0].message.len() <= 32000);
        assert!(!PcrStatus::default().is_terminal());
    }
}
