//! sigil-helper, started the way spiffe-helper is (`sigil-helper -config
//! helper.conf`, a spiffe-helper config file), against a real sigil-server
//! and sigil-agent: it writes the certificate chain, key and bundle with the
//! configured modes (openssl verifies the chain), rewrites them when the
//! agent rotates the SVID, starts its `cmd` once and sends it `renew_signal`
//! after the rotation; writes a JWT-SVID and the JWT bundle; and in
//! one-shot mode writes the files and exits 0, or exits non-zero naming the
//! socket when no agent answers. No fakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use sigil_e2e::my_uid;
use sigil_testkit::{TrustDomain, bin, free_port, wait_for};

const AUDIENCE: &str = "legacy-db";

/// Server + attested agent + an entry for this test's uid with a short
/// X.509 TTL; waits until the agent serves it. Returns the SPIFFE ID.
fn bring_up(td: &mut TrustDomain, x509_ttl: &str) -> String {
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let id = format!("spiffe://{}/legacy/app", td.opts.trust_domain);
    td.server_cli(&[
        "entry",
        "create",
        "-parentID",
        &td.join_token_agent_id(&token),
        "-spiffeID",
        &id,
        "-selector",
        &format!("unix:uid:{}", my_uid()),
        "-x509SVIDTTL",
        x509_ttl,
    ])
    .ok();
    wait_for("the workload's X509-SVID", Duration::from_secs(30), || {
        let out = td.agent_cli(0, &["api", "fetch", "x509"]);
        (out.code == 0 && out.stdout.contains(&id)).then_some(())
    });
    id
}

