//! `ClusterFederatedTrustDomain` (`spire.spiffe.io/v1alpha1`): a federation
//! relationship kept on the server through the SPIRE TrustDomain API.
//!
//! Ownership. spire-controller-manager deletes every relationship on the
//! server that no object declares. Relationships carry no ID or label to
//! mark who made them, so sigil-controller-manager records ownership on the
//! object instead: before it creates or updates the relationship an object
//! declares, it adds the finalizer [`FINALIZER`] and the annotation
//! [`OWNED_ANNOTATION`] (the trust domain) to the object. It deletes a
//! relationship only when the object that owns it is deleted (the finalizer
//! holds the object until then), or changes its `trustDomain`, and no other
//! object declares that trust domain. Relationships made any other way are
//! never touched unless an object declares their trust domain, which hands
//! them to the controller.
//!
//! [`plan`] is pure; the controller applies it.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use sigil_proto::spire::api::types::federation_relationship::BundleEndpointProfile as Profile;
use sigil_proto::spire::api::types::{
    Bundle as PbBundle, FederationRelationship as Relationship, HttpsWebProfile,
    HttpsspiffeProfile, JwtKey, X509Certificate,
};

use crate::crd::{Age, Crd};

/// The kind.
pub const CRD: Crd = Crd {
    kind: "ClusterFederatedTrustDomain",
    plural: "clusterfederatedtrustdomains",
};

/// The finalizer that keeps an object until its relationship is deleted.
pub const FINALIZER: &str = "sigil-controller-manager/federation-relationship";

/// The annotation naming the trust domain whose relationship the object owns.
pub const OWNED_ANNOTATION: &str = "sigil-controller-manager/trust-domain";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProfile {
    #[serde(rename = "type", default)]
    ty: String,
    #[serde(rename = "endpointSPIFFEID", default)]
    endpoint_spiffe_id: String,
}

/// The spec as written (field names as spire-controller-manager's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    trust_domain: String,
    #[serde(rename = "bundleEndpointURL", default)]
    bundle_endpoint_url: String,
    #[serde(default)]
    bundle_endpoint_profile: RawProfile,
    #[serde(default)]
    trust_domain_bundle: String,
}

/// Why a spec is not a relationship (spire-controller-manager's checks).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpecError {
    /// The object's spec is not shaped like a ClusterFederatedTrustDomain's.
    #[error("invalid spec: {0}")]
    Shape(String),
    /// `trustDomain` is not a trust domain name.
    #[error("invalid trustDomain value {0:?}")]
    TrustDomain(String),
    /// `bundleEndpointURL` is not an HTTPS URL with a host and no user
    /// information.
    #[error("invalid bundleEndpointURL value {url:?}: {reason}")]
    Url {
        /// The value.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `bundleEndpointProfile.type` is neither `https_web` nor `https_spiffe`.
    #[error("invalid bundle endpoint profile type value {0:?}")]
    ProfileType(String),
    /// `endpointSPIFFEID` is set for `https_web`, or not a SPIFFE ID for
    /// `https_spiffe`.
    #[error("invalid bundle endpoint profile endpointSPIFFEID value {value:?}: {reason}")]
    EndpointSpiffeId {
        /// The value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `trustDomainBundle` is not a SPIFFE bundle of the trust domain.
    #[error("invalid trustDomainBundle value: {0}")]
    Bundle(String),
}

fn check_url(url: &str) -> Result<(), SpecError> {
    let bad = |reason| SpecError::Url {
        url: url.to_owned(),
        reason,
    };
    if url.is_empty() {
        return Err(bad("bundle endpoint URL is missing"));
    }
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("scheme must be https"));
    }
    let authority = uri.authority().ok_or(bad("host must be specified"))?;
    if authority.as_str().contains('@') {
        return Err(bad("cannot contain userinfo"));
    }
    if authority.host().is_empty() {
        return Err(bad("host must be specified"));
    }
    Ok(())
}

