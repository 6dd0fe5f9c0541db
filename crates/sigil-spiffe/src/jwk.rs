//! Public keys as JSON Web Keys (RFC 7517, RFC 7518 section 6, RFC 8037) and
//! their DER SubjectPublicKeyInfo form, converted both ways.
//!
//! This module owns the key shapes SPIFFE bundles carry: EC (P-256, P-384,
//! P-521), RSA and, for X.509 authorities, Ed25519. It checks structure only
//! (member types, encodings, coordinate sizes); whether an EC point is on its
//! curve is left to the cryptographic code that uses the key. It never accepts
//! private key members: a bundle that carries them is refused, not trimmed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Why a JWK or a SubjectPublicKeyInfo could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwkError {
    /// A member the key type requires is absent.
    #[error("JWK has no {0:?} member")]
    MissingMember(&'static str),
    /// A member has the wrong JSON type.
    #[error("JWK member {member:?} must be {expected}")]
    InvalidMember {
        /// The member name.
        member: &'static str,
        /// What it must be, in words.
        expected: &'static str,
    },
    /// A binary member is not unpadded base64url (RFC 7515 section 2).
    #[error("JWK member {0:?} is not unpadded base64url")]
    InvalidBase64Url(&'static str),
    /// A `kty` (or SPKI algorithm) this module does not handle.
    #[error("unsupported key type {0:?} (supported: EC, RSA, OKP)")]
    UnsupportedKeyType(String),
    /// A `crv` (or SPKI named curve) this module does not handle.
    #[error("unsupported curve {0:?} (supported: P-256, P-384, P-521, Ed25519)")]
    UnsupportedCurve(String),
    /// An EC coordinate or Ed25519 key of the wrong size for its curve.
    #[error("JWK member {member:?} must be {expected} bytes for {curve}, found {found}")]
    WrongCoordinateLength {
        /// The member name (`x` or `y`).
        member: &'static str,
        /// The curve name.
        curve: &'static str,
        /// The size the curve requires.
        expected: usize,
        /// The decoded size.
        found: usize,
    },
    /// An RSA modulus or exponent that is zero or empty.
    #[error("RSA parameter {0:?} is empty or zero")]
    EmptyRsaParameter(&'static str),
    /// The JWK carries private key material (`d`, `p`, `q`, ...).
    #[error("JWK carries private key material (member {0:?}); only public keys are allowed")]
    PrivateKeyMaterial(&'static str),
    /// The DER is not a SubjectPublicKeyInfo.
    #[error("public key is not a valid DER SubjectPublicKeyInfo: {0}")]
    InvalidSpki(String),
    /// An EC public key that is not an uncompressed point.
    #[error("EC public key is not an uncompressed point of the expected size")]
    UnsupportedPointFormat,
}

/// A NIST curve usable in an EC JWK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// P-256 (secp256r1), for ES256.
    P256,
    /// P-384 (secp384r1), for ES384.
    P384,
    /// P-521 (secp521r1), for ES512.
    P521,
}

impl EcCurve {
    /// The JWK `crv` name (`P-256`).
    pub fn jwk_name(self) -> &'static str {
        match self {
            EcCurve::P256 => "P-256",
            EcCurve::P384 => "P-384",
            EcCurve::P521 => "P-521",
        }
    }

    /// Bytes in one coordinate (RFC 7518 section 6.2.1.2: always full size).
    pub fn coordinate_len(self) -> usize {
        match self {
            EcCurve::P256 => 32,
            EcCurve::P384 => 48,
            EcCurve::P521 => 66,
        }
    }

    fn from_jwk_name(name: &str) -> Option<Self> {
        match name {
            "P-256" => Some(EcCurve::P256),
            "P-384" => Some(EcCurve::P384),
            "P-521" => Some(EcCurve::P521),
            _ => None,
        }
    }

    fn oid(self) -> &'static [u8] {
        match self {
            EcCurve::P256 => OID_P256,
            EcCurve::P384 => OID_P384,
            EcCurve::P521 => OID_P521,
        }
    }

    fn from_oid(oid: &[u8]) -> Option<Self> {
        [EcCurve::P256, EcCurve::P384, EcCurve::P521]
            .into_iter()
            .find(|c| c.oid() == oid)
    }
}

