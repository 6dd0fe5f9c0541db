//! Conversions between the wire types of `spire.api.types` and sigil's
//! model, with SPIRE's validation rules and messages. Input from the wire is
//! parsed here once; nothing past this module re-checks strings.

use sigil_datastore::{AttestedNode, MatchMode, RegistrationEntry};
use sigil_proto::spire::api::types as pb;
use sigil_spiffe::{IdError, Selector, SelectorError, SpiffeId, TrustDomain};

/// Longest hint SPIRE accepts.
pub const HINT_MAX_LEN: usize = 1024;

/// A wire SPIFFE ID from ours.
pub fn id_to_proto(id: &SpiffeId) -> pb::Spiffeid {
    pb::Spiffeid {
        trust_domain: id.trust_domain_name().to_owned(),
        path: id.path().to_owned(),
    }
}

/// Why a wire value is not a valid sigil value. The texts are SPIRE's: the
/// handlers put them into `InvalidArgument` statuses that clients read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The SPIFFE ID field is absent.
    #[error("request must specify SPIFFE ID")]
    MissingId,
    /// The SPIFFE ID's trust domain does not parse.
    #[error("trust domain {name:?} is invalid: {source}")]
    InvalidIdTrustDomain {
        /// The wire trust domain.
        name: String,
        /// Why it does not parse.
        source: IdError,
    },
    /// A non-empty path without a leading `/`.
    #[error("path {0:?} must start with \"/\"")]
    PathNotAbsolute(String),
    /// The path breaks the SPIFFE ID rules.
    #[error("path {path:?} is invalid: {source}")]
    InvalidPath {
        /// The wire path.
        path: String,
        /// The broken rule.
        source: IdError,
    },
    /// The ID is outside the server's trust domain.
    #[error("\"{id}\" is not a member of trust domain \"{td}\"")]
    NotMember {
        /// The ID.
        id: SpiffeId,
        /// The server's trust domain.
        td: TrustDomain,
    },
    /// A member ID was required but the ID is the trust domain itself.
    #[error("\"{id}\" is not a member of trust domain \"{td}\"; path is empty")]
    MemberPathEmpty {
        /// The ID.
        id: SpiffeId,
        /// The server's trust domain.
        td: TrustDomain,
    },
    /// A workload ID was required but the ID is the trust domain itself.
    #[error("\"{id}\" is not a workload in trust domain \"{td}\"; path is empty")]
    WorkloadPathEmpty {
        /// The ID.
        id: SpiffeId,
        /// The server's trust domain.
        td: TrustDomain,
    },
    /// A workload ID under the reserved `/spire` namespace.
    #[error(
        "\"{id}\" is not a workload in trust domain \"{td}\"; path is in the reserved namespace"
    )]
    ReservedPath {
        /// The ID.
        id: SpiffeId,
        /// The server's trust domain.
        td: TrustDomain,
    },
    /// A selector with an empty type.
    #[error("missing selector type")]
    MissingSelectorType,
    /// A selector type with a `:` in it.
    #[error("selector type contains ':'")]
    SelectorTypeColon,
    /// A selector with an empty value.
    #[error("missing selector value")]
    MissingSelectorValue,
    /// A selector the model rejects.
    #[error(transparent)]
    InvalidSelector(#[from] SelectorError),
    /// A match behaviour value outside the wire enum.
    #[error("unknown match behavior {0}")]
    UnknownMatchBehavior(i32),
    /// A DNS name with non-ASCII characters.
    #[error("invalid DNS name {0:?}: name must be ASCII")]
    DnsNotAscii(String),
    /// A DNS name with a `*` that is not a leading `*.` label.
    #[error("invalid DNS name {0:?}: wildcard must be the first label")]
    DnsWildcardNotFirst(String),
    /// A DNS name with more than one `*`.
    #[error("invalid DNS name {0:?}: too many wildcards")]
    DnsTooManyWildcards(String),
    /// A DNS name with nothing but an optional wildcard.
    #[error("invalid DNS name: empty domain")]
    DnsEmpty,
    /// A DNS name ending with `.`.
    #[error("invalid DNS name {0:?}: domain ends with a dot")]
    DnsTrailingDot(String),
    /// A DNS name longer than 253 characters.
    #[error("invalid DNS name {0:?}: too long")]
    DnsTooLong(String),
    /// A DNS name with an empty, over-long or malformed label.
    #[error("invalid DNS name {name:?}: bad label {label:?}")]
    DnsBadLabel {
        /// The name.
        name: String,
        /// The offending label.
        label: String,
    },
    /// The entry's parent ID is not valid.
    #[error("invalid parent ID: {0}")]
    EntryParentId(Box<ConvertError>),
    /// The entry's SPIFFE ID is not valid.
    #[error("invalid spiffe ID: {0}")]
    EntrySpiffeId(Box<ConvertError>),
    /// A federated trust domain of the entry does not parse.
    #[error("invalid federated trust domain: {0}")]
    EntryFederatesWith(IdError),
    /// The entry has no selectors.
    #[error("selector list is empty")]
    EntryNoSelectors,
    /// The entry's hint is longer than [`HINT_MAX_LEN`].
    #[error("hint is too long, max length is {HINT_MAX_LEN} characters")]
    EntryHintTooLong,
    /// A negative X509-SVID TTL.
    #[error("invalid X509-SVID TTL: must not be negative")]
    EntryNegativeX509Ttl,
    /// A negative JWT-SVID TTL.
    #[error("invalid JWT-SVID TTL: must not be negative")]
    EntryNegativeJwtTtl,
}

