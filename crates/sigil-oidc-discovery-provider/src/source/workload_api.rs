//! The `workload_api` source: the first message of the Workload API's
//! `FetchJWTBundles` stream on each poll, from which the configured trust
//! domain's bundle is taken (keyed by trust domain name or its SPIFFE ID).
//!
//! A Workload API JWT bundle is a JWKS whose keys carry no `use` (go-spiffe's
//! `jwtbundle` format, which SPIRE's and sigil's agents send): every key with
//! a `kid` is a JWT authority, so it is read here rather than as a SPIFFE
//! trust bundle document.

use std::path::PathBuf;

use futures::StreamExt as _;
use serde_json::Value;
use sigil_proto::workload::JwtBundlesRequest;
use sigil_spiffe::jwk::JwkPublicKey;
use sigil_spiffe::{JwtAuthority, TrustDomain};
use sigil_workload_client::WorkloadClient;

use super::{PollError, Poller};

const CALL: &str = "SpiffeWorkloadAPI.FetchJWTBundles";

/// Polls an agent's Workload API. Dials on the first poll and again after
/// any failure, so the agent may start after the provider.
#[derive(Debug)]
pub struct WorkloadApi {
    socket_path: PathBuf,
    client: Option<WorkloadClient>,
    trust_domain: TrustDomain,
}

impl WorkloadApi {
    /// A poller of the agent at `socket_path` publishing `trust_domain`'s keys.
    pub fn new(socket_path: PathBuf, trust_domain: TrustDomain) -> WorkloadApi {
        WorkloadApi {
            socket_path,
            client: None,
            trust_domain,
        }
    }

    async fn fetch(&mut self) -> Result<Vec<JwtAuthority>, PollError> {
        let client = match &mut self.client {
            Some(c) => c,
            None => self
                .client
                .insert(sigil_workload_client::connect(&self.socket_path).await?),
        };
        let mut stream = client
            .fetch_jwt_bundles(sigil_workload_client::with_header(JwtBundlesRequest {}))
            .await
            .map_err(rpc)?
            .into_inner();
        let msg = stream
            .next()
            .await
            .ok_or(PollError::NoMessage(CALL))?
            .map_err(rpc)?;
        let td = &self.trust_domain;
        let jwks = msg
            .bundles
            .get(td.name())
            .or_else(|| msg.bundles.get(&td.id_string()))
            .ok_or_else(|| PollError::NoBundle(td.name().to_owned()))?;
        parse_jwt_bundle(jwks).map_err(|source| PollError::BadBundle {
            trust_domain: td.name().to_owned(),
            source,
        })
    }
}

fn rpc(status: tonic::Status) -> PollError {
    PollError::Rpc {
        call: CALL,
        status: Box::new(status),
    }
}

#[async_trait::async_trait]
impl Poller for WorkloadApi {
    fn call(&self) -> &'static str {
        CALL
    }

    async fn poll(&mut self) -> Result<Vec<JwtAuthority>, PollError> {
        let result = self.fetch().await;
        if matches!(result, Err(PollError::Rpc { .. } | PollError::Connect(_))) {
            self.client = None;
        }
        result
    }
}

/// Why a Workload API JWT bundle could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtBundleError {
    /// Not JSON.
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// No `keys` array.
    #[error("no \"keys\" array")]
    NoKeys,
    /// A `keys` entry is not an object.
    #[error("key {0} is not an object")]
    NotAnObject(usize),
    /// A key has no `kid`.
    #[error("key {0} has no kid")]
    NoKid(usize),
    /// A key is not a public key sigil reads.
    #[error("key {kid:?}: {source}")]
    Key {
        /// Its key ID.
        kid: String,
        /// Why.
        #[source]
        source: sigil_spiffe::jwk::JwkError,
    },
}

/// The JWT authorities of a Workload API JWT bundle (a JWKS; `kid` required
/// on every key, `use` ignored).
fn parse_jwt_bundle(json: &[u8]) -> Result<Vec<JwtAuthority>, JwtBundleError> {
    let doc: Value = serde_json::from_slice(json)?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwtBundleError::NoKeys)?;
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let k = k.as_object().ok_or(JwtBundleError::NotAnObject(i))?;
            let kid = k
                .get("kid")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or(JwtBundleError::NoKid(i))?;
            let key = JwkPublicKey::from_jwk(k).map_err(|source| JwtBundleError::Key {
                kid: kid.to_owned(),
                source,
            })?;
            Ok(JwtAuthority {
                key_id: kid.to_owned(),
                public_key_der: key.to_spki_der(),
                expires_at: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn jwt_bundle_keys_without_use_are_authorities() {
        let der = crate::keys::tests::p256_spki();
        let mut jwk = JwkPublicKey::from_spki_der(&der).unwrap().to_jwk();
        jwk.insert("kid".into(), "k1".into());
        let doc = serde_json::json!({ "keys": [jwk] });
        let got = parse_jwt_bundle(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].key_id, "k1");
        assert_eq!(got[0].public_key_der, der);
    }

    #[test]
    fn jwt_bundle_key_without_kid_or_keys_is_refused() {
        let der = crate::keys::tests::p256_spki();
        let jwk = JwkPublicKey::from_spki_der(&der).unwrap().to_jwk();
        let doc = serde_json::json!({ "keys": [jwk] });
        assert!(matches!(
            parse_jwt_bundle(&serde_json::to_vec(&doc).unwrap()),
            Err(JwtBundleError::NoKid(0))
        ));
        assert!(matches!(
            parse_jwt_bundle(b"{}"),
            Err(JwtBundleError::NoKeys)
        ));
        assert!(matches!(
            parse_jwt_bundle(b"nope"),
            Err(JwtBundleError::Json(_))
        ));
    }
}
