use super::*;
use crate::JwtAuthority;
use serde_json::json;

const NOW: i64 = 1_700_000_000;
const KID: &str = "key-1";
const SUBJECT: &str = "spiffe://example.org/ns/prod/sa/web";

/// A stand-in "signature": the alg, key and signing input glued together, so
/// the fake verifier proves it was handed exactly those.
fn fake_signature(alg: &str, key: &[u8], signing_input: &[u8]) -> Vec<u8> {
    [alg.as_bytes(), b"|", key, b"|", signing_input].concat()
}

struct FakeVerifier;

impl JwtSignatureVerifier for FakeVerifier {
    fn verify(
        &self,
        alg: &str,
        public_key_der: &[u8],
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        if signature == fake_signature(alg, public_key_der, signing_input) {
            Ok(())
        } else {
            Err("signature mismatch".into())
        }
    }
}

fn key_der() -> Vec<u8> {
    b"fake-spki-der".to_vec()
}

fn bundle() -> Bundle {
    let mut bundle = Bundle::new(TrustDomain::new("example.org").unwrap());
    bundle.jwt_authorities.push(JwtAuthority {
        key_id: KID.into(),
        public_key_der: key_der(),
        expires_at: None,
    });
    bundle
}

fn header() -> Value {
    json!({"alg": "ES256", "kid": KID, "typ": "JWT"})
}

fn claims() -> Value {
    json!({"sub": SUBJECT, "aud": ["svc-a"], "exp": NOW + 300, "iat": NOW - 10, "team": "pay"})
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token over `header` and `claims`, signed the fake way with our key.
fn token(header: &Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let alg = header["alg"].as_str().unwrap_or("");
    let sig = fake_signature(alg, &key_der(), signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&sig))
}

fn audience(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

fn validate(token: &str) -> Result<JwtSvid, JwtSvidError> {
    JwtSvid::validate(token, &bundle(), &audience(&["svc-a"]), NOW, &FakeVerifier)
}

fn with(base: Value, key: &str, value: Value) -> Value {
    let mut v = base;
    v[key] = value;
    v
}

fn without(base: Value, key: &str) -> Value {
    let mut v = base;
    v.as_object_mut().unwrap().remove(key);
    v
}

#[test]
fn valid_token_is_accepted_and_exposes_its_claims() {
    let t = token(&header(), &claims());
    let svid = validate(&t).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), SUBJECT);
    assert_eq!(svid.audience(), ["svc-a"]);
    assert_eq!(svid.expiry(), NOW + 300);
    assert_eq!(svid.issued_at(), Some(NOW - 10));
    assert_eq!(svid.claims()["team"], "pay");
    assert_eq!(svid.token(), t);
    assert_eq!(
        svid.header(),
        &JwtHeader {
            alg: "ES256".into(),
            kid: Some(KID.into()),
            typ: Some("JWT".into())
        }
    );
}

#[test]
fn every_allowed_algorithm_is_accepted() {
    for alg in ALLOWED_ALGORITHMS {
        let t = token(&with(header(), "alg", json!(alg)), &claims());
        assert!(validate(&t).is_ok(), "{alg}");
    }
}

#[test]
fn typ_may_be_jose_or_absent() {
    assert!(validate(&token(&with(header(), "typ", json!("JOSE")), &claims())).is_ok());
    assert!(validate(&token(&without(header(), "typ"), &claims())).is_ok());
}

#[test]
fn audience_may_be_a_single_string_and_any_expected_value_matches() {
    let t = token(&header(), &with(claims(), "aud", json!("svc-b")));
    let svid = JwtSvid::validate(
        &t,
        &bundle(),
        &audience(&["svc-a", "svc-b"]),
        NOW,
        &FakeVerifier,
    )
    .unwrap();
    assert_eq!(svid.audience(), ["svc-b"]);
}

#[test]
fn fractional_numeric_dates_are_accepted() {
    let t = token(
        &header(),
        &with(claims(), "exp", json!((NOW + 5) as f64 + 0.5)),
    );
    assert_eq!(validate(&t).unwrap().expiry(), NOW + 5);
}

