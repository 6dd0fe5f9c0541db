//! `ClusterStaticEntry` (`spire.spiffe.io/v1alpha1`): one registration
//! entry written out in full. Its spec becomes the entry as
//! spire-controller-manager renders it (any parent ID, any selectors); the
//! entry takes part in the shared [`crate::entries`] plan with the
//! ClusterSPIFFEIDs' entries, so the same masking rules apply; its status
//! says whether it rendered, was masked, and is set.

use serde::{Deserialize, Serialize};
use sigil_proto::spire::api::types::Entry;

use crate::crd::{Age, Crd};
use crate::entries::{self, Counts, EntryError};

/// The kind.
pub const CRD: Crd = Crd {
    kind: "ClusterStaticEntry",
    plural: "clusterstaticentries",
};

/// The spec as written (field names as spire-controller-manager's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(rename = "spiffeID", default)]
    spiffe_id: String,
    #[serde(rename = "parentID", default)]
    parent_id: String,
    #[serde(default)]
    selectors: Vec<String>,
    #[serde(default)]
    federates_with: Vec<String>,
    #[serde(rename = "x509SVIDTTL", default)]
    x509_svid_ttl: Option<String>,
    #[serde(rename = "jwtSVIDTTL", default)]
    jwt_svid_ttl: Option<String>,
    #[serde(default)]
    dns_names: Vec<String>,
    #[serde(default)]
    hint: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    downstream: bool,
    #[serde(rename = "storeSVID", default)]
    store_svid: bool,
}

/// Why a ClusterStaticEntry's spec is not an entry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpecError {
    /// The object's spec is not shaped like a ClusterStaticEntry's.
    #[error("invalid spec: {0}")]
    Shape(String),
    /// A field is not valid in an entry.
    #[error(transparent)]
    Entry(#[from] EntryError),
}

/// A ClusterStaticEntry as the reconciler sees it.
#[derive(Debug, Clone)]
pub struct Object {
    /// `metadata.name`.
    pub name: String,
    /// Which of two objects declaring the same entry wins.
    pub age: Age,
    /// The entry, or why the spec is not one.
    pub entry: Result<Entry, SpecError>,
}

/// The status, field names as spire-controller-manager's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The spec is a valid entry.
    pub rendered: bool,
    /// An older object declares the same entry.
    pub masked: bool,
    /// The entry is on the server as this object declares it.
    pub set: bool,
}

impl Status {
    /// The status after a reconciliation: `counts` are this object's from
    /// the plan, with the server's refusals added.
    pub fn new(rendered: bool, counts: &Counts) -> Status {
        Status {
            rendered,
            masked: counts.masked > 0,
            set: counts.to_set > 0 && counts.failures == 0,
        }
    }
}

/// Turns the spec into the entry it declares.
pub fn parse(spec: &serde_json::Value) -> Result<Entry, SpecError> {
    let raw: RawSpec =
        serde_json::from_value(spec.clone()).map_err(|e| SpecError::Shape(e.to_string()))?;
    Ok(Entry {
        spiffe_id: Some(entries::spiffe_id("spiffeID", &raw.spiffe_id, None)?),
        parent_id: Some(entries::spiffe_id("parentID", &raw.parent_id, None)?),
        selectors: raw
            .selectors
            .iter()
            .map(|s| entries::selector(s))
            .collect::<Result<_, _>>()?,
        federates_with: entries::federates_with(&raw.federates_with)?,
        x509_svid_ttl: entries::ttl("x509SVIDTTL", raw.x509_svid_ttl.as_deref())?,
        jwt_svid_ttl: entries::ttl("jwtSVIDTTL", raw.jwt_svid_ttl.as_deref())?,
        dns_names: raw.dns_names,
        hint: raw.hint,
        admin: raw.admin,
        downstream: raw.downstream,
        store_svid: raw.store_svid,
        ..Entry::default()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn a_spec_becomes_its_entry_and_bad_fields_are_named() {
        let e = parse(&json!({
            "spiffeID": "spiffe://example.org/db",
            "parentID": "spiffe://example.org/spire/agent/x509pop/host-1",
            "selectors": ["unix:uid:999", "unix:gid:999"],
            "x509SVIDTTL": "1h",
            "jwtSVIDTTL": "5m",
            "dnsNames": ["db.example.org"],
            "federatesWith": ["other.org"],
            "storeSVID": true,
            "hint": "db",
            "className": "c",
        }))
        .unwrap();
        assert_eq!(e.spiffe_id.unwrap().path, "/db");
        assert_eq!(e.parent_id.unwrap().path, "/spire/agent/x509pop/host-1");
        assert_eq!(e.selectors.len(), 2);
        assert_eq!((e.x509_svid_ttl, e.jwt_svid_ttl), (3600, 300));
        assert!(e.store_svid);
        assert_eq!(e.federates_with, ["other.org"]);
        for (spec, needle) in [
            (
                json!({"spiffeID": "db", "parentID": "spiffe://example.org/a", "selectors": []}),
                "spiffeID",
            ),
            (
                json!({"spiffeID": "spiffe://example.org/db", "parentID": "", "selectors": []}),
                "parentID",
            ),
            (
                json!({"spiffeID": "spiffe://example.org/db", "parentID": "spiffe://example.org/a", "selectors": ["nocolon"]}),
                "nocolon",
            ),
            (
                json!({"spiffeID": "spiffe://example.org/db", "parentID": "spiffe://example.org/a", "selectors": [], "x509SVIDTTL": "1 hour"}),
                "x509SVIDTTL",
            ),
            (json!({"spiffeID": 7}), "invalid spec"),
        ] {
            let err = parse(&spec).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert_eq!(
            Status::new(
                true,
                &Counts {
                    to_set: 1,
                    masked: 0,
                    failures: 0
                }
            ),
            Status {
                rendered: true,
                masked: false,
                set: true
            }
        );
        assert_eq!(
            Status::new(
                true,
                &Counts {
                    to_set: 0,
                    masked: 1,
                    failures: 0
                }
            ),
            Status {
                rendered: true,
                masked: true,
                set: false
            }
        );
        assert_eq!(
            Status::new(
                true,
                &Counts {
                    to_set: 1,
                    masked: 0,
                    failures: 1
                }
            ),
            Status {
                rendered: true,
                masked: false,
                set: false
            }
        );
    }
}
