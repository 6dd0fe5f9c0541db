//! Building Workload API messages from a [`Snapshot`]: which SVIDs a caller
//! gets, how bundles are keyed and encoded, and how JWT claims become a
//! protobuf `Struct`. Pure functions, so every message shape is testable
//! without a server.

use std::collections::{BTreeSet, HashMap, HashSet};

use prost_types::value::Kind;
use serde::Serialize;
use serde_json::{Map, Value};
use sigil_proto::workload::{JwtBundlesResponse, X509BundlesResponse, X509svid, X509svidResponse};
use sigil_spiffe::jwk::JwkPublicKey;
use sigil_spiffe::{Bundle, Selector, SpiffeId};

use super::WorkloadError;
use crate::cache::{Snapshot, X509SvidRecord};

/// A bundle's JWT authorities as a plain RFC 7517 JWK Set, the form SPIRE
/// hands workloads in `FetchJWTBundles`: no X.509 authorities, no `use`, no
/// `spiffe_sequence` or `spiffe_refresh_hint`, indented with four spaces.
/// Members are written in go-jose's order (`kty`, `kid`, `crv`, `x`, `y`,
/// `n`, `e`). Authorities whose key has no JWK form are left out.
pub fn standard_jwks(bundle: &Bundle) -> Vec<u8> {
    #[derive(Serialize)]
    struct Jwks {
        keys: Vec<Jwk>,
    }
    #[derive(Serialize)]
    struct Jwk {
        kty: &'static str,
        kid: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        crv: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        x: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        y: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        n: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        e: Option<String>,
    }
    let member = |map: &Map<String, Value>, name: &str| {
        map.get(name).and_then(Value::as_str).map(str::to_owned)
    };
    let keys = bundle
        .jwt_authorities
        .iter()
        .filter_map(|authority| {
            let key = JwkPublicKey::from_spki_der(&authority.public_key_der).ok()?;
            let map = key.to_jwk();
            Some(Jwk {
                kty: key.kty(),
                kid: authority.key_id.clone(),
                crv: member(&map, "crv"),
                x: member(&map, "x"),
                y: member(&map, "y"),
                n: member(&map, "n"),
                e: member(&map, "e"),
            })
        })
        .collect();
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    Jwks { keys }
        .serialize(&mut ser)
        .expect("strings serialise into a Vec without error");
    out
}

/// The SVIDs a caller with `selectors` gets: every matching one, except that
/// of several with the same non-empty hint only the first (lowest entry ID)
/// is kept, as SPIRE keeps one entry per hint.
pub(crate) fn identities<'a>(
    snapshot: &'a Snapshot,
    selectors: &[Selector],
) -> Vec<&'a X509SvidRecord> {
    let mut hints = HashSet::new();
    snapshot
        .svids_for(selectors)
        .into_iter()
        .filter(|svid| {
            let unique = svid.hint.is_empty() || hints.insert(svid.hint.as_str());
            if !unique {
                tracing::warn!(
                    hint = %svid.hint,
                    entry_id = %svid.entry_id,
                    "ignoring entry with duplicate hint"
                );
            }
            unique
        })
        .collect()
}

/// An identity a caller may have a JWT-SVID for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JwtIdentity<'a> {
    pub(crate) entry_id: &'a str,
    pub(crate) spiffe_id: &'a SpiffeId,
    pub(crate) hint: &'a str,
}

/// Every entry a caller with `selectors` matches: those with an X509-SVID
/// and those without one (beyond the cache size), in entry ID order.
pub(crate) fn matching_entries<'a>(
    snapshot: &'a Snapshot,
    selectors: &[Selector],
) -> Vec<JwtIdentity<'a>> {
    let mut all: Vec<JwtIdentity<'a>> = snapshot
        .svids_for(selectors)
        .into_iter()
        .map(|s| JwtIdentity {
            entry_id: &s.entry_id,
            spiffe_id: &s.spiffe_id,
            hint: &s.hint,
        })
        .chain(
            snapshot
                .unsigned_for(selectors)
                .into_iter()
                .map(|e| JwtIdentity {
                    entry_id: &e.entry_id,
                    spiffe_id: &e.spiffe_id,
                    hint: &e.hint,
                }),
        )
        .collect();
    all.sort_by(|a, b| a.entry_id.cmp(b.entry_id));
    all
}

/// The entries a caller with `selectors` may have JWT-SVIDs for
/// ([`matching_entries`]), one per non-empty hint (the lowest entry ID), as
/// [`identities`] does.
pub(crate) fn jwt_identities<'a>(
    snapshot: &'a Snapshot,
    selectors: &[Selector],
) -> Vec<JwtIdentity<'a>> {
    let mut all = matching_entries(snapshot, selectors);
    let mut hints = HashSet::new();
    all.retain(|i| i.hint.is_empty() || hints.insert(i.hint));
    all
}

