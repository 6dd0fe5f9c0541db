//! End-to-end issuance with the real binaries, driven through the CLI the
//! way an operator would: token generate → agent attests → entry create →
//! a workload fetches X.509 and JWT SVIDs; restarts keep state; the agent
//! keeps serving while the server is down. No fakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use sigil_e2e::my_uid;
use sigil_testkit::{Options, TrustDomain, wait_for};

/// Creates an entry for this test process's uid under `parent`.
fn create_entry(td: &TrustDomain, parent: &str, spiffe_id: &str) -> String {
    let uid = format!("unix:uid:{}", my_uid());
    let out = td
        .server_cli(&[
            "entry",
            "create",
            "-parentID",
            parent,
            "-spiffeID",
            spiffe_id,
            "-selector",
            &uid,
        ])
        .ok();
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Entry ID"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no entry ID in: {}", out.stdout))
}

/// Brings up server + one attested agent + an entry for us; returns the
/// trust domain and the entry's SPIFFE ID.
fn bring_up(opts: Options) -> (TrustDomain, String) {
    let mut td = TrustDomain::with(opts);
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let id = format!("spiffe://{}/workload/e2e", td.opts.trust_domain);
    create_entry(&td, &td.join_token_agent_id(&token), &id);
    (td, id)
}

fn wait_for_svid(td: &TrustDomain, id: &str) {
    wait_for("the workload's X509-SVID", Duration::from_secs(30), || {
        let out = td.agent_cli(0, &["api", "fetch", "x509"]);
        (out.code == 0 && out.stdout.contains(id)).then_some(())
    });
}

#[test]
fn workload_fetches_x509_svid_that_openssl_verifies_against_the_bundle() {
    let (td, id) = bring_up(Options::default());
    wait_for_svid(&td, &id);
    let out_dir = td.path().join("svids");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = td
        .agent_cli(
            0,
            &["api", "fetch", "x509", "-write", out_dir.to_str().unwrap()],
        )
        .ok();
    assert!(out.stdout.contains(&id), "{}", out.stdout);
    for f in ["svid.0.pem", "svid.0.key", "bundle.0.pem"] {
        assert!(out_dir.join(f).exists(), "{f} written");
    }
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(out_dir.join("bundle.0.pem"))
        .arg(out_dir.join("svid.0.pem"))
        .output()
        .expect("run openssl");
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // The SVID names exactly the entry's SPIFFE ID.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(out_dir.join("svid.0.pem"))
        .output()
        .expect("run openssl x509");
    assert!(String::from_utf8_lossy(&text.stdout).contains(&format!("URI:{id}")));
}

#[test]
fn workload_fetches_jwt_svid_and_agent_validates_it() {
    let (td, id) = bring_up(Options::default());
    wait_for_svid(&td, &id);
    let out = td
        .agent_cli(0, &["api", "fetch", "jwt", "-audience", "spire-test"])
        .ok();
    let token = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with(&format!("token({id})")))
        .nth(1)
        .map(|l| l.trim().to_owned())
        .unwrap_or_else(|| panic!("no token for {id} in:\n{}", out.stdout));
    let ok = td
        .agent_cli(
            0,
            &[
                "api",
                "validate",
                "jwt",
                "-audience",
                "spire-test",
                "-svid",
                &token,
            ],
        )
        .ok();
    assert!(ok.stdout.contains("SVID is valid."), "{}", ok.stdout);
    assert!(ok.stdout.contains(&id), "{}", ok.stdout);
    let wrong = td.agent_cli(
        0,
        &[
            "api",
            "validate",
            "jwt",
            "-audience",
            "other",
            "-svid",
            &token,
        ],
    );
    let wrong = wrong.failed();
    assert!(
        wrong.all().to_lowercase().contains("audience"),
        "{}",
        wrong.all()
    );
}

#[test]
fn server_restart_keeps_entries_and_agent_restart_keeps_identity() {
    let (mut td, id) = bring_up(Options::default());
    wait_for_svid(&td, &id);
    let agents_before = td.server_cli(&["agent", "list"]).ok().stdout;

    td.stop_server();
    td.start_server();
    let shown = td.server_cli(&["entry", "show", "-spiffeID", &id]).ok();
    assert!(
        shown.stdout.contains(&id),
        "entry survives restart: {}",
        shown.stdout
    );

    // The agent restarts without a token: it reuses its stored SVID.
    td.stop_agent(0);
    td.start_agent(0, None);
    wait_for_svid(&td, &id);
    let agents_after = td.server_cli(&["agent", "list"]).ok().stdout;
    assert_eq!(
        agents_before.matches("spiffe://").count(),
        agents_after.matches("spiffe://").count(),
        "no second agent was attested:\nbefore:\n{agents_before}\nafter:\n{agents_after}"
    );
}

