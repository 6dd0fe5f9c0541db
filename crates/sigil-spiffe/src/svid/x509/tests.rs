use super::*;
use crate::testutil::{CertSpec, ca_spec, leaf_spec, self_signed};
use rcgen::{BasicConstraints as RcgenBc, CustomExtension, IsCa, KeyUsagePurpose};

const LEAF_ID: &str = "spiffe://example.org/ns/prod/sa/web";
const CA_ID: &str = "spiffe://example.org";

fn leaf(modify: impl FnOnce(&mut CertSpec)) -> Vec<u8> {
    let mut spec = leaf_spec(LEAF_ID);
    modify(&mut spec);
    self_signed(spec)
}

fn ca(modify: impl FnOnce(&mut CertSpec)) -> Vec<u8> {
    let mut spec = ca_spec(CA_ID);
    modify(&mut spec);
    self_signed(spec)
}

/// A second subjectAltName extension, so the certificate has two.
fn duplicate_san() -> CustomExtension {
    // SEQUENCE { [6] "spiffe://example.org/x" }
    let uri = b"spiffe://example.org/x";
    let mut content = vec![0x30, uri.len() as u8 + 2, 0x86, uri.len() as u8];
    content.extend_from_slice(uri);
    CustomExtension::from_oid_content(&[2, 5, 29, 17], content)
}

#[test]
fn spire_shaped_leaf_is_accepted() {
    let id = validate_x509_svid_leaf(&leaf(|_| {})).unwrap();
    assert_eq!(id.as_str(), LEAF_ID);
}

#[test]
fn leaf_without_basic_constraints_is_accepted() {
    // cA defaults to false when the extension is absent.
    let cert = leaf(|s| s.is_ca = IsCa::NoCa);
    assert_eq!(validate_x509_svid_leaf(&cert).unwrap().as_str(), LEAF_ID);
}

#[test]
fn leaf_with_dns_sans_is_accepted() {
    let cert = leaf(|s| s.dns = vec!["web.example.org".into()]);
    assert!(validate_x509_svid_leaf(&cert).is_ok());
}

#[test]
fn leaf_rules_each_fail_with_their_own_error() {
    let cases: Vec<(&str, Vec<u8>, X509SvidError)> = vec![
        (
            "no URI SAN",
            leaf(|s| s.uris.clear()),
            X509SvidError::NoUriSan,
        ),
        (
            "two URI SANs",
            leaf(|s| s.uris.push("spiffe://example.org/other".into())),
            X509SvidError::MultipleUriSans(2),
        ),
        (
            "URI SAN with another scheme",
            leaf(|s| s.uris = vec!["https://example.org/web".into()]),
            X509SvidError::InvalidSpiffeId {
                uri: "https://example.org/web".into(),
                source: IdError::WrongScheme,
            },
        ),
        (
            "URI SAN with a query",
            leaf(|s| s.uris = vec!["spiffe://example.org/web?x".into()]),
            X509SvidError::InvalidSpiffeId {
                uri: "spiffe://example.org/web?x".into(),
                source: IdError::QueryNotAllowed,
            },
        ),
        (
            "ID without path",
            leaf(|s| s.uris = vec![CA_ID.into()]),
            X509SvidError::LeafIdWithoutPath(SpiffeId::parse(CA_ID).unwrap()),
        ),
        (
            "CA true",
            leaf(|s| s.is_ca = IsCa::Ca(RcgenBc::Unconstrained)),
            X509SvidError::LeafIsCa,
        ),
        (
            "no keyUsage",
            leaf(|s| s.key_usages.clear()),
            X509SvidError::MissingKeyUsage,
        ),
        (
            "keyUsage not critical",
            leaf(|s| s.key_usage_critical = false),
            X509SvidError::KeyUsageNotCritical,
        ),
        (
            "no digitalSignature",
            leaf(|s| s.key_usages = vec![KeyUsagePurpose::KeyEncipherment]),
            X509SvidError::LeafMissingDigitalSignature,
        ),
        (
            "keyCertSign",
            leaf(|s| s.key_usages.push(KeyUsagePurpose::KeyCertSign)),
            X509SvidError::LeafHasKeyCertSign,
        ),
        (
            "cRLSign",
            leaf(|s| s.key_usages.push(KeyUsagePurpose::CrlSign)),
            X509SvidError::LeafHasCrlSign,
        ),
    ];
    for (what, cert, want) in cases {
        assert_eq!(validate_x509_svid_leaf(&cert), Err(want), "{what}");
    }
}

