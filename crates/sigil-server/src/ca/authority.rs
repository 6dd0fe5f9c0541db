//! The two kinds of local authority, X.509 CAs ([`X509Ca`]) and JWT signing
//! keys ([`JwtKey`]), and everything about them that differs by kind: what
//! each holds, its KeyManager key name, how a new one is minted in a slot
//! (a key from the KeyManager and, for an X.509 CA, a self-signed or
//! UpstreamAuthority-signed certificate, published in the bundle before it
//! is returned), its authority ID and how it is found, tainted and removed
//! in the bundle, and the logs and metrics of its activation.
//!
//! The shared slot logic (`slot.rs`) and the operations on it
//! (`rotation.rs`, `local_authority.rs`) reach a kind only through
//! [`SlotAuthority`] and [`ManagedAuthority`]. This module never decides
//! when an authority is prepared, activated, tainted or revoked.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use sigil_crypto::key::Signer;
use sigil_plugin::clock::unix;
use sigil_plugin::upstreamauthority::MintX509CaRequest;
use sigil_spiffe::{Bundle, JwtAuthority};

use super::bundle::Taints;
use super::error::{CaError, UpstreamCaError};
use super::slot::{SlotAuthority, SlotStatus, Slots};
use super::{BACKDATE, CaManager, State, rfc3339};

/// An X.509 CA: certificate and signer.
#[derive(Debug, Clone)]
pub struct X509Ca {
    /// Slot `A` or `B`.
    pub slot: String,
    /// DER certificate.
    pub cert_der: Vec<u8>,
    /// Upstream intermediates between this CA and the upstream roots (empty
    /// for a self-signed CA or one signed directly by an upstream root).
    pub upstream_chain: Vec<Vec<u8>>,
    /// The CA key.
    pub signer: Arc<dyn Signer>,
    /// When the slot was prepared.
    pub issued_at: SystemTime,
    /// Certificate expiry.
    pub not_after: SystemTime,
    /// State.
    pub status: SlotStatus,
}

/// A JWT signing key.
#[derive(Debug, Clone)]
pub struct JwtKey {
    /// Slot `A` or `B`.
    pub slot: String,
    /// Key ID (`kid`).
    pub kid: String,
    /// The key.
    pub signer: Arc<dyn Signer>,
    /// When prepared.
    pub issued_at: SystemTime,
    /// Expiry.
    pub not_after: SystemTime,
    /// State.
    pub status: SlotStatus,
}

impl X509Ca {
    /// SPIRE's authority ID: the certificate's SubjectKeyIdentifier in hex.
    pub fn authority_id(&self) -> String {
        x509_authority_id(&self.cert_der)
    }
}

/// What the CA's operations need of a kind of authority beyond its slot
/// states: where its slots are, how to mint one, and its place in the
/// bundle.
pub(crate) trait ManagedAuthority: SlotAuthority {
    /// The KeyManager key name of a slot's key is `<KEY_PREFIX>-<slot>`.
    const KEY_PREFIX: &'static str;
    /// SPIRE's call counter of a preparation.
    const PREPARE_CALL: &'static str;
    /// sigil's gauge of the seconds until the active authority expires.
    const EXPIRY_GAUGE: &'static str;

    /// This kind's slots.
    fn slots(st: &State) -> &Slots<Self>;
    /// This kind's slots, to change.
    fn slots_mut(st: &mut State) -> &mut Slots<Self>;

    /// Makes a new authority in `slot`, prepared, and publishes it in the
    /// bundle (never signing before it is there).
    fn mint(ca: &CaManager, slot: &str) -> impl Future<Output = Result<Self, CaError>> + Send;

    /// Logs an activation.
    fn log_activated(&self);
    /// SPIRE's metrics of an activation by the rotation.
    fn count_activation(&self, ca: &CaManager);

    /// This kind's taints.
    fn taints(t: &mut Taints) -> &mut BTreeSet<String>;
    /// Whether the bundle holds an authority of this kind with that ID.
    fn in_bundle(b: &Bundle, authority_id: &str) -> bool;
    /// Removes the authority with that ID from the bundle; false when there
    /// was none.
    fn remove_from_bundle(b: &mut Bundle, authority_id: &str) -> bool;

    /// The KeyManager key name of `slot`'s key.
    fn key_name(slot: &str) -> String {
        format!("{}-{slot}", Self::KEY_PREFIX)
    }
}