/// The complete X509-SVID state for a caller; `NoIdentity` when it has none.
pub(crate) fn x509_svid_response(
    snapshot: &Snapshot,
    selectors: &[Selector],
) -> Result<X509svidResponse, WorkloadError> {
    let svids = identities(snapshot, selectors);
    if svids.is_empty() {
        return Err(WorkloadError::NoIdentity);
    }
    let bundle = concat(&snapshot.bundle.x509_authorities);
    let federated_bundles = federated(snapshot, &svids, |b| concat(&b.x509_authorities));
    Ok(X509svidResponse {
        svids: svids
            .into_iter()
            .map(|svid| X509svid {
                spiffe_id: svid.spiffe_id.to_string(),
                x509_svid: concat(&svid.chain),
                x509_svid_key: svid.key_pkcs8.clone(),
                bundle: bundle.clone(),
                hint: svid.hint.clone(),
            })
            .collect(),
        crl: Vec::new(),
        federated_bundles,
    })
}

/// Our X.509 bundle and, for callers with an identity, the bundles of the
/// trust domains their entries federate with, keyed by trust domain ID.
/// Without an identity: `NoIdentity`, unless
/// `allow_unauthenticated` (then our own bundle only, as SPIRE's
/// `allow_unauthenticated_verifiers` does).
pub(crate) fn x509_bundles_response(
    snapshot: &Snapshot,
    selectors: &[Selector],
    allow_unauthenticated: bool,
) -> Result<X509BundlesResponse, WorkloadError> {
    let svids = identities(snapshot, selectors);
    if svids.is_empty() && !allow_unauthenticated {
        return Err(WorkloadError::NoIdentity);
    }
    let mut bundles = federated(snapshot, &svids, |b| concat(&b.x509_authorities));
    bundles.insert(
        snapshot.bundle.trust_domain.id_string(),
        concat(&snapshot.bundle.x509_authorities),
    );
    Ok(X509BundlesResponse {
        crl: Vec::new(),
        bundles,
    })
}

/// Like [`x509_bundles_response`], with JWKS documents of JWT authorities.
pub(crate) fn jwt_bundles_response(
    snapshot: &Snapshot,
    selectors: &[Selector],
    allow_unauthenticated: bool,
) -> Result<JwtBundlesResponse, WorkloadError> {
    let svids = identities(snapshot, selectors);
    if svids.is_empty() && !allow_unauthenticated {
        return Err(WorkloadError::NoIdentity);
    }
    let mut bundles = federated(snapshot, &svids, standard_jwks);
    bundles.insert(
        snapshot.bundle.trust_domain.id_string(),
        standard_jwks(&snapshot.bundle),
    );
    Ok(JwtBundlesResponse { bundles })
}

/// The claims `ValidateJWTSVID` returns. For a token of a foreign trust
/// domain only `sub`, `exp`, `aud` and the operator-allowed claims survive,
/// so a foreign issuer cannot smuggle claims the caller might trust. A
/// single-string `aud` is returned as a one-element list, as SPIRE does.
pub(crate) fn validated_claims(
    claims: &Map<String, Value>,
    foreign: bool,
    allowed_foreign: &BTreeSet<String>,
) -> prost_types::Struct {
    let fields = claims
        .iter()
        .filter(|(name, _)| {
            !foreign
                || matches!(name.as_str(), "sub" | "exp" | "aud")
                || allowed_foreign.contains(name.as_str())
        })
        .map(|(name, value)| {
            let value = match (name.as_str(), value) {
                ("aud", Value::String(one)) => Value::Array(vec![Value::String(one.clone())]),
                _ => value.clone(),
            };
            (name.clone(), json_to_proto(&value))
        })
        .collect();
    prost_types::Struct { fields }
}

/// A JSON value as a `google.protobuf.Value` (numbers become doubles, as in
/// protobuf's JSON mapping).
pub(crate) fn json_to_proto(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(prost_types::NullValue::NullValue.into()),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_proto).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_proto(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Concatenated DER, the Workload API's encoding of certificate lists.
pub(crate) fn concat(ders: &[Vec<u8>]) -> Vec<u8> {
    ders.concat()
}

/// The bundles a caller holding `svids` verifies with: ours first, then
/// those of the trust domains its entries federate with (SPIRE's
/// `getWorkloadBundles`).
pub(crate) fn caller_bundles<'a>(
    snapshot: &'a Snapshot,
    svids: &[&X509SvidRecord],
) -> Vec<&'a Bundle> {
    std::iter::once(&*snapshot.bundle)
        .chain(
            snapshot
                .federated_bundles_for(svids)
                .into_iter()
                .map(|b| &**b),
        )
        .collect()
}

/// The federated bundles of the trust domains `svids` federate with,
/// encoded and keyed by trust domain ID.
fn federated(
    snapshot: &Snapshot,
    svids: &[&X509SvidRecord],
    encode: impl Fn(&Bundle) -> Vec<u8>,
) -> HashMap<String, Vec<u8>> {
    snapshot
        .federated_bundles_for(svids)
        .into_iter()
        .map(|b| (b.trust_domain.id_string(), encode(b)))
        .collect()
}
