//! The bundle endpoint's `https_web` profile, end to end: trust domain
//! `a.test` serves its bundle with a Web PKI certificate and a second
//! sigil-server (`b.test`) federates with it over `https_web`, trusting the
//! issuing root through `SSL_CERT_FILE` as a Go program would.
//!
//! - `serving_cert_file`: a certificate from a test CA, rotated on disk and
//!   picked up without a restart; broken files keep the last good one.
//! - `acme`: a certificate issued by pebble (Let's Encrypt's ACME test
//!   server, `SIGIL_TEST_PEBBLE_BIN` from `.ci/install-pebble.sh`), validated
//!   with TLS-ALPN-01 on the bundle endpoint's own port. pebble resolves the
//!   domain through pebble-challtestsrv's DNS, which answers 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, ServerName};
use sigil_testkit::pebble::{pebble_dir, start as start_pebble};
use sigil_testkit::{Options, TrustDomain, bin, free_port, wait_for};

/// A trust domain whose server serves its bundle on `port` with `profile`.
fn serving_domain(name: &str, port: u16, profile: &str) -> TrustDomain {
    TrustDomain::with(Options {
        trust_domain: name.into(),
        server_extra_config: format!(
            r#"    federation {{
        bundle_endpoint {{
            address = "127.0.0.1"
            port = {port}
            refresh_hint = "1m"
            {profile}
        }}
    }}"#
        ),
        ..Options::default()
    })
}

/// A trust domain whose server federates with `a.test` at `url` over
/// `https_web`.
fn federating_domain(url: &str) -> TrustDomain {
    TrustDomain::with(Options {
        trust_domain: "b.test".into(),
        server_extra_config: format!(
            r#"    federation {{
        federates_with "a.test" {{
            bundle_endpoint_url = "{url}"
            bundle_endpoint_profile "https_web" {{}}
        }}
    }}"#
        ),
        ..Options::default()
    })
}

/// Starts `td`'s server with extra environment variables (the testkit's
/// `start_server` takes none) and waits until its admin API answers.
fn start_server_with_env(td: &mut TrustDomain, env: &[(&str, &Path)]) -> usize {
    let mut cmd = Command::new(bin("sigil-server"));
    cmd.arg("run").arg("-config").arg(td.server_conf());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let index = td.spawn_process("server", cmd);
    wait_for("server healthcheck", Duration::from_secs(30), || {
        assert!(
            td.process_running(index),
            "sigil-server exited during startup"
        );
        (td.server_cli(&["healthcheck"]).code == 0).then_some(())
    });
    index
}

/// The first certificate PEM block `bundle show` prints.
fn own_bundle_pem(td: &TrustDomain) -> String {
    let out = td.server_cli(&["bundle", "show"]).ok().stdout;
    let end = out
        .find("-----END CERTIFICATE-----")
        .expect("a certificate")
        + 25;
    out[..end].to_owned()
}

/// Waits until `b`'s server holds `a.test`'s bundle with `pem` in it.
fn wait_for_federated_bundle(b: &TrustDomain, pem: &str) {
    wait_for(
        "b.test to store a.test's bundle",
        Duration::from_secs(60),
        || {
            let out = b.server_cli(&["bundle", "list", "-id", "spiffe://a.test"]);
            (out.code == 0 && out.stdout.contains(pem)).then_some(())
        },
    );
}

/// The leaf certificate `127.0.0.1:port` presents for `sni`, not verified.
fn presented_leaf(port: u16, sni: &str) -> Option<CertificateDer<'static>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cfg = rustls::ClientConfig::builder_with_provider(sigil_crypto::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let name = ServerName::try_from(sni.to_owned()).ok()?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .ok()?;
        tls.get_ref().1.peer_certificates()?.first().cloned()
    })
}

/// Accepts any server certificate: the tests look at which one is served,
/// the federating server does the verifying.
#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        sigil_crypto::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn issuer_cn(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.issuer().to_string()
}

// ---- serving_cert_file ----

struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "sigil test web CA");
        let pem = p.self_signed(&key).unwrap().pem();
        TestCa {
            pem,
            issuer: Issuer::new(p, key),
        }
    }

    /// A server certificate for 127.0.0.1: (cert PEM, key PEM, DER).
    fn leaf(&self) -> (String, String, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }
}

