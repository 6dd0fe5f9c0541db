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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The input was empty.
    #[error("cannot be empty")]
    Empty,
    /// The ID does not start with `spiffe://` (scheme is case sensitive).
    #[error("scheme is missing or invalid: a SPIFFE ID starts with \"spiffe://\"")]
    WrongScheme,
    /// The trust domain part is missing.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// A character outside `[a-z0-9.-_]` in the trust domain.
    #[error(
        "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores (found {0:?})"
    )]
    BadTrustDomainChar(char),
    /// A character outside `[a-zA-Z0-9.-_]` in a path segment.
    #[error(
        "path segment characters are limited to letters, numbers, dots, dashes, and underscores (found {0:?})"
    )]
    BadPathSegmentChar(char),
    /// `//` inside the path, or a trailing `/`.
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
}

/// A trust domain name, such as `example.org`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain name (`example.org`). A full SPIFFE ID
    /// (`spiffe://example.org/...`) is also accepted and its trust domain taken,
    /// as SPIRE does for configuration values.
    pub fn new(s: &str) -> Result<Self, IdError> {
        if s.starts_with(SCHEME_PREFIX) || s.contains(":/") {
            return Ok(SpiffeId::parse(s)?.trust_domain().clone());
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
    /// Parses a SPIFFE ID URI.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        let rest = s.strip_prefix(SCHEME_PREFIX).ok_or(IdError::WrongScheme)?;
        let td_end = rest.find('/').unwrap_or(rest.len());
        let td = &rest[..td_end];
        if td.is_empty() {
            return Err(IdError::MissingTrustDomain);
        }
        validate_trust_domain(td)?;
        validate_path(&rest[td_end..])?;
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(IdError::IdTooLong(s.len()));
        }
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

fn validate_trust_domain(td: &str) -> Result<(), IdError> {
    if td.is_empty() {
        return Err(IdError::MissingTrustDomain);
    }
    if let Some(c) = td
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        return Err(IdError::BadTrustDomainChar(c));
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdError::TrustDomainTooLong(td.len()));
    }
    Ok(())
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
    if body.is_empty() {
        return Err(IdError::TrailingSlash);
    }
    let segments: Vec<&str> = body.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            return Err(if i + 1 == segments.len() {
                IdError::TrailingSlash
            } else {
                IdError::EmptySegment
            });
        }
        if *seg == "." || *seg == ".." {
            return Err(IdError::DotSegment);
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_'))
        {
            return Err(IdError::BadPathSegmentChar(c));
        }
    }
    Ok(())
}
