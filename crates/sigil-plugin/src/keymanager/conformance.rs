//! The conformance suite every KeyManager must pass (in-tree ones run it in
//! their unit tests; an HSM-backed one will run it against SoftHSM2).

use std::future::Future;
use std::sync::Arc;

use sigil_crypto::CryptoError;
use sigil_crypto::key::{KeyType, ecdsa_der_to_fixed};

use super::KeyManager;

/// Runs every conformance check, each against a fresh manager from `make`.
/// Panics (test failure) on the first broken rule.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn KeyManager>>,
{
    generated_keys_have_requested_type_and_sign(make().await).await;
    get_key_returns_the_generated_key(make().await).await;
    generate_replaces_key_with_same_id(make().await).await;
    get_keys_lists_all_in_id_order(make().await).await;
    unknown_key_is_none(make().await).await;
}

async fn generated_keys_have_requested_type_and_sign(km: Arc<dyn KeyManager>) {
    for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
        let signer = km
            .generate_key(&format!("k-{kt}"), kt)
            .await
            .expect("generate");
        assert_eq!(signer.key_type(), kt, "{}: key type", km.name());
        assert!(!signer.public_key_der().is_empty());
        let sig = signer.sign(b"conformance message").expect("sign");
        verify_signature(kt, signer.public_key_der(), b"conformance message", &sig)
            .expect("signature verifies with the public key");
        assert!(
            verify_signature(kt, signer.public_key_der(), b"other message", &sig).is_err(),
            "{}: signature must not verify over a different message",
            km.name()
        );
    }
}

/// Verifies an X.509-style signature (`Signer::sign` output) with the public
/// key, by way of the JWS verifier (ECDSA signatures converted to `r||s`).
fn verify_signature(kt: KeyType, spki: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
    let (alg, sig) = match kt {
        KeyType::EcP256 => ("ES256", ecdsa_der_to_fixed(sig, 32)?),
        KeyType::EcP384 => ("ES384", ecdsa_der_to_fixed(sig, 48)?),
        _ => ("RS256", sig.to_vec()),
    };
    sigil_crypto::jwt::verify_jws_signature(alg, spki, msg, &sig)
}

async fn get_key_returns_the_generated_key(km: Arc<dyn KeyManager>) {
    let signer = km
        .generate_key("a", KeyType::EcP256)
        .await
        .expect("generate");
    let got = km.get_key("a").await.expect("get").expect("present");
    assert_eq!(got.public_key_der(), signer.public_key_der());
}

async fn generate_replaces_key_with_same_id(km: Arc<dyn KeyManager>) {
    let first = km
        .generate_key("a", KeyType::EcP256)
        .await
        .expect("generate");
    let second = km
        .generate_key("a", KeyType::EcP384)
        .await
        .expect("generate");
    assert_ne!(first.public_key_der(), second.public_key_der());
    let got = km.get_key("a").await.expect("get").expect("present");
    assert_eq!(got.public_key_der(), second.public_key_der());
    assert_eq!(got.key_type(), KeyType::EcP384);
    assert_eq!(km.get_keys().await.expect("list").len(), 1);
}

async fn get_keys_lists_all_in_id_order(km: Arc<dyn KeyManager>) {
    km.generate_key("b", KeyType::EcP256)
        .await
        .expect("generate");
    km.generate_key("a", KeyType::EcP256)
        .await
        .expect("generate");
    let ids: Vec<String> = km
        .get_keys()
        .await
        .expect("list")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
}

async fn unknown_key_is_none(km: Arc<dyn KeyManager>) {
    assert!(km.get_key("missing").await.expect("get").is_none());
}
