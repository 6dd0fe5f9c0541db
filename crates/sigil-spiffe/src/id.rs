//! SPIFFE IDs and trust domain names, parsed exactly per the SPIFFE-ID
//! specification (section 2): `spiffe://<trust-domain><path>`.
//!
//! Parsing never percent-decodes or normalises; a string either is a SPIFFE ID
//! as written or is rejected with the first rule it breaks.

use std::fmt;
use std::str::FromStr;

/// The URI scheme prefix every SPIFFE ID starts with (lowercase only).
pub const SCHEME_PREFIX: &str = "spiffe://";
/// Maximum length of a trust domain name, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// Maximum length of a whole SPIFFE ID URI, in bytes.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// Why a string is not a valid SPIFFE ID or trust domain.
///
/// Each variant names the first rule of SPIFFE-ID section 2 that the input
/// breaks, scanning left to right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The input was empty.
    #[error("cannot be empty")]
    Empty,
    /// The ID does not start with `spiffe://` (the scheme is matched exactly,
    /// lowercase, as go-spiffe and SPIRE do).
    #[error("scheme is missing or invalid: a SPIFFE ID starts with \"spiffe://\"")]
    WrongScheme,
    /// The trust domain part is missing.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// A character outside `[a-z0-9.-_]` in the trust domain (uppercase
    /// letters included: trust domain names are lowercase).
    #[error(
        "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores (found {0:?})"
    )]
    BadTrustDomainChar(char),
    /// A character outside `[a-zA-Z0-9.-_]` in a path segment.
    #[error(
        "path segment characters are limited to letters, numbers, dots, dashes, and underscores (found {0:?})"
    )]
    BadPathSegmentChar(char),
    /// `//` inside the path.
    #[error("path cannot contain empty segments")]
    EmptySegment,
    /// A `.` or `..` path segment.
    #[error("path cannot contain dot segments")]
    DotSegment,
    /// A trailing `/`.
    #[error("path cannot have a trailing slash")]
    TrailingSlash,
    /// A path that does not start with `/`.
    #[error("path must have a leading slash")]
    NoLeadingSlash,
    /// Trust domain longer than 255 bytes.
    #[error("trust domain is too long ({0} bytes, at most 255)")]
    TrustDomainTooLong(usize),
    /// Whole ID longer than 2048 bytes.
    #[error("SPIFFE ID is too long ({0} bytes, at most 2048)")]
    IdTooLong(usize),
    /// A `:` in the authority: a port (`spiffe://example.org:8443`).
    #[error("trust domain cannot have a port")]
    PortNotAllowed,
    /// An `@` in the authority: userinfo (`spiffe://user@example.org`).
    #[error("trust domain cannot have userinfo (\"user@\")")]
    UserInfoNotAllowed,
    /// A `?`: a URI query component.
    #[error("SPIFFE ID cannot have a query component (\"?\")")]
    QueryNotAllowed,
    /// A `#`: a URI fragment component.
    #[error("SPIFFE ID cannot have a fragment component (\"#\")")]
    FragmentNotAllowed,
    /// A `%`: SPIFFE IDs are never percent-encoded.
    #[error("SPIFFE ID cannot contain percent-encoded characters (\"%\")")]
    PercentEncoded,
}

/// A trust domain name, such as `example.org`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain name (`example.org`). A full SPIFFE ID
    /// (`spiffe://example.org/...`) is also accepted and its trust domain taken,
    /// as SPIRE does for configuration values.
    pub fn new(s: &str) -> Result<Self, IdError> {
        // Like go-spiffe, anything with a scheme separator is read as an ID;
        // `:/` rather than `://` so `spiffe:/example.org` gets the scheme error.
        if s.contains(":/") {
            return Ok(SpiffeId::parse(s)?.trust_domain());
        }
        validate_trust_domain(s)?;
        Ok(TrustDomain(s.to_owned()))
    }

    /// The bare name, e.g. `example.org`.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://example.org`.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            uri: format!("{SCHEME_PREFIX}{}", self.0),
            td_len: self.0.len(),
        }
    }

    /// `spiffe://<td>` as a string.
    pub fn id_string(&self) -> String {
        format!("{SCHEME_PREFIX}{}", self.0)
    }

    /// Builds an ID in this trust domain from a path (`/ns/web`); the path must
    /// follow the same rules as in [`SpiffeId::parse`].
    pub fn id_with_path(&self, path: &str) -> Result<SpiffeId, IdError> {
        // Checked on its own first: `ns` glued to `example.org` would read as
        // the different, valid trust domain `example.orgns`.
        validate_path(path)?;
        SpiffeId::parse(&format!("{SCHEME_PREFIX}{}{}", self.0, path))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrustDomain::new(s)
    }
}

