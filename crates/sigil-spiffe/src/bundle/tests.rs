use super::*;
use crate::jwk::EcCurve;
use crate::testutil::ca_cert;
use serde_json::json;

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn jwt_spki(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
    rcgen::PublicKeyData::subject_public_key_info(&rcgen::KeyPair::generate_for(alg).unwrap())
}

/// The JWK members of the key in `der` (a certificate), as JSON.
fn cert_jwk(der: &[u8]) -> Map<String, Value> {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    JwkPublicKey::from_spki_der(cert.public_key().raw)
        .unwrap()
        .to_jwk()
}

fn x509_entry(der: &[u8]) -> Value {
    let mut entry = cert_jwk(der);
    entry.insert("use".into(), json!("x509-svid"));
    entry.insert("x5c".into(), json!([STANDARD.encode(der)]));
    Value::Object(entry)
}

fn jwt_entry(kid: &str, spki: &[u8]) -> Value {
    let mut entry = JwkPublicKey::from_spki_der(spki).unwrap().to_jwk();
    entry.insert("use".into(), json!("jwt-svid"));
    entry.insert("kid".into(), json!(kid));
    Value::Object(entry)
}

fn parse(doc: &Value) -> Result<Bundle, BundleError> {
    Bundle::parse_jwks(&td(), doc.to_string().as_bytes())
}

/// RFC 7517 appendix A.1's P-256 key, used where exact output matters.
const RFC_X: &str = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
const RFC_Y: &str = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM";

fn rfc_key_spki() -> Vec<u8> {
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": RFC_X, "y": RFC_Y});
    let Value::Object(jwk) = jwk else {
        unreachable!()
    };
    JwkPublicKey::from_jwk(&jwk).unwrap().to_spki_der()
}

#[test]
fn spec_appendix_a_bundle_parses() {
    // Trust bundle #2 of the bundle specification's appendix A: two RSA CA
    // certificates, sequence 2, refresh hint of 28 days.
    let ca1 = ca_cert(&rcgen::PKCS_RSA_SHA256);
    let ca2 = ca_cert(&rcgen::PKCS_RSA_SHA256);
    let doc = json!({
        "spiffe_sequence": 2,
        "spiffe_refresh_hint": 2419200,
        "keys": [x509_entry(&ca1), x509_entry(&ca2)]
    });
    let bundle = parse(&doc).unwrap();
    assert_eq!(bundle.trust_domain, td());
    assert_eq!(bundle.sequence_number, 2);
    assert_eq!(bundle.refresh_hint_seconds, Some(2_419_200));
    assert_eq!(bundle.x509_authorities, vec![ca1, ca2]);
    assert!(bundle.jwt_authorities.is_empty());
    assert!(
        doc["keys"][0]["e"] == "AQAB",
        "RSA exponent written as in the spec"
    );
}

#[test]
fn spec_appendix_b_bundle_entry_parses() {
    // The bundle of appendix B's map: an x509-svid and a jwt-svid RSA key.
    let ca = ca_cert(&rcgen::PKCS_RSA_SHA256);
    let jwt_key = jwt_spki(&rcgen::PKCS_RSA_SHA256);
    let doc = json!({
        "spiffe_sequence": 12035488,
        "keys": [x509_entry(&ca), jwt_entry("jwt-key-id", &jwt_key)]
    });
    let bundle = parse(&doc).unwrap();
    assert_eq!(bundle.sequence_number, 12_035_488);
    assert_eq!(bundle.refresh_hint_seconds, None);
    assert_eq!(bundle.x509_authorities, vec![ca]);
    assert_eq!(
        bundle.jwt_authorities,
        vec![JwtAuthority {
            key_id: "jwt-key-id".into(),
            public_key_der: jwt_key,
            expires_at: None
        }]
    );
}

#[test]
fn every_supported_key_type_round_trips() {
    let mut bundle = Bundle::new(td());
    bundle.sequence_number = 7;
    bundle.refresh_hint_seconds = Some(300);
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ECDSA_P521_SHA512,
        &rcgen::PKCS_RSA_SHA256,
        &rcgen::PKCS_ED25519,
    ] {
        bundle.x509_authorities.push(ca_cert(alg));
    }
    for (i, alg) in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ECDSA_P521_SHA512,
        &rcgen::PKCS_RSA_SHA256,
    ]
    .into_iter()
    .enumerate()
    {
        bundle.jwt_authorities.push(JwtAuthority {
            key_id: format!("kid-{i}"),
            public_key_der: jwt_spki(alg),
            expires_at: None,
        });
    }
    let doc = bundle.try_to_jwks().unwrap();
    assert_eq!(doc, bundle.to_jwks());
    assert_eq!(Bundle::parse_jwks(&td(), &doc).unwrap(), bundle);
    crate::fuzzing::check_bundle_jwks(&doc);
}