#[test]
fn duplicate_san_extensions_are_refused() {
    let cert = leaf(|s| s.extra_extensions.push(duplicate_san()));
    assert!(matches!(
        validate_x509_svid_leaf(&cert),
        Err(X509SvidError::InvalidExtension {
            extension: "subjectAltName",
            ..
        })
    ));
}

#[test]
fn garbage_and_trailing_bytes_are_refused() {
    assert!(matches!(
        validate_x509_svid_leaf(b"not a certificate"),
        Err(X509SvidError::InvalidCertificate(_))
    ));
    let mut cert = leaf(|_| {});
    cert.extend_from_slice(&[0, 0]);
    assert_eq!(
        validate_x509_svid_leaf(&cert),
        Err(X509SvidError::TrailingData(2))
    );
}

#[test]
fn spire_shaped_signing_cert_is_accepted() {
    assert_eq!(validate_signing_cert(&ca(|_| {})), Ok(()));
    // A signing certificate need not be an SVID at all.
    assert_eq!(validate_signing_cert(&ca(|s| s.uris.clear())), Ok(()));
    assert_eq!(
        validate_signing_cert(&ca(|s| s.uris = vec!["https://pki.example.com/ca".into()])),
        Ok(())
    );
}

#[test]
fn signing_cert_rules_each_fail_with_their_own_error() {
    let cases: Vec<(&str, Vec<u8>, X509SvidError)> = vec![
        (
            "no basicConstraints",
            ca(|s| s.is_ca = IsCa::NoCa),
            X509SvidError::SigningCertNotCa,
        ),
        (
            "CA false",
            ca(|s| s.is_ca = IsCa::ExplicitNoCa),
            X509SvidError::SigningCertNotCa,
        ),
        (
            "no keyUsage",
            ca(|s| s.key_usages.clear()),
            X509SvidError::MissingKeyUsage,
        ),
        (
            "keyUsage not critical",
            ca(|s| s.key_usage_critical = false),
            X509SvidError::KeyUsageNotCritical,
        ),
        (
            "no keyCertSign",
            ca(|s| s.key_usages = vec![KeyUsagePurpose::CrlSign]),
            X509SvidError::SigningCertMissingKeyCertSign,
        ),
        (
            "ID with a path",
            ca(|s| s.uris = vec![LEAF_ID.into()]),
            X509SvidError::SigningCertIdHasPath(SpiffeId::parse(LEAF_ID).unwrap()),
        ),
    ];
    for (what, cert, want) in cases {
        assert_eq!(validate_signing_cert(&cert), Err(want), "{what}");
    }
}

#[test]
fn leaf_validation_refuses_a_ca_and_the_other_way_round() {
    assert!(validate_x509_svid_leaf(&ca(|_| {})).is_err());
    assert_eq!(
        validate_signing_cert(&leaf(|_| {})),
        Err(X509SvidError::SigningCertNotCa)
    );
}

#[test]
fn spiffe_id_from_cert_reads_only_the_uri_san() {
    // No path and no keyUsage: still has an ID.
    let cert = ca(|s| s.key_usages.clear());
    assert_eq!(spiffe_id_from_cert(&cert).unwrap().as_str(), CA_ID);
    assert_eq!(
        spiffe_id_from_cert(&leaf(|s| s.uris.clear())),
        Err(X509SvidError::NoUriSan)
    );
    assert_eq!(
        spiffe_id_from_cert(&leaf(|s| s.uris.push(CA_ID.into()))),
        Err(X509SvidError::MultipleUriSans(2))
    );
}

#[test]
fn error_messages_are_precise() {
    assert_eq!(
        X509SvidError::MultipleUriSans(2).to_string(),
        "certificate has 2 URI SANs; an X509-SVID must have exactly one"
    );
    let err = validate_x509_svid_leaf(&leaf(|s| s.uris = vec!["spiffe://Example.org/x".into()]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "certificate URI SAN \"spiffe://Example.org/x\" is not a valid SPIFFE ID: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores (found 'E')"
    );
}