/// An HCL string literal.
fn hcl(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A spiffe-helper config writing every file kind into `certs`, with a
/// non-default key mode written in octal as spiffe-helper users do.
fn write_config(dir: &Path, agent_socket: &Path, certs: &Path, extra: &str) -> PathBuf {
    let conf = format!(
        r#"agent_address = {agent}
cert_dir = {certs}
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
key_file_mode = 0640
jwt_svids = [{{jwt_audience = "{AUDIENCE}", jwt_extra_audiences = ["other"], jwt_svid_file_name = "jwt_svid.token"}}]
jwt_bundle_file_name = "jwt_bundle.json"
{extra}
"#,
        agent = hcl(&agent_socket.display().to_string()),
        certs = hcl(&certs.display().to_string()),
    );
    let path = dir.join("helper.conf");
    fs::write(&path, conf).unwrap();
    path
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn leaf_der(svid_pem: &Path) -> Vec<u8> {
    let text = fs::read(svid_pem).unwrap();
    pem_blocks(&text).into_iter().next().expect("a certificate")
}

fn pem_blocks(text: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(text);
    let mut out = Vec::new();
    let mut body = None::<String>;
    for line in text.lines() {
        if line.starts_with("-----BEGIN") {
            body = Some(String::new());
        } else if line.starts_with("-----END") {
            if let Some(b) = body.take() {
                out.push(base64::engine::general_purpose::STANDARD.decode(b).unwrap());
            }
        } else if let Some(b) = body.as_mut() {
            b.push_str(line.trim());
        }
    }
    out
}

use sigil_testkit::http::get_local as http_get;

fn openssl_verify(certs: &Path) {
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(certs.join("svid_bundle.pem"))
        .arg(certs.join("svid.pem"))
        .output()
        .expect("run openssl");
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// The JWT-SVID file holds a token for `id` with our audiences; the JWT
/// bundle file maps the trust domain name to a base64 JWKS.
fn check_jwt_files(certs: &Path, id: &str, trust_domain: &str) {
    let token = fs::read_to_string(certs.join("jwt_svid.token")).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS: {token}");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], id);
    let aud = claims["aud"].to_string();
    assert!(aud.contains(AUDIENCE) && aud.contains("other"), "{aud}");
    assert_eq!(mode(&certs.join("jwt_svid.token")), 0o600);

    let bundle: serde_json::Value =
        serde_json::from_slice(&fs::read(certs.join("jwt_bundle.json")).unwrap()).unwrap();
    let jwks = bundle[trust_domain]
        .as_str()
        .expect("bundle of our trust domain");
    let jwks: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(jwks)
            .unwrap(),
    )
    .unwrap();
    assert!(
        jwks["keys"].as_array().is_some_and(|k| !k.is_empty()),
        "{jwks}"
    );
    assert_eq!(mode(&certs.join("jwt_bundle.json")), 0o600);
}

#[test]
fn helper_writes_files_rewrites_them_on_rotation_and_signals_its_command() {
    let mut td = TrustDomain::new();
    let id = bring_up(&mut td, "20");
    let dir = td.path().join("helper");
    let certs = dir.join("certs");
    fs::create_dir_all(&certs).unwrap();
    let started = dir.join("started");
    let signals = dir.join("signals");
    let child_pid = dir.join("child.pid");
    // The "legacy app": records each start and each SIGUSR1, and exits
    // when the helper (its parent) is gone.
    let script = format!(
        "trap 'echo usr1 >> {signals}' USR1; echo $$ > {pid}; echo start >> {started}; while kill -0 $PPID 2>/dev/null; do sleep 0.2; done",
        signals = signals.display(),
        pid = child_pid.display(),
        started = started.display(),
    );
    let health_port = free_port();
    let extra = format!(
        "cmd = \"/bin/sh\"\ncmd_args = {}\nrenew_signal = \"SIGUSR1\"\nhealth_checks {{\n  listener_enabled = true\n  bind_port = {health_port}\n}}",
        hcl(&format!("-c \"{script}\""))
    );
    let conf = write_config(&dir, &td.agent_socket(0), &certs, &extra);
    let mut helper = Command::new(bin("sigil-helper"));
    helper.arg("-config").arg(&conf);
    let helper = td.spawn_process("sigil-helper", helper);

    wait_for("the helper's files", Duration::from_secs(30), || {
        [
            "svid.pem",
            "svid_key.pem",
            "svid_bundle.pem",
            "jwt_svid.token",
            "jwt_bundle.json",
        ]
        .iter()
        .all(|f| certs.join(f).exists())
        .then_some(())
    });
    assert_eq!(
        mode(&certs.join("svid.pem")),
        0o644,
        "cert_file_mode default"
    );
    assert_eq!(
        mode(&certs.join("svid_bundle.pem")),
        0o644,
        "cert_file_mode default"
    );
    assert_eq!(
        mode(&certs.join("svid_key.pem")),
        0o640,
        "key_file_mode = 0640"
    );
    let key = fs::read_to_string(certs.join("svid_key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
    openssl_verify(&certs);
    let first = leaf_der(&certs.join("svid.pem"));
    let (_, cert) = x509_parser::parse_x509_certificate(&first).unwrap();
    let sans = format!("{:?}", cert.subject_alternative_name().unwrap());
    assert!(sans.contains(&id), "{sans}");
    check_jwt_files(&certs, &id, &td.opts.trust_domain);
    // spiffe-helper's health endpoints: ready once every file set is written.
    let (status, body) = wait_for("ready", Duration::from_secs(10), || {
        http_get(health_port, "/ready").filter(|(s, _)| *s == 200)
    });
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "OK");
    assert_eq!(
        body["health"]["file_write_statuses"]["x509_write_status"],
        "written"
    );
    assert_eq!(http_get(health_port, "/live").map(|r| r.0), Some(200));

    wait_for("the command started", Duration::from_secs(10), || {
        fs::read_to_string(&started).ok().filter(|s| s == "start\n")
    });

    // The 20 s SVID is renewed at half life: new files, then the signal.
    let t0 = Instant::now();
    wait_for("the rotated SVID on disk", Duration::from_secs(40), || {
        (leaf_der(&certs.join("svid.pem")) != first).then_some(())
    });
    eprintln!("rotated after {:?}", t0.elapsed());
    openssl_verify(&certs);
    assert_eq!(
        mode(&certs.join("svid_key.pem")),
        0o640,
        "mode kept on rewrite"
    );
    wait_for(
        "SIGUSR1 delivered to the command",
        Duration::from_secs(10),
        || {
            fs::read_to_string(&signals)
                .ok()
                .filter(|s| s.lines().count() >= 1)
        },
    );
    assert_eq!(
        fs::read_to_string(&started).unwrap(),
        "start\n",
        "the command is started once, then only signaled"
    );
    // No temporary files are left in the directory.
    let names: Vec<String> = fs::read_dir(&certs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");

    td.stop_process(helper);
    if let Ok(pid) = fs::read_to_string(&child_pid) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
}

#[test]
fn helper_in_one_shot_mode_writes_the_files_and_exits_zero() {
    let mut td = TrustDomain::new();
    let id = bring_up(&mut td, "3600");
    let dir = td.path().join("helper");
    let certs = dir.join("certs");
    fs::create_dir_all(&certs).unwrap();
    let conf = write_config(&dir, &td.agent_socket(0), &certs, "daemon_mode = false");
    let out = Command::new(bin("sigil-helper"))
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    openssl_verify(&certs);
    assert_eq!(mode(&certs.join("svid_key.pem")), 0o640);
    check_jwt_files(&certs, &id, &td.opts.trust_domain);
}

#[test]
fn helper_in_one_shot_mode_fails_naming_the_socket_when_no_agent_answers() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    fs::create_dir_all(&certs).unwrap();
    let socket = dir.path().join("no-agent/api.sock");
    let conf = write_config(dir.path(), &socket, &certs, "");
    let started = Instant::now();
    let out = Command::new(bin("sigil-helper"))
        .args(["-daemon-mode=false", "-fetch-timeout", "2s", "-config"])
        .arg(&conf)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&socket.display().to_string()), "{stderr}");
    assert!(stderr.contains("within 2s"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(!certs.join("svid.pem").exists());
}

#[test]
fn helper_refuses_an_option_it_does_not_know_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let conf = write_config(
        dir.path(),
        Path::new("/tmp/x.sock"),
        &certs,
        "svid_filename = \"typo.pem\"",
    );
    let out = Command::new(bin("sigil-helper"))
        .arg("-config")
        .arg(&conf)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("svid_filename"), "{stderr}");
}
