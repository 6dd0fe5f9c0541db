//! The published key set: the JWKS document built once per change of the
//! trust domain's JWT signing keys and shared by every `/keys` response, and
//! the time of the last successful poll (for the health checks).
//!
//! A source publishes what it fetched; identical key sets keep the same
//! document, ETag and Last-Modified, so clients can revalidate cheaply and
//! memory does not grow with request rate. This module never fetches.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sigil_spiffe::JwtAuthority;
use sigil_spiffe::jwk::JwkPublicKey;
use tokio::sync::watch;

/// The JWKS document of one key set, ready to send.
#[derive(Debug)]
pub struct Jwks {
    /// The JSON body (`{"keys": [...]}`, indented as SPIRE's).
    pub body: Bytes,
    /// Strong ETag of `body`, quoted.
    pub etag: String,
    /// When this key set was first seen.
    pub modified: SystemTime,
    /// How many keys the document holds.
    pub key_count: usize,
    /// The `(kid, public key)` pairs it was built from, to detect changes.
    source: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Default, Clone)]
struct State {
    jwks: Option<Arc<Jwks>>,
    last_success: Option<Instant>,
}

/// Shared handle on the published key set; cheap to clone.
#[derive(Debug, Clone)]
pub struct KeyStore {
    tx: Arc<watch::Sender<State>>,
    set_key_use: bool,
}

impl KeyStore {
    /// An empty store; `set_key_use` adds `"use": "sig"` to every key.
    pub fn new(set_key_use: bool) -> KeyStore {
        KeyStore {
            tx: Arc::new(watch::Sender::new(State::default())),
            set_key_use,
        }
    }

    /// The current document, if a poll has succeeded yet.
    pub fn current(&self) -> Option<Arc<Jwks>> {
        self.tx.borrow().jwks.clone()
    }

    /// When a poll last succeeded.
    pub fn last_success(&self) -> Option<Instant> {
        self.tx.borrow().last_success
    }

    /// Records a successful poll that returned `keys`. The document is
    /// rebuilt only when the keys differ from the published ones. Keys whose
    /// public key cannot be read are left out, with a warning.
    pub fn publish(&self, keys: &[JwtAuthority]) {
        let source: Vec<(String, Vec<u8>)> = keys
            .iter()
            .map(|k| (k.key_id.clone(), k.public_key_der.clone()))
            .collect();
        let unchanged = self
            .tx
            .borrow()
            .jwks
            .as_ref()
            .is_some_and(|j| j.source == source);
        let jwks = if unchanged {
            None
        } else {
            Some(Arc::new(build(source, self.set_key_use)))
        };
        self.tx.send_modify(|st| {
            if let Some(j) = jwks {
                tracing::info!(keys = j.key_count, "Key set changed");
                st.jwks = Some(j);
            }
            st.last_success = Some(Instant::now());
        });
    }
}

/// The JWS `alg` a key of this shape signs with (as SPIRE's provider maps it).
fn alg(key: &JwkPublicKey) -> &'static str {
    match key {
        JwkPublicKey::Ec { curve, .. } => match curve.jwk_name() {
            "P-256" => "ES256",
            "P-384" => "ES384",
            _ => "ES512",
        },
        JwkPublicKey::Rsa { .. } => "RS256",
        _ => "EdDSA",
    }
}

fn build(source: Vec<(String, Vec<u8>)>, set_key_use: bool) -> Jwks {
    let mut keys = Vec::with_capacity(source.len());
    for (kid, der) in &source {
        let key = match JwkPublicKey::from_spki_der(der) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(kid = %kid, error = %e, "Malformed public key in bundle");
                continue;
            }
        };
        let mut jwk: Map<String, Value> = key.to_jwk();
        jwk.insert("kid".into(), Value::String(kid.clone()));
        jwk.insert("alg".into(), Value::String(alg(&key).into()));
        if set_key_use {
            jwk.insert("use".into(), Value::String("sig".into()));
        }
        keys.push(Value::Object(jwk));
    }
    let key_count = keys.len();
    let mut doc = Map::new();
    doc.insert("keys".into(), Value::Array(keys));
    // Serialising a tree of strings cannot fail.
    let body = serde_json::to_vec_pretty(&Value::Object(doc)).unwrap_or_default();
    let digest = Sha256::digest(&body);
    Jwks {
        etag: format!("\"{}\"", hex::encode(&digest[..16])),
        body: Bytes::from(body),
        modified: SystemTime::now(),
        key_count,
        source,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A P-256 SubjectPublicKeyInfo from rcgen.
    pub(crate) fn p256_spki() -> Vec<u8> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        rcgen::PublicKeyData::subject_public_key_info(&kp)
    }

    pub(crate) fn authority(kid: &str, der: Vec<u8>) -> JwtAuthority {
        JwtAuthority {
            key_id: kid.into(),
            public_key_der: der,
            expires_at: None,
        }
    }

    #[test]
    fn document_lists_each_key_with_kid_and_alg() {
        let store = KeyStore::new(false);
        assert!(store.current().is_none() && store.last_success().is_none());
        store.publish(&[authority("k1", p256_spki())]);
        let jwks = store.current().unwrap();
        let doc: Value = serde_json::from_slice(&jwks.body).unwrap();
        let key = &doc["keys"][0];
        assert_eq!(key["kid"], "k1");
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        assert_eq!(key["alg"], "ES256");
        assert!(key.get("use").is_none());
        assert_eq!(jwks.key_count, 1);
    }

    #[test]
    fn set_key_use_marks_keys_for_signatures() {
        let store = KeyStore::new(true);
        store.publish(&[authority("k1", p256_spki())]);
        let doc: Value = serde_json::from_slice(&store.current().unwrap().body).unwrap();
        assert_eq!(doc["keys"][0]["use"], "sig");
    }

    #[test]
    fn same_keys_keep_the_same_document_and_new_keys_replace_it() {
        let store = KeyStore::new(false);
        let k1 = authority("k1", p256_spki());
        store.publish(std::slice::from_ref(&k1));
        let first = store.current().unwrap();
        store.publish(std::slice::from_ref(&k1));
        assert!(Arc::ptr_eq(&first, &store.current().unwrap()));
        store.publish(&[k1, authority("k2", p256_spki())]);
        let second = store.current().unwrap();
        assert_ne!(first.etag, second.etag);
        assert_eq!(second.key_count, 2);
    }

    #[test]
    fn malformed_keys_are_left_out() {
        let store = KeyStore::new(false);
        store.publish(&[
            authority("bad", vec![1, 2, 3]),
            authority("k1", p256_spki()),
        ]);
        let jwks = store.current().unwrap();
        assert_eq!(jwks.key_count, 1);
    }
}