/// A public key in one of the shapes a SPIFFE bundle JWK can hold. Integers
/// are big-endian without leading zero bytes; coordinates are full size.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwkPublicKey {
    /// `kty: EC`.
    Ec {
        /// The curve.
        curve: EcCurve,
        /// X coordinate.
        x: Vec<u8>,
        /// Y coordinate.
        y: Vec<u8>,
    },
    /// `kty: RSA`.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// `kty: OKP`, `crv: Ed25519` (RFC 8037).
    Ed25519 {
        /// The 32-byte public key.
        x: Vec<u8>,
    },
}

/// `kty` values this module understands; anything else is an unknown key
/// type, which SPIFFE bundle consumers must skip.
pub const SUPPORTED_KEY_TYPES: &[&str] = &["EC", "RSA", "OKP"];

impl JwkPublicKey {
    /// The JWK `kty` (`EC`, `RSA` or `OKP`).
    pub fn kty(&self) -> &'static str {
        match self {
            JwkPublicKey::Ec { .. } => "EC",
            JwkPublicKey::Rsa { .. } => "RSA",
            JwkPublicKey::Ed25519 { .. } => "OKP",
        }
    }

    /// Reads the key members of a JWK object. Members other than the key's own
    /// (`use`, `kid`, `x5c`, ...) are not looked at, except that private key
    /// members are refused.
    pub fn from_jwk(jwk: &Map<String, Value>) -> Result<Self, JwkError> {
        if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
            return Err(JwkError::PrivateKeyMaterial(member));
        }
        let kty = str_member(jwk, "kty")?.ok_or(JwkError::MissingMember("kty"))?;
        match kty {
            "EC" => {
                let crv = str_member(jwk, "crv")?.ok_or(JwkError::MissingMember("crv"))?;
                let curve = EcCurve::from_jwk_name(crv)
                    .ok_or_else(|| JwkError::UnsupportedCurve(crv.to_owned()))?;
                let x = fixed_member(jwk, "x", curve.jwk_name(), curve.coordinate_len())?;
                let y = fixed_member(jwk, "y", curve.jwk_name(), curve.coordinate_len())?;
                Ok(JwkPublicKey::Ec { curve, x, y })
            }
            "RSA" => {
                let n = strip_leading_zeros(&bytes_member(jwk, "n")?);
                if n.is_empty() {
                    return Err(JwkError::EmptyRsaParameter("n"));
                }
                let e = strip_leading_zeros(&bytes_member(jwk, "e")?);
                if e.is_empty() {
                    return Err(JwkError::EmptyRsaParameter("e"));
                }
                Ok(JwkPublicKey::Rsa { n, e })
            }
            "OKP" => {
                let crv = str_member(jwk, "crv")?.ok_or(JwkError::MissingMember("crv"))?;
                if crv != "Ed25519" {
                    return Err(JwkError::UnsupportedCurve(crv.to_owned()));
                }
                let x = fixed_member(jwk, "x", "Ed25519", ED25519_KEY_LEN)?;
                Ok(JwkPublicKey::Ed25519 { x })
            }
            other => Err(JwkError::UnsupportedKeyType(other.to_owned())),
        }
    }

    /// The key members as a JWK object (`kty`, `crv`, `x`, `y` / `n`, `e`),
    /// ready for the caller to add `kid`, `use` or `alg`.
    pub fn to_jwk(&self) -> Map<String, Value> {
        let members = self.members();
        let mut map = Map::new();
        map.insert("kty".into(), Value::from(members.kty));
        let optional = [
            ("crv", members.crv.map(str::to_owned)),
            ("x", members.x),
            ("y", members.y),
            ("n", members.n),
            ("e", members.e),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                map.insert(name.into(), Value::from(value));
            }
        }
        map
    }

    /// Reads a DER SubjectPublicKeyInfo (as in certificates and
    /// `JwtAuthority::public_key_der`).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, JwkError> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| JwkError::InvalidSpki(e.to_string()))?;
        if !rest.is_empty() {
            return Err(JwkError::InvalidSpki(format!(
                "{} trailing bytes after the structure",
                rest.len()
            )));
        }
        if spki.subject_public_key.unused_bits != 0 {
            return Err(JwkError::InvalidSpki(
                "public key BIT STRING has unused bits".into(),
            ));
        }
        let key_bits: &[u8] = &spki.subject_public_key.data;
        let alg = spki.algorithm.algorithm.as_bytes();
        if alg == OID_EC_PUBLIC_KEY {
            let curve_oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or_else(|| {
                    JwkError::InvalidSpki("EC key without a named curve parameter".into())
                })?;
            let curve = EcCurve::from_oid(curve_oid.as_bytes())
                .ok_or_else(|| JwkError::UnsupportedCurve(curve_oid.to_id_string()))?;
            let len = curve.coordinate_len();
            match key_bits.split_first() {
                Some((0x04, xy)) if xy.len() == 2 * len => {
                    let (x, y) = xy.split_at(len);
                    Ok(JwkPublicKey::Ec {
                        curve,
                        x: x.to_vec(),
                        y: y.to_vec(),
                    })
                }
                _ => Err(JwkError::UnsupportedPointFormat),
            }
        } else if alg == OID_RSA_ENCRYPTION {
            match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                    let n = strip_leading_zeros(rsa.modulus);
                    let e = strip_leading_zeros(rsa.exponent);
                    if n.is_empty() {
                        return Err(JwkError::EmptyRsaParameter("n"));
                    }
                    if e.is_empty() {
                        return Err(JwkError::EmptyRsaParameter("e"));
                    }
                    Ok(JwkPublicKey::Rsa { n, e })
                }
                _ => Err(JwkError::InvalidSpki("malformed RSAPublicKey".into())),
            }
        } else if alg == OID_ED25519 {
            if key_bits.len() != ED25519_KEY_LEN {
                return Err(JwkError::InvalidSpki(format!(
                    "Ed25519 key must be {ED25519_KEY_LEN} bytes, found {}",
                    key_bits.len()
                )));
            }
            Ok(JwkPublicKey::Ed25519 {
                x: key_bits.to_vec(),
            })
        } else {
            Err(JwkError::UnsupportedKeyType(
                spki.algorithm.algorithm.to_id_string(),
            ))
        }
    }

    /// Encodes the key as a DER SubjectPublicKeyInfo (RFC 5480, RFC 3279,
    /// RFC 8410), the form `JwtAuthority::public_key_der` stores.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let (algorithm, key_bits) = match self {
            JwkPublicKey::Ec { curve, x, y } => {
                let alg = [der::oid(OID_EC_PUBLIC_KEY), der::oid(curve.oid())].concat();
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                (alg, point)
            }
            JwkPublicKey::Rsa { n, e } => {
                let alg = [der::oid(OID_RSA_ENCRYPTION), der::NULL.to_vec()].concat();
                let rsa_key = der::sequence(&[der::unsigned_integer(n), der::unsigned_integer(e)]);
                (alg, rsa_key)
            }
            JwkPublicKey::Ed25519 { x } => (der::oid(OID_ED25519), x.clone()),
        };
        der::sequence(&[der::sequence(&[algorithm]), der::bit_string(&key_bits)])
    }

    /// The key members as strings, in the order go-jose writes them.
    pub(crate) fn members(&self) -> JwkMembers {
        let b64 = |b: &[u8]| Some(URL_SAFE_NO_PAD.encode(b));
        match self {
            JwkPublicKey::Ec { curve, x, y } => JwkMembers {
                kty: "EC",
                crv: Some(curve.jwk_name()),
                x: b64(x),
                y: b64(y),
                n: None,
                e: None,
            },
            JwkPublicKey::Rsa { n, e } => JwkMembers {
                kty: "RSA",
                crv: None,
                x: None,
                y: None,
                n: b64(n),
                e: b64(e),
            },
            JwkPublicKey::Ed25519 { x } => JwkMembers {
                kty: "OKP",
                crv: Some("Ed25519"),
                x: b64(x),
                y: None,
                n: None,
                e: None,
            },
        }
    }
}

