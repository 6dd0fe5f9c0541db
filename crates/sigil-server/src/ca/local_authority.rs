//! The operations of SPIRE's LocalAuthority API, done by hand by an
//! operator, once for both kinds of authority: prepare an authority now,
//! activate the prepared one, taint the old one (flagged in the bundle so
//! SVIDs it signed get replaced) and revoke it (removed from the bundle);
//! and, for an UpstreamAuthority's roots, taint and revoke the one that
//! signed the old local authority.
//!
//! Each operation checks with the slot logic that the authority named is in
//! the state SPIRE requires and refuses with an [`AuthorityError`] or
//! [`UpstreamAuthorityError`] otherwise, changing nothing. It never words
//! gRPC statuses (the API layer does) and never acts on a timer.

use std::time::SystemTime;

use sigil_plugin::clock::from_unix;

use super::CaManager;
use super::authority::{JwtKey, ManagedAuthority, X509Ca, x509_upstream_authority_id};
use super::error::{AuthorityError, CaError, UpstreamAuthorityError};
use super::slot::{AuthorityState, SlotStatus};

impl CaManager {
    /// Prepares a new X.509 authority now, in the next slot (replacing a
    /// prepared or old one there), and publishes it in the bundle.
    pub async fn prepare_x509_now(&self) -> Result<AuthorityState, CaError> {
        self.prepare_now::<X509Ca>().await
    }

    /// Prepares a new JWT key now, in the next slot, and publishes it.
    pub async fn prepare_jwt_now(&self) -> Result<AuthorityState, CaError> {
        self.prepare_now::<JwtKey>().await
    }

    /// Makes the prepared X.509 authority `authority_id` the active one; the
    /// active one becomes old.
    pub async fn activate_x509(
        &self,
        authority_id: &str,
    ) -> Result<AuthorityState, AuthorityError> {
        self.activate::<X509Ca>(authority_id).await
    }

    /// Makes the prepared JWT key `authority_id` the active one.
    pub async fn activate_jwt(&self, authority_id: &str) -> Result<AuthorityState, AuthorityError> {
        self.activate::<JwtKey>(authority_id).await
    }

    /// Marks the old X.509 authority `authority_id` tainted in the bundle.
    pub async fn taint_x509(&self, authority_id: &str) -> Result<AuthorityState, AuthorityError> {
        self.taint::<X509Ca>(authority_id).await
    }

    /// Marks the old JWT key `authority_id` tainted in the bundle.
    pub async fn taint_jwt(&self, authority_id: &str) -> Result<AuthorityState, AuthorityError> {
        self.taint::<JwtKey>(authority_id).await
    }

    /// Removes the tainted old X.509 authority `authority_id` from the bundle.
    pub async fn revoke_x509(&self, authority_id: &str) -> Result<AuthorityState, AuthorityError> {
        let st = self.state.read().await;
        let old = st.x509.check_old(authority_id)?;
        self.remove_tainted::<X509Ca>(authority_id).await?;
        Ok(old)
    }

    /// Removes the tainted JWT key `authority_id` from the bundle. Any key of
    /// the bundle but the active and the prepared one may be revoked, as in
    /// SPIRE.
    pub async fn revoke_jwt(&self, authority_id: &str) -> Result<AuthorityState, AuthorityError> {
        let st = self.state.read().await;
        let from_slot = st.jwt.check_not_in_use(authority_id)?;
        let expires_at = match (&from_slot, self.bundle().find_jwt_authority(authority_id)) {
            (Some(s), _) => s.expires_at,
            (None, Some(a)) => a
                .expires_at
                .map(from_unix)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            (None, None) => return Err(AuthorityError::UnknownAuthority),
        };
        self.remove_tainted::<JwtKey>(authority_id).await?;
        Ok(AuthorityState {
            authority_id: authority_id.to_owned(),
            expires_at,
            status: SlotStatus::Old,
            upstream_authority_id: String::new(),
        })
    }

