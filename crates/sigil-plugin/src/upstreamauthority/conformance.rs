//! The conformance suite every UpstreamAuthority runs: the CA it mints
//! carries the requested key, is a CA, chains to the upstream roots it
//! reports, respects the preferred lifetime, and a CSR whose signature does
//! not hold is refused.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_crypto::key::{KeyType, Signer, SoftwareKey};
use sigil_crypto::x509::{CaSubject, X509SvidParams, cert_info, sign_x509_svid, verify_chain};
use sigil_spiffe::TrustDomain;

use super::{MintX509CaRequest, UpstreamAuthority};

/// Runs every case against `ua`, which serves trust domain `td`.
pub async fn run_all(ua: Arc<dyn UpstreamAuthority>, td: &TrustDomain) {
    minted_ca_carries_the_key_and_chains_to_the_roots(ua.as_ref(), td).await;
    a_csr_with_a_bad_signature_is_refused(ua.as_ref()).await;
}

fn csr_for(key: &SoftwareKey) -> Vec<u8> {
    sigil_crypto::csr::create_csr(key, None).unwrap_or_else(|e| panic!("building a CSR: {e}"))
}

async fn minted_ca_carries_the_key_and_chains_to_the_roots(
    ua: &dyn UpstreamAuthority,
    td: &TrustDomain,
) {
    let key = SoftwareKey::generate(KeyType::EcP256).unwrap_or_else(|e| panic!("key: {e}"));
    let ttl = Duration::from_secs(600);
    let minted = ua
        .mint_x509_ca(MintX509CaRequest {
            csr_der: csr_for(&key),
            preferred_ttl: ttl,
            subject: CaSubject::default(),
        })
        .await
        .unwrap_or_else(|e| panic!("{} refused an honest CSR: {e}", ua.name()));
    let ca = minted
        .ca_chain
        .first()
        .unwrap_or_else(|| panic!("{} returned an empty chain", ua.name()));
    assert!(
        !minted.upstream_roots.is_empty(),
        "{} reported no upstream roots",
        ua.name()
    );
    let info = cert_info(ca).unwrap_or_else(|e| panic!("minted CA unreadable: {e}"));
    assert!(info.is_ca, "the minted certificate is not a CA");
    assert_eq!(info.public_key_der, key.public_key_der(), "wrong key");
    let now = SystemTime::now();
    assert!(
        info.not_after <= now + ttl + Duration::from_secs(60),
        "the CA outlives the preferred TTL"
    );
    // An SVID signed by the new CA verifies up to the reported roots.
    let leaf_key = SoftwareKey::generate(KeyType::EcP256).unwrap_or_else(|e| panic!("key: {e}"));
    let id = td
        .id_with_path("/conformance")
        .unwrap_or_else(|e| panic!("id: {e}"));
    let leaf = sign_x509_svid(
        ca,
        &key,
        &X509SvidParams::new(
            id,
            leaf_key.public_key_der().to_vec(),
            now - Duration::from_secs(5),
            now + Duration::from_secs(60),
        ),
    )
    .unwrap_or_else(|e| panic!("signing with the minted CA: {e}"));
    let mut chain = vec![leaf];
    chain.extend(minted.ca_chain.iter().cloned());
    verify_chain(&chain, &minted.upstream_roots, now)
        .unwrap_or_else(|e| panic!("{}: SVID does not chain to the roots: {e}", ua.name()));
}

async fn a_csr_with_a_bad_signature_is_refused(ua: &dyn UpstreamAuthority) {
    let key = SoftwareKey::generate(KeyType::EcP256).unwrap_or_else(|e| panic!("key: {e}"));
    let mut csr = csr_for(&key);
    let last = csr.len() - 3;
    csr[last] ^= 0x55;
    let r = ua
        .mint_x509_ca(MintX509CaRequest {
            csr_der: csr,
            preferred_ttl: Duration::from_secs(600),
            subject: CaSubject::default(),
        })
        .await;
    assert!(r.is_err(), "{} signed a tampered CSR", ua.name());
}
