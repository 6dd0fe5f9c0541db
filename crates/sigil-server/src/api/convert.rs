//! Conversions between the wire types of `spire.api.types` and sigil's
//! model, with SPIRE's validation rules and messages. Input from the wire is
//! parsed here once; nothing past this module re-checks strings.

use sigil_datastore::{AttestedNode, MatchMode, RegistrationEntry};
use sigil_proto::spire::api::types as pb;
use sigil_spiffe::{Selector, SpiffeId, TrustDomain};

/// Longest hint SPIRE accepts.
pub const HINT_MAX_LEN: usize = 1024;

/// A wire SPIFFE ID from ours.
pub fn id_to_proto(id: &SpiffeId) -> pb::Spiffeid {
    pb::Spiffeid {
        trust_domain: id.trust_domain_name().to_owned(),
        path: id.path().to_owned(),
    }
}

/// Parses a wire SPIFFE ID (`trust_domain` + `path`).
pub fn id_from_proto(id: Option<&pb::Spiffeid>) -> Result<SpiffeId, String> {
    let id = id.ok_or("request must specify SPIFFE ID")?;
    let td = TrustDomain::new(&id.trust_domain)
        .map_err(|e| format!("trust domain {:?} is invalid: {e}", id.trust_domain))?;
    if !id.path.is_empty() && !id.path.starts_with('/') {
        return Err(format!("path {:?} must start with \"/\"", id.path));
    }
    td.id_with_path(&id.path)
        .map_err(|e| format!("path {:?} is invalid: {e}", id.path))
}

/// A SPIFFE ID that must be a member of `td` with a non-empty path.
pub fn member_id_from_proto(
    td: &TrustDomain,
    id: Option<&pb::Spiffeid>,
) -> Result<SpiffeId, String> {
    let id = id_from_proto(id)?;
    if !id.is_member_of(td) {
        return Err(format!("\"{id}\" is not a member of trust domain \"{td}\""));
    }
    if id.is_trust_domain_id() {
        return Err(format!(
            "\"{id}\" is not a member of trust domain \"{td}\"; path is empty"
        ));
    }
    Ok(id)
}

/// A SPIFFE ID that must name a workload of `td`: a member, outside the
/// reserved `/spire` namespace.
pub fn workload_id_from_proto(
    td: &TrustDomain,
    id: Option<&pb::Spiffeid>,
) -> Result<SpiffeId, String> {
    let id = id_from_proto(id)?;
    if !id.is_member_of(td) {
        return Err(format!("\"{id}\" is not a member of trust domain \"{td}\""));
    }
    if id.is_trust_domain_id() {
        return Err(format!(
            "\"{id}\" is not a workload in trust domain \"{td}\"; path is empty"
        ));
    }
    if is_reserved_path(id.path()) {
        return Err(format!(
            "\"{id}\" is not a workload in trust domain \"{td}\"; path is in the reserved namespace"
        ));
    }
    Ok(id)
}

/// `/spire` and everything under it belongs to the server and agents.
pub fn is_reserved_path(path: &str) -> bool {
    path == "/spire" || path.starts_with("/spire/")
}

/// Parses wire selectors with SPIRE's rules.
pub fn selectors_from_proto(sels: &[pb::Selector]) -> Result<Vec<Selector>, String> {
    sels.iter()
        .map(|s| {
            if s.r#type.is_empty() {
                return Err("missing selector type".to_owned());
            }
            if s.r#type.contains(':') {
                return Err("selector type contains ':'".to_owned());
            }
            if s.value.is_empty() {
                return Err("missing selector value".to_owned());
            }
            Selector::new(&s.r#type, &s.value).map_err(|e| e.to_string())
        })
        .collect()
}

/// Wire selectors from ours.
pub fn selectors_to_proto(sels: &[Selector]) -> Vec<pb::Selector> {
    sels.iter()
        .map(|s| pb::Selector {
            r#type: s.kind().to_owned(),
            value: s.value().to_owned(),
        })
        .collect()
}

/// A match behaviour from the wire enum value.
pub fn match_from_proto(m: i32) -> Result<MatchMode, String> {
    match pb::selector_match::MatchBehavior::try_from(m) {
        Ok(pb::selector_match::MatchBehavior::MatchExact) => Ok(MatchMode::Exact),
        Ok(pb::selector_match::MatchBehavior::MatchSubset) => Ok(MatchMode::Subset),
        Ok(pb::selector_match::MatchBehavior::MatchSuperset) => Ok(MatchMode::Superset),
        Ok(pb::selector_match::MatchBehavior::MatchAny) => Ok(MatchMode::Any),
        Err(_) => Err(format!("unknown match behavior {m}")),
    }
}