#[test]
fn to_jwks_matches_spire_bundle_show_layout() {
    let mut bundle = Bundle::new(td());
    bundle.sequence_number = 3;
    bundle.refresh_hint_seconds = Some(60);
    bundle.jwt_authorities.push(JwtAuthority {
        key_id: "FOO".into(),
        public_key_der: rfc_key_spki(),
        expires_at: Some(1),
    });
    let want = format!(
        r#"{{
    "keys": [
        {{
            "use": "jwt-svid",
            "kty": "EC",
            "kid": "FOO",
            "crv": "P-256",
            "x": "{RFC_X}",
            "y": "{RFC_Y}"
        }}
    ],
    "spiffe_sequence": 3,
    "spiffe_refresh_hint": 60
}}"#
    );
    assert_eq!(String::from_utf8(bundle.to_jwks()).unwrap(), want);
}

#[test]
fn x509_entries_are_written_with_key_members_then_x5c() {
    let ca = ca_cert(&rcgen::PKCS_ECDSA_P256_SHA256);
    let mut bundle = Bundle::new(td());
    bundle.x509_authorities.push(ca.clone());
    let text = String::from_utf8(bundle.to_jwks()).unwrap();
    let order: Vec<usize> = ["\"use\"", "\"kty\"", "\"crv\"", "\"x\"", "\"y\"", "\"x5c\""]
        .iter()
        .map(|m| text.find(m).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(text.contains(&format!(
        "\"x5c\": [\n                \"{}\"\n            ]",
        STANDARD.encode(&ca)
    )));
    assert!(
        !text.contains("spiffe_sequence"),
        "sequence 0 is not written"
    );
    assert!(!text.contains("spiffe_refresh_hint"));
}

#[test]
fn empty_bundle_writes_empty_keys_array() {
    let bundle = Bundle::new(td());
    assert!(bundle.is_empty());
    assert_eq!(
        String::from_utf8(bundle.to_jwks()).unwrap(),
        "{\n    \"keys\": []\n}"
    );
    assert_eq!(
        Bundle::parse_jwks(&td(), &bundle.to_jwks()).unwrap(),
        bundle
    );
}

#[test]
fn entries_the_spec_says_to_ignore_are_skipped() {
    let ca = ca_cert(&rcgen::PKCS_ECDSA_P256_SHA256);
    let mut no_x5c = x509_entry(&ca);
    no_x5c.as_object_mut().unwrap().remove("x5c");
    let mut empty_x5c = x509_entry(&ca);
    empty_x5c["x5c"] = json!([]);
    let doc = json!({"keys": [
        {"kty": "EC", "use": "wit-svid", "kid": "w"},
        {"kty": "EC", "use": "X509-SVID", "x5c": ["!!"]},
        {"kty": "EC", "kid": "no-use"},
        {"kty": "AKP", "use": "jwt-svid", "kid": "pq", "pub": "AA"},
        {"kty": "AKP", "use": "x509-svid", "x5c": ["!!"]},
        no_x5c,
        empty_x5c,
    ]});
    let bundle = parse(&doc).unwrap();
    assert!(bundle.is_empty(), "{bundle:?}");
}

#[test]
fn only_the_first_x5c_certificate_is_taken_and_duplicates_collapse() {
    let ca = ca_cert(&rcgen::PKCS_ECDSA_P256_SHA256);
    let other = ca_cert(&rcgen::PKCS_ECDSA_P384_SHA384);
    let mut entry = x509_entry(&ca);
    entry["x5c"] = json!([STANDARD.encode(&ca), STANDARD.encode(&other)]);
    let doc = json!({"keys": [entry, x509_entry(&ca)]});
    assert_eq!(parse(&doc).unwrap().x509_authorities, vec![ca]);
}

#[test]
fn x509_authority_without_jwk_form_is_written_as_x5c_only() {
    let ca = ca_cert(&rcgen::PKCS_ML_DSA_44);
    let mut bundle = Bundle::new(td());
    bundle.x509_authorities.push(ca.clone());
    let doc: Value = serde_json::from_slice(&bundle.try_to_jwks().unwrap()).unwrap();
    assert_eq!(
        doc,
        json!({"keys": [{"use": "x509-svid", "x5c": [STANDARD.encode(&ca)]}]})
    );
    assert_eq!(
        Bundle::parse_jwks(&td(), &bundle.to_jwks()).unwrap(),
        bundle
    );
}

#[test]
fn unrepresentable_authorities_fail_strict_and_are_skipped_lenient() {
    let mut bundle = Bundle::new(td());
    bundle.jwt_authorities.push(JwtAuthority {
        key_id: "bad".into(),
        public_key_der: b"not a key".to_vec(),
        expires_at: None,
    });
    assert!(matches!(
        bundle.try_to_jwks(),
        Err(BundleError::UnrepresentableJwtAuthority { ref kid, .. }) if kid == "bad"
    ));
    assert_eq!(
        String::from_utf8(bundle.to_jwks()).unwrap(),
        "{\n    \"keys\": []\n}"
    );

    let mut bundle = Bundle::new(td());
    bundle.x509_authorities.push(b"not a cert".to_vec());
    assert!(matches!(
        bundle.try_to_jwks(),
        Err(BundleError::InvalidX509Authority { index: 0, .. })
    ));
}

#[test]
fn malformed_documents_get_precise_errors() {
    let ca = ca_cert(&rcgen::PKCS_ECDSA_P256_SHA256);
    let other = ca_cert(&rcgen::PKCS_ECDSA_P256_SHA256);
    let key = jwt_spki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let mut mismatched = x509_entry(&ca);
    mismatched["x5c"] = json!([STANDARD.encode(&other)]);
    let mut not_a_cert = x509_entry(&ca);
    not_a_cert["x5c"] = json!([STANDARD.encode(b"hello")]);
    let mut trailing = x509_entry(&ca);
    trailing["x5c"] = json!([STANDARD.encode([ca.as_slice(), &[0]].concat())]);
    let mut no_kid = jwt_entry("k", &key);
    no_kid.as_object_mut().unwrap().remove("kid");
    let mut no_x = jwt_entry("k", &key);
    no_x.as_object_mut().unwrap().remove("x");
    let mut with_d = jwt_entry("k", &key);
    with_d["d"] = json!("AAAA");
    let mut no_kty = jwt_entry("k", &key);
    no_kty.as_object_mut().unwrap().remove("kty");

    let cases: Vec<(Value, BundleError)> = vec![
        (json!([]), BundleError::NotAnObject),
        (json!({}), BundleError::MissingKeys),
        (json!({"keys": null}), BundleError::MissingKeys),
        (
            json!({"keys": {}}),
            BundleError::InvalidMember {
                member: "keys",
                expected: "an array of JWKs",
            },
        ),
        (
            json!({"keys": [], "spiffe_sequence": -1}),
            BundleError::InvalidMember {
                member: "spiffe_sequence",
                expected: "a non-negative integer",
            },
        ),
        (
            json!({"keys": [], "spiffe_refresh_hint": 1.5}),
            BundleError::InvalidMember {
                member: "spiffe_refresh_hint",
                expected: "an integer number of seconds",
            },
        ),
        (
            json!({"keys": ["x"]}),
            BundleError::KeyNotAnObject { index: 0 },
        ),
        (
            json!({"keys": [{"use": 1}]}),
            BundleError::InvalidKeyMember {
                index: 0,
                member: "use",
                expected: "a string",
            },
        ),
        (
            json!({"keys": [{"use": "x509-svid", "x5c": "abc"}]}),
            BundleError::InvalidKeyMember {
                index: 0,
                member: "x5c",
                expected: "an array of base64 strings",
            },
        ),
        (
            json!({"keys": [{"use": "x509-svid", "x5c": ["*"]}]}),
            BundleError::X509InvalidBase64 { index: 0 },
        ),
        (
            json!({"keys": [mismatched]}),
            BundleError::X509KeyMismatch { index: 0 },
        ),
        (
            json!({"keys": [no_kid]}),
            BundleError::JwtMissingKeyId { index: 0 },
        ),
        (
            json!({"keys": [jwt_entry("", &key)]}),
            BundleError::JwtMissingKeyId { index: 0 },
        ),
        (
            json!({"keys": [jwt_entry("k", &key), jwt_entry("k", &key)]}),
            BundleError::DuplicateKeyId {
                index: 1,
                kid: "k".into(),
            },
        ),
        (
            json!({"keys": [no_x]}),
            BundleError::InvalidJwk {
                index: 0,
                source: JwkError::MissingMember("x"),
            },
        ),
        (
            json!({"keys": [with_d]}),
            BundleError::InvalidJwk {
                index: 0,
                source: JwkError::PrivateKeyMaterial("d"),
            },
        ),
        (
            json!({"keys": [no_kty]}),
            BundleError::InvalidJwk {
                index: 0,
                source: JwkError::MissingMember("kty"),
            },
        ),
        (
            json!({"keys": [{"use": "jwt-svid", "kid": "k", "kty": "EC", "crv": "P-256", "x": RFC_X, "y": RFC_X.replace('M', "=")}]}),
            BundleError::InvalidJwk {
                index: 0,
                source: JwkError::InvalidBase64Url("y"),
            },
        ),
    ];
    for (doc, want) in cases {
        assert_eq!(parse(&doc), Err(want), "{doc}");
    }
    for doc in [json!({"keys": [not_a_cert]}), json!({"keys": [trailing]})] {
        assert!(
            matches!(
                parse(&doc),
                Err(BundleError::X509InvalidCertificate { index: 0, .. })
            ),
            "{doc}"
        );
    }
    assert!(matches!(
        Bundle::parse_jwks(&td(), b"{\"keys\": ["),
        Err(BundleError::InvalidJson(_))
    ));
}

#[test]
fn error_messages_name_the_entry() {
    let err =
        parse(&json!({"keys": [{"use": "jwt-svid", "kty": "EC", "kid": "k", "crv": "P-256"}]}))
            .unwrap_err();
    assert_eq!(err.to_string(), "bundle key 0: JWK has no \"x\" member");
}

#[test]
fn pem_round_trips_and_matches_bundle_show() {
    let ca1 = ca_cert(&rcgen::PKCS_ECDSA_P256_SHA256);
    let ca2 = ca_cert(&rcgen::PKCS_RSA_SHA256);
    let mut bundle = Bundle::new(td());
    bundle.x509_authorities = vec![ca1.clone(), ca2.clone()];
    let pem = bundle.x509_authorities_pem();
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----\n").count(), 2);
    let back = Bundle::from_pem_certs(&td(), pem.as_bytes()).unwrap();
    assert_eq!(back, bundle);
    // rcgen writes the same PEM that Go's encoding/pem does.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    assert_eq!(
        certificates_to_pem(&[cert.der().to_vec()]).replace('\n', ""),
        cert.pem().replace(['\n', '\r'], "")
    );
}

