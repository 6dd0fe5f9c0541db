//! JWT-SVIDs (JWT-SVID specification): reading a compact JWS and checking the
//! JOSE header and claim rules, with the signature check delegated to a
//! [`JwtSignatureVerifier`].
//!
//! This module owns the order and precision of the checks; it holds no keys and
//! does no cryptography, and it reads the clock only through the `now_unix`
//! argument.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::{Bundle, IdError, SpiffeId, TrustDomain};

/// Checks a JWS signature; implemented by sigil-crypto so this crate stays free
/// of cryptographic code.
pub trait JwtSignatureVerifier {
    /// Verifies `signature` (as it appears, base64url-decoded, in the token)
    /// over `signing_input` (`header.payload`) with the SPKI DER key, for the
    /// JOSE algorithm `alg` (`ES256`, `RS256`, ...).
    fn verify(
        &self,
        alg: &str,
        public_key_der: &[u8],
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError>;
}

/// Why a [`JwtSignatureVerifier`] rejected a signature: the verifier's own
/// error, boxed because this crate cannot name the cryptographic crate's type;
/// its message reaches [`JwtSvidError::InvalidSignature`] unchanged.
pub type SignatureError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The `alg` values a JWT-SVID may use (JWT-SVID section 2.1); any other,
/// `none` and the HMAC family included, is rejected.
pub const ALLOWED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512",
];

/// How far in the future an `nbf` claim may be and still be accepted, in
/// seconds; go-jose (and so go-spiffe and SPIRE) allow the same.
pub const NOT_BEFORE_LEEWAY_SECONDS: i64 = 60;

/// Why a token is not an acceptable JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSvidError {
    /// Not three dot-separated parts.
    #[error("token is not a compact JWS: expected 3 dot-separated parts, found {0}")]
    Malformed(usize),
    /// A part is not unpadded base64url.
    #[error("token {0} is not valid unpadded base64url")]
    InvalidBase64(&'static str),
    /// The header or payload is not a JSON object.
    #[error("token {part} is not a JSON object: {reason}")]
    InvalidJson {
        /// `header` or `payload`.
        part: &'static str,
        /// What the JSON parser reported.
        reason: String,
    },
    /// No `alg` header.
    #[error("token header has no \"alg\"")]
    MissingAlgorithm,
    /// An `alg` outside [`ALLOWED_ALGORITHMS`].
    #[error(
        "token algorithm {0:?} is not allowed for JWT-SVIDs (allowed: RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512)"
    )]
    UnsupportedAlgorithm(String),
    /// A `typ` header other than `JWT` or `JOSE`.
    #[error("token header \"typ\" is {0:?}; a JWT-SVID's typ must be \"JWT\" or \"JOSE\" if set")]
    InvalidType(String),
    /// A `crit` header: extensions we cannot honour (RFC 7515 section 4.1.11).
    #[error("token header has \"crit\" extensions, which JWT-SVIDs do not use")]
    CriticalHeader,
    /// A header member of the wrong JSON type.
    #[error("token header {member:?} must be {expected}")]
    InvalidHeader {
        /// The header name.
        member: &'static str,
        /// What it must be, in words.
        expected: &'static str,
    },
    /// No `sub` claim.
    #[error("token has no \"sub\" claim")]
    MissingSubject,
    /// A `sub` that is not a SPIFFE ID.
    #[error("token \"sub\" claim {subject:?} is not a valid SPIFFE ID: {source}")]
    InvalidSubject {
        /// The claim value.
        subject: String,
        /// The SPIFFE ID rule it breaks.
        source: IdError,
    },
    /// No `aud` claim.
    #[error("token has no \"aud\" claim")]
    MissingAudience,
    /// An `aud` claim that is an empty array.
    #[error("token \"aud\" claim is empty")]
    EmptyAudience,
    /// No `exp` claim.
    #[error("token has no \"exp\" claim")]
    MissingExpiry,
    /// A registered claim of the wrong JSON type.
    #[error("token claim {claim:?} must be {expected}")]
    InvalidClaim {
        /// The claim name.
        claim: &'static str,
        /// What it must be, in words.
        expected: &'static str,
    },
    /// The subject is in another trust domain than the bundle's.
    #[error("token subject is in trust domain {subject} but the bundle is for {bundle}")]
    TrustDomainMismatch {
        /// The trust domain of `sub`.
        subject: TrustDomain,
        /// The trust domain of the bundle used.
        bundle: TrustDomain,
    },
    /// No `kid` header, so no key to check the signature with.
    #[error("token header has no \"kid\"; the signing key cannot be identified")]
    MissingKeyId,
    /// A `kid` the bundle has no authority for.
    #[error("no JWT authority with key ID {kid:?} in the bundle for {trust_domain}")]
    UnknownKeyId {
        /// The token's key ID.
        kid: String,
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
    },
    /// The signature does not verify.
    #[error("token signature is invalid: {0}")]
    InvalidSignature(String),
    /// `exp` is not after now.
    #[error("token has expired (exp {expiry}, now {now})")]
    Expired {
        /// The `exp` claim.
        expiry: i64,
        /// The time used to validate.
        now: i64,
    },
    /// `nbf` is later than now (plus [`NOT_BEFORE_LEEWAY_SECONDS`]).
    #[error("token is not valid yet (nbf {not_before}, now {now})")]
    NotYetValid {
        /// The `nbf` claim.
        not_before: i64,
        /// The time used to validate.
        now: i64,
    },
    /// Validation was asked for with no expected audience.
    #[error("no expected audience given; a JWT-SVID is validated against at least one")]
    NoExpectedAudience,
    /// None of the expected audiences is in `aud`.
    #[error("token audience {actual:?} contains none of the expected audiences {expected:?}")]
    AudienceMismatch {
        /// The audiences asked for.
        expected: Vec<String>,
        /// The token's `aud`.
        actual: Vec<String>,
    },
}

