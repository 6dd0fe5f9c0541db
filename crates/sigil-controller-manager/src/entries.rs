//! The entry reconciliation every entry-declaring kind shares, as
//! spire-controller-manager does it: group declared and current entries by
//! (SPIFFE ID, parent ID, selectors), let the oldest declaring object set
//! each entry (the others are "masked"), and create, update or delete so the
//! server holds exactly the declared set among the entries this controller
//! owns.
//!
//! [`plan`] is pure (declarations and current entries in, changes and
//! per-object counts out); the controller applies the plan through the
//! entry API. Which entries are "owned" is [`crate::config::Config::owns`].

use std::collections::BTreeMap;

use sigil_proto::spire::api::types::{Entry, Selector as PbSelector, Spiffeid as PbId};

use crate::crd::Age;

/// Why a declared entry is not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A SPIFFE ID is malformed, or not in the trust domain it must be in.
    #[error("{field}: invalid SPIFFE ID {value:?}")]
    SpiffeId {
        /// Which ID.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A selector is not `type:value`.
    #[error("invalid selector {0:?}: expected type:value")]
    Selector(String),
    /// A federated trust domain name is invalid.
    #[error("federatesWith: invalid trust domain {0:?}")]
    FederatesWith(String),
    /// A TTL is not a duration that fits the entry API.
    #[error("{field}: invalid duration {value:?}: {reason}")]
    Ttl {
        /// The spec field.
        field: &'static str,
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// An entry an object declares; `by` indexes the declaring object in the
/// list of [`Age`]s given to [`plan`].
#[derive(Debug, Clone)]
pub struct Declared {
    /// The entry (no ID).
    pub entry: Entry,
    /// The declaring object.
    pub by: usize,
}

/// What happened to one object's declarations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Entries this object sets (it is the oldest declaring them).
    pub to_set: u32,
    /// Entries an older object sets instead.
    pub masked: u32,
    /// Entries the server refused to create or update.
    pub failures: u32,
}

/// Changes to make, and what each object's declarations came to.
#[derive(Debug, Default)]
pub struct Plan {
    /// Entries to create, with the declaring object.
    pub create: Vec<(Entry, usize)>,
    /// Entries to update (ID set), with the declaring object.
    pub update: Vec<(Entry, usize)>,
    /// Owned entries nothing declares.
    pub delete: Vec<Entry>,
    /// Counts per object, in the order of the ages given.
    pub counts: Vec<Counts>,
}

/// Parses a SPIFFE ID for an entry; `trust_domain` (when given) is the one it
/// must be in.
pub fn spiffe_id(
    field: &'static str,
    value: &str,
    trust_domain: Option<&str>,
) -> Result<PbId, EntryError> {
    sigil_spiffe::SpiffeId::parse(value)
        .ok()
        .filter(|id| trust_domain.is_none_or(|td| id.trust_domain_name() == td))
        .map(|id| PbId {
            trust_domain: id.trust_domain_name().to_owned(),
            path: id.path().to_owned(),
        })
        .ok_or_else(|| EntryError::SpiffeId {
            field,
            value: value.to_owned(),
        })
}

/// Parses a `type:value` selector.
pub fn selector(s: &str) -> Result<PbSelector, EntryError> {
    match s.split_once(':') {
        Some((ty, value)) if !ty.is_empty() && !value.is_empty() => Ok(PbSelector {
            r#type: ty.to_owned(),
            value: value.to_owned(),
        }),
        _ => Err(EntryError::Selector(s.to_owned())),
    }
}

/// Checks federated trust domain names.
pub fn federates_with(list: &[String]) -> Result<Vec<String>, EntryError> {
    for td in list {
        sigil_spiffe::TrustDomain::new(td).map_err(|_| EntryError::FederatesWith(td.clone()))?;
    }
    Ok(list.to_vec())
}

/// A TTL (a Go duration such as `1h`; empty for the server's default) in
/// the entry API's seconds.
pub fn ttl(field: &'static str, value: Option<&str>) -> Result<i32, EntryError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(0);
    };
    let err = |reason: String| EntryError::Ttl {
        field,
        value: v.to_owned(),
        reason,
    };
    let d = sigil_cli::duration::parse_duration(v).map_err(|e| err(e.to_string()))?;
    i32::try_from(d.as_secs()).map_err(|_| err("too long".to_owned()))
}

fn id_str(id: &Option<PbId>) -> String {
    id.as_ref()
        .map(|i| format!("spiffe://{}{}", i.trust_domain, i.path))
        .unwrap_or_default()
}

/// What makes two entries the same one: SPIFFE ID, parent ID and the
/// sorted selectors.
pub type EntryKey = (String, String, Vec<(String, String)>);

