//! Rotation: the timed steps that keep an active X.509 CA and JWT key, run
//! every few seconds ([`CaManager::run_rotation`]) and once at start. Each
//! step asks the shared slot logic what is due for each kind of authority
//! and does it: mints an authority when none can sign, prepares one at the
//! preparation threshold, activates it at the activation threshold,
//! records the journal when a slot changed, and prunes expired authorities
//! from the bundle. It also answers which authority signs now.
//!
//! It never signs SVIDs and never acts on an operator's request (that is
//! `local_authority.rs`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_telemetry::metrics::CallCounter;

use super::CaManager;
use super::authority::{JwtKey, ManagedAuthority, X509Ca};
use super::error::CaError;
use super::slot::{AuthorityStates, Slots};

impl CaManager {
    /// Runs rotation checks every `interval` until the task is dropped.
    pub async fn run_rotation(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.rotate().await {
                tracing::error!(error = %e, "CA rotation check failed; will retry");
            }
        }
    }

    /// One rotation step: prepare, activate and prune as due.
    pub async fn rotate(&self) -> Result<(), CaError> {
        let now = self.clock.now();
        let mut st = self.state.write().await;
        let mut journal_dirty = self.rotate_kind(&mut st.x509, now).await?;
        journal_dirty |= self.rotate_kind(&mut st.jwt, now).await?;
        if journal_dirty {
            self.write_journal(&st)?;
        }
        // sigil's own: how long until the active authorities expire, for
        // alerts that fire before SVIDs stop being issued.
        record_expiry(&st.x509, now);
        record_expiry(&st.jwt, now);
        drop(st);
        self.prune_bundle(now).await
    }

    /// The rotation step of one kind of authority. Returns whether a slot
    /// changed.
    async fn rotate_kind<A: ManagedAuthority>(
        &self,
        slots: &mut Slots<A>,
        now: SystemTime,
    ) -> Result<bool, CaError> {
        if !slots.current_usable(now) {
            // Nothing can sign: activate the prepared authority if it is
            // still valid, or mint one and activate it at once.
            let slot = slots.replacement_slot();
            let a = match slots.take_usable_prepared(now) {
                Some(next) => next,
                None => self.prepare::<A>(&slot).await?,
            };
            slots.activate_now(a);
            if let Some(active) = slots.current() {
                active.log_activated();
                active.count_activation(self);
            }
            return Ok(true);
        }
        let mut changed = false;
        if let Some(slot) = slots.preparation_due(now) {
            let next = self.prepare::<A>(&slot).await?;
            slots.set_next(next);
            changed = true;
        }
        if slots.activation_due(now) {
            slots.rotate();
            if let Some(active) = slots.current() {
                active.log_activated();
                active.count_activation(self);
            }
            changed = true;
        }
        Ok(changed)
    }

    /// Prepares an authority in `slot`, counted as SPIRE's preparation call
    /// of its kind.
    pub(super) async fn prepare<A: ManagedAuthority>(&self, slot: &str) -> Result<A, CaError> {
        let call = CallCounter::start(A::PREPARE_CALL);
        let r = A::mint(self, slot).await;
        call.finish_result(&r, |_| "Internal".to_owned());
        r
    }

    /// The active authority of a kind.
    async fn active<A: ManagedAuthority>(&self) -> Result<A, CaError> {
        A::slots(&*self.state.read().await)
            .current()
            .cloned()
            .ok_or(CaError::NoAuthority(A::KIND))
    }

    /// The active X.509 CA.
    pub async fn x509_ca(&self) -> Result<X509Ca, CaError> {
        self.active().await
    }

    /// The active JWT key.
    pub async fn jwt_key(&self) -> Result<JwtKey, CaError> {
        self.active().await
    }

    /// The prepared (next) X.509 CA, if any.
    pub async fn next_x509_ca(&self) -> Option<X509Ca> {
        self.state.read().await.x509.prepared().cloned()
    }

    /// The active X.509 authority and the one in the next slot.
    pub async fn x509_state(&self) -> AuthorityStates {
        self.state.read().await.x509.states()
    }

    /// The active JWT authority and the one in the next slot.
    pub async fn jwt_state(&self) -> AuthorityStates {
        self.state.read().await.jwt.states()
    }
}

