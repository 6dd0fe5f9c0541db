//! Signing with the active authorities: X509-SVIDs, JWT-SVIDs, and
//! intermediate CAs for downstream servers (nested trust domains). Every
//! lifetime is cut to the signing authority's own expiry, and certificates
//! are backdated by [`BACKDATE`](super::BACKDATE) for clock skew.
//!
//! It signs only with the active authority of the slot logic, which is in
//! the bundle before it is activated; it never chooses, prepares or
//! rotates authorities.

use std::time::{Duration, SystemTime};

use sigil_spiffe::SpiffeId;

use super::authority::X509Ca;
use super::error::CaError;
use super::{BACKDATE, CaManager};

impl CaManager {
    /// Signs an X509-SVID for `id` over `public_key_der`. The lifetime is
    /// `ttl`, cut short to the CA's own expiry. Returns the chain (leaf first;
    /// the self-signed root is in the bundle, not the chain) and its expiry.
    pub async fn sign_x509_svid(
        &self,
        id: &SpiffeId,
        public_key_der: &[u8],
        ttl: Duration,
        dns_names: &[String],
    ) -> Result<(Vec<Vec<u8>>, SystemTime), CaError> {
        let ca = self.x509_ca().await?;
        let now = self.clock.now();
        let not_after = (now + ttl).min(ca.not_after);
        let params = sigil_crypto::x509::X509SvidParams {
            spiffe_id: id.clone(),
            public_key_der: public_key_der.to_vec(),
            dns_names: dns_names.to_vec(),
            not_before: now - BACKDATE,
            not_after,
            subject: None,
        };
        let leaf = sigil_crypto::x509::sign_x509_svid(&ca.cert_der, ca.signer.as_ref(), &params)?;
        metrics::counter!("server_ca_sign_x509_svid").increment(1);
        Ok((self.chain(leaf, &ca), not_after))
    }

    /// Signs an intermediate CA for a downstream server (a nested trust
    /// domain server) over `public_key_der`. The lifetime is `ttl` (the CA
    /// TTL when zero), cut to our CA's expiry. Returns the chain, new CA
    /// first, built like an SVID chain.
    pub async fn sign_downstream_x509_ca(
        &self,
        public_key_der: &[u8],
        ttl: Duration,
    ) -> Result<Vec<Vec<u8>>, CaError> {
        let ca = self.x509_ca().await?;
        let now = self.clock.now();
        let ttl = if ttl.is_zero() { self.cfg.ca_ttl } else { ttl };
        let cert = sigil_crypto::x509::sign_intermediate_ca(
            &ca.cert_der,
            ca.signer.as_ref(),
            &sigil_crypto::x509::IntermediateCaParams {
                trust_domain: self.cfg.trust_domain.clone(),
                public_key_der: public_key_der.to_vec(),
                subject: self.cfg.subject.clone(),
                not_before: now - BACKDATE,
                not_after: (now + ttl).min(ca.not_after),
                path_len: None,
            },
        )?;
        metrics::counter!("server_ca_sign_x509_ca_svid").increment(1);
        Ok(self.chain(cert, &ca))
    }

    /// Signs a JWT-SVID. Returns the token, issued-at and expiry.
    pub async fn sign_jwt_svid(
        &self,
        id: &SpiffeId,
        audience: &[String],
        ttl: Duration,
    ) -> Result<(String, SystemTime, SystemTime), CaError> {
        let key = self.jwt_key().await?;
        let now = self.clock.now();
        let exp = (now + ttl).min(key.not_after);
        let token = sigil_crypto::jwt::sign_jwt_svid(
            key.signer.as_ref(),
            &key.kid,
            id,
            audience,
            now,
            exp,
            self.cfg.jwt_issuer.as_deref(),
        )?;
        metrics::counter!("server_ca_sign_jwt_svid").increment(1);
        Ok((token, now, exp))
    }

    /// The chain of a certificate `ca` signed, first. Under an upstream
    /// authority the bundle holds its roots, not our CA, so the chain
    /// carries our CA and any upstream intermediates.
    fn chain(&self, signed: Vec<u8>, ca: &X509Ca) -> Vec<Vec<u8>> {
        let mut chain = vec![signed];
        if self.cfg.upstream.is_some() || !ca.upstream_chain.is_empty() {
            chain.push(ca.cert_der.clone());
            chain.extend(ca.upstream_chain.iter().cloned());
        }
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[tokio::test]
    async fn svid_lifetime_is_cut_to_the_ca_expiry() {
        let f = fixture().await;
        let ca = start(&f).await;
        let active = ca.x509_ca().await.unwrap();
        let key = leaf_key();
        let id = SpiffeId::parse("spiffe://example.org/w").unwrap();
        let (_, not_after) = ca
            .sign_x509_svid(&id, key.public_key_der(), DAY * 3, &[])
            .await
            .unwrap();
        assert_eq!(not_after, active.not_after);
    }
}