/// The textual key members of a JWK, for serialisers that fix member order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JwkMembers {
    pub kty: &'static str,
    pub crv: Option<&'static str>,
    pub x: Option<String>,
    pub y: Option<String>,
    pub n: Option<String>,
    pub e: Option<String>,
}

const ED25519_KEY_LEN: usize = 32;

/// JWK members that only private keys (or symmetric keys) have.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

// OBJECT IDENTIFIER contents (without tag and length).
/// 1.2.840.10045.2.1 id-ecPublicKey
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
/// 1.2.840.10045.3.1.7 prime256v1
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// 1.3.132.0.34 secp384r1
const OID_P384: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x22];
/// 1.3.132.0.35 secp521r1
const OID_P521: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x23];
/// 1.2.840.113549.1.1.1 rsaEncryption
const OID_RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
/// 1.3.101.112 id-Ed25519
const OID_ED25519: &[u8] = &[0x2B, 0x65, 0x70];

fn str_member<'a>(
    jwk: &'a Map<String, Value>,
    member: &'static str,
) -> Result<Option<&'a str>, JwkError> {
    match jwk.get(member) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JwkError::InvalidMember {
            member,
            expected: "a string",
        }),
    }
}

fn bytes_member(jwk: &Map<String, Value>, member: &'static str) -> Result<Vec<u8>, JwkError> {
    let text = str_member(jwk, member)?.ok_or(JwkError::MissingMember(member))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JwkError::InvalidBase64Url(member))
}