#[test]
fn nbf_within_leeway_is_accepted() {
    let t = token(&header(), &with(claims(), "nbf", json!(NOW + 30)));
    assert!(validate(&t).is_ok());
}

#[test]
fn each_rule_fails_with_its_own_error() {
    let good = token(&header(), &claims());
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[2] = b64(b"forged");
    let forged = parts.join(".");
    parts[2] = String::new();
    let unsigned = parts.join(".");

    let cases: Vec<(&str, String, JwtSvidError)> = vec![
        ("two parts", "a.b".into(), JwtSvidError::Malformed(2)),
        ("four parts", "a.b.c.d".into(), JwtSvidError::Malformed(4)),
        ("JWS JSON", "{}".into(), JwtSvidError::Malformed(1)),
        (
            "padded header",
            format!("{}=.{}", b64(b"{}"), "e30.x"),
            JwtSvidError::InvalidBase64("header"),
        ),
        (
            "bad payload b64",
            format!("{}.*.x", b64(header().to_string().as_bytes())),
            JwtSvidError::InvalidBase64("payload"),
        ),
        (
            "header not object",
            format!("{}.e30.", b64(b"[1]")),
            JwtSvidError::InvalidJson {
                part: "header",
                reason: "not an object".into(),
            },
        ),
        (
            "no alg",
            token(&without(header(), "alg"), &claims()),
            JwtSvidError::MissingAlgorithm,
        ),
        (
            "alg none",
            token(&with(header(), "alg", json!("none")), &claims()),
            JwtSvidError::UnsupportedAlgorithm("none".into()),
        ),
        (
            "alg HS256",
            token(&with(header(), "alg", json!("HS256")), &claims()),
            JwtSvidError::UnsupportedAlgorithm("HS256".into()),
        ),
        (
            "alg EdDSA",
            token(&with(header(), "alg", json!("EdDSA")), &claims()),
            JwtSvidError::UnsupportedAlgorithm("EdDSA".into()),
        ),
        (
            "alg lowercase",
            token(&with(header(), "alg", json!("es256")), &claims()),
            JwtSvidError::UnsupportedAlgorithm("es256".into()),
        ),
        (
            "alg not a string",
            token(&with(header(), "alg", json!(1)), &claims()),
            JwtSvidError::InvalidHeader {
                member: "alg",
                expected: "a string",
            },
        ),
        (
            "typ other",
            token(&with(header(), "typ", json!("at+jwt")), &claims()),
            JwtSvidError::InvalidType("at+jwt".into()),
        ),
        (
            "crit",
            token(&with(header(), "crit", json!(["exp"])), &claims()),
            JwtSvidError::CriticalHeader,
        ),
        (
            "no sub",
            token(&header(), &without(claims(), "sub")),
            JwtSvidError::MissingSubject,
        ),
        (
            "sub not a string",
            token(&header(), &with(claims(), "sub", json!(5))),
            JwtSvidError::InvalidClaim {
                claim: "sub",
                expected: "a string",
            },
        ),
        (
            "sub not a SPIFFE ID",
            token(
                &header(),
                &with(claims(), "sub", json!("spiffe://example.org/a/")),
            ),
            JwtSvidError::InvalidSubject {
                subject: "spiffe://example.org/a/".into(),
                source: IdError::TrailingSlash,
            },
        ),
        (
            "no aud",
            token(&header(), &without(claims(), "aud")),
            JwtSvidError::MissingAudience,
        ),
        (
            "empty aud",
            token(&header(), &with(claims(), "aud", json!([]))),
            JwtSvidError::EmptyAudience,
        ),
        (
            "aud of numbers",
            token(&header(), &with(claims(), "aud", json!([1]))),
            JwtSvidError::InvalidClaim {
                claim: "aud",
                expected: "a string or an array of strings",
            },
        ),
        (
            "no exp",
            token(&header(), &without(claims(), "exp")),
            JwtSvidError::MissingExpiry,
        ),
        (
            "exp a string",
            token(&header(), &with(claims(), "exp", json!("tomorrow"))),
            JwtSvidError::InvalidClaim {
                claim: "exp",
                expected: "a number of seconds since the epoch",
            },
        ),
        (
            "other trust domain",
            token(
                &header(),
                &with(claims(), "sub", json!("spiffe://other.org/web")),
            ),
            JwtSvidError::TrustDomainMismatch {
                subject: TrustDomain::new("other.org").unwrap(),
                bundle: TrustDomain::new("example.org").unwrap(),
            },
        ),
        (
            "no kid",
            token(&without(header(), "kid"), &claims()),
            JwtSvidError::MissingKeyId,
        ),
        (
            "unknown kid",
            token(&with(header(), "kid", json!("key-2")), &claims()),
            JwtSvidError::UnknownKeyId {
                kid: "key-2".into(),
                trust_domain: TrustDomain::new("example.org").unwrap(),
            },
        ),
        (
            "forged signature",
            forged,
            JwtSvidError::InvalidSignature("signature mismatch".into()),
        ),
        (
            "no signature",
            unsigned,
            JwtSvidError::InvalidSignature("signature is empty".into()),
        ),
        (
            "expired",
            token(&header(), &with(claims(), "exp", json!(NOW - 1))),
            JwtSvidError::Expired {
                expiry: NOW - 1,
                now: NOW,
            },
        ),
        (
            "expires now",
            token(&header(), &with(claims(), "exp", json!(NOW))),
            JwtSvidError::Expired {
                expiry: NOW,
                now: NOW,
            },
        ),
        (
            "not yet valid",
            token(&header(), &with(claims(), "nbf", json!(NOW + 61))),
            JwtSvidError::NotYetValid {
                not_before: NOW + 61,
                now: NOW,
            },
        ),
        (
            "wrong audience",
            token(&header(), &with(claims(), "aud", json!(["svc-b", "svc-c"]))),
            JwtSvidError::AudienceMismatch {
                expected: audience(&["svc-a"]),
                actual: audience(&["svc-b", "svc-c"]),
            },
        ),
    ];
    for (what, token, want) in cases {
        assert_eq!(validate(&token), Err(want), "{what}");
    }
}