#[test]
fn pem_with_a_non_certificate_body_is_refused() {
    let pem = certificates_to_pem(&[ca_cert(&rcgen::PKCS_ECDSA_P256_SHA256), b"junk".to_vec()]);
    assert!(matches!(
        Bundle::from_pem_certs(&td(), pem.as_bytes()),
        Err(BundleError::InvalidPemCertificate { index: 1, .. })
    ));
}

#[test]
fn find_jwt_authority_looks_up_by_kid() {
    let mut bundle = Bundle::new(td());
    bundle.jwt_authorities.push(JwtAuthority {
        key_id: "a".into(),
        public_key_der: rfc_key_spki(),
        expires_at: None,
    });
    assert!(bundle.find_jwt_authority("a").is_some());
    assert!(bundle.find_jwt_authority("b").is_none());
    let key = JwkPublicKey::from_spki_der(&bundle.jwt_authorities[0].public_key_der).unwrap();
    assert!(matches!(
        key,
        JwkPublicKey::Ec {
            curve: EcCurve::P256,
            ..
        }
    ));
}

#[test]
fn parser_survives_truncations_and_byte_flips() {
    // A cheap, deterministic stand-in for the bundle_jwks fuzz target.
    let mut bundle = Bundle::new(td());
    bundle.sequence_number = 1;
    bundle
        .x509_authorities
        .push(ca_cert(&rcgen::PKCS_ECDSA_P256_SHA256));
    bundle.jwt_authorities.push(JwtAuthority {
        key_id: "k".into(),
        public_key_der: rfc_key_spki(),
        expires_at: None,
    });
    let doc = bundle.to_jwks();
    for i in (0..doc.len()).step_by(3) {
        crate::fuzzing::check_bundle_jwks(&doc[..i]);
        for replacement in [b'"', b'0', b'A', b'}', 0xFF] {
            let mut mutated = doc.clone();
            mutated[i] = replacement;
            crate::fuzzing::check_bundle_jwks(&mutated);
        }
    }
}