fn bundle_to_proto(b: &sigil_spiffe::Bundle) -> PbBundle {
    PbBundle {
        trust_domain: b.trust_domain.name().to_owned(),
        x509_authorities: b
            .x509_authorities
            .iter()
            .map(|der| X509Certificate {
                asn1: der.clone(),
                tainted: false,
            })
            .collect(),
        jwt_authorities: b
            .jwt_authorities
            .iter()
            .map(|a| JwtKey {
                public_key: a.public_key_der.clone(),
                key_id: a.key_id.clone(),
                expires_at: a.expires_at.unwrap_or(0),
                tainted: false,
            })
            .collect(),
        refresh_hint: b.refresh_hint_seconds.unwrap_or(0),
        sequence_number: b.sequence_number,
        ..PbBundle::default()
    }
}

/// Turns the spec into the relationship it declares.
pub fn parse(spec: &serde_json::Value) -> Result<Relationship, SpecError> {
    let raw: RawSpec =
        serde_json::from_value(spec.clone()).map_err(|e| SpecError::Shape(e.to_string()))?;
    let td = sigil_spiffe::TrustDomain::new(&raw.trust_domain)
        .map_err(|_| SpecError::TrustDomain(raw.trust_domain.clone()))?;
    check_url(&raw.bundle_endpoint_url)?;
    let p = &raw.bundle_endpoint_profile;
    let bad_id = |reason| SpecError::EndpointSpiffeId {
        value: p.endpoint_spiffe_id.clone(),
        reason,
    };
    let profile = match p.ty.as_str() {
        "https_web" if !p.endpoint_spiffe_id.is_empty() => {
            return Err(bad_id("not applicable to the \"https_web\" profile"));
        }
        "https_web" => Profile::HttpsWeb(HttpsWebProfile {}),
        "https_spiffe" => {
            sigil_spiffe::SpiffeId::parse(&p.endpoint_spiffe_id)
                .map_err(|_| bad_id("not a SPIFFE ID"))?;
            Profile::HttpsSpiffe(HttpsspiffeProfile {
                endpoint_spiffe_id: p.endpoint_spiffe_id.clone(),
            })
        }
        other => return Err(SpecError::ProfileType(other.to_owned())),
    };
    let bundle = if raw.trust_domain_bundle.is_empty() {
        None
    } else {
        let b = sigil_spiffe::Bundle::parse_jwks(&td, raw.trust_domain_bundle.as_bytes())
            .map_err(|e| SpecError::Bundle(e.to_string()))?;
        Some(bundle_to_proto(&b))
    };
    Ok(Relationship {
        trust_domain: td.name().to_owned(),
        bundle_endpoint_url: raw.bundle_endpoint_url,
        bundle_endpoint_profile: Some(profile),
        trust_domain_bundle: bundle,
    })
}

/// A ClusterFederatedTrustDomain as the reconciler sees it.
#[derive(Debug, Clone)]
pub struct Object {
    /// `metadata.name`.
    pub name: String,
    /// Which of two objects declaring the same trust domain wins.
    pub age: Age,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `metadata.finalizers`.
    pub finalizers: Vec<String>,
    /// The trust domain of the relationship the object owns
    /// ([`OWNED_ANNOTATION`], kept only while the finalizer is there).
    pub owned: Option<String>,
    /// The relationship, or why the spec is not one.
    pub spec: Result<Relationship, SpecError>,
}

impl Object {
    fn has_finalizer(&self) -> bool {
        self.finalizers.iter().any(|f| f == FINALIZER)
    }

    fn owned(&self) -> Option<&str> {
        self.owned.as_deref().filter(|_| self.has_finalizer())
    }
}