#[test]
fn empty_expected_audience_is_refused() {
    let t = token(&header(), &claims());
    assert_eq!(
        JwtSvid::validate(&t, &bundle(), &[], NOW, &FakeVerifier),
        Err(JwtSvidError::NoExpectedAudience)
    );
}

#[test]
fn signature_is_checked_before_claims_that_depend_on_time() {
    // An expired token with a bad signature reports the signature.
    let expired = token(&header(), &with(claims(), "exp", json!(NOW - 1)));
    let mut parts: Vec<&str> = expired.split('.').collect();
    let sig = b64(b"forged");
    parts[2] = &sig;
    assert!(matches!(
        validate(&parts.join(".")),
        Err(JwtSvidError::InvalidSignature(_))
    ));
}

#[test]
fn parse_insecure_skips_signature_time_and_audience() {
    let mut expired = token(&header(), &with(claims(), "exp", json!(NOW - 1000)));
    expired.push_str("AAAA");
    let svid = JwtSvid::parse_insecure(&expired).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), SUBJECT);
    assert_eq!(svid.expiry(), NOW - 1000);
    // Header and structural claim rules still apply.
    assert_eq!(
        JwtSvid::parse_insecure(&token(&with(header(), "alg", json!("none")), &claims())),
        Err(JwtSvidError::UnsupportedAlgorithm("none".into()))
    );
    assert_eq!(
        JwtSvid::parse_insecure(&token(&header(), &without(claims(), "exp"))),
        Err(JwtSvidError::MissingExpiry)
    );
}

#[test]
fn error_messages_are_precise() {
    assert_eq!(
        JwtSvidError::Expired {
            expiry: 10,
            now: 20
        }
        .to_string(),
        "token has expired (exp 10, now 20)"
    );
    assert_eq!(
        JwtSvidError::UnknownKeyId {
            kid: "k".into(),
            trust_domain: TrustDomain::new("example.org").unwrap()
        }
        .to_string(),
        "no JWT authority with key ID \"k\" in the bundle for example.org"
    );
}