/// Sets the gauge of the seconds until the active authority expires.
fn record_expiry<A: ManagedAuthority>(slots: &Slots<A>, now: SystemTime) {
    if let Some(cur) = slots.current() {
        let left = cur
            .not_after()
            .duration_since(now)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!(A::EXPIRY_GAUGE).set(left);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[tokio::test]
    async fn ca_prepares_at_half_life_and_activates_at_five_sixths() {
        let f = fixture().await;
        let ca = start(&f).await;
        let first = ca.x509_ca().await.unwrap();
        assert_eq!(first.status, SlotStatus::Active);
        assert_eq!(ca.bundle().x509_authorities.len(), 1);
        assert_eq!(ca.bundle().jwt_authorities.len(), 1);

        f.clock.advance(DAY / 2 - Duration::from_secs(60));
        ca.rotate().await.unwrap();
        assert!(
            ca.next_x509_ca().await.is_none(),
            "not prepared before half life"
        );

        f.clock.advance(Duration::from_secs(120));
        ca.rotate().await.unwrap();
        let next = ca.next_x509_ca().await.expect("prepared after half life");
        assert_eq!(next.status, SlotStatus::Prepared);
        assert_ne!(next.slot, first.slot);
        // Published before it signs anything, while the old one still signs.
        assert!(ca.bundle().x509_authorities.contains(&next.cert_der));
        assert_eq!(ca.bundle().jwt_authorities.len(), 2);
        assert_eq!(issuer_of(&ca, &f.clock).await, first.cert_der);

        // Activation at notAfter - lifetime/6.
        f.clock
            .set(first.not_after - DAY / 6 - Duration::from_secs(60));
        ca.rotate().await.unwrap();
        assert_eq!(ca.x509_ca().await.unwrap().slot, first.slot);
        f.clock.advance(Duration::from_secs(120));
        ca.rotate().await.unwrap();
        let active = ca.x509_ca().await.unwrap();
        assert_eq!(active.slot, next.slot);
        assert_eq!(issuer_of(&ca, &f.clock).await, next.cert_der);

        // The old authority stays in the bundle until a day after it expires.
        f.clock.set(first.not_after + Duration::from_secs(3600));
        ca.rotate().await.unwrap();
        assert!(ca.bundle().x509_authorities.contains(&first.cert_der));
        f.clock.set(first.not_after + DAY + Duration::from_secs(60));
        ca.rotate().await.unwrap();
        assert!(
            !ca.bundle().x509_authorities.contains(&first.cert_der),
            "pruned"
        );
    }

    #[tokio::test]
    async fn jwt_keys_rotate_and_expired_ones_are_pruned() {
        let f = fixture().await;
        let ca = start(&f).await;
        let first = ca.jwt_key().await.unwrap();
        f.clock.advance(DAY * 5 / 6 + Duration::from_secs(60));
        ca.rotate().await.unwrap(); // prepares
        ca.rotate().await.unwrap(); // activates
        let second = ca.jwt_key().await.unwrap();
        assert_ne!(first.kid, second.kid);
        let id = SpiffeId::parse("spiffe://example.org/w").unwrap();
        let (token, _, _) = ca
            .sign_jwt_svid(&id, &["aud".to_owned()], Duration::from_secs(60))
            .await
            .unwrap();
        assert!(token.split('.').next().is_some());
        let header = sigil_spiffe::JwtSvid::parse_insecure(&token).unwrap();
        assert_eq!(header.header().kid.as_deref(), Some(second.kid.as_str()));
        // Expiry survives storage, so the old key is pruned after expiry + 1 day.
        f.clock.set(first.not_after + DAY + Duration::from_secs(60));
        ca.rotate().await.unwrap();
        let kids: Vec<_> = ca
            .bundle()
            .jwt_authorities
            .iter()
            .map(|a| a.key_id.clone())
            .collect();
        assert!(!kids.contains(&first.kid), "{kids:?}");
        assert!(kids.contains(&second.kid));
    }

    #[tokio::test]
    async fn rotation_reuses_the_old_slot_after_a_manual_activation() {
        let f = fixture().await;
        let ca = start(&f).await;
        let next = ca.prepare_x509_now().await.unwrap();
        ca.activate_x509(&next.authority_id).await.unwrap();
        ca.rotate().await.unwrap();
        assert!(ca.next_x509_ca().await.is_none(), "old is not prepared");
        f.clock.advance(DAY / 2 + Duration::from_secs(60));
        ca.rotate().await.unwrap();
        let prepared = ca.next_x509_ca().await.expect("prepared at half life");
        assert!(ca.x509_state().await.old.is_none(), "slot reused");
        f.clock.advance(DAY / 3);
        ca.rotate().await.unwrap();
        assert_eq!(ca.x509_ca().await.unwrap().cert_der, prepared.cert_der);
    }
}