/// The JOSE header of a JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtHeader {
    /// `alg`, one of [`ALLOWED_ALGORITHMS`].
    pub alg: String,
    /// `kid`, if present.
    pub kid: Option<String>,
    /// `typ`, if present (`JWT` or `JOSE`).
    pub typ: Option<String>,
}

/// A JWT-SVID whose structure has been checked (and, from
/// [`JwtSvid::validate`], its signature and claims too).
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSvid {
    token: String,
    header: JwtHeader,
    spiffe_id: SpiffeId,
    audience: Vec<String>,
    expiry: i64,
    issued_at: Option<i64>,
    not_before: Option<i64>,
    claims: Map<String, Value>,
}

impl JwtSvid {
    /// Reads a token without checking its signature, expiry or audience: for
    /// a holder reading its own tokens, never for authenticating a peer.
    /// Checks the header (`alg`, `typ`, no `crit`) and that `sub` is a SPIFFE
    /// ID and `aud` and `exp` are present.
    pub fn parse_insecure(token: &str) -> Result<JwtSvid, JwtSvidError> {
        Ok(Parsed::read(token)?.svid)
    }

    /// Validates a token as a JWT-SVID of `bundle`'s trust domain, checking in
    /// order: the structure (as [`JwtSvid::parse_insecure`]), that `sub` is in
    /// the bundle's trust domain, that `kid` names one of its JWT authorities,
    /// the signature (through `verifier`), that `exp` is after `now_unix` (and
    /// `nbf`, if present, not after it by more than
    /// [`NOT_BEFORE_LEEWAY_SECONDS`]), and that `aud` holds at least one of
    /// `audience`.
    pub fn validate(
        token: &str,
        bundle: &Bundle,
        audience: &[String],
        now_unix: i64,
        verifier: &dyn JwtSignatureVerifier,
    ) -> Result<JwtSvid, JwtSvidError> {
        let parsed = Parsed::read(token)?;
        let svid = parsed.svid;
        if !svid.spiffe_id.is_member_of(&bundle.trust_domain) {
            return Err(JwtSvidError::TrustDomainMismatch {
                subject: svid.spiffe_id.trust_domain(),
                bundle: bundle.trust_domain.clone(),
            });
        }
        let kid = svid
            .header
            .kid
            .as_deref()
            .ok_or(JwtSvidError::MissingKeyId)?;
        let authority =
            bundle
                .find_jwt_authority(kid)
                .ok_or_else(|| JwtSvidError::UnknownKeyId {
                    kid: kid.to_owned(),
                    trust_domain: bundle.trust_domain.clone(),
                })?;
        if parsed.signature.is_empty() {
            return Err(JwtSvidError::InvalidSignature("signature is empty".into()));
        }
        verifier
            .verify(
                &svid.header.alg,
                &authority.public_key_der,
                parsed.signing_input.as_bytes(),
                &parsed.signature,
            )
            .map_err(|e| JwtSvidError::InvalidSignature(e.to_string()))?;
        if svid.expiry <= now_unix {
            return Err(JwtSvidError::Expired {
                expiry: svid.expiry,
                now: now_unix,
            });
        }
        if let Some(not_before) = svid.not_before
            && not_before > now_unix.saturating_add(NOT_BEFORE_LEEWAY_SECONDS)
        {
            return Err(JwtSvidError::NotYetValid {
                not_before,
                now: now_unix,
            });
        }
        if audience.is_empty() {
            return Err(JwtSvidError::NoExpectedAudience);
        }
        if !audience.iter().any(|want| svid.audience.contains(want)) {
            return Err(JwtSvidError::AudienceMismatch {
                expected: audience.to_vec(),
                actual: svid.audience,
            });
        }
        Ok(svid)
    }

