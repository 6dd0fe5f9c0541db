//! The rules a record must satisfy before it is stored, and the identity key
//! that makes "same parent, same SPIFFE ID, same selector set" a unique
//! constraint in every engine.

use std::collections::HashSet;

use sha2::{Digest, Sha256};
use sigil_spiffe::{Selector, SpiffeId};

use crate::error::DataStoreError;
use crate::model::RegistrationEntry;

/// Longest entry ID a caller may supply (SPIRE's limit).
pub const MAX_ENTRY_ID_LEN: usize = 255;

/// Checks an entry ID supplied by a caller: 1..=255 characters of
/// `[A-Za-z0-9._-]`, as SPIRE accepts.
pub(crate) fn check_entry_id(id: &str) -> Result<(), DataStoreError> {
    if id.is_empty() {
        return Err(invalid("entry ID is empty"));
    }
    if id.len() > MAX_ENTRY_ID_LEN {
        return Err(invalid(format!(
            "entry ID is too long ({} bytes, at most {MAX_ENTRY_ID_LEN})",
            id.len()
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(invalid(format!(
            "entry ID {id:?} contains {c:?}; only letters, digits, '-', '.' and '_' are allowed"
        )));
    }
    Ok(())
}

/// Checks everything about an entry except its ID (checked separately because
/// create may generate it).
pub(crate) fn check_entry(entry: &RegistrationEntry) -> Result<(), DataStoreError> {
    if entry.selectors.is_empty() {
        return Err(invalid("entry has no selectors; at least one is required"));
    }
    if let Some(dup) = first_duplicate(entry.selectors.iter()) {
        return Err(invalid(format!(
            "entry lists selector {dup} more than once"
        )));
    }
    if entry.store_svid {
        let kind = entry.selectors[0].kind();
        if let Some(other) = entry.selectors.iter().find(|s| s.kind() != kind) {
            return Err(invalid(format!(
                "entry has store_svid set, so all selectors must have the same type \
                 (found {kind:?} and {:?})",
                other.kind()
            )));
        }
    }
    if entry.x509_svid_ttl < 0 {
        return Err(invalid(format!(
            "x509_svid_ttl is negative ({})",
            entry.x509_svid_ttl
        )));
    }
    if entry.jwt_svid_ttl < 0 {
        return Err(invalid(format!(
            "jwt_svid_ttl is negative ({})",
            entry.jwt_svid_ttl
        )));
    }
    if entry.expires_at < 0 {
        return Err(invalid(format!(
            "expires_at is negative ({}); use 0 for never",
            entry.expires_at
        )));
    }
    if entry.dns_names.iter().any(String::is_empty) {
        return Err(invalid("entry has an empty DNS name"));
    }
    if let Some(dup) = first_duplicate(entry.dns_names.iter()) {
        return Err(invalid(format!(
            "entry lists DNS name {dup:?} more than once"
        )));
    }
    if let Some(dup) = first_duplicate(entry.federates_with.iter()) {
        return Err(invalid(format!(
            "entry lists federated trust domain {dup} more than once"
        )));
    }
    Ok(())
}

/// The value of the unique `identity_key` column: a digest of parent ID, SPIFFE
/// ID and the selector set (order-insensitive). A digest keeps the index small
/// whatever the lengths of the IDs and selectors.
pub(crate) fn entry_identity_key(
    parent_id: &SpiffeId,
    spiffe_id: &SpiffeId,
    selectors: &[Selector],
) -> String {
    let mut sorted: Vec<&Selector> = selectors.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut hash = Sha256::new();
    // Length prefixes make the encoding unambiguous.
    let mut field = |s: &str| {
        hash.update((s.len() as u64).to_be_bytes());
        hash.update(s.as_bytes());
    };
    field(parent_id.as_str());
    field(spiffe_id.as_str());
    for s in sorted {
        field(s.kind());
        field(s.value());
    }
    hex::encode(hash.finalize())
}

/// Drops repeated selectors, keeping the first occurrence of each.
pub(crate) fn dedup_selectors(selectors: Vec<Selector>) -> Vec<Selector> {
    let mut seen = HashSet::new();
    selectors
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

pub(crate) fn invalid(message: impl Into<String>) -> DataStoreError {
    DataStoreError::InvalidArgument(message.into())
}

fn first_duplicate<'a, T, I>(items: I) -> Option<&'a T>
where
    T: Eq + std::hash::Hash + 'a,
    I: Iterator<Item = &'a T>,
{
    let mut seen = HashSet::new();
    items.into_iter().find(|item| !seen.insert(*item))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).expect("test SPIFFE ID is valid")
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).expect("test selector is valid")
    }

    #[test]
    fn entry_id_accepts_spire_charset_and_rejects_others() {
        assert!(check_entry_id("abc-DEF_1.2").is_ok());
        assert!(check_entry_id("").is_err());
        assert!(check_entry_id("has space").is_err());
        assert!(check_entry_id("slash/").is_err());
        assert!(check_entry_id(&"a".repeat(255)).is_ok());
        assert!(check_entry_id(&"a".repeat(256)).is_err());
    }

    #[test]
    fn identity_key_ignores_selector_order_but_not_content() {
        let p = id("spiffe://td/agent");
        let s = id("spiffe://td/w");
        let a = entry_identity_key(&p, &s, &[sel("unix:uid:1"), sel("unix:gid:2")]);
        let b = entry_identity_key(&p, &s, &[sel("unix:gid:2"), sel("unix:uid:1")]);
        let c = entry_identity_key(&p, &s, &[sel("unix:uid:1")]);
        let d = entry_identity_key(&s, &p, &[sel("unix:gid:2"), sel("unix:uid:1")]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn identity_key_is_unambiguous_across_field_boundaries() {
        let p = id("spiffe://td/agent");
        let s = id("spiffe://td/w");
        let a = entry_identity_key(&p, &s, &[Selector::new("a:b", "c").expect("valid")]);
        let b = entry_identity_key(&p, &s, &[Selector::new("a", "b:c").expect("valid")]);
        assert_ne!(a, b);
    }

    #[test]
    fn dedup_selectors_keeps_first_occurrence_order() {
        let out = dedup_selectors(vec![sel("a:1"), sel("b:2"), sel("a:1"), sel("c:3")]);
        assert_eq!(out, vec![sel("a:1"), sel("b:2"), sel("c:3")]);
    }
}