/// Lets a handler pass the error straight to `Status::invalid_argument` as
/// its message (the gRPC status carries text, not a type).
impl From<ConvertError> for String {
    fn from(e: ConvertError) -> String {
        e.to_string()
    }
}

/// Parses a wire SPIFFE ID (`trust_domain` + `path`).
pub fn id_from_proto(id: Option<&pb::Spiffeid>) -> Result<SpiffeId, ConvertError> {
    let id = id.ok_or(ConvertError::MissingId)?;
    let td = TrustDomain::new(&id.trust_domain).map_err(|source| {
        ConvertError::InvalidIdTrustDomain {
            name: id.trust_domain.clone(),
            source,
        }
    })?;
    if !id.path.is_empty() && !id.path.starts_with('/') {
        return Err(ConvertError::PathNotAbsolute(id.path.clone()));
    }
    td.id_with_path(&id.path)
        .map_err(|source| ConvertError::InvalidPath {
            path: id.path.clone(),
            source,
        })
}

/// A SPIFFE ID that must be a member of `td` with a non-empty path.
pub fn member_id_from_proto(
    td: &TrustDomain,
    id: Option<&pb::Spiffeid>,
) -> Result<SpiffeId, ConvertError> {
    let id = id_from_proto(id)?;
    if !id.is_member_of(td) {
        return Err(ConvertError::NotMember { id, td: td.clone() });
    }
    if id.is_trust_domain_id() {
        return Err(ConvertError::MemberPathEmpty { id, td: td.clone() });
    }
    Ok(id)
}

/// A SPIFFE ID that must name a workload of `td`: a member, outside the
/// reserved `/spire` namespace.
pub fn workload_id_from_proto(
    td: &TrustDomain,
    id: Option<&pb::Spiffeid>,
) -> Result<SpiffeId, ConvertError> {
    let id = id_from_proto(id)?;
    if !id.is_member_of(td) {
        return Err(ConvertError::NotMember { id, td: td.clone() });
    }
    if id.is_trust_domain_id() {
        return Err(ConvertError::WorkloadPathEmpty { id, td: td.clone() });
    }
    if is_reserved_path(id.path()) {
        return Err(ConvertError::ReservedPath { id, td: td.clone() });
    }
    Ok(id)
}

/// `/spire` and everything under it belongs to the server and agents.
pub fn is_reserved_path(path: &str) -> bool {
    path == "/spire" || path.starts_with("/spire/")
}

