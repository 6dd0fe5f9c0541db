//! The slot state machine, once for both kinds of local authority (X.509 CAs
//! and JWT keys), in the manner of SPIRE's `ca/manager/slot.go`.
//!
//! Each kind has a *current* slot and a *next* one, named `A` and `B` in
//! turn. A new authority is *prepared* in the next slot when the current one
//! passes half its lifetime (at most 30 days before expiry) and is
//! *activated* when the current one has a sixth of its lifetime left (at
//! most 7 days): the two slots swap, and the previous authority stays in the
//! next slot as *old* until the next preparation reuses the slot.
//!
//! This module owns those states and decisions ([`Slots`]), the thresholds,
//! the checks SPIRE makes before each LocalAuthority operation, and how a
//! slot is reported ([`AuthorityState`]). It never does I/O, never makes
//! keys or certificates, never touches the bundle and never reads a clock:
//! callers pass the time and do the work the decisions call for.

use std::time::{Duration, SystemTime};

use super::error::AuthorityError;

const PREPARATION_CAP: Duration = Duration::from_secs(30 * 24 * 3600);
const ACTIVATION_CAP: Duration = Duration::from_secs(7 * 24 * 3600);

/// Lifecycle state of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotStatus {
    /// In the bundle, not yet signing.
    Prepared,
    /// Signing.
    Active,
    /// Replaced; in the bundle until it expires.
    Old,
}

impl SlotStatus {
    /// The name SPIRE's journal gives the state (`PREPARED`, `ACTIVE`, `OLD`).
    pub fn spire_name(self) -> &'static str {
        match self {
            SlotStatus::Prepared => "PREPARED",
            SlotStatus::Active => "ACTIVE",
            SlotStatus::Old => "OLD",
        }
    }
}

/// One local authority as SPIRE's `LocalAuthority` API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityState {
    /// Hex SubjectKeyIdentifier (X.509) or key ID (JWT).
    pub authority_id: String,
    /// When it expires.
    pub expires_at: SystemTime,
    /// Its slot state.
    pub status: SlotStatus,
    /// For an upstream-signed X.509 CA, the hex AuthorityKeyIdentifier of the
    /// upstream authority that signed it; empty otherwise.
    pub upstream_authority_id: String,
}

/// The active authority and the one in the next slot (prepared or old).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorityStates {
    /// Signing now.
    pub active: Option<AuthorityState>,
    /// Published, not yet signing.
    pub prepared: Option<AuthorityState>,
    /// Replaced by the active one; in the bundle until it expires.
    pub old: Option<AuthorityState>,
}

/// When the next authority should be prepared.
pub fn preparation_threshold(issued_at: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(issued_at).unwrap_or_default();
    not_after - (lifetime / 2).min(PREPARATION_CAP)
}

/// When the next authority should become active.
pub fn activation_threshold(issued_at: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(issued_at).unwrap_or_default();
    not_after - (lifetime / 6).min(ACTIVATION_CAP)
}

/// What the slot logic needs of an authority of either kind.
pub(crate) trait SlotAuthority: Clone + Send + Sync + 'static {
    /// The kind, as errors and logs name it (`X.509`, `JWT`).
    const KIND: &'static str;
    /// `A` or `B`.
    fn slot(&self) -> &str;
    fn status(&self) -> SlotStatus;
    fn set_status(&mut self, status: SlotStatus);
    /// SPIRE's authority ID (hex SubjectKeyIdentifier, or key ID).
    fn authority_id(&self) -> String;
    /// When it was prepared: thresholds count its lifetime from there.
    fn issued_at(&self) -> SystemTime;
    fn not_after(&self) -> SystemTime;
    /// See [`AuthorityState::upstream_authority_id`].
    fn upstream_authority_id(&self) -> String {
        String::new()
    }

    /// How the LocalAuthority API reports it.
    fn state(&self) -> AuthorityState {
        AuthorityState {
            authority_id: self.authority_id(),
            expires_at: self.not_after(),
            status: self.status(),
            upstream_authority_id: self.upstream_authority_id(),
        }
    }
}

/// The current slot and the next one of one kind of authority. As in SPIRE,
/// the next slot holds either the prepared authority or, after a rotation,
/// the old one (until the next preparation reuses the slot).
#[derive(Debug)]
pub(crate) struct Slots<A> {
    current: Option<A>,
    next: Option<A>,
}

impl<A> Default for Slots<A> {
    fn default() -> Self {
        Slots {
            current: None,
            next: None,
        }
    }
}

impl<A: SlotAuthority> Slots<A> {
    /// The current slot, whatever its state.
    pub(crate) fn current(&self) -> Option<&A> {
        self.current.as_ref()
    }

    /// The next slot, whatever its state.
    pub(crate) fn next(&self) -> Option<&A> {
        self.next.as_ref()
    }

