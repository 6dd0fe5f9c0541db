//! pebble, Let's Encrypt's ACME test server, for tests of sigil's ACME
//! listeners (the bundle endpoint's `https_web` profile, the OIDC discovery
//! provider): pebble-challtestsrv answers every DNS name with 127.0.0.1 and
//! pebble validates TLS-ALPN-01 on the port the test names, so a sigil
//! listener on 127.0.0.1 gets a real certificate for `localhost`.
//! `SIGIL_TEST_PEBBLE_BIN` (from `.ci/install-pebble.sh`) is the directory
//! holding both binaries and pebble's test certificates.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;

use crate::{TrustDomain, free_port, wait_for};

const PEBBLE_BIN_ENV: &str = "SIGIL_TEST_PEBBLE_BIN";

/// A running pebble: where its ACME directory is, and a PEM file holding
/// every root a client needs (pebble's own HTTPS root and the root of the
/// certificates it issues), for `SSL_CERT_FILE`.
#[derive(Debug)]
pub struct Pebble {
    /// The ACME directory URL (`directory_url`).
    pub directory_url: String,
    /// pebble's minica root and its issuing root, PEM.
    pub roots_file: PathBuf,
}

/// The pebble build directory, or `None` with a skip notice (a failure in
/// CI).
pub fn pebble_dir() -> Option<PathBuf> {
    match std::env::var(PEBBLE_BIN_ENV) {
        Ok(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => {
            let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(!in_ci, "{PEBBLE_BIN_ENV} must be set in CI");
            eprintln!("skipping: {PEBBLE_BIN_ENV} not set (see .ci/install-pebble.sh)");
            None
        }
    }
}

/// Starts pebble-challtestsrv (DNS answering 127.0.0.1 for every name) and
/// pebble validating TLS-ALPN-01 on `tls_port`, as processes of `td` (so
/// their logs are printed when the test fails).
pub fn start(td: &mut TrustDomain, dir: &Path, tls_port: u16) -> Pebble {
    let (dns_port, acme_port, mgmt_port) = (free_port(), free_port(), free_port());
    let mut dns = Command::new(dir.join("pebble-challtestsrv"));
    dns.args([
        "-dnsserver",
        &format!("127.0.0.1:{dns_port}"),
        "-defaultIPv4",
        "127.0.0.1",
        "-defaultIPv6",
        "",
        "-http01",
        "",
        "-https01",
        "",
        "-tlsalpn01",
        "",
        "-doh",
        "",
        "-management",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    td.spawn_process("challtestsrv", dns);

    let config = td.path().join("pebble.json");
    let certs = dir.join("certs");
    fs::write(
        &config,
        serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": certs.join("localhost/cert.pem"),
            "privateKey": certs.join("localhost/key.pem"),
            "httpPort": free_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }})
        .to_string(),
    )
    .expect("write pebble.json");
    let mut pebble = Command::new(dir.join("pebble"));
    pebble
        .arg("-config")
        .arg(&config)
        .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0");
    let index = td.spawn_process("pebble", pebble);

    // pebble's own HTTPS listeners use its test "minica" root.
    let minica = fs::read_to_string(certs.join("pebble.minica.pem")).expect("pebble minica root");
    let agent = https_client(&minica);
    let issuing_root = wait_for("pebble's issuing root", Duration::from_secs(30), || {
        assert!(td.process_running(index), "pebble exited");
        let mut resp = agent
            .get(&format!("https://127.0.0.1:{mgmt_port}/roots/0"))
            .call()
            .ok()?;
        (resp.status() == 200).then(|| resp.body_mut().read_to_string().expect("root body"))
    });
    let roots_file = td.path().join("pebble-roots.pem");
    fs::write(&roots_file, format!("{minica}\n{issuing_root}")).expect("write roots");
    Pebble {
        directory_url: format!("https://localhost:{acme_port}/dir"),
        roots_file,
    }
}

/// A blocking HTTPS client trusting only the PEM roots in `ca_pem`, not
/// treating HTTP error statuses as errors.
pub fn https_client(ca_pem: &str) -> ureq::Agent {
    let roots: Vec<ureq::tls::Certificate<'static>> =
        rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .map(|c| {
                ureq::tls::Certificate::from_der(c.expect("PEM certificate").as_ref()).to_owned()
            })
            .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build();
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    )
}