/// A SPIFFE ID, such as `spiffe://example.org/ns/prod/sa/web`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: String,
    td_len: usize,
}

impl SpiffeId {
    /// Parses a SPIFFE ID URI. The string is kept exactly as written: it is
    /// never decoded or normalised, so `to_string()` gives back the input.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        let rest = s.strip_prefix(SCHEME_PREFIX).ok_or(IdError::WrongScheme)?;
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(IdError::IdTooLong(s.len()));
        }
        // RFC 3986: the authority ends at the first `/`, `?` or `#`.
        let td_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (td, after) = rest.split_at(td_end);
        validate_trust_domain(td)?;
        if after.starts_with('?') {
            return Err(IdError::QueryNotAllowed);
        }
        if after.starts_with('#') {
            return Err(IdError::FragmentNotAllowed);
        }
        validate_path(after)?;
        Ok(SpiffeId {
            uri: s.to_owned(),
            td_len: td.len(),
        })
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().to_owned())
    }

    /// The trust domain name as a string slice.
    pub fn trust_domain_name(&self) -> &str {
        &self.uri[SCHEME_PREFIX.len()..SCHEME_PREFIX.len() + self.td_len]
    }

    /// The path, including its leading `/`, or `""` for a trust domain ID.
    pub fn path(&self) -> &str {
        &self.uri[SCHEME_PREFIX.len() + self.td_len..]
    }

    /// True when this ID has no path (it names the trust domain itself).
    pub fn is_trust_domain_id(&self) -> bool {
        self.path().is_empty()
    }

    /// True when this ID is a member of `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_name() == td.name()
    }

    /// The full URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.uri
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.uri)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SpiffeId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for TrustDomain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TrustDomain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TrustDomain::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Validates a path as it appears after the trust domain: empty, or one or more
/// `/segment` parts.
pub fn validate_path(path: &str) -> Result<(), IdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(body) = path.strip_prefix('/') else {
        return Err(IdError::NoLeadingSlash);
    };
    let mut segments = body.split('/').peekable();
    while let Some(seg) = segments.next() {
        if seg.is_empty() {
            return Err(if segments.peek().is_none() {
                IdError::TrailingSlash
            } else {
                IdError::EmptySegment
            });
        }
        if seg == "." || seg == ".." {
            return Err(IdError::DotSegment);
        }
        if let Some(c) = seg.chars().find(|c| !is_path_char(*c)) {
            return Err(match c {
                '?' => IdError::QueryNotAllowed,
                '#' => IdError::FragmentNotAllowed,
                '%' => IdError::PercentEncoded,
                other => IdError::BadPathSegmentChar(other),
            });
        }
    }
    Ok(())
}

/// Validates a bare trust domain name (the authority of a SPIFFE ID).
fn validate_trust_domain(td: &str) -> Result<(), IdError> {
    if td.is_empty() {
        return Err(IdError::MissingTrustDomain);
    }
    // Userinfo is checked first so that `user:pass@host` reports the
    // userinfo rather than a port.
    if td.contains('@') {
        return Err(IdError::UserInfoNotAllowed);
    }
    if let Some(c) = td.chars().find(|c| !is_trust_domain_char(*c)) {
        return Err(match c {
            ':' => IdError::PortNotAllowed,
            '%' => IdError::PercentEncoded,
            other => IdError::BadTrustDomainChar(other),
        });
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdError::TrustDomainTooLong(td.len()));
    }
    Ok(())
}