/// Changes to make, in order: delete, release, claim, create, update.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Trust domains whose relationships to delete, with the object whose
    /// finalizer to remove once done (when it is being deleted).
    pub delete: Vec<(String, Option<usize>)>,
    /// Objects being deleted that own nothing left to delete: remove the
    /// finalizer.
    pub release: Vec<usize>,
    /// Objects to mark as owning a trust domain (finalizer and annotation)
    /// before their relationship is created or updated.
    pub claim: Vec<(usize, String)>,
    /// Relationships to create, with the declaring object.
    pub create: Vec<(Relationship, usize)>,
    /// Relationships to update (endpoint URL and profile), with the
    /// declaring object.
    pub update: Vec<(Relationship, usize)>,
    /// Objects that lost to an older one declaring the same trust domain.
    pub conflicts: Vec<(usize, usize)>,
}

fn same(a: &Relationship, b: &Relationship) -> bool {
    a.trust_domain == b.trust_domain
        && a.bundle_endpoint_url == b.bundle_endpoint_url
        && a.bundle_endpoint_profile == b.bundle_endpoint_profile
}

/// Computes what to change from the objects (of this controller's class)
/// and the relationships on the server.
pub fn plan(objects: &[Object], current: &[Relationship]) -> Plan {
    let current: HashMap<&str, &Relationship> = current
        .iter()
        .map(|r| (r.trust_domain.as_str(), r))
        .collect();
    let mut order: Vec<usize> = (0..objects.len()).collect();
    order.sort_by_key(|&i| objects[i].age.clone());
    // The oldest live object declaring a trust domain wins it.
    let mut winners: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Plan::default();
    for &i in &order {
        let o = &objects[i];
        let Ok(rel) = &o.spec else { continue };
        if o.deleting {
            continue;
        }
        match winners.get(rel.trust_domain.as_str()) {
            Some(&w) => out.conflicts.push((i, w)),
            None => {
                winners.insert(&rel.trust_domain, i);
            }
        }
    }
    // What owners give up: deleted objects, and trust domains an object no
    // longer declares. A relationship another object declares is kept.
    for &i in &order {
        let o = &objects[i];
        let declared = o.spec.as_ref().ok().map(|r| r.trust_domain.as_str());
        let gives_up = match o.owned() {
            Some(td) if o.deleting => Some(td),
            // A spec that stopped parsing keeps what it owns until fixed.
            Some(td) if declared.is_some_and(|d| d != td) => Some(td),
            _ => None,
        };
        let release = o.deleting && o.has_finalizer();
        match gives_up {
            Some(td) if !winners.contains_key(td) && current.contains_key(td) => {
                out.delete.push((td.to_owned(), release.then_some(i)));
            }
            _ if release => out.release.push(i),
            _ => {}
        }
    }
    for (td, &i) in &winners {
        let o = &objects[i];
        let Ok(rel) = &o.spec else { continue };
        if !o.has_finalizer() || o.owned.as_deref() != Some(td) {
            out.claim.push((i, (*td).to_owned()));
        }
        match current.get(td) {
            None => out.create.push((rel.clone(), i)),
            Some(c) if !same(rel, c) => out.update.push((rel.clone(), i)),
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn spec(td: &str, url: &str) -> serde_json::Value {
        json!({
            "trustDomain": td,
            "bundleEndpointURL": url,
            "bundleEndpointProfile": {"type": "https_spiffe", "endpointSPIFFEID": format!("spiffe://{td}/spire/server")},
        })
    }

    fn object(name: &str, created: &str, spec: serde_json::Value) -> Object {
        Object {
            name: name.to_owned(),
            age: Age {
                created: created.to_owned(),
                uid: name.to_owned(),
                ..Age::default()
            },
            deleting: false,
            finalizers: Vec::new(),
            owned: None,
            spec: parse(&spec),
        }
    }

    fn owning(mut o: Object, td: &str) -> Object {
        o.finalizers.push(FINALIZER.to_owned());
        o.owned = Some(td.to_owned());
        o
    }

    #[test]
    fn specs_are_checked_as_spire_controller_manager_checks_them() {
        let r = parse(&spec("other.org", "https://other.org:8443/bundle")).unwrap();
        assert_eq!(r.trust_domain, "other.org");
        assert!(r.trust_domain_bundle.is_none());
        for (bad, needle) in [
            (spec("Other Org", "https://x"), "trustDomain"),
            (spec("other.org", "http://x"), "https"),
            (spec("other.org", "https://u:p@x/b"), "userinfo"),
            (spec("other.org", ""), "missing"),
            (
                json!({"trustDomain": "o.org", "bundleEndpointURL": "https://x", "bundleEndpointProfile": {"type": "https_web", "endpointSPIFFEID": "spiffe://o.org/s"}}),
                "https_web",
            ),
            (
                json!({"trustDomain": "o.org", "bundleEndpointURL": "https://x", "bundleEndpointProfile": {"type": "https_spiffe"}}),
                "endpointSPIFFEID",
            ),
            (
                json!({"trustDomain": "o.org", "bundleEndpointURL": "https://x", "bundleEndpointProfile": {"type": "ftp"}}),
                "ftp",
            ),
            (
                json!({"trustDomain": "o.org", "bundleEndpointURL": "https://x", "bundleEndpointProfile": {"type": "https_web"}, "trustDomainBundle": "{"}),
                "trustDomainBundle",
            ),
        ] {
            let e = parse(&bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn only_relationships_an_object_owned_are_deleted() {
        let other = parse(&spec("other.org", "https://other.org/b")).unwrap();
        let manual = parse(&spec("manual.org", "https://manual.org/b")).unwrap();
        let gone = parse(&spec("gone.org", "https://gone.org/b")).unwrap();
        let current = [other.clone(), manual, gone];
        // A new object claims before creating; an older one wins a conflict.
        let objects = [
            object(
                "b",
                "2026-01-02T00:00:00Z",
                spec("new.org", "https://new.org/b"),
            ),
            object(
                "c",
                "2026-01-03T00:00:00Z",
                spec("new.org", "https://elsewhere/b"),
            ),
            owning(
                object(
                    "a",
                    "2026-01-01T00:00:00Z",
                    spec("other.org", "https://moved/b"),
                ),
                "other.org",
            ),
        ];
        let p = plan(&objects, &current);
        assert_eq!(
            p.claim,
            [(0, "new.org".to_owned())],
            "a owns other.org already"
        );
        assert_eq!(p.create.len(), 1);
        assert_eq!(p.create[0].1, 0);
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].0.bundle_endpoint_url, "https://moved/b");
        assert_eq!(p.conflicts, [(1, 0)]);
        assert!(p.delete.is_empty(), "manual.org and gone.org are not owned");

        // Deleting the owner deletes its relationship, then releases it; an
        // object being deleted that owns nothing is released at once.
        let mut a = owning(
            object(
                "a",
                "2026-01-01T00:00:00Z",
                spec("gone.org", "https://gone.org/b"),
            ),
            "gone.org",
        );
        a.deleting = true;
        let mut d = object("d", "2026-01-01T00:00:00Z", spec("x.org", "https://x/b"));
        d.finalizers.push(FINALIZER.to_owned());
        d.deleting = true;
        let p = plan(&[a, d], &current);
        assert_eq!(p.delete, [("gone.org".to_owned(), Some(0))]);
        assert_eq!(p.release, [1]);

        // Changing trustDomain gives up the old one, unless another object
        // declares it.
        let moved = owning(
            object(
                "a",
                "2026-01-01T00:00:00Z",
                spec("new.org", "https://new.org/b"),
            ),
            "gone.org",
        );
        let p = plan(std::slice::from_ref(&moved), &current);
        assert_eq!(p.delete, [("gone.org".to_owned(), None)]);
        assert_eq!(p.claim, [(0, "new.org".to_owned())]);
        let keeper = object(
            "k",
            "2026-01-05T00:00:00Z",
            spec("gone.org", "https://gone.org/b"),
        );
        let p = plan(&[moved, keeper], &current);
        assert!(p.delete.is_empty());
    }
}