#[test]
fn server_killed_hard_loses_no_committed_entry() {
    let (mut td, id) = bring_up(Options::default());
    let second = format!("spiffe://{}/workload/second", td.opts.trust_domain);
    create_entry(
        &td,
        &format!("spiffe://{}/spire/server", td.opts.trust_domain),
        &second,
    );
    td.kill_server();
    td.start_server();
    let count = td.server_cli(&["entry", "count"]).ok();
    assert!(
        count.stdout.contains("2 registration entries"),
        "{}",
        count.stdout
    );
    assert!(
        td.server_cli(&["entry", "show", "-spiffeID", &id])
            .ok()
            .stdout
            .contains(&id)
    );
}

#[test]
fn agent_keeps_serving_cached_svids_while_server_is_down() {
    let (mut td, id) = bring_up(Options::default());
    wait_for_svid(&td, &id);
    td.stop_server();
    std::thread::sleep(Duration::from_secs(3));
    let out = td.agent_cli(0, &["api", "fetch", "x509"]).ok();
    assert!(out.stdout.contains(&id), "{}", out.stdout);
    // And after an agent restart with the server still down.
    td.stop_agent(0);
    td.start_agent(0, None);
    let out = td.agent_cli(0, &["api", "fetch", "x509"]).ok();
    assert!(
        out.stdout.contains(&id),
        "served from the persisted cache: {}",
        out.stdout
    );
}

#[test]
fn postgres_backed_server_issues_svids() {
    let Some(url) = std::env::var("SIGIL_TEST_POSTGRES_URL").ok() else {
        assert!(
            std::env::var("CI").is_err(),
            "SIGIL_TEST_POSTGRES_URL must be set in CI"
        );
        eprintln!("skipping: SIGIL_TEST_POSTGRES_URL not set");
        return;
    };
    // A database of its own, so reruns and parallel tests do not collide.
    let db = format!("sigil_e2e_{}", std::process::id());
    let admin = Command::new("psql")
        .arg(&url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg(format!("DROP DATABASE IF EXISTS {db}; "))
        .status()
        .expect("psql");
    assert!(admin.success());
    let created = Command::new("psql")
        .arg(&url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg(format!("CREATE DATABASE {db}"))
        .status()
        .expect("psql");
    assert!(created.success());
    let base = url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .expect("URL with a database");
    let opts = Options {
        datastore: Some(("postgres".into(), format!("{base}/{db}"))),
        ..Options::default()
    };
    let (mut td, id) = bring_up(opts);
    wait_for_svid(&td, &id);
    td.stop_server();
    td.start_server();
    assert!(
        td.server_cli(&["entry", "show", "-spiffeID", &id])
            .ok()
            .stdout
            .contains(&id)
    );
}

#[test]
fn upstream_authority_disk_chains_workload_svids_to_the_upstream_root() {
    // An upstream root made with openssl, as an operator's existing PKI would be.
    let pki = tempfile::tempdir().unwrap();
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-keyout",
            "upstream.key",
            "-out",
            "upstream.crt",
            "-subj",
            "/O=Corp/CN=Corp Root",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:true",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .current_dir(pki.path())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let opts = Options {
        server_extra_plugins: format!(
            "    UpstreamAuthority \"disk\" {{\n        plugin_data {{\n            key_file_path = \"{}\"\n            cert_file_path = \"{}\"\n        }}\n    }}",
            pki.path().join("upstream.key").display(),
            pki.path().join("upstream.crt").display()
        ),
        ..Options::default()
    };
    let (td, id) = bring_up(opts);
    wait_for_svid(&td, &id);
    let out_dir = td.path().join("svids");
    std::fs::create_dir_all(&out_dir).unwrap();
    td.agent_cli(
        0,
        &["api", "fetch", "x509", "-write", out_dir.to_str().unwrap()],
    )
    .ok();
    // The bundle is the upstream root alone; the SVID file carries our CA.
    let bundle = std::fs::read_to_string(out_dir.join("bundle.0.pem")).unwrap();
    let upstream = std::fs::read_to_string(pki.path().join("upstream.crt")).unwrap();
    assert_eq!(
        bundle.trim(),
        upstream.trim(),
        "bundle is exactly the upstream root"
    );
    let svid = std::fs::read_to_string(out_dir.join("svid.0.pem")).unwrap();
    assert_eq!(
        svid.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf and sigil's CA"
    );
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(out_dir.join("bundle.0.pem"))
        .arg("-untrusted")
        .arg(out_dir.join("svid.0.pem"))
        .arg(out_dir.join("svid.0.pem"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}