    /// Marks the upstream authority `skid` (hex SubjectKeyIdentifier of an
    /// upstream root or intermediate) tainted, as SPIRE does: only one that
    /// signed the old local authority, never the one behind the active CA.
    pub async fn taint_x509_upstream(&self, skid: &str) -> Result<String, UpstreamAuthorityError> {
        let skid = self.check_upstream_target(skid).await?;
        self.modify_bundle(|b, taints| {
            if !X509Ca::in_bundle(b, &skid) {
                return Err(UpstreamAuthorityError::NotInBundle);
            }
            if !taints.x509.insert(skid.clone()) {
                return Err(UpstreamAuthorityError::AlreadyTainted);
            }
            Ok(())
        })
        .await?;
        tracing::info!(subject_key_id = %skid, "X.509 upstream authority tainted successfully");
        Ok(skid)
    }

    /// Removes the tainted upstream authority `skid` from the bundle.
    pub async fn revoke_x509_upstream(&self, skid: &str) -> Result<String, UpstreamAuthorityError> {
        let skid = self.check_upstream_target(skid).await?;
        self.modify_bundle(|b, taints| {
            if !taints.x509.contains(&skid) {
                return Err(UpstreamAuthorityError::NotTainted);
            }
            if !X509Ca::remove_from_bundle(b, &skid) {
                return Err(UpstreamAuthorityError::NotInBundle);
            }
            Ok(())
        })
        .await?;
        tracing::info!(subject_key_id = %skid, "X.509 upstream authority successfully revoked");
        Ok(skid)
    }

    async fn prepare_now<A: ManagedAuthority>(&self) -> Result<AuthorityState, CaError> {
        let mut st = self.state.write().await;
        let slot = A::slots(&st)
            .preparation_slot()
            .ok_or(CaError::NoAuthority(A::KIND))?;
        let next = self.prepare::<A>(&slot).await?;
        let state = next.state();
        A::slots_mut(&mut st).set_next(next);
        self.write_journal(&st)?;
        Ok(state)
    }

    async fn activate<A: ManagedAuthority>(
        &self,
        authority_id: &str,
    ) -> Result<AuthorityState, AuthorityError> {
        let mut st = self.state.write().await;
        A::slots(&st).check_activation(authority_id)?;
        A::slots_mut(&mut st).rotate();
        self.write_journal(&st)?;
        let active = A::slots(&st)
            .current()
            .ok_or(CaError::NoAuthority(A::KIND))?;
        active.log_activated();
        Ok(active.state())
    }

    async fn taint<A: ManagedAuthority>(
        &self,
        authority_id: &str,
    ) -> Result<AuthorityState, AuthorityError> {
        // The slots stay locked until the bundle is changed, so a rotation
        // cannot move the authority meanwhile.
        let st = self.state.read().await;
        let old = A::slots(&st).check_old(authority_id)?;
        self.modify_bundle(|b, taints| {
            if !A::in_bundle(b, authority_id) {
                return Err(AuthorityError::NotInBundle);
            }
            if !A::taints(taints).insert(authority_id.to_owned()) {
                return Err(AuthorityError::AlreadyTainted);
            }
            Ok(())
        })
        .await?;
        tracing::info!(authority_id, "{} authority tainted", A::KIND);
        Ok(old)
    }

    /// Removes a tainted authority from the bundle (the caller has checked
    /// it may go and holds the slots).
    async fn remove_tainted<A: ManagedAuthority>(
        &self,
        authority_id: &str,
    ) -> Result<(), AuthorityError> {
        self.modify_bundle(|b, taints| {
            let tainted = A::taints(taints).contains(authority_id);
            if !A::remove_from_bundle(b, authority_id) {
                return Err(AuthorityError::NotInBundle);
            }
            if !tainted {
                return Err(AuthorityError::NotTainted);
            }
            Ok(())
        })
        .await?;
        tracing::info!(authority_id, "{} authority revoked", A::KIND);
        Ok(())
    }