/// Checks a DNS name the way SPIRE does (ASCII labels, optional leading
/// `*.` wildcard, no trailing dot).
pub fn validate_dns_name(name: &str) -> Result<(), String> {
    if !name.is_ascii() {
        return Err(format!("invalid DNS name {name:?}: name must be ASCII"));
    }
    let body = match name.matches('*').count() {
        0 => name,
        1 => name.strip_prefix("*.").ok_or_else(|| {
            format!("invalid DNS name {name:?}: wildcard must be the first label")
        })?,
        _ => return Err(format!("invalid DNS name {name:?}: too many wildcards")),
    };
    if body.trim().is_empty() {
        return Err("invalid DNS name: empty domain".into());
    }
    if body.ends_with('.') {
        return Err(format!("invalid DNS name {name:?}: domain ends with a dot"));
    }
    if body.len() > 253 {
        return Err(format!("invalid DNS name {name:?}: too long"));
    }
    for label in body.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(format!("invalid DNS name {name:?}: bad label {label:?}"));
        }
    }
    Ok(())
}

/// A registration entry from the wire, validated as SPIRE validates it.
/// `mask` limits which fields are read (for updates); `None` reads all.
pub fn entry_from_proto(
    td: &TrustDomain,
    e: &pb::Entry,
    mask: Option<&pb::EntryMask>,
) -> Result<RegistrationEntry, String> {
    let all = all_entry_mask();
    let m = mask.unwrap_or(&all);
    let placeholder = td.id();
    let parent_id = if m.parent_id {
        member_id_from_proto(td, e.parent_id.as_ref())
            .map_err(|e| format!("invalid parent ID: {e}"))?
    } else {
        placeholder.clone()
    };
    let spiffe_id = if m.spiffe_id {
        workload_id_from_proto(td, e.spiffe_id.as_ref())
            .map_err(|e| format!("invalid spiffe ID: {e}"))?
    } else {
        placeholder
    };
    let mut dns_names = Vec::new();
    if m.dns_names {
        for n in &e.dns_names {
            validate_dns_name(n)?;
            dns_names.push(n.clone());
        }
    }
    let mut federates_with = Vec::new();
    if m.federates_with {
        for t in &e.federates_with {
            federates_with.push(
                TrustDomain::new(t)
                    .map_err(|err| format!("invalid federated trust domain: {err}"))?,
            );
        }
    }
    let selectors = if m.selectors {
        if e.selectors.is_empty() {
            return Err("selector list is empty".into());
        }
        selectors_from_proto(&e.selectors)?
    } else {
        Vec::new()
    };
    if m.hint && e.hint.len() > HINT_MAX_LEN {
        return Err(format!(
            "hint is too long, max length is {HINT_MAX_LEN} characters"
        ));
    }
    if m.x509_svid_ttl && e.x509_svid_ttl < 0 {
        return Err("invalid X509-SVID TTL: must not be negative".into());
    }
    if m.jwt_svid_ttl && e.jwt_svid_ttl < 0 {
        return Err("invalid JWT-SVID TTL: must not be negative".into());
    }
    Ok(RegistrationEntry {
        id: e.id.clone(),
        spiffe_id,
        parent_id,
        selectors,
        x509_svid_ttl: if m.x509_svid_ttl { e.x509_svid_ttl } else { 0 },
        jwt_svid_ttl: if m.jwt_svid_ttl { e.jwt_svid_ttl } else { 0 },
        dns_names,
        federates_with,
        admin: m.admin && e.admin,
        downstream: m.downstream && e.downstream,
        expires_at: if m.expires_at { e.expires_at } else { 0 },
        hint: if m.hint {
            e.hint.clone()
        } else {
            String::new()
        },
        store_svid: m.store_svid && e.store_svid,
        revision_number: if m.revision_number {
            e.revision_number
        } else {
            0
        },
        created_at: 0,
    })
}