impl SlotAuthority for X509Ca {
    const KIND: &'static str = "X.509";
    fn slot(&self) -> &str {
        &self.slot
    }
    fn status(&self) -> SlotStatus {
        self.status
    }
    fn set_status(&mut self, status: SlotStatus) {
        self.status = status;
    }
    fn authority_id(&self) -> String {
        X509Ca::authority_id(self)
    }
    fn issued_at(&self) -> SystemTime {
        self.issued_at
    }
    fn not_after(&self) -> SystemTime {
        self.not_after
    }
    fn upstream_authority_id(&self) -> String {
        x509_upstream_authority_id(&self.cert_der)
    }
}

impl ManagedAuthority for X509Ca {
    const KEY_PREFIX: &'static str = "x509-CA";
    const PREPARE_CALL: &'static str = "ca_manager_x509_ca_prepare";
    const EXPIRY_GAUGE: &'static str = "x509_ca_expires_in_seconds";

    fn slots(st: &State) -> &Slots<Self> {
        &st.x509
    }
    fn slots_mut(st: &mut State) -> &mut Slots<Self> {
        &mut st.x509
    }

    async fn mint(ca: &CaManager, slot: &str) -> Result<Self, CaError> {
        let cfg = &ca.cfg;
        let now = ca.clock.now();
        let signer = ca
            .km
            .generate_key(&Self::key_name(slot), cfg.x509_key_type)
            .await?;
        let (cert_der, upstream_chain, roots, not_after) = match &cfg.upstream {
            None => {
                let not_after = now + cfg.ca_ttl;
                let cert = sigil_crypto::x509::self_signed_ca(
                    signer.as_ref(),
                    &cfg.trust_domain,
                    &cfg.subject,
                    now - BACKDATE,
                    not_after,
                )?;
                (cert.clone(), Vec::new(), vec![cert], not_after)
            }
            Some(upstream) => {
                let csr =
                    sigil_crypto::csr::create_csr(signer.as_ref(), Some(&cfg.trust_domain.id()))?;
                let minted = upstream
                    .mint_x509_ca(MintX509CaRequest {
                        csr_der: csr,
                        preferred_ttl: cfg.ca_ttl,
                        subject: cfg.subject.clone(),
                    })
                    .await
                    .map_err(UpstreamCaError::from)?;
                let mut chain = minted.ca_chain.into_iter();
                let cert = chain.next().ok_or(UpstreamCaError::EmptyChain)?;
                let info = sigil_crypto::x509::cert_info(&cert)?;
                if info.public_key_der != signer.public_key_der() {
                    return Err(UpstreamCaError::KeyMismatch.into());
                }
                if minted.upstream_roots.is_empty() {
                    return Err(UpstreamCaError::NoRoots.into());
                }
                (cert, chain.collect(), minted.upstream_roots, info.not_after)
            }
        };
        // Publish before use: the roots this CA chains to are in the bundle
        // before any SVID it signs can exist.
        ca.update_bundle(|b| {
            for root in &roots {
                if !b.x509_authorities.contains(root) {
                    b.x509_authorities.push(root.clone());
                }
            }
        })
        .await?;
        tracing::info!(
            slot,
            expiration = %rfc3339(not_after),
            self_signed = cfg.upstream.is_none(),
            "X509 CA prepared"
        );
        Ok(X509Ca {
            slot: slot.to_owned(),
            cert_der,
            upstream_chain,
            signer,
            issued_at: now,
            not_after,
            status: SlotStatus::Prepared,
        })
    }

    fn log_activated(&self) {
        tracing::info!(
            slot = %self.slot,
            authority_id = %self.authority_id(),
            expiration = %rfc3339(self.not_after),
            "X509 CA activated"
        );
    }

    fn count_activation(&self, ca: &CaManager) {
        metrics::counter!("ca_manager_x509_ca_activate").increment(1);
        let td = ca.cfg.trust_domain.id_string();
        let expiration = self
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!("manager_x509_ca_rotate_expiration", "trust_domain_id" => td.clone())
            .set(expiration);
        let ttl = self
            .not_after
            .duration_since(ca.clock.now())
            .map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!("manager_x509_ca_rotate_ttl", "trust_domain_id" => td).set(ttl);
    }

    fn taints(t: &mut Taints) -> &mut BTreeSet<String> {
        &mut t.x509
    }

    fn in_bundle(b: &Bundle, authority_id: &str) -> bool {
        b.x509_authorities
            .iter()
            .any(|der| x509_authority_id(der) == authority_id)
    }

