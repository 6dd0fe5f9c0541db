//! JWS compact serialisation for JWT-SVIDs: signing through a `&dyn Signer`
//! and verifying with aws-lc-rs for sigil-spiffe's JWT-SVID validator.
//!
//! Claim rules (expiry, audience matching, ...) belong to sigil-spiffe; this
//! module only produces and checks signatures.

use std::time::SystemTime;

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sigil_spiffe::SpiffeId;
use sigil_spiffe::svid::jwt::{JwtSignatureVerifier, SignatureError};

use crate::CryptoError;
use crate::key::{KeyType, Signer, ecdsa_der_to_fixed};
use crate::spki::{self, Curve, KeyAlg};
use crate::x509::system_time_to_unix;

/// The JOSE algorithm a key of this type signs with: `ES256`, `ES384` or `RS256`.
pub fn jwt_alg_for(key_type: KeyType) -> &'static str {
    match key_type {
        KeyType::EcP256 => "ES256",
        KeyType::EcP384 => "ES384",
        KeyType::Rsa2048 | KeyType::Rsa4096 => "RS256",
    }
}

/// Signs a JWT-SVID: header `{alg, kid, typ: "JWT"}`, claims `{sub, aud,
/// exp, iat}` plus `iss` when given. `aud` is a string for one audience and
/// an array for several, as SPIRE writes it.
pub fn sign_jwt_svid(
    signer: &dyn Signer,
    key_id: &str,
    subject: &SpiffeId,
    audience: &[String],
    issued_at: SystemTime,
    expires_at: SystemTime,
    issuer: Option<&str>,
) -> Result<String, CryptoError> {
    let aud = match audience {
        [] => return Err(CryptoError::EmptyAudience),
        [one] => json!(one),
        many => json!(many),
    };
    let iat = system_time_to_unix(issued_at)?;
    let exp = system_time_to_unix(expires_at)?;
    if exp <= iat {
        return Err(CryptoError::InvalidValidity {
            not_before: iat,
            not_after: exp,
        });
    }
    let mut claims = Map::new();
    claims.insert("sub".to_owned(), json!(subject.as_str()));
    claims.insert("aud".to_owned(), aud);
    claims.insert("exp".to_owned(), json!(exp));
    claims.insert("iat".to_owned(), json!(iat));
    if let Some(iss) = issuer {
        claims.insert("iss".to_owned(), json!(iss));
    }
    sign_jwt(signer, key_id, &claims)
}

/// Signs arbitrary claims as a compact JWS with header `{alg, kid, typ:
/// "JWT"}`; for tokens whose claims the caller composes (WIT-SVIDs, OIDC).
pub fn sign_jwt(
    signer: &dyn Signer,
    key_id: &str,
    claims: &Map<String, Value>,
) -> Result<String, CryptoError> {
    #[derive(serde::Serialize)]
    struct Header<'a> {
        alg: &'a str,
        kid: &'a str,
        typ: &'a str,
    }
    let header = Header {
        alg: jwt_alg_for(signer.key_type()),
        kid: key_id,
        typ: "JWT",
    };
    let signing_input = format!("{}.{}", b64_json(&header)?, b64_json(claims)?);
    let der_or_raw = signer.sign(signing_input.as_bytes())?;
    let sig = match signer.key_type() {
        KeyType::EcP256 => ecdsa_der_to_fixed(&der_or_raw, 32)?,
        KeyType::EcP384 => ecdsa_der_to_fixed(&der_or_raw, 48)?,
        KeyType::Rsa2048 | KeyType::Rsa4096 => der_or_raw,
    };
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// Verifies a JWS signature (`signature` as decoded from the token, so
/// fixed-width `r||s` for ECDSA) over `signing_input` with a SPKI DER key.
/// Supports RS256/384/512, PS256/384/512, ES256/384/512 and EdDSA (Ed25519);
/// the key must be of the family and curve the algorithm names.
pub fn verify_jws_signature(
    alg: &str,
    public_key_der: &[u8],
    signing_input: &[u8],
    signature: &[u8],
) -> Result<(), CryptoError> {
    let key = spki::parse_spki(public_key_der)?;
    let mismatch = || CryptoError::JwtKeyMismatch {
        alg: alg.to_owned(),
        key: key.alg.describe(),
    };
    let is_rsa = matches!(key.alg, KeyAlg::Rsa { .. });
    let verifier: &'static dyn VerificationAlgorithm = match alg {
        "RS256" if is_rsa => &signature::RSA_PKCS1_2048_8192_SHA256,
        "RS384" if is_rsa => &signature::RSA_PKCS1_2048_8192_SHA384,
        "RS512" if is_rsa => &signature::RSA_PKCS1_2048_8192_SHA512,
        "PS256" if is_rsa => &signature::RSA_PSS_2048_8192_SHA256,
        "PS384" if is_rsa => &signature::RSA_PSS_2048_8192_SHA384,
        "PS512" if is_rsa => &signature::RSA_PSS_2048_8192_SHA512,
        "ES256" if key.alg == KeyAlg::Ec(Curve::P256) => &signature::ECDSA_P256_SHA256_FIXED,
        "ES384" if key.alg == KeyAlg::Ec(Curve::P384) => &signature::ECDSA_P384_SHA384_FIXED,
        "ES512" if key.alg == KeyAlg::Ec(Curve::P521) => &signature::ECDSA_P521_SHA512_FIXED,
        "EdDSA" if key.alg == KeyAlg::Ed25519 => &signature::ED25519,
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "ES512"
        | "EdDSA" => return Err(mismatch()),
        other => {
            return Err(CryptoError::UnsupportedSignatureAlgorithm {
                algorithm: format!("JWT alg {other:?}"),
            });
        }
    };
    UnparsedPublicKey::new(verifier, &key.raw_key)
        .verify(signing_input, signature)
        .map_err(|_| CryptoError::BadSignature {
            what: format!("{alg} JWT signature does not match the key"),
        })
}