/// Parses wire selectors with SPIRE's rules.
pub fn selectors_from_proto(sels: &[pb::Selector]) -> Result<Vec<Selector>, ConvertError> {
    sels.iter()
        .map(|s| {
            if s.r#type.is_empty() {
                return Err(ConvertError::MissingSelectorType);
            }
            if s.r#type.contains(':') {
                return Err(ConvertError::SelectorTypeColon);
            }
            if s.value.is_empty() {
                return Err(ConvertError::MissingSelectorValue);
            }
            Ok(Selector::new(&s.r#type, &s.value)?)
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
pub fn match_from_proto(m: i32) -> Result<MatchMode, ConvertError> {
    match pb::selector_match::MatchBehavior::try_from(m) {
        Ok(pb::selector_match::MatchBehavior::MatchExact) => Ok(MatchMode::Exact),
        Ok(pb::selector_match::MatchBehavior::MatchSubset) => Ok(MatchMode::Subset),
        Ok(pb::selector_match::MatchBehavior::MatchSuperset) => Ok(MatchMode::Superset),
        Ok(pb::selector_match::MatchBehavior::MatchAny) => Ok(MatchMode::Any),
        Err(_) => Err(ConvertError::UnknownMatchBehavior(m)),
    }
}

/// Checks a DNS name the way SPIRE does (ASCII labels, optional leading
/// `*.` wildcard, no trailing dot).
pub fn validate_dns_name(name: &str) -> Result<(), ConvertError> {
    if !name.is_ascii() {
        return Err(ConvertError::DnsNotAscii(name.to_owned()));
    }
    let body = match name.matches('*').count() {
        0 => name,
        1 => name
            .strip_prefix("*.")
            .ok_or_else(|| ConvertError::DnsWildcardNotFirst(name.to_owned()))?,
        _ => return Err(ConvertError::DnsTooManyWildcards(name.to_owned())),
    };
    if body.trim().is_empty() {
        return Err(ConvertError::DnsEmpty);
    }
    if body.ends_with('.') {
        return Err(ConvertError::DnsTrailingDot(name.to_owned()));
    }
    if body.len() > 253 {
        return Err(ConvertError::DnsTooLong(name.to_owned()));
    }
    for label in body.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(ConvertError::DnsBadLabel {
                name: name.to_owned(),
                label: label.to_owned(),
            });
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
) -> Result<RegistrationEntry, ConvertError> {
    let all = all_entry_mask();
    let m = mask.unwrap_or(&all);
    let placeholder = td.id();
    let parent_id = if m.parent_id {
        member_id_from_proto(td, e.parent_id.as_ref())
            .map_err(|e| ConvertError::EntryParentId(Box::new(e)))?
    } else {
        placeholder.clone()
    };
    let spiffe_id = if m.spiffe_id {
        workload_id_from_proto(td, e.spiffe_id.as_ref())
            .map_err(|e| ConvertError::EntrySpiffeId(Box::new(e)))?
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
            federates_with.push(TrustDomain::new(t).map_err(ConvertError::EntryFederatesWith)?);
        }
    }
    let selectors = if m.selectors {
        if e.selectors.is_empty() {
            return Err(ConvertError::EntryNoSelectors);
        }
        selectors_from_proto(&e.selectors)?
    } else {
        Vec::new()
    };
    if m.hint && e.hint.len() > HINT_MAX_LEN {
        return Err(ConvertError::EntryHintTooLong);
    }
    if m.x509_svid_ttl && e.x509_svid_ttl < 0 {
        return Err(ConvertError::EntryNegativeX509Ttl);
    }
    if m.jwt_svid_ttl && e.jwt_svid_ttl < 0 {
        return Err(ConvertError::EntryNegativeJwtTtl);
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
            entry_from_proto(&td(), &e, None).unwrap_err().to_string(),
            "invalid spiffe ID: \"spiffe://other.org/web\" is not a member of trust domain \"example.org\""
        );
        let mut e = entry();
        e.spiffe_id = pid("example.org", "/spire/x");
        assert!(
            entry_from_proto(&td(), &e, None)
                .unwrap_err()
                .to_string()
                .contains("reserved namespace")
        );
        let mut e = entry();
        e.spiffe_id = pid("example.org", "/a//b");
        assert!(
            entry_from_proto(&td(), &e, None)
                .unwrap_err()
                .to_string()
                .contains("empty segments")
        );
        let mut e = entry();
        e.selectors.clear();
        assert_eq!(
            entry_from_proto(&td(), &e, None).unwrap_err().to_string(),
            "selector list is empty"
        );
        let mut e = entry();
        e.selectors[0].r#type = "un:ix".into();
        assert_eq!(
            entry_from_proto(&td(), &e, None).unwrap_err().to_string(),
            "selector type contains ':'"
        );
        let mut e = entry();
        e.selectors[0].value = String::new();
        assert_eq!(
            entry_from_proto(&td(), &e, None).unwrap_err().to_string(),
            "missing selector value"
        );
        let mut e = entry();
        e.dns_names = vec!["bad_name".into()];
        assert!(
            entry_from_proto(&td(), &e, None)
                .unwrap_err()
                .to_string()
                .contains("invalid DNS name")
        );
        let mut e = entry();
        e.hint = "x".repeat(1025);
        assert!(
            entry_from_proto(&td(), &e, None)
                .unwrap_err()
                .to_string()
                .contains("hint is too long")
        );
        let mut e = entry();
        e.parent_id = None;
        assert_eq!(
            entry_from_proto(&td(), &e, None).unwrap_err().to_string(),
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