/// A wire entry from ours, with only the fields `mask` selects (all when `None`).
/// `id` is always set, as in SPIRE.
pub fn entry_to_proto(e: &RegistrationEntry, mask: Option<&pb::EntryMask>) -> pb::Entry {
    let all = all_entry_mask();
    let m = mask.unwrap_or(&all);
    pb::Entry {
        id: e.id.clone(),
        spiffe_id: m.spiffe_id.then(|| id_to_proto(&e.spiffe_id)),
        parent_id: m.parent_id.then(|| id_to_proto(&e.parent_id)),
        selectors: if m.selectors {
            selectors_to_proto(&e.selectors)
        } else {
            Vec::new()
        },
        x509_svid_ttl: if m.x509_svid_ttl { e.x509_svid_ttl } else { 0 },
        federates_with: if m.federates_with {
            e.federates_with
                .iter()
                .map(|t| t.name().to_owned())
                .collect()
        } else {
            Vec::new()
        },
        admin: m.admin && e.admin,
        downstream: m.downstream && e.downstream,
        expires_at: if m.expires_at { e.expires_at } else { 0 },
        dns_names: if m.dns_names {
            e.dns_names.clone()
        } else {
            Vec::new()
        },
        revision_number: if m.revision_number {
            e.revision_number
        } else {
            0
        },
        store_svid: m.store_svid && e.store_svid,
        jwt_svid_ttl: if m.jwt_svid_ttl { e.jwt_svid_ttl } else { 0 },
        hint: if m.hint {
            e.hint.clone()
        } else {
            String::new()
        },
        created_at: if m.created_at { e.created_at } else { 0 },
        additional_attributes: None,
    }
}

/// An entry mask with every field set.
pub fn all_entry_mask() -> pb::EntryMask {
    pb::EntryMask {
        spiffe_id: true,
        parent_id: true,
        selectors: true,
        x509_svid_ttl: true,
        federates_with: true,
        admin: true,
        downstream: true,
        expires_at: true,
        dns_names: true,
        revision_number: true,
        store_svid: true,
        jwt_svid_ttl: true,
        hint: true,
        created_at: true,
        additional_attributes: true,
    }
}

/// A wire agent from an attested node, masked like SPIRE (`id` always set).
pub fn agent_to_proto(n: &AttestedNode, mask: Option<&pb::AgentMask>) -> pb::Agent {
    let all = pb::AgentMask {
        attestation_type: true,
        x509svid_serial_number: true,
        x509svid_expires_at: true,
        selectors: true,
        banned: true,
        can_reattest: true,
        agent_version: true,
    };
    let m = mask.unwrap_or(&all);
    pb::Agent {
        id: Some(id_to_proto(&n.spiffe_id)),
        attestation_type: if m.attestation_type {
            n.attestation_data_type.clone()
        } else {
            String::new()
        },
        x509svid_serial_number: if m.x509svid_serial_number {
            serial_to_decimal(&n.cert_serial_number)
        } else {
            String::new()
        },
        x509svid_expires_at: if m.x509svid_expires_at {
            n.cert_not_after
        } else {
            0
        },
        selectors: if m.selectors {
            selectors_to_proto(&n.selectors)
        } else {
            Vec::new()
        },
        banned: m.banned && n.is_banned(),
        can_reattest: m.can_reattest && n.can_reattest,
        agent_version: String::new(),
    }
}

/// SPIRE shows serial numbers in decimal; we store lowercase hex.
pub fn serial_to_decimal(hex: &str) -> String {
    if hex.is_empty() {
        return String::new();
    }
    // Big-number conversion by repeated division on base-10^9 limbs.
    let mut digits: Vec<u32> = Vec::new(); // little-endian base 1e9
    for c in hex.chars() {
        let Some(v) = c.to_digit(16) else {
            return hex.to_owned();
        };
        let mut carry = u64::from(v);
        for d in digits.iter_mut() {
            let x = u64::from(*d) * 16 + carry;
            *d = (x % 1_000_000_000) as u32;
            carry = x / 1_000_000_000;
        }
        while carry > 0 {
            digits.push((carry % 1_000_000_000) as u32);
            carry /= 1_000_000_000;
        }
    }
    if digits.is_empty() {
        return "0".into();
    }
    let mut out = String::new();
    for (i, d) in digits.iter().rev().enumerate() {
        if i == 0 {
            out.push_str(&d.to_string());
        } else {
            out.push_str(&format!("{d:09}"));
        }
    }
    out
}