fn fixed_member(
    jwk: &Map<String, Value>,
    member: &'static str,
    curve: &'static str,
    expected: usize,
) -> Result<Vec<u8>, JwkError> {
    let bytes = bytes_member(jwk, member)?;
    if bytes.len() != expected {
        return Err(JwkError::WrongCoordinateLength {
            member,
            curve,
            expected,
            found: bytes.len(),
        });
    }
    Ok(bytes)
}

fn strip_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[first..].to_vec()
}

/// The handful of DER encodings a SubjectPublicKeyInfo needs (X.690).
mod der {
    pub(super) const NULL: [u8; 2] = [0x05, 0x00];

    pub(super) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(content.len() + 6);
        out.push(tag);
        if let Ok(short) = u8::try_from(content.len())
            && short < 0x80
        {
            out.push(short);
        } else {
            let len = content.len().to_be_bytes();
            let first = len.iter().position(|b| *b != 0).unwrap_or(len.len() - 1);
            let significant = &len[first..];
            // A usize has at most 8 bytes, so the count always fits in 7 bits.
            out.push(0x80 | significant.len() as u8);
            out.extend_from_slice(significant);
        }
        out.extend_from_slice(content);
        out
    }

    pub(super) fn sequence(parts: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &parts.concat())
    }

    pub(super) fn oid(content: &[u8]) -> Vec<u8> {
        tlv(0x06, content)
    }

    pub(super) fn bit_string(bytes: &[u8]) -> Vec<u8> {
        let mut content = Vec::with_capacity(bytes.len() + 1);
        content.push(0); // no unused bits
        content.extend_from_slice(bytes);
        tlv(0x03, &content)
    }

    /// A non-negative INTEGER from big-endian magnitude bytes.
    pub(super) fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
        let first = magnitude.iter().position(|b| *b != 0);
        let mut content = Vec::with_capacity(magnitude.len() + 1);
        match first {
            None => content.push(0),
            Some(i) => {
                if magnitude[i] & 0x80 != 0 {
                    content.push(0);
                }
                content.extend_from_slice(&magnitude[i..]);
            }
        }
        tlv(0x02, &content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn as_map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("test JWK must be an object"),
        }
    }

    fn spki_of(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&rcgen::KeyPair::generate_for(alg).unwrap())
    }

    #[test]
    fn spki_jwk_spki_is_identity_for_every_supported_key() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ECDSA_P521_SHA512,
            &rcgen::PKCS_RSA_SHA256,
            &rcgen::PKCS_ED25519,
        ] {
            let spki = spki_of(alg);
            let key = JwkPublicKey::from_spki_der(&spki).unwrap();
            assert_eq!(key.to_spki_der(), spki, "{alg:?}");
            let back = JwkPublicKey::from_jwk(&key.to_jwk()).unwrap();
            assert_eq!(back, key);
        }
    }

    #[test]
    fn ec_jwk_reads_rfc7517_example() {
        // RFC 7517 appendix A.1, first key.
        let jwk = as_map(json!({
            "kty": "EC", "crv": "P-256",
            "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
            "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
            "use": "enc", "kid": "1"
        }));
        let key = JwkPublicKey::from_jwk(&jwk).unwrap();
        let spki = key.to_spki_der();
        assert_eq!(spki.len(), 91, "P-256 SPKI is always 91 bytes");
        assert_eq!(JwkPublicKey::from_spki_der(&spki).unwrap(), key);
    }

    #[test]
    fn rsa_jwk_reads_rfc7517_example_exponent() {
        let jwk = as_map(json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}));
        let key = JwkPublicKey::from_jwk(&jwk).unwrap();
        assert_eq!(
            key,
            JwkPublicKey::Rsa {
                n: vec![1, 0, 1],
                e: vec![1, 0, 1]
            }
        );
        // Leading zeros in the JWK are tolerated and dropped.
        let padded = as_map(json!({"kty": "RSA", "n": "AAEAAQ", "e": "AQAB"}));
        assert_eq!(JwkPublicKey::from_jwk(&padded).unwrap(), key);
    }

    #[test]
    fn malformed_jwks_get_precise_errors() {
        let x32 = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let x31 = URL_SAFE_NO_PAD.encode([7u8; 31]);
        let cases = [
            (json!({"crv": "P-256"}), JwkError::MissingMember("kty")),
            (
                json!({"kty": 1}),
                JwkError::InvalidMember {
                    member: "kty",
                    expected: "a string",
                },
            ),
            (
                json!({"kty": "oct", "k": "AA"}),
                JwkError::PrivateKeyMaterial("k"),
            ),
            (
                json!({"kty": "XYZ"}),
                JwkError::UnsupportedKeyType("XYZ".into()),
            ),
            (
                json!({"kty": "EC", "x": x32, "y": x32}),
                JwkError::MissingMember("crv"),
            ),
            (
                json!({"kty": "EC", "crv": "secp256k1", "x": x32, "y": x32}),
                JwkError::UnsupportedCurve("secp256k1".into()),
            ),
            (
                json!({"kty": "EC", "crv": "P-256", "y": x32}),
                JwkError::MissingMember("x"),
            ),
            (
                json!({"kty": "EC", "crv": "P-256", "x": x31, "y": x32}),
                JwkError::WrongCoordinateLength {
                    member: "x",
                    curve: "P-256",
                    expected: 32,
                    found: 31,
                },
            ),
            (
                json!({"kty": "EC", "crv": "P-256", "x": "a+b/", "y": x32}),
                JwkError::InvalidBase64Url("x"),
            ),
            (
                json!({"kty": "EC", "crv": "P-256", "x": x32, "y": x32, "d": x32}),
                JwkError::PrivateKeyMaterial("d"),
            ),
            (
                json!({"kty": "RSA", "e": "AQAB"}),
                JwkError::MissingMember("n"),
            ),
            (
                json!({"kty": "RSA", "n": "AAAA", "e": "AQAB"}),
                JwkError::EmptyRsaParameter("n"),
            ),
            (
                json!({"kty": "RSA", "n": "AQAB", "e": ""}),
                JwkError::EmptyRsaParameter("e"),
            ),
            (
                json!({"kty": "OKP", "crv": "X25519", "x": x32}),
                JwkError::UnsupportedCurve("X25519".into()),
            ),
        ];
        for (jwk, want) in cases {
            assert_eq!(
                JwkPublicKey::from_jwk(&as_map(jwk.clone())),
                Err(want),
                "{jwk}"
            );
        }
    }

    #[test]
    fn malformed_spki_is_refused() {
        assert!(matches!(
            JwkPublicKey::from_spki_der(b"not der"),
            Err(JwkError::InvalidSpki(_))
        ));
        let mut spki = spki_of(&rcgen::PKCS_ECDSA_P256_SHA256);
        spki.push(0);
        assert!(matches!(
            JwkPublicKey::from_spki_der(&spki),
            Err(JwkError::InvalidSpki(_))
        ));
    }

    #[test]
    fn compressed_ec_point_is_unsupported() {
        let key = JwkPublicKey::Ec {
            curve: EcCurve::P256,
            x: vec![1; 32],
            y: vec![2; 32],
        };
        let mut spki = key.to_spki_der();
        // Rewrite as a compressed point: 0x02 || X, with the lengths fixed up.
        let point_at = spki.len() - 65;
        spki.truncate(point_at + 33);
        spki[point_at] = 0x02;
        spki[point_at - 2] = 34; // BIT STRING length
        spki[1] -= 32; // outer SEQUENCE length
        assert_eq!(
            JwkPublicKey::from_spki_der(&spki),
            Err(JwkError::UnsupportedPointFormat)
        );
    }

    #[test]
    fn der_lengths_use_long_form_past_127_bytes() {
        assert_eq!(der::tlv(0x04, &[0; 127])[..2], [0x04, 0x7F]);
        assert_eq!(der::tlv(0x04, &[0; 128])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(der::tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2C]);
        assert_eq!(der::unsigned_integer(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der::unsigned_integer(&[0, 0, 1]), [0x02, 0x01, 0x01]);
        assert_eq!(der::unsigned_integer(&[]), [0x02, 0x01, 0x00]);
    }
}