    /// The authority signing now.
    pub(crate) fn active(&self) -> Option<&A> {
        self.current
            .as_ref()
            .filter(|c| c.status() == SlotStatus::Active)
    }

    /// The authority published and waiting to sign.
    pub(crate) fn prepared(&self) -> Option<&A> {
        self.next
            .as_ref()
            .filter(|n| n.status() == SlotStatus::Prepared)
    }

    /// The active authority and the one in the next slot.
    pub(crate) fn states(&self) -> AuthorityStates {
        let mut out = AuthorityStates {
            active: self.active().map(A::state),
            ..AuthorityStates::default()
        };
        if let Some(n) = &self.next {
            match n.status() {
                SlotStatus::Prepared => out.prepared = Some(n.state()),
                SlotStatus::Old => out.old = Some(n.state()),
                SlotStatus::Active => {}
            }
        }
        out
    }

    /// Whether the current authority can still sign at `now`. When it
    /// cannot, the caller installs a replacement with [`Slots::activate_now`].
    pub(crate) fn current_usable(&self, now: SystemTime) -> bool {
        self.current.as_ref().is_some_and(|c| c.not_after() > now)
    }

    /// The slot a replacement for an unusable current authority goes into
    /// when none is prepared: the one the next slot does not use.
    pub(crate) fn replacement_slot(&self) -> String {
        other_slot(self.next.as_ref().map(|n| n.slot()))
    }

    /// Takes the prepared authority out of the next slot if it can still
    /// sign at `now`; an expired prepared one is dropped all the same.
    pub(crate) fn take_usable_prepared(&mut self, now: SystemTime) -> Option<A> {
        // Only a prepared authority leaves the slot; an old one stays.
        self.prepared()?;
        self.next.take().filter(|n| n.not_after() > now)
    }

    /// Makes `a` the current authority, active, in place of whatever was
    /// there.
    pub(crate) fn activate_now(&mut self, mut a: A) {
        a.set_status(SlotStatus::Active);
        self.current = Some(a);
    }

    /// The slot to prepare a new authority in at `now`, if one is due: the
    /// current authority is past its preparation threshold and none is
    /// prepared yet.
    pub(crate) fn preparation_due(&self, now: SystemTime) -> Option<String> {
        let cur = self.current.as_ref()?;
        (self.prepared().is_none()
            && now >= preparation_threshold(cur.issued_at(), cur.not_after()))
        .then(|| other_slot(Some(cur.slot())))
    }

    /// The slot an operator's preparation goes into: the other one than the
    /// active authority's. `None` while nothing is active.
    pub(crate) fn preparation_slot(&self) -> Option<String> {
        self.active().map(|cur| other_slot(Some(cur.slot())))
    }

    /// Whether the prepared authority should become active at `now`.
    pub(crate) fn activation_due(&self, now: SystemTime) -> bool {
        self.current
            .as_ref()
            .is_some_and(|cur| now >= activation_threshold(cur.issued_at(), cur.not_after()))
            && self.prepared().is_some()
    }

    /// Puts a newly prepared authority in the next slot, replacing a
    /// prepared or old one there.
    pub(crate) fn set_next(&mut self, a: A) {
        self.next = Some(a);
    }

    /// SPIRE's rotation: the prepared authority becomes active and the
    /// active one moves to the next slot as old.
    pub(crate) fn rotate(&mut self) {
        std::mem::swap(&mut self.current, &mut self.next);
        if let Some(c) = &mut self.current {
            c.set_status(SlotStatus::Active);
        }
        if let Some(n) = &mut self.next {
            n.set_status(SlotStatus::Old);
        }
    }

    /// Puts an authority read back from the journal where its state says;
    /// of two old ones, the first read wins.
    pub(crate) fn restore(&mut self, a: A) {
        match a.status() {
            SlotStatus::Active => self.current = Some(a),
            SlotStatus::Prepared => self.next = Some(a),
            SlotStatus::Old if self.next.is_none() => self.next = Some(a),
            SlotStatus::Old => {}
        }
    }

    /// Both slots, current first, for the journal.
    pub(crate) fn both(&self) -> impl Iterator<Item = &A> {
        self.current.iter().chain(self.next.iter())
    }

    /// SPIRE's checks before activating: the ID names the next slot, which
    /// holds a prepared authority.
    pub(crate) fn check_activation(&self, authority_id: &str) -> Result<(), AuthorityError> {
        if authority_id.is_empty() {
            return Err(AuthorityError::MissingId);
        }
        let next = self
            .next
            .as_ref()
            .filter(|n| n.authority_id() == authority_id)
            .ok_or(AuthorityError::NotNext)?;
        if next.status() != SlotStatus::Prepared {
            return Err(AuthorityError::WrongStatus(next.status()));
        }
        Ok(())
    }