    /// SPIRE's checks of an upstream authority to taint or revoke; returns
    /// its ID in lowercase.
    async fn check_upstream_target(&self, skid: &str) -> Result<String, UpstreamAuthorityError> {
        if self.cfg.upstream.is_none() {
            return Err(UpstreamAuthorityError::NotConfigured);
        }
        let skid = skid.to_ascii_lowercase();
        if skid.is_empty() {
            return Err(UpstreamAuthorityError::Invalid(
                "no subject key ID provided",
            ));
        }
        let st = self.state.read().await;
        if st
            .x509
            .current()
            .is_some_and(|c| x509_upstream_authority_id(&c.cert_der) == skid)
        {
            return Err(UpstreamAuthorityError::Invalid(
                "unable to use upstream authority singing current authority",
            ));
        }
        let Some(next) = st.x509.next() else {
            return Err(UpstreamAuthorityError::Invalid(
                "upstream authority didn't sign the old local authority",
            ));
        };
        if x509_upstream_authority_id(&next.cert_der) != skid {
            return Err(UpstreamAuthorityError::Invalid(
                "upstream authority didn't sign the old local authority",
            ));
        }
        if next.status == SlotStatus::Prepared {
            return Err(UpstreamAuthorityError::Invalid(
                "only upstream authorities signing an old authority can be used",
            ));
        }
        Ok(skid)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[tokio::test]
    async fn x509_authority_goes_prepared_active_old_tainted_revoked() {
        let f = fixture().await;
        let ca = start(&f).await;
        let first = ca.x509_ca().await.unwrap();
        let first_id = first.authority_id();
        assert_eq!(first_id.len(), 40, "hex SubjectKeyIdentifier: {first_id}");
        let st = ca.x509_state().await;
        assert_eq!(st.active.as_ref().unwrap().authority_id, first_id);
        assert!(st.prepared.is_none() && st.old.is_none());
        assert!(matches!(
            ca.taint_x509(&first_id).await,
            Err(AuthorityError::IsActive)
        ));

        let prepared = ca.prepare_x509_now().await.unwrap();
        assert_eq!(prepared.status, SlotStatus::Prepared);
        assert_eq!(ca.bundle().x509_authorities.len(), 2);
        assert_eq!(
            ca.x509_state().await.prepared.unwrap().authority_id,
            prepared.authority_id
        );
        assert!(matches!(
            ca.taint_x509(&prepared.authority_id).await,
            Err(AuthorityError::WrongStatus(SlotStatus::Prepared))
        ));
        assert!(matches!(
            ca.activate_x509("00ff").await,
            Err(AuthorityError::NotNext)
        ));
        assert!(matches!(
            ca.activate_x509("").await,
            Err(AuthorityError::MissingId)
        ));

        let active = ca.activate_x509(&prepared.authority_id).await.unwrap();
        assert_eq!(active.authority_id, prepared.authority_id);
        assert_eq!(active.status, SlotStatus::Active);
        let st = ca.x509_state().await;
        assert_eq!(st.old.as_ref().unwrap().authority_id, first_id);
        assert!(st.prepared.is_none());
        let new_root = ca.x509_ca().await.unwrap().cert_der;
        assert_eq!(issuer_of(&ca, &f.clock).await, new_root);
        assert!(matches!(
            ca.activate_x509(&first_id).await,
            Err(AuthorityError::WrongStatus(SlotStatus::Old))
        ));

        assert!(matches!(
            ca.revoke_x509(&first_id).await,
            Err(AuthorityError::NotTainted)
        ));
        let seq = ca.bundle().sequence_number;
        ca.taint_x509(&first_id).await.unwrap();
        assert!(ca.bundle_taints().is_x509_tainted(&first.cert_der));
        assert!(!ca.bundle_taints().is_x509_tainted(&new_root));
        assert_eq!(ca.bundle().sequence_number, seq + 1, "a taint is a change");
        assert!(matches!(
            ca.taint_x509(&first_id).await,
            Err(AuthorityError::AlreadyTainted)
        ));

        ca.revoke_x509(&first_id).await.unwrap();
        assert_eq!(ca.bundle().x509_authorities, vec![new_root]);
        assert!(ca.bundle_taints().x509.is_empty());
        assert!(matches!(
            ca.revoke_x509(&first_id).await,
            Err(AuthorityError::NotInBundle)
        ));
    }

    #[tokio::test]
    async fn jwt_authority_goes_prepared_active_old_tainted_revoked() {
        let f = fixture().await;
        let ca = start(&f).await;
        let first = ca.jwt_key().await.unwrap().kid;
        let prepared = ca.prepare_jwt_now().await.unwrap();
        assert!(matches!(
            ca.revoke_jwt(&prepared.authority_id).await,
            Err(AuthorityError::IsPrepared)
        ));
        assert!(matches!(
            ca.revoke_jwt(&first).await,
            Err(AuthorityError::IsActive)
        ));
        assert!(matches!(
            ca.revoke_jwt("nope").await,
            Err(AuthorityError::UnknownAuthority)
        ));
        ca.activate_jwt(&prepared.authority_id).await.unwrap();
        assert_eq!(ca.jwt_key().await.unwrap().kid, prepared.authority_id);
        assert_eq!(ca.jwt_state().await.old.unwrap().authority_id, first);
        assert!(matches!(
            ca.revoke_jwt(&first).await,
            Err(AuthorityError::NotTainted)
        ));
        ca.taint_jwt(&first).await.unwrap();
        assert!(ca.bundle_taints().is_jwt_tainted(&first));
        ca.revoke_jwt(&first).await.unwrap();
        assert!(ca.bundle().find_jwt_authority(&first).is_none());
        assert!(
            ca.bundle()
                .find_jwt_authority(&prepared.authority_id)
                .is_some()
        );
    }

    #[tokio::test]
    async fn upstream_root_rotation_then_taint_and_revoke_of_the_old_root() {
        let mut f = fixture().await;
        f.clock.set(SystemTime::now());
        let dir = tempfile::tempdir().unwrap();
        let write_root = |name: &str| {
            let key = sigil_crypto::key::SoftwareKey::generate(KeyType::EcP256).unwrap();
            let now = SystemTime::now();
            let root = sigil_crypto::x509::self_signed_ca(
                &key,
                &TrustDomain::new(name).unwrap(),
                &CaSubject::default(),
                now - BACKDATE,
                now + DAY * 30,
            )
            .unwrap();
            std::fs::write(
                dir.path().join("ca.crt"),
                sigil_crypto::x509::pem_encode_certs(std::slice::from_ref(&root)),
            )
            .unwrap();
            std::fs::write(dir.path().join("ca.key"), key.to_pkcs8_pem()).unwrap();
            root
        };
        let r1 = write_root("example.org");
        let data = serde_json::json!({
            "cert_file_path": dir.path().join("ca.crt").to_str().unwrap(),
            "key_file_path": dir.path().join("ca.key").to_str().unwrap(),
        });
        f.cfg.upstream = Some(
            crate::plugin::upstreamauthority::disk::build(&data, &test_ctx(&f.cfg.trust_domain))
                .unwrap(),
        );
        let ca = start(&f).await;
        let r1_id = x509_authority_id(&r1);
        assert_eq!(
            ca.x509_state().await.active.unwrap().upstream_authority_id,
            r1_id
        );
        // The active CA's upstream authority cannot be tainted.
        let err = ca.taint_x509_upstream(&r1_id).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to use upstream authority singing current authority"
        );

        // The operator rotates the upstream root on disk; the next CA is
        // signed by it and activated.
        let r2 = write_root("example.org");
        let next = ca.prepare_x509_now().await.unwrap();
        assert_eq!(next.upstream_authority_id, x509_authority_id(&r2));
        // The new root signs only the prepared CA so far.
        let err = ca
            .taint_x509_upstream(&next.upstream_authority_id)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "only upstream authorities signing an old authority can be used"
        );
        ca.activate_x509(&next.authority_id).await.unwrap();
        let err = ca.taint_x509_upstream("abcdef").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "upstream authority didn't sign the old local authority"
        );
        assert!(ca.bundle().x509_authorities.contains(&r1));
        assert!(ca.bundle().x509_authorities.contains(&r2));

        // Revoking needs a taint first; then the old root leaves the bundle.
        let err = ca.revoke_x509_upstream(&r1_id).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is not possible to revoke an untainted root CA"
        );
        assert_eq!(
            ca.taint_x509_upstream(&r1_id.to_uppercase()).await.unwrap(),
            r1_id
        );
        assert!(ca.bundle_taints().is_x509_tainted(&r1));
        assert!(matches!(
            ca.taint_x509_upstream(&r1_id).await,
            Err(UpstreamAuthorityError::AlreadyTainted)
        ));
        ca.revoke_x509_upstream(&r1_id).await.unwrap();
        assert!(!ca.bundle().x509_authorities.contains(&r1));
        assert!(ca.bundle().x509_authorities.contains(&r2));
    }

    #[tokio::test]
    async fn upstream_taint_without_upstream_is_a_precondition_error() {
        let f = fixture().await;
        let ca = start(&f).await;
        assert!(matches!(
            ca.taint_x509_upstream("ab").await,
            Err(UpstreamAuthorityError::NotConfigured)
        ));
    }
}