/// The identity of an entry for matching declared against current.
pub fn key(e: &Entry) -> EntryKey {
    let mut sel: Vec<(String, String)> = e
        .selectors
        .iter()
        .map(|s| (s.r#type.clone(), s.value.clone()))
        .collect();
    sel.sort();
    (id_str(&e.spiffe_id), id_str(&e.parent_id), sel)
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// True when `current` differs from `declared` in a field updates carry.
pub fn outdated(declared: &Entry, current: &Entry) -> bool {
    declared.x509_svid_ttl != current.x509_svid_ttl
        || declared.jwt_svid_ttl != current.jwt_svid_ttl
        || sorted(&declared.federates_with) != sorted(&current.federates_with)
        || declared.admin != current.admin
        || declared.downstream != current.downstream
        || sorted(&declared.dns_names) != sorted(&current.dns_names)
        || declared.hint != current.hint
        || declared.store_svid != current.store_svid
}

/// Computes what to change. `ages` are the declaring objects' ages;
/// `current` holds only entries this controller owns.
pub fn plan(ages: &[Age], declared: Vec<Declared>, current: Vec<Entry>) -> Plan {
    type Group = (Vec<Declared>, Vec<Entry>);
    let mut groups: BTreeMap<EntryKey, Group> = BTreeMap::new();
    for d in declared {
        groups.entry(key(&d.entry)).or_default().0.push(d);
    }
    for entry in current {
        groups.entry(key(&entry)).or_default().1.push(entry);
    }
    let mut out = Plan {
        counts: vec![Counts::default(); ages.len()],
        ..Plan::default()
    };
    let age = |i: usize| ages.get(i).cloned().unwrap_or_default();
    for (_, (mut declared, mut current)) in groups {
        declared.sort_by_key(|d| age(d.by));
        let mut declared = declared.into_iter();
        if let Some(Declared { mut entry, by }) = declared.next() {
            if let Some(c) = out.counts.get_mut(by) {
                c.to_set += 1;
            }
            for other in declared {
                if let Some(c) = out.counts.get_mut(other.by) {
                    c.masked += 1;
                }
            }
            if current.is_empty() {
                out.create.push((entry, by));
            } else {
                let existing = current.remove(0);
                if outdated(&entry, &existing) {
                    entry.id = existing.id;
                    out.update.push((entry, by));
                }
            }
        }
        out.delete.extend(current);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(id: &str, path: &str, ttl: i32) -> Entry {
        Entry {
            id: id.to_owned(),
            spiffe_id: Some(spiffe_id("spiffeID", &format!("spiffe://td{path}"), None).unwrap()),
            parent_id: Some(spiffe_id("parentID", "spiffe://td/agent", None).unwrap()),
            selectors: vec![selector("unix:uid:1").unwrap()],
            x509_svid_ttl: ttl,
            ..Entry::default()
        }
    }

    fn age(created: &str) -> Age {
        Age {
            created: created.to_owned(),
            uid: "u".to_owned(),
            ..Age::default()
        }
    }

    #[test]
    fn oldest_declarer_sets_an_entry_others_are_masked_and_undeclared_owned_entries_go() {
        let ages = [age("2026-01-02T00:00:00Z"), age("2026-01-01T00:00:00Z")];
        let declared = vec![
            Declared {
                entry: entry("", "/a", 60),
                by: 0,
            },
            Declared {
                entry: entry("", "/a", 120),
                by: 1,
            },
            Declared {
                entry: entry("", "/b", 0),
                by: 0,
            },
        ];
        let current = vec![entry("e-a", "/a", 60), entry("e-old", "/old", 0)];
        let p = plan(&ages, declared, current);
        // /a: the older object (1) wins with ttl 120, so e-a is updated.
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].0.id, "e-a");
        assert_eq!(p.update[0].0.x509_svid_ttl, 120);
        assert_eq!(p.update[0].1, 1);
        assert_eq!(p.create.len(), 1);
        assert_eq!(key(&p.create[0].0).0, "spiffe://td/b");
        assert_eq!(
            p.delete.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["e-old"]
        );
        assert_eq!(
            p.counts,
            [
                Counts {
                    to_set: 1,
                    masked: 1,
                    failures: 0
                },
                Counts {
                    to_set: 1,
                    masked: 0,
                    failures: 0
                }
            ]
        );
    }

    #[test]
    fn entry_fields_are_checked() {
        assert!(spiffe_id("spiffeID", "spiffe://other/x", Some("td")).is_err());
        assert!(selector("k8s").is_err());
        assert!(selector(":x").is_err());
        assert_eq!(ttl("x509SVIDTTL", Some("1h30m")).unwrap(), 5400);
        assert_eq!(ttl("x509SVIDTTL", None).unwrap(), 0);
        assert!(ttl("x509SVIDTTL", Some("soon")).is_err());
        assert!(federates_with(&["Bad TD".to_owned()]).is_err());
    }
}