fn is_trust_domain_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_td(len: usize) -> String {
        "a".repeat(len)
    }

    /// `spiffe://example.org/` followed by `x`s up to `len` bytes in total.
    fn long_id(len: usize) -> String {
        let prefix = "spiffe://example.org/";
        format!("{prefix}{}", "x".repeat(len - prefix.len()))
    }

    #[test]
    fn spiffe_id_table_follows_spec_rules() {
        let td_255 = format!("spiffe://{}/x", long_td(255));
        let td_256 = format!("spiffe://{}/x", long_td(256));
        let id_2048 = long_id(2048);
        let id_2049 = long_id(2049);
        let cases: Vec<(&str, Result<(), IdError>)> = vec![
            ("spiffe://example.org", Ok(())),
            ("spiffe://example.org/path", Ok(())),
            ("spiffe://example.org/ns/prod/sa/web", Ok(())),
            ("spiffe://trust_domain-1.example.org/a", Ok(())),
            ("spiffe://1.2.3.4/ipv4-is-a-name", Ok(())),
            ("spiffe://example.org/MiXeD.Case-_09", Ok(())),
            ("spiffe://example.org/...", Ok(())),
            ("spiffe://example.org/.hidden/..x", Ok(())),
            ("spiffe://.", Ok(())),
            (&td_255, Ok(())),
            (&id_2048, Ok(())),
            ("", Err(IdError::Empty)),
            ("example.org/x", Err(IdError::WrongScheme)),
            ("SPIFFE://example.org/x", Err(IdError::WrongScheme)),
            ("Spiffe://example.org/x", Err(IdError::WrongScheme)),
            ("https://example.org/x", Err(IdError::WrongScheme)),
            ("spiffe:/example.org/x", Err(IdError::WrongScheme)),
            ("spiffe://", Err(IdError::MissingTrustDomain)),
            ("spiffe:///x", Err(IdError::MissingTrustDomain)),
            ("spiffe://td:8080/x", Err(IdError::PortNotAllowed)),
            ("spiffe://td:/x", Err(IdError::PortNotAllowed)),
            ("spiffe://user@td/x", Err(IdError::UserInfoNotAllowed)),
            ("spiffe://user:pw@td/x", Err(IdError::UserInfoNotAllowed)),
            ("spiffe://td/x?q", Err(IdError::QueryNotAllowed)),
            ("spiffe://td?q", Err(IdError::QueryNotAllowed)),
            ("spiffe://td/x#f", Err(IdError::FragmentNotAllowed)),
            ("spiffe://td#f", Err(IdError::FragmentNotAllowed)),
            ("spiffe://td/%41", Err(IdError::PercentEncoded)),
            ("spiffe://t%41d/x", Err(IdError::PercentEncoded)),
            (
                "spiffe://Example.org/x",
                Err(IdError::BadTrustDomainChar('E')),
            ),
            (
                "spiffe://exa mple.org",
                Err(IdError::BadTrustDomainChar(' ')),
            ),
            ("spiffe://[::1]/x", Err(IdError::BadTrustDomainChar('['))),
            (
                "spiffe://exämple.org",
                Err(IdError::BadTrustDomainChar('ä')),
            ),
            ("spiffe://example.org/", Err(IdError::TrailingSlash)),
            ("spiffe://example.org/a/", Err(IdError::TrailingSlash)),
            ("spiffe://example.org//a", Err(IdError::EmptySegment)),
            ("spiffe://example.org/a//b", Err(IdError::EmptySegment)),
            ("spiffe://example.org/./a", Err(IdError::DotSegment)),
            ("spiffe://example.org/a/..", Err(IdError::DotSegment)),
            (
                "spiffe://example.org/a b",
                Err(IdError::BadPathSegmentChar(' ')),
            ),
            (
                "spiffe://example.org/é",
                Err(IdError::BadPathSegmentChar('é')),
            ),
            (
                "spiffe://example.org/a:b",
                Err(IdError::BadPathSegmentChar(':')),
            ),
            (&td_256, Err(IdError::TrustDomainTooLong(256))),
            (&id_2049, Err(IdError::IdTooLong(2049))),
        ];
        for (input, want) in cases {
            let got = SpiffeId::parse(input).map(|id| {
                assert_eq!(id.as_str(), input, "parse must keep the input verbatim");
            });
            assert_eq!(got, want, "SpiffeId::parse({input:?})");
        }
    }

    #[test]
    fn trust_domain_table_follows_spec_rules() {
        let td_255 = long_td(255);
        let td_256 = long_td(256);
        let cases: Vec<(&str, Result<&str, IdError>)> = vec![
            ("example.org", Ok("example.org")),
            ("a", Ok("a")),
            ("1.2.3.4", Ok("1.2.3.4")),
            ("td_with-chars.1", Ok("td_with-chars.1")),
            ("spiffe://example.org", Ok("example.org")),
            ("spiffe://example.org/workload", Ok("example.org")),
            (&td_255, Ok(&td_255)),
            ("", Err(IdError::MissingTrustDomain)),
            ("spiffe://", Err(IdError::MissingTrustDomain)),
            ("Example.org", Err(IdError::BadTrustDomainChar('E'))),
            ("example.org/path", Err(IdError::BadTrustDomainChar('/'))),
            ("[::1]", Err(IdError::BadTrustDomainChar('['))),
            ("example.org:8080", Err(IdError::PortNotAllowed)),
            ("user@example.org", Err(IdError::UserInfoNotAllowed)),
            ("exa%41mple.org", Err(IdError::PercentEncoded)),
            (
                "spiffe://Example.org",
                Err(IdError::BadTrustDomainChar('E')),
            ),
            ("spiffe:/example.org", Err(IdError::WrongScheme)),
            ("SPIFFE://example.org", Err(IdError::WrongScheme)),
            ("spiffe://example.org:443", Err(IdError::PortNotAllowed)),
            (&td_256, Err(IdError::TrustDomainTooLong(256))),
        ];
        for (input, want) in cases {
            let got = TrustDomain::new(input);
            assert_eq!(
                got.as_ref().map(TrustDomain::name).map_err(Clone::clone),
                want,
                "TrustDomain::new({input:?})"
            );
        }
    }

    #[test]
    fn validate_path_accepts_empty_and_rejects_relative() {
        assert_eq!(validate_path(""), Ok(()));
        assert_eq!(validate_path("/a/b"), Ok(()));
        assert_eq!(validate_path("a/b"), Err(IdError::NoLeadingSlash));
        assert_eq!(validate_path("/"), Err(IdError::TrailingSlash));
        assert_eq!(validate_path("/a?b"), Err(IdError::QueryNotAllowed));
    }

    #[test]
    fn id_accessors_split_trust_domain_and_path() {
        let id = SpiffeId::parse("spiffe://example.org/ns/web").unwrap();
        assert_eq!(id.trust_domain_name(), "example.org");
        assert_eq!(id.path(), "/ns/web");
        assert!(!id.is_trust_domain_id());
        let td = TrustDomain::new("example.org").unwrap();
        assert!(id.is_member_of(&td));
        assert_eq!(td.id().as_str(), "spiffe://example.org");
        assert!(td.id().is_trust_domain_id());
        assert_eq!(td.id_with_path("/ns/web").unwrap(), id);
        assert_eq!(td.id_with_path("ns"), Err(IdError::NoLeadingSlash));
        let other = TrustDomain::new("example.com").unwrap();
        assert!(!id.is_member_of(&other));
    }

    #[test]
    fn serde_rejects_invalid_ids() {
        let id: SpiffeId = serde_json::from_str("\"spiffe://example.org/a\"").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"spiffe://example.org/a\""
        );
        assert!(serde_json::from_str::<SpiffeId>("\"spiffe://example.org/\"").is_err());
        assert!(serde_json::from_str::<TrustDomain>("\"Example.org\"").is_err());
    }

    #[test]
    fn error_messages_name_the_broken_rule() {
        assert_eq!(
            SpiffeId::parse("spiffe://td:1/x").unwrap_err().to_string(),
            "trust domain cannot have a port"
        );
        assert_eq!(
            SpiffeId::parse("spiffe://Td/x").unwrap_err().to_string(),
            "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores (found 'T')"
        );
    }

    #[test]
    fn round_trip_holds_over_generated_strings() {
        for s in crate::fuzzing::generated_id_strings(4000) {
            crate::fuzzing::check_id_round_trip(&s);
        }
    }
}
