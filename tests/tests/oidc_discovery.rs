//! `sigil-oidc-discovery-provider` driven as an operator would run it, with
//! SPIRE's configuration file, against a real sigil-server (server_api) or
//! sigil-agent (workload_api), read by an OIDC relying party: PyJWT's
//! `PyJWKClient`, knowing only the issuer URL, verifies JWT-SVIDs the agent
//! hands out. Each of the plain-HTTP, HTTPS (`serving_cert_file`) and Unix
//! socket listeners is exercised.
//!
//! The PyJWT checks need `SIGIL_TEST_PYTHON` pointing at a Python with
//! `pyjwt[crypto]` (`.ci/run` makes one); in CI its absence is a failure,
//! elsewhere those checks print a skip notice and the HTTP checks still run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use sigil_e2e::my_uid;
use sigil_testkit::{TrustDomain, bin, free_port, wait_for};

const AUDIENCE: &str = "oidc-test";

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One GET on any byte stream, the way a plain HTTP/1.1 client sends it.
fn http_get<S: Read + Write>(
    mut s: S,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> HttpResponse {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        assert!(!raw.is_empty(), "read response: {e}");
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn tcp_get(port: u16, path: &str, extra: &[(&str, &str)]) -> HttpResponse {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the provider");
    http_get(s, &format!("127.0.0.1:{port}"), path, extra)
}

/// The Python with PyJWT, or `None` after a skip notice (a failure in CI).
fn python() -> Option<String> {
    match std::env::var("SIGIL_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(!in_ci, "SIGIL_TEST_PYTHON must be set in CI");
            eprintln!("skipping the PyJWT checks: SIGIL_TEST_PYTHON not set (see .ci/run)");
            None
        }
    }
}

/// Runs PyJWT against `issuer`; asserts it verified `token` for `sub` and
/// returns its output line.
fn pyjwt_verifies(python: &str, issuer: &str, token: &str, sub: &str, ca: Option<&Path>) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/oidc_verify.py");
    let mut cmd = Command::new(python);
    cmd.args([script, issuer, token, AUDIENCE, sub]);
    if let Some(ca) = ca {
        cmd.env("SSL_CERT_FILE", ca);
    }
    let out = cmd.output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.starts_with("OK "),
        "PyJWT did not verify the token\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A server and an agent with an entry for this test process; returns the
/// workload's SPIFFE ID once the agent serves it.
fn bring_up(td: &mut TrustDomain) -> String {
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let id = "spiffe://example.org/workload/oidc".to_owned();
    td.server_cli(&[
        "entry",
        "create",
        "-parentID",
        &td.join_token_agent_id(&token),
        "-spiffeID",
        &id,
        "-selector",
        &format!("unix:uid:{}", my_uid()),
    ])
    .ok();
    wait_for("SVID", Duration::from_secs(30), || {
        let out = td.agent_cli(0, &["api", "fetch", "x509"]);
        (out.code == 0 && out.stdout.contains(&id)).then_some(())
    });
    id
}

/// A JWT-SVID for `id` from the agent's Workload API.
fn jwt_svid(td: &TrustDomain, id: &str, audience: &str) -> String {
    let out = td
        .agent_cli(0, &["api", "fetch", "jwt", "-audience", audience])
        .ok();
    out.stdout
        .lines()
        .skip_while(|l| !l.starts_with(&format!("token({id})")))
        .nth(1)
        .map(|l| l.trim().to_owned())
        .unwrap_or_else(|| panic!("no token for {id} in:\n{}", out.stdout))
}

/// The `kid` in a JWT's header.
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().expect("JWT header");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url header");
    let v: serde_json::Value = serde_json::from_slice(&json).expect("JSON header");
    v["kid"].as_str().expect("kid").to_owned()
}