    /// SPIRE's checks before tainting or revoking: the ID names the next
    /// slot, which holds the old authority.
    pub(crate) fn check_old(&self, authority_id: &str) -> Result<AuthorityState, AuthorityError> {
        if authority_id.is_empty() {
            return Err(AuthorityError::MissingId);
        }
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.authority_id() == authority_id)
        {
            return Err(AuthorityError::IsActive);
        }
        let next = self
            .next
            .as_ref()
            .filter(|n| n.authority_id() == authority_id)
            .ok_or(AuthorityError::NotNext)?;
        if next.status() != SlotStatus::Old {
            return Err(AuthorityError::WrongStatus(next.status()));
        }
        Ok(next.state())
    }

    /// SPIRE's looser checks before revoking a JWT key: any authority but
    /// the active and the prepared one. Returns the next slot's state when
    /// the ID names it (old), `None` when the ID is in no slot.
    pub(crate) fn check_not_in_use(
        &self,
        authority_id: &str,
    ) -> Result<Option<AuthorityState>, AuthorityError> {
        if authority_id.is_empty() {
            return Err(AuthorityError::MissingId);
        }
        let from_slot = match &self.next {
            Some(next) if next.authority_id() == authority_id => {
                if next.status() == SlotStatus::Prepared {
                    return Err(AuthorityError::IsPrepared);
                }
                Some(next.state())
            }
            _ => None,
        };
        if from_slot.is_none()
            && self
                .current
                .as_ref()
                .is_some_and(|c| c.authority_id() == authority_id)
        {
            return Err(AuthorityError::IsActive);
        }
        Ok(from_slot)
    }
}

/// The slot other than `slot` (`A` when there is none).
fn other_slot(slot: Option<&str>) -> String {
    match slot {
        Some("A") => "B".into(),
        _ => "A".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn thresholds_follow_spire_with_caps() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = t0 + DAY;
        assert_eq!(preparation_threshold(t0, end), t0 + DAY / 2);
        assert_eq!(activation_threshold(t0, end), end - DAY / 6);
        let long_end = t0 + DAY * 365;
        assert_eq!(preparation_threshold(t0, long_end), long_end - DAY * 30);
        assert_eq!(activation_threshold(t0, long_end), long_end - DAY * 7);
    }

    /// A stand-in authority: the slot logic needs nothing of a real one.
    #[derive(Debug, Clone)]
    struct Fake {
        slot: String,
        id: String,
        status: SlotStatus,
        issued_at: SystemTime,
        not_after: SystemTime,
    }

    impl super::SlotAuthority for Fake {
        const KIND: &'static str = "fake";
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
            self.id.clone()
        }
        fn issued_at(&self) -> SystemTime {
            self.issued_at
        }
        fn not_after(&self) -> SystemTime {
            self.not_after
        }
    }

    fn fake(slot: &str, id: &str, t0: SystemTime) -> Fake {
        Fake {
            slot: slot.into(),
            id: id.into(),
            status: SlotStatus::Prepared,
            issued_at: t0,
            not_after: t0 + DAY,
        }
    }

    #[test]
    fn one_slot_machine_prepares_activates_and_keeps_the_old_authority_for_any_kind() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut slots = super::Slots::<Fake>::default();
        assert!(!slots.current_usable(t0));
        assert_eq!(slots.replacement_slot(), "A");
        slots.activate_now(fake("A", "one", t0));
        assert_eq!(slots.active().unwrap().id, "one");

        assert_eq!(
            slots.preparation_due(t0 + DAY / 2 - Duration::from_secs(1)),
            None
        );
        let half = t0 + DAY / 2;
        assert_eq!(slots.preparation_due(half).as_deref(), Some("B"));
        slots.set_next(fake("B", "two", half));
        assert_eq!(slots.preparation_due(half), None, "prepared already");
        assert!(matches!(
            slots.check_old("two"),
            Err(AuthorityError::WrongStatus(SlotStatus::Prepared))
        ));
        assert!(!slots.activation_due(half));
        assert!(slots.activation_due(t0 + DAY * 5 / 6));

        slots.rotate();
        let st = slots.states();
        assert_eq!(st.active.unwrap().authority_id, "two");
        assert_eq!(st.old.unwrap().status, SlotStatus::Old);
        assert!(st.prepared.is_none());
        assert!(matches!(
            slots.check_activation("one"),
            Err(AuthorityError::WrongStatus(SlotStatus::Old))
        ));
        assert!(matches!(
            slots.check_old("two"),
            Err(AuthorityError::IsActive)
        ));
        assert_eq!(slots.check_old("one").unwrap().authority_id, "one");
        assert_eq!(
            slots.preparation_slot().as_deref(),
            Some("A"),
            "the old slot is reused"
        );
    }
}