    fn remove_from_bundle(b: &mut Bundle, authority_id: &str) -> bool {
        let before = b.x509_authorities.len();
        b.x509_authorities
            .retain(|der| x509_authority_id(der) != authority_id);
        b.x509_authorities.len() != before
    }
}

impl SlotAuthority for JwtKey {
    const KIND: &'static str = "JWT";
    fn slot(&self) -> &str {
        &self.slot
    }
    fn status(&self) -> SlotStatus {
        self.status
    }
    fn set_status(&mut self, status: SlotStatus) {
        self.status = status;
    }
    fn authority_id(&self) -> String {
        self.kid.clone()
    }
    fn issued_at(&self) -> SystemTime {
        self.issued_at
    }
    fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

impl ManagedAuthority for JwtKey {
    const KEY_PREFIX: &'static str = "JWT-Signer";
    const PREPARE_CALL: &'static str = "ca_manager_jwt_key_prepare";
    const EXPIRY_GAUGE: &'static str = "jwt_key_expires_in_seconds";

    fn slots(st: &State) -> &Slots<Self> {
        &st.jwt
    }
    fn slots_mut(st: &mut State) -> &mut Slots<Self> {
        &mut st.jwt
    }

    async fn mint(ca: &CaManager, slot: &str) -> Result<Self, CaError> {
        let now = ca.clock.now();
        let signer = ca
            .km
            .generate_key(&Self::key_name(slot), ca.cfg.jwt_key_type)
            .await?;
        let not_after = now + ca.cfg.ca_ttl;
        let kid = new_key_id();
        let authority = JwtAuthority {
            key_id: kid.clone(),
            public_key_der: signer.public_key_der().to_vec(),
            expires_at: Some(unix(not_after)),
        };
        ca.update_bundle(|b| {
            if !b
                .jwt_authorities
                .iter()
                .any(|a| a.key_id == authority.key_id)
            {
                b.jwt_authorities.push(authority.clone());
            }
        })
        .await?;
        tracing::info!(slot, kid = %kid, "JWT key prepared");
        Ok(JwtKey {
            slot: slot.to_owned(),
            kid,
            signer,
            issued_at: now,
            not_after,
            status: SlotStatus::Prepared,
        })
    }

    fn log_activated(&self) {
        tracing::info!(slot = %self.slot, kid = %self.kid, "JWT key activated");
    }

    fn count_activation(&self, _ca: &CaManager) {
        metrics::counter!("manager_jwt_key_activate").increment(1);
    }

    fn taints(t: &mut Taints) -> &mut BTreeSet<String> {
        &mut t.jwt
    }

    fn in_bundle(b: &Bundle, authority_id: &str) -> bool {
        b.find_jwt_authority(authority_id).is_some()
    }

    fn remove_from_bundle(b: &mut Bundle, authority_id: &str) -> bool {
        let before = b.jwt_authorities.len();
        b.jwt_authorities.retain(|a| a.key_id != authority_id);
        b.jwt_authorities.len() != before
    }
}

/// The ID of the upstream authority that signed a CA certificate: its
/// AuthorityKeyIdentifier in lowercase hex (SPIRE's `upstream_authority_id`);
/// empty for a self-signed certificate or one without the extension.
pub fn x509_upstream_authority_id(der: &[u8]) -> String {
    use x509_parser::extensions::ParsedExtension;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return String::new();
    };
    let aki = cert
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki
                .key_identifier
                .as_ref()
                .map(|k| k.0.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            _ => None,
        })
        .unwrap_or_default();
    // Self-signed (names alone can coincide): its own key signed it.
    if aki == x509_authority_id(der) {
        return String::new();
    }
    aki
}

/// SPIRE's authority ID of an X.509 authority: its SubjectKeyIdentifier in
/// lowercase hex, empty when it has none (or is not a certificate).
pub fn x509_authority_id(der: &[u8]) -> String {
    use x509_parser::extensions::ParsedExtension;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return String::new();
    };
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => {
                Some(ski.0.iter().map(|b| format!("{b:02x}")).collect::<String>())
            }
            _ => None,
        })
        .unwrap_or_default()
}