/// A wire bundle from ours.
pub fn bundle_to_proto(b: &sigil_spiffe::Bundle) -> pb::Bundle {
    pb::Bundle {
        trust_domain: b.trust_domain.name().to_owned(),
        x509_authorities: b
            .x509_authorities
            .iter()
            .map(|der| pb::X509Certificate {
                asn1: der.clone(),
                tainted: false,
            })
            .collect(),
        jwt_authorities: b
            .jwt_authorities
            .iter()
            .map(|a| pb::JwtKey {
                public_key: a.public_key_der.clone(),
                key_id: a.key_id.clone(),
                expires_at: a.expires_at.unwrap_or(0),
                tainted: false,
            })
            .collect(),
        refresh_hint: b.refresh_hint_seconds.unwrap_or(0),
        sequence_number: b.sequence_number,
        wit_authorities: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    fn pid(td: &str, path: &str) -> Option<pb::Spiffeid> {
        Some(pb::Spiffeid {
            trust_domain: td.into(),
            path: path.into(),
        })
    }

    fn entry() -> pb::Entry {
        pb::Entry {
            spiffe_id: pid("example.org", "/web"),
            parent_id: pid("example.org", "/spire/agent/join_token/abc"),
            selectors: vec![pb::Selector {
                r#type: "unix".into(),
                value: "uid:1000".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn valid_entry_converts() {
        let e = entry_from_proto(&td(), &entry(), None).unwrap();
        assert_eq!(e.spiffe_id.as_str(), "spiffe://example.org/web");
        assert_eq!(e.selectors[0].to_string(), "unix:uid:1000");
        let back = entry_to_proto(&e, None);
        assert_eq!(back.spiffe_id, entry().spiffe_id);
    }

    #[test]
    fn entry_rules_give_spire_messages() {
        let mut e = entry();
        e.spiffe_id = pid("other.org", "/web");
        assert_eq!(
            entry_from_proto(&td(), &e, None).unwrap_err(),
            "invalid spiffe ID: \"spiffe://other.org/web\" is not a member of trust domain \"example.org\""
        );
        let mut e = entry();
        e.spiffe_id = pid("example.org", "/spire/x");
        assert!(
            entry_from_proto(&td(), &e, None)
                .unwrap_err()
                .contains("reserved namespace")
        );
        let mut e = entry();
        e.spiffe_id = pid("example.org", "/a//b");
        assert!(
            entry_from_proto(&td(), &e, None)
                .unwrap_err()
                .contains("empty segments")
        );
        let mut e = entry();
        e.selectors.clear();
        assert_eq!(
            entry_from_proto(&td(), &e, None).unwrap_err(),
            "selector list is empty"
        );
        let mut e = entry();
        e.selectors[0].r#type = "un:ix".into();
        assert_eq!(
            entry_from_proto(&td(), &e, None).unwrap_err(),
            "selector type contains ':'"
        );
        let mut e = entry();
        e.selectors[0].value = String::new();
        assert_eq!(
            entry_from_proto(&td(), &e, None).unwrap_err(),
            "missing selector value"
        );
        let mut e = entry();
        e.dns_names = vec!["bad_name".into()];
        assert!(
            entry_from_proto(&td(), &e, None)
                .unwrap_err()
                .contains("invalid DNS name")
        );
        let mut e = entry();
        e.hint = "x".repeat(1025);
        assert!(
            entry_from_proto(&td(), &e, None)
                .unwrap_err()
                .contains("hint is too long")
        );
        let mut e = entry();
        e.parent_id = None;
        assert_eq!(
            entry_from_proto(&td(), &e, None).unwrap_err(),
            "invalid parent ID: request must specify SPIFFE ID"
        );
    }

    #[test]
    fn serials_print_in_decimal_like_spire() {
        assert_eq!(serial_to_decimal("ff"), "255");
        assert_eq!(serial_to_decimal("0100000000"), "4294967296");
        assert_eq!(
            serial_to_decimal("ffffffffffffffffffffffffffffffff"),
            "340282366920938463463374607431768211455"
        );
    }

    #[test]
    fn dns_names_follow_spire_rules() {
        validate_dns_name("example.org").unwrap();
        validate_dns_name("*.example.org").unwrap();
        assert!(validate_dns_name("a.*.org").is_err());
        assert!(validate_dns_name("example.org.").is_err());
        assert!(validate_dns_name("-a.org").is_err());
        assert!(validate_dns_name("").is_err());
    }
}