fn kids(jwks: &serde_json::Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

/// Writes the provider's config and starts it; returns its process index.
fn start_provider(td: &mut TrustDomain, conf: &str) -> usize {
    let path = td.path().join("oidc.conf");
    std::fs::write(&path, conf).expect("write oidc.conf");
    let mut cmd = Command::new(bin("sigil-oidc-discovery-provider"));
    cmd.arg("-config").arg(&path);
    td.spawn_process("oidc", cmd)
}

fn server_api_block(td: &TrustDomain, poll: &str) -> String {
    format!(
        "server_api {{\n    address = \"unix://{}\"\n{poll}}}\n",
        td.server_socket().display()
    )
}

/// Waits until `/keys` on `port` lists a key (`want`, if given), and
/// returns the document; prints every log if it does not come.
fn wait_for_keys(
    td: &mut TrustDomain,
    index: usize,
    port: u16,
    want: Option<&str>,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = None;
    loop {
        if !td.process_running(index) {
            td.dump_logs();
            panic!("the provider exited");
        }
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            let r = http_get(s, &format!("127.0.0.1:{port}"), "/keys", &[]);
            if r.status == 200 {
                let doc = r.json();
                if want.is_none_or(|k| kids(&doc).iter().any(|x| x == k)) {
                    return doc;
                }
            }
            last = Some(r);
        }
        if std::time::Instant::now() > deadline {
            td.dump_logs();
            panic!("timed out waiting for keys {want:?} on /keys; last answer: {last:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pyjwt_verifies_a_sigil_jwt_svid_knowing_only_the_issuer_url() {
    let mut td = TrustDomain::new();
    let id = bring_up(&mut td);
    let port = free_port();
    let health = free_port();
    let conf = format!(
        "log_level = \"debug\"\nlog_requests = true\ndomains = [\"127.0.0.1\"]\ninsecure_addr = \"127.0.0.1:{port}\"\nallow_insecure_scheme = true\n{}health_checks {{\n    bind_port = \"{health}\"\n}}\n",
        server_api_block(&td, "")
    );
    let p = start_provider(&mut td, &conf);
    let jwks = wait_for_keys(&mut td, p, port, None);
    let token = jwt_svid(&td, &id, AUDIENCE);
    assert!(
        kids(&jwks).contains(&kid_of(&token)),
        "the signing key is not in {jwks}"
    );

    // The discovery document, as SPIRE's provider shapes it.
    let doc = tcp_get(port, "/.well-known/openid-configuration", &[]);
    assert_eq!(doc.status, 200, "{}", doc.body);
    let doc = doc.json();
    assert_eq!(doc["issuer"], format!("http://127.0.0.1:{port}"));
    assert_eq!(doc["jwks_uri"], format!("http://127.0.0.1:{port}/keys"));
    assert_eq!(doc["authorization_endpoint"], "");

    // A Host outside `domains` is refused.
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let refused = http_get(s, "evil.example", "/.well-known/openid-configuration", &[]);
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("is not allowed"), "{}", refused.body);

    // Clients can revalidate the key set instead of downloading it again.
    let keys = tcp_get(port, "/keys", &[]);
    let etag = keys.header("etag").expect("ETag").to_owned();
    assert_eq!(keys.header("cache-control"), Some("no-cache"));
    assert!(keys.header("last-modified").is_some());
    let again = tcp_get(port, "/keys", &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304);

    // Health checks on their own port.
    let s = TcpStream::connect(("127.0.0.1", health)).unwrap();
    assert_eq!(http_get(s, "localhost", "/ready", &[]).status, 200);
    let s = TcpStream::connect(("127.0.0.1", health)).unwrap();
    assert_eq!(http_get(s, "localhost", "/live", &[]).status, 200);

    if let Some(py) = python() {
        let issuer = format!("http://127.0.0.1:{port}");
        let out = pyjwt_verifies(&py, &issuer, &token, &id, None);
        assert!(out.contains(&kid_of(&token)), "{out}");
    }
}

#[test]
fn prepared_jwt_key_is_published_before_activation_and_verifies_after_it() {
    let mut td = TrustDomain::new();
    let id = bring_up(&mut td);
    let port = free_port();
    // SPIRE's default poll interval (10s): no poll_interval in the file.
    let conf = format!(
        "domains = [\"127.0.0.1\"]\ninsecure_addr = \"127.0.0.1:{port}\"\nallow_insecure_scheme = true\n{}",
        server_api_block(&td, "")
    );
    let p = start_provider(&mut td, &conf);
    let before = wait_for_keys(&mut td, p, port, None);
    let old_token = jwt_svid(&td, &id, AUDIENCE);
    let old_kid = kid_of(&old_token);
    assert!(kids(&before).contains(&old_kid));

    let prepared = td
        .server_cli(&["localauthority", "jwt", "prepare", "-output", "json"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&prepared.stdout).expect("JSON");
    let new_kid = v["prepared_authority"]["authority_id"]
        .as_str()
        .unwrap_or_else(|| panic!("prepared_authority in {}", prepared.stdout))
        .to_owned();
    assert_ne!(new_kid, old_kid);

    // Published within one poll interval, before it signs anything.
    let published = wait_for_keys(&mut td, p, port, Some(&new_kid));
    assert!(kids(&published).contains(&old_kid));

    td.server_cli(&[
        "localauthority",
        "jwt",
        "activate",
        "-authorityID",
        &new_kid,
    ])
    .ok();
    // A token minted after activation (new audience: nothing cached) is
    // signed with the new key, which the provider already serves.
    let audience = "oidc-test-after";
    let new_token = wait_for(
        "a token signed by the new key",
        Duration::from_secs(30),
        || {
            let t = jwt_svid(&td, &id, audience);
            (kid_of(&t) == new_kid).then_some(t)
        },
    );
    let keys = tcp_get(port, "/keys", &[]).json();
    assert!(kids(&keys).contains(&new_kid), "{keys}");
    if let Some(py) = python() {
        let issuer = format!("http://127.0.0.1:{port}");
        // PyJWT checks the audience it is given; this token has the new one.
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/oidc_verify.py");
        let out = Command::new(&py)
            .args([script, &issuer, &new_token, audience, &id])
            .output()
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&new_kid),
            "PyJWT did not verify the new key's token\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Tokens of the old key still verify while it is in the bundle.
        pyjwt_verifies(&py, &issuer, &old_token, &id, None);
    }
}

/// A CA and a `localhost` serving certificate it signed, as PEM files.
fn write_serving_cert(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "oidc test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("oidc-ca.pem"),
        dir.join("oidc-cert.pem"),
        dir.join("oidc-key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

fn https_get(ca: &Path, port: u16, path: &str) -> Option<HttpResponse> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    use rustls_pki_types::pem::PemObject as _;
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let tls = rustls::StreamOwned::new(conn, tcp);
    Some(http_get(tls, &format!("localhost:{port}"), path, &[]))
}

#[test]
fn serving_cert_file_serves_https_that_pyjwt_trusts_with_the_ca() {
    let mut td = TrustDomain::new();
    let id = bring_up(&mut td);
    let (ca, cert, key) = write_serving_cert(td.path());
    let port = free_port();
    let conf = format!(
        "domains = [\"localhost\"]\nserving_cert_file {{\n    cert_file_path = \"{}\"\n    key_file_path = \"{}\"\n    addr = \"127.0.0.1:{port}\"\n}}\n{}",
        cert.display(),
        key.display(),
        server_api_block(&td, "    poll_interval = \"1s\"\n")
    );
    let p = start_provider(&mut td, &conf);
    let doc = wait_for("HTTPS discovery document", Duration::from_secs(30), || {
        if !td.process_running(p) {
            td.dump_logs();
            panic!("the provider exited");
        }
        https_get(&ca, port, "/.well-known/openid-configuration")
    });
    assert_eq!(doc.status, 200, "{}", doc.body);
    let doc = doc.json();
    assert_eq!(doc["issuer"], format!("https://localhost:{port}"));
    assert_eq!(doc["jwks_uri"], format!("https://localhost:{port}/keys"));
    let keys = wait_for("HTTPS keys", Duration::from_secs(30), || {
        https_get(&ca, port, "/keys").filter(|r| r.status == 200)
    });
    let token = jwt_svid(&td, &id, AUDIENCE);
    assert!(kids(&keys.json()).contains(&kid_of(&token)));
    if let Some(py) = python() {
        pyjwt_verifies(
            &py,
            &format!("https://localhost:{port}"),
            &token,
            &id,
            Some(&ca),
        );
    }
}

#[test]
fn listen_socket_path_serves_the_documents_on_a_unix_socket() {
    let mut td = TrustDomain::new();
    bring_up(&mut td);
    let sock = td.path().join("oidc.sock");
    let conf = format!(
        "domains = [\"oidc.example.org\"]\nlisten_socket_path = \"{}\"\n{}",
        sock.display(),
        server_api_block(&td, "    poll_interval = \"1s\"\n")
    );
    let p = start_provider(&mut td, &conf);
    let keys = wait_for("keys on the Unix socket", Duration::from_secs(30), || {
        if !td.process_running(p) {
            td.dump_logs();
            panic!("the provider exited");
        }
        let s = UnixStream::connect(&sock).ok()?;
        let r = http_get(s, "oidc.example.org", "/keys", &[]);
        (r.status == 200).then_some(r)
    });
    assert!(!kids(&keys.json()).is_empty());
    // Behind a TLS-terminating proxy: https URLs for the public host.
    let s = UnixStream::connect(&sock).unwrap();
    let doc = http_get(
        s,
        "internal",
        "/.well-known/openid-configuration",
        &[("X-Forwarded-Host", "oidc.example.org")],
    );
    assert_eq!(doc.status, 200, "{}", doc.body);
    let doc = doc.json();
    assert_eq!(doc["issuer"], "https://oidc.example.org");
    assert_eq!(doc["jwks_uri"], "https://oidc.example.org/keys");
}

#[test]
fn workload_api_source_publishes_the_agents_jwt_bundle() {
    let mut td = TrustDomain::new();
    let id = bring_up(&mut td);
    let port = free_port();
    let conf = format!(
        "domains = [\"127.0.0.1\"]\ninsecure_addr = \"127.0.0.1:{port}\"\nallow_insecure_scheme = true\nworkload_api {{\n    socket_path = \"{}\"\n    trust_domain = \"example.org\"\n    poll_interval = \"1s\"\n}}\n",
        td.agent_socket(0).display()
    );
    let p = start_provider(&mut td, &conf);
    let jwks = wait_for_keys(&mut td, p, port, None);
    let token = jwt_svid(&td, &id, AUDIENCE);
    assert!(
        kids(&jwks).contains(&kid_of(&token)),
        "the signing key is not in {jwks}"
    );
    if let Some(py) = python() {
        pyjwt_verifies(&py, &format!("http://127.0.0.1:{port}"), &token, &id, None);
    }
}

/// The `acme` section against a real ACME CA (pebble): the provider
/// listens on port 443 as SPIRE's does, pebble validates TLS-ALPN-01 there,
/// and a client trusting only pebble's root reads the discovery document
/// and the keys over HTTPS. Needs port 443 free and root (CI runs as root).
#[test]
fn acme_section_serves_https_with_a_certificate_issued_by_pebble() {
    let Some(dir) = sigil_testkit::pebble::pebble_dir() else {
        return;
    };
    let mut td = TrustDomain::new();
    bring_up(&mut td);
    let pebble = sigil_testkit::pebble::start(&mut td, &dir, 443);
    let cache = td.path().join("oidc-acme");
    let conf = format!(
        "domains = [\"localhost\"]\nacme {{\n    cache_dir = \"{}\"\n    directory_url = \"{}\"\n    email = \"ops@example.org\"\n    tos_accepted = true\n}}\n{}",
        cache.display(),
        pebble.directory_url,
        server_api_block(&td, "    poll_interval = \"1s\"\n")
    );
    let path = td.path().join("oidc.conf");
    std::fs::write(&path, conf).expect("write oidc.conf");
    let mut cmd = Command::new(bin("sigil-oidc-discovery-provider"));
    cmd.arg("-config")
        .arg(&path)
        .env("SSL_CERT_FILE", &pebble.roots_file);
    let index = td.spawn_process("oidc", cmd);

    let roots = std::fs::read_to_string(&pebble.roots_file).expect("roots");
    let client = sigil_testkit::pebble::https_client(&roots);
    let discovery: serde_json::Value = wait_for(
        "the discovery document over HTTPS with pebble's certificate",
        Duration::from_secs(90),
        || {
            if !td.process_running(index) {
                td.dump_logs();
                panic!("the provider exited");
            }
            let mut resp = client
                .get("https://localhost:443/.well-known/openid-configuration")
                .call()
                .ok()?;
            (resp.status() == 200)
                .then(|| serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok())
                .flatten()
        },
    );
    assert_eq!(discovery["issuer"], "https://localhost");
    assert_eq!(discovery["jwks_uri"], "https://localhost/keys");
    let keys: serde_json::Value = wait_for("keys over HTTPS", Duration::from_secs(30), || {
        let mut resp = client.get("https://localhost:443/keys").call().ok()?;
        (resp.status() == 200)
            .then(|| serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok())
            .flatten()
    });
    assert!(
        keys["keys"].as_array().is_some_and(|k| !k.is_empty()),
        "{keys}"
    );
    // The account and certificate are cached for the next start.
    assert!(cache.join("localhost.crt").exists());
}

#[test]
fn missing_listener_is_refused_with_spires_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oidc.conf");
    std::fs::write(
        &path,
        "domains = [\"oidc.example.org\"]\nserver_api {\n    address = \"unix:///nowhere/api.sock\"\n}\n",
    )
    .unwrap();
    let out = Command::new(bin("sigil-oidc-discovery-provider"))
        .arg("-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "either acme, serving_cert_file, insecure_addr or listen_socket_path must be configured"
        ),
        "{stderr}"
    );
}