fn new_key_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[tokio::test]
    async fn upstream_signed_ca_puts_only_upstream_roots_in_the_bundle() {
        let mut f = fixture().await;
        // The disk plugin signs with real time.
        f.clock.set(SystemTime::now());
        // A self-signed upstream root on disk, as SPIRE's sample config uses.
        let up_key = sigil_crypto::key::SoftwareKey::generate(KeyType::EcP256).unwrap();
        let now = f.clock.now();
        let root = sigil_crypto::x509::self_signed_ca(
            &up_key,
            &f.cfg.trust_domain,
            &CaSubject::default(),
            now - BACKDATE,
            now + DAY * 30,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ca.crt"),
            sigil_crypto::x509::pem_encode_certs(std::slice::from_ref(&root)),
        )
        .unwrap();
        std::fs::write(dir.path().join("ca.key"), up_key.to_pkcs8_pem()).unwrap();
        let data = serde_json::json!({
            "cert_file_path": dir.path().join("ca.crt").to_str().unwrap(),
            "key_file_path": dir.path().join("ca.key").to_str().unwrap(),
        });
        f.cfg.upstream = Some(
            crate::plugin::upstreamauthority::disk::build(&data, &test_ctx(&f.cfg.trust_domain))
                .unwrap(),
        );
        let ca = start(&f).await;
        let active = ca.x509_ca().await.unwrap();
        assert_ne!(active.cert_der, root);
        assert_eq!(
            ca.bundle().x509_authorities,
            vec![root.clone()],
            "only the upstream root"
        );
        let id = SpiffeId::parse("spiffe://example.org/w").unwrap();
        let key = leaf_key();
        let (chain, _) = ca
            .sign_x509_svid(&id, key.public_key_der(), Duration::from_secs(60), &[])
            .await
            .unwrap();
        assert_eq!(chain.len(), 2, "leaf, then our CA");
        assert_eq!(chain[1], active.cert_der);
        sigil_crypto::x509::verify_chain(&chain, std::slice::from_ref(&root), f.clock.now())
            .unwrap();
        // A restart keeps the upstream-signed CA and its chain.
        drop(ca);
        let ca = start(&f).await;
        let (chain, _) = ca
            .sign_x509_svid(&id, key.public_key_der(), Duration::from_secs(60), &[])
            .await
            .unwrap();
        assert_eq!(chain[1], active.cert_der);
        sigil_crypto::x509::verify_chain(&chain, &[root], f.clock.now()).unwrap();
    }

    /// An UpstreamAuthority that answers every request the same way.
    #[derive(Debug)]
    struct FixedUpstream(
        Result<
            sigil_plugin::upstreamauthority::MintedX509Ca,
            sigil_plugin::upstreamauthority::UpstreamError,
        >,
    );

    #[async_trait::async_trait]
    impl sigil_plugin::upstreamauthority::UpstreamAuthority for FixedUpstream {
        fn name(&self) -> &'static str {
            "fixed"
        }
        async fn mint_x509_ca(
            &self,
            _req: sigil_plugin::upstreamauthority::MintX509CaRequest,
        ) -> Result<
            sigil_plugin::upstreamauthority::MintedX509Ca,
            sigil_plugin::upstreamauthority::UpstreamError,
        > {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn upstream_failures_stop_the_start_with_typed_errors_and_publish_nothing() {
        use sigil_plugin::upstreamauthority::{MintedX509Ca, UpstreamError};
        let cases = [
            (
                Err(UpstreamError::Sign("refused".into())),
                "upstream authority: unable to sign CSR: refused",
            ),
            (
                Ok(MintedX509Ca {
                    ca_chain: vec![],
                    upstream_roots: vec![],
                }),
                "upstream authority: upstream returned an empty CA chain",
            ),
        ];
        for (answer, text) in cases {
            let mut f = fixture().await;
            f.cfg.upstream = Some(Arc::new(FixedUpstream(answer)));
            let err = CaManager::start(f.cfg.clone(), f.km.clone(), f.ds.clone(), f.clock.clone())
                .await
                .unwrap_err();
            assert_eq!(err.to_string(), text);
            match err {
                CaError::Upstream(UpstreamCaError::Plugin(UpstreamError::Sign(reason))) => {
                    assert_eq!(reason, "refused")
                }
                CaError::Upstream(UpstreamCaError::EmptyChain) => {}
                other => panic!("not a typed upstream error: {other:?}"),
            }
            assert!(
                f.ds.get_bundle(&f.cfg.trust_domain)
                    .await
                    .unwrap()
                    .is_none(),
                "nothing published"
            );
        }
    }
}