#[test]
fn federating_server_fetches_over_https_web_with_a_serving_cert_file_and_follows_its_rotation() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let (cert_pem, key_pem, first) = ca.leaf();
    fs::write(&cert_path, &cert_pem).unwrap();
    fs::write(&key_path, &key_pem).unwrap();
    let ca_file = certs.path().join("ca.pem");
    fs::write(&ca_file, &ca.pem).unwrap();

    let port = free_port();
    let mut a = serving_domain(
        "a.test",
        port,
        &format!(
            r#"profile "https_web" {{
                serving_cert_file {{
                    cert_file_path = "{}"
                    key_file_path = "{}"
                    file_sync_interval = "1s"
                }}
            }}"#,
            cert_path.display(),
            key_path.display()
        ),
    );
    a.start_server();
    assert_eq!(presented_leaf(port, "127.0.0.1"), Some(first.clone()));

    let mut b = federating_domain(&format!("https://127.0.0.1:{port}"));
    start_server_with_env(&mut b, &[("SSL_CERT_FILE", &ca_file)]);
    wait_for_federated_bundle(&b, &own_bundle_pem(&a));

    // Rotate: new key and certificate on disk, no restart.
    let (cert_pem, key_pem, second) = ca.leaf();
    fs::write(&key_path, &key_pem).unwrap();
    fs::write(&cert_path, &cert_pem).unwrap();
    wait_for(
        "the rotated certificate to be served",
        Duration::from_secs(20),
        || (presented_leaf(port, "127.0.0.1") == Some(second.clone())).then_some(()),
    );
    let refreshed = b.server_cli(&["federation", "refresh", "-id", "spiffe://a.test"]);
    assert_eq!(
        refreshed.code,
        0,
        "refresh over the rotated certificate: {}",
        refreshed.all()
    );

    // Broken files: logged, and the last good certificate stays.
    fs::write(&cert_path, "not a certificate").unwrap();
    let log = a.path().join("server.log");
    wait_for(
        "the load failure to be logged",
        Duration::from_secs(20),
        || {
            fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Failed to load certificate")
                .then_some(())
        },
    );
    assert_eq!(presented_leaf(port, "127.0.0.1"), Some(second));
    assert!(a.server_running());
}

#[test]
fn federating_server_refuses_an_https_web_endpoint_it_has_no_root_for() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let (cert_pem, key_pem, _) = ca.leaf();
    fs::write(&cert_path, &cert_pem).unwrap();
    fs::write(&key_path, &key_pem).unwrap();
    let port = free_port();
    let mut a = serving_domain(
        "a.test",
        port,
        &format!(
            r#"profile "https_web" {{
                serving_cert_file {{
                    cert_file_path = "{}"
                    key_file_path = "{}"
                }}
            }}"#,
            cert_path.display(),
            key_path.display()
        ),
    );
    a.start_server();
    // No SSL_CERT_FILE: only the Mozilla roots, which do not know our CA.
    let mut b = federating_domain(&format!("https://127.0.0.1:{port}"));
    b.start_server();
    let out = b.server_cli(&["federation", "refresh", "-id", "spiffe://a.test"]);
    assert_ne!(out.code, 0);
    assert!(out.all().contains("TLS handshake"), "{}", out.all());
    let listed = b.server_cli(&["bundle", "list", "-id", "spiffe://a.test"]);
    assert!(
        !listed.stdout.contains("BEGIN CERTIFICATE"),
        "{}",
        listed.all()
    );
}

// ---- acme, against pebble ----

#[test]
fn federating_server_fetches_over_https_web_with_a_certificate_issued_by_pebble() {
    let Some(dir) = pebble_dir() else {
        return;
    };
    let port = free_port();
    // pebble belongs to a.test's processes so its log is dumped on failure.
    let mut a = serving_domain("a.test", port, "");
    let pebble = start_pebble(&mut a, &dir, port);
    let a_conf = fs::read_to_string(a.server_conf()).unwrap().replace(
        "refresh_hint = \"1m\"",
        &format!(
            r#"refresh_hint = "1m"
            profile "https_web" {{
                acme {{
                    domain_name = "localhost"
                    directory_url = "{}"
                    email = "ops@a.test"
                    tos_accepted = true
                }}
            }}"#,
            pebble.directory_url
        ),
    );
    fs::write(a.server_conf(), a_conf).unwrap();
    start_server_with_env(&mut a, &[("SSL_CERT_FILE", &pebble.roots_file)]);

    let leaf = wait_for(
        "a certificate issued by pebble",
        Duration::from_secs(90),
        || presented_leaf(port, "localhost").filter(|c| issuer_cn(c).contains("Pebble")),
    );
    // The account and certificate are cached under data_dir/bundle-acme.
    let cache = a.path().join("server-data/bundle-acme");
    assert!(cache.join("localhost.crt").exists());
    assert!(cache.join("localhost.key").exists());

    let mut b = federating_domain(&format!("https://localhost:{port}"));
    start_server_with_env(&mut b, &[("SSL_CERT_FILE", &pebble.roots_file)]);
    wait_for_federated_bundle(&b, &own_bundle_pem(&a));
    assert_eq!(presented_leaf(port, "localhost"), Some(leaf));
}
