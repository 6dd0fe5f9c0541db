//! Shared fixtures for this crate's tests: a CA and SVIDs built with the
//! public API.

use std::time::{Duration, SystemTime};

use sigil_spiffe::{SpiffeId, TrustDomain};

use crate::{
    CaSubject, KeyType, Signer, SoftwareKey, X509SvidParams, self_signed_ca, sign_x509_svid,
};

pub(crate) struct TestCa {
    pub(crate) key: SoftwareKey,
    pub(crate) cert: Vec<u8>,
    pub(crate) td: TrustDomain,
}

pub(crate) fn now() -> SystemTime {
    SystemTime::now()
}

pub(crate) fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

pub(crate) fn ca(td: &str, key_type: KeyType) -> TestCa {
    let key = SoftwareKey::generate(key_type).unwrap();
    let td = TrustDomain::new(td).unwrap();
    let cert = self_signed_ca(
        &key,
        &td,
        &CaSubject::default(),
        now() - hours(1),
        now() + hours(24),
    )
    .unwrap();
    TestCa { key, cert, td }
}

pub(crate) struct TestSvid {
    pub(crate) key: SoftwareKey,
    pub(crate) cert: Vec<u8>,
}

impl TestSvid {
    pub(crate) fn pkcs8(&self) -> Vec<u8> {
        self.key.to_pkcs8_der()
    }
}

pub(crate) fn svid(ca: &TestCa, id: &str, key_type: KeyType) -> TestSvid {
    let key = SoftwareKey::generate(key_type).unwrap();
    let params = X509SvidParams {
        dns_names: vec!["svc.example.org".to_owned()],
        ..X509SvidParams::new(
            SpiffeId::parse(id).unwrap(),
            key.public_key_der().to_vec(),
            now() - Duration::from_secs(10),
            now() + hours(1),
        )
    };
    let cert = sign_x509_svid(&ca.cert, &ca.key, &params).unwrap();
    TestSvid { key, cert }
}