    /// The SPIFFE ID in `sub`.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The `aud` values (a single string is read as a one-element list).
    pub fn audience(&self) -> &[String] {
        &self.audience
    }

    /// `exp`, unix seconds.
    pub fn expiry(&self) -> i64 {
        self.expiry
    }

    /// `iat`, unix seconds, if present.
    pub fn issued_at(&self) -> Option<i64> {
        self.issued_at
    }

    /// Every claim of the payload, registered and private.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The JOSE header.
    pub fn header(&self) -> &JwtHeader {
        &self.header
    }

    /// The token exactly as given.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// A token split and read, with what signature checking needs kept aside.
struct Parsed<'a> {
    svid: JwtSvid,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl<'a> Parsed<'a> {
    fn read(token: &'a str) -> Result<Self, JwtSvidError> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header_b64, payload_b64, signature_b64] = parts[..] else {
            return Err(JwtSvidError::Malformed(parts.len()));
        };
        let header_json = decode_part(header_b64, "header")?;
        let header = read_header(&json_object(&header_json, "header")?)?;
        let claims = json_object(&decode_part(payload_b64, "payload")?, "payload")?;
        let signature = decode_part(signature_b64, "signature")?;

        let subject = match claims.get("sub") {
            None => return Err(JwtSvidError::MissingSubject),
            Some(Value::String(s)) => s,
            Some(_) => return Err(invalid_claim("sub", "a string")),
        };
        let spiffe_id =
            SpiffeId::parse(subject).map_err(|source| JwtSvidError::InvalidSubject {
                subject: subject.clone(),
                source,
            })?;
        let audience = read_audience(&claims)?;
        let expiry = numeric_date(&claims, "exp")?.ok_or(JwtSvidError::MissingExpiry)?;
        let issued_at = numeric_date(&claims, "iat")?;
        let not_before = numeric_date(&claims, "nbf")?;

        let signing_input_len = header_b64.len() + 1 + payload_b64.len();
        Ok(Parsed {
            svid: JwtSvid {
                token: token.to_owned(),
                header,
                spiffe_id,
                audience,
                expiry,
                issued_at,
                not_before,
                claims,
            },
            signing_input: &token[..signing_input_len],
            signature,
        })
    }
}

fn decode_part(part: &str, name: &'static str) -> Result<Vec<u8>, JwtSvidError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtSvidError::InvalidBase64(name))
}

fn json_object(bytes: &[u8], part: &'static str) -> Result<Map<String, Value>, JwtSvidError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(JwtSvidError::InvalidJson {
            part,
            reason: "not an object".into(),
        }),
        Err(e) => Err(JwtSvidError::InvalidJson {
            part,
            reason: e.to_string(),
        }),
    }
}

fn read_header(header: &Map<String, Value>) -> Result<JwtHeader, JwtSvidError> {
    let string = |member: &'static str| match header.get(member) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(JwtSvidError::InvalidHeader {
            member,
            expected: "a string",
        }),
    };
    let alg = string("alg")?.ok_or(JwtSvidError::MissingAlgorithm)?;
    if !ALLOWED_ALGORITHMS.contains(&alg.as_str()) {
        return Err(JwtSvidError::UnsupportedAlgorithm(alg));
    }
    let typ = string("typ")?;
    if let Some(typ) = &typ
        && typ != "JWT"
        && typ != "JOSE"
    {
        return Err(JwtSvidError::InvalidType(typ.clone()));
    }
    if header.contains_key("crit") {
        return Err(JwtSvidError::CriticalHeader);
    }
    let kid = string("kid")?;
    Ok(JwtHeader { alg, kid, typ })
}

fn read_audience(claims: &Map<String, Value>) -> Result<Vec<String>, JwtSvidError> {
    let expected = "a string or an array of strings";
    match claims.get("aud") {
        None | Some(Value::Null) => Err(JwtSvidError::MissingAudience),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(values)) => {
            if values.is_empty() {
                return Err(JwtSvidError::EmptyAudience);
            }
            values
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(invalid_claim("aud", expected)),
                })
                .collect()
        }
        Some(_) => Err(invalid_claim("aud", expected)),
    }
}

/// A NumericDate claim (RFC 7519 section 2): a JSON number of seconds, which
/// may have a fraction (dropped here).
fn numeric_date(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<i64>, JwtSvidError> {
    let expected = "a number of seconds since the epoch";
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(invalid_claim(claim, expected));
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    match n.as_f64() {
        // The range check keeps the cast exact rather than saturating.
        Some(f) if (-9.0e18..=9.0e18).contains(&f) => Ok(Some(f.floor() as i64)),
        _ => Err(invalid_claim(claim, expected)),
    }
}

fn invalid_claim(claim: &'static str, expected: &'static str) -> JwtSvidError {
    JwtSvidError::InvalidClaim { claim, expected }
}

#[cfg(test)]
mod tests;