/// The aws-lc-rs implementation of sigil-spiffe's JWS signature check.
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsLcJwtVerifier;

impl JwtSignatureVerifier for AwsLcJwtVerifier {
    fn verify(
        &self,
        alg: &str,
        public_key_der: &[u8],
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        verify_jws_signature(alg, public_key_der, signing_input, signature).map_err(Into::into)
    }
}

fn b64_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, CryptoError> {
    serde_json::to_vec(value)
        .map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
        .map_err(|e| CryptoError::JwtEncode {
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SoftwareKey;
    use std::time::{Duration, UNIX_EPOCH};

    fn split(token: &str) -> (String, Vec<u8>, Value, Value) {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        (format!("{}.{}", parts[0], parts[1]), sig, header, claims)
    }

    fn times() -> (SystemTime, SystemTime) {
        let iat = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        (iat, iat + Duration::from_secs(300))
    }

    fn sign_with(key: &SoftwareKey, aud: &[&str]) -> String {
        let (iat, exp) = times();
        let aud: Vec<String> = aud.iter().map(|s| (*s).to_owned()).collect();
        let id = SpiffeId::parse("spiffe://example.org/web").unwrap();
        sign_jwt_svid(
            key,
            "kid-1",
            &id,
            &aud,
            iat,
            exp,
            Some("https://oidc.example.org"),
        )
        .unwrap()
    }

    fn round_trip(kt: KeyType) {
        let key = SoftwareKey::generate(kt).unwrap();
        let token = sign_with(&key, &["a"]);
        let (input, sig, header, claims) = split(&token);
        assert_eq!(
            header,
            json!({"alg": jwt_alg_for(kt), "kid": "kid-1", "typ": "JWT"})
        );
        assert_eq!(claims["sub"], "spiffe://example.org/web");
        assert_eq!(claims["aud"], "a");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["exp"], 1_700_000_300);
        assert_eq!(claims["iss"], "https://oidc.example.org");
        AwsLcJwtVerifier
            .verify(
                jwt_alg_for(kt),
                key.public_key_der(),
                input.as_bytes(),
                &sig,
            )
            .unwrap();
    }

    #[test]
    fn jwt_round_trips_for_ec_p256() {
        round_trip(KeyType::EcP256);
    }

    #[test]
    fn jwt_round_trips_for_ec_p384() {
        round_trip(KeyType::EcP384);
    }

    #[test]
    fn jwt_round_trips_for_rsa_2048() {
        round_trip(KeyType::Rsa2048);
    }

    #[test]
    fn jwt_round_trips_for_rsa_4096() {
        round_trip(KeyType::Rsa4096);
    }

    #[test]
    fn several_audiences_are_an_array_and_none_is_an_error() {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let (_, _, _, claims) = split(&sign_with(&key, &["a", "b"]));
        assert_eq!(claims["aud"], json!(["a", "b"]));
        let (iat, exp) = times();
        let id = SpiffeId::parse("spiffe://example.org/web").unwrap();
        assert_eq!(
            sign_jwt_svid(&key, "k", &id, &[], iat, exp, None),
            Err(CryptoError::EmptyAudience)
        );
        assert!(matches!(
            sign_jwt_svid(&key, "k", &id, &["a".to_owned()], exp, iat, None),
            Err(CryptoError::InvalidValidity { .. })
        ));
        let (_, _, _, claims) =
            split(&sign_jwt_svid(&key, "k", &id, &["a".to_owned()], iat, exp, None).unwrap());
        assert!(claims.get("iss").is_none());
    }

    #[test]
    fn tampered_payload_fails_verification() {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let (input, sig, _, _) = split(&sign_with(&key, &["a"]));
        let forged_claims = URL_SAFE_NO_PAD.encode(br#"{"sub":"spiffe://example.org/admin"}"#);
        let head = input.split('.').next().unwrap();
        let forged = format!("{head}.{forged_claims}");
        let err = verify_jws_signature("ES256", key.public_key_der(), forged.as_bytes(), &sig)
            .unwrap_err();
        assert!(matches!(err, CryptoError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn wrong_key_fails_verification() {
        for kt in [KeyType::EcP256, KeyType::Rsa2048] {
            let key = SoftwareKey::generate(kt).unwrap();
            let other = SoftwareKey::generate(kt).unwrap();
            let (input, sig, _, _) = split(&sign_with(&key, &["a"]));
            let err = verify_jws_signature(
                jwt_alg_for(kt),
                other.public_key_der(),
                input.as_bytes(),
                &sig,
            )
            .unwrap_err();
            assert!(matches!(err, CryptoError::BadSignature { .. }), "{err}");
        }
    }

    #[test]
    fn unknown_alg_and_key_family_mismatch_are_rejected() {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let (input, sig, _, _) = split(&sign_with(&key, &["a"]));
        for alg in ["none", "HS256", "es256"] {
            let err = verify_jws_signature(alg, key.public_key_der(), input.as_bytes(), &sig)
                .unwrap_err();
            assert!(
                matches!(err, CryptoError::UnsupportedSignatureAlgorithm { .. }),
                "{alg}: {err}"
            );
        }
        for alg in ["RS256", "PS256", "ES384", "ES512", "EdDSA"] {
            let err = verify_jws_signature(alg, key.public_key_der(), input.as_bytes(), &sig)
                .unwrap_err();
            assert!(
                matches!(err, CryptoError::JwtKeyMismatch { .. }),
                "{alg}: {err}"
            );
        }
        // The trait surface carries the same message as text.
        let msg = AwsLcJwtVerifier
            .verify("HS256", key.public_key_der(), input.as_bytes(), &sig)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("HS256"), "{msg}");
    }

    #[test]
    fn verifier_accepts_rsa_pss_and_sha384_512_variants() {
        let key = SoftwareKey::generate(KeyType::Rsa2048).unwrap();
        let aws_key = aws_lc_rs::rsa::KeyPair::from_pkcs8(&key.to_pkcs8_der()).unwrap();
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let msg = b"header.payload";
        let cases: [(&str, &'static dyn aws_lc_rs::signature::RsaEncoding); 6] = [
            ("RS256", &signature::RSA_PKCS1_SHA256),
            ("RS384", &signature::RSA_PKCS1_SHA384),
            ("RS512", &signature::RSA_PKCS1_SHA512),
            ("PS256", &signature::RSA_PSS_SHA256),
            ("PS384", &signature::RSA_PSS_SHA384),
            ("PS512", &signature::RSA_PSS_SHA512),
        ];
        for (alg, enc) in cases {
            let mut sig = vec![0; aws_key.public_modulus_len()];
            aws_key.sign(enc, &rng, msg, &mut sig).unwrap();
            verify_jws_signature(alg, key.public_key_der(), msg, &sig).unwrap();
        }
    }

    #[test]
    fn verifier_accepts_es512_with_p521_keys() {
        let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
        )
        .unwrap();
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair;
        let spki = pair.public_key().as_der().unwrap();
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let sig = pair.sign(&rng, b"in").unwrap();
        verify_jws_signature("ES512", spki.as_ref(), b"in", sig.as_ref()).unwrap();
    }
}
