//! The client commands end to end against an in-process Workload API (the
//! real `WorkloadApi` on a temp Unix socket, fed by the fakes in
//! `workload::testutil`), plus their text formats for fixed inputs and their
//! SPIRE-spelled flags.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use clap::Parser as _;
use sigil_proto::workload::{
    JwtBundlesResponse, Jwtsvid, JwtsvidResponse, ValidateJwtsvidResponse, X509svid,
    X509svidResponse,
};

use super::x509::{Cert, SvidView, format_svids};
use super::*;
use crate::workload::testutil::{TestAgent, TestCa, federating};

#[derive(clap::Parser, Debug)]
struct TestCli {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(clap::Subcommand, Debug)]
enum Top {
    #[command(subcommand)]
    Api(ApiCommand),
    Healthcheck(HealthcheckArgs),
}

fn parse(args: &[&str]) -> Top {
    let argv =
        sigil_cli::normalize_go_flags(std::iter::once("sigil-agent").chain(args.iter().copied()));
    TestCli::try_parse_from(argv).expect("parses").cmd
}

fn fetch(args: &[&str]) -> FetchCommand {
    match api(args) {
        ApiCommand::Fetch(f) => f.into_command(),
        other => panic!("not api fetch: {other:?}"),
    }
}

fn api(args: &[&str]) -> ApiCommand {
    match parse(args) {
        Top::Api(cmd) => cmd,
        other => panic!("not an api command: {other:?}"),
    }
}

async fn run(cmd: ApiCommand) -> (ExitCode, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_api_with(cmd, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).expect("utf8"),
        String::from_utf8(err).expect("utf8"),
    )
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn cert(not_before: u64, not_after: u64) -> Cert {
    Cert {
        der: vec![],
        not_before: at(not_before),
        not_after: at(not_after),
    }
}

#[test]
fn flags_use_spire_spelling_and_go_style_dashes() {
    let FetchCommand::Jwt(jwt) = fetch(&[
        "api",
        "fetch",
        "jwt",
        "-audience",
        "a,b",
        "-audience",
        "c",
        "-spiffeID",
        "spiffe://example.org/web",
        "-socketPath",
        "/run/agent.sock",
        "-timeout",
        "1m",
        "-format",
        "json",
    ]) else {
        panic!("fetch jwt");
    };
    assert_eq!(jwt.audience, ["a", "b", "c"]);
    assert_eq!(jwt.spiffe_id, "spiffe://example.org/web");
    assert_eq!(jwt.socket_path, std::path::Path::new("/run/agent.sock"));
    assert_eq!(jwt.timeout, Duration::from_secs(60));
    assert_eq!(jwt.output, OutputFormat::Json);

    let FetchCommand::X509(x509) =
        fetch(&["api", "fetch", "x509", "-write", "/tmp/out", "-silent"])
    else {
        panic!("fetch x509");
    };
    assert!(x509.silent);
    assert_eq!(
        x509.write.as_deref(),
        Some(std::path::Path::new("/tmp/out"))
    );
    assert_eq!(x509.socket_path, std::path::Path::new(DEFAULT_SOCKET_PATH));
    assert_eq!(x509.timeout, Duration::from_secs(5));
    assert_eq!(x509.output, OutputFormat::Pretty);
    let FetchCommand::X509(x509) = fetch(&["api", "fetch", "x509", "-silent=false"]) else {
        panic!("fetch x509");
    };
    assert!(!x509.silent);

    let ApiCommand::Validate(ValidateCommand::Jwt(v)) = api(&[
        "api",
        "validate",
        "jwt",
        "-audience",
        "db",
        "-svid",
        "a.b.c",
    ]) else {
        panic!("validate jwt");
    };
    assert_eq!((v.audience.as_str(), v.svid.as_str()), ("db", "a.b.c"));
    assert!(matches!(
        api(&["api", "watch", "-socketPath", "/s"]),
        ApiCommand::Watch(_)
    ));

    let Top::Healthcheck(h) = parse(&["healthcheck", "-shallow", "-verbose=true"]) else {
        panic!("healthcheck");
    };
    assert!(h.shallow && h.verbose);
}

#[test]
fn api_fetch_without_subcommand_is_fetch_x509_like_spire() {
    let FetchCommand::X509(x509) = fetch(&["api", "fetch", "-write", "/tmp/out", "-silent"]) else {
        panic!("api fetch is not fetch x509");
    };
    assert!(x509.silent);
    assert_eq!(
        x509.write.as_deref(),
        Some(std::path::Path::new("/tmp/out"))
    );
    assert!(matches!(fetch(&["api", "fetch"]), FetchCommand::X509(_)));
    // x509's flags belong to the alias, not in front of another subcommand.
    let argv = sigil_cli::normalize_go_flags(["sigil-agent", "api", "fetch", "-silent", "jwt"]);
    assert!(TestCli::try_parse_from(argv).is_err());
}

#[test]
fn x509_listing_matches_spires_layout() {
    let mut federated = BTreeMap::new();
    federated.insert("spiffe://partner.org".to_owned(), vec![cert(100, 200)]);
    let svids = [
        SvidView {
            spiffe_id: "spiffe://example.org/web".into(),
            hint: "internal".into(),
            certificates: vec![
                cert(1_714_564_800, 1_714_568_400),
                cert(1_714_000_000, 1_715_000_000),
            ],
            key_pkcs8: vec![],
            bundle: vec![cert(1_700_000_000, 1_800_000_000)],
            federated,
        },
        SvidView {
            spiffe_id: "spiffe://example.org/db".into(),
            hint: String::new(),
            certificates: vec![cert(0, 60)],
            key_pkcs8: vec![],
            bundle: vec![cert(0, 120)],
            federated: BTreeMap::new(),
        },
    ];
    let text = format_svids(&svids, Duration::from_micros(1_234_567));
    let want = "Received 2 svids after 1.234567s\n\
        \n\
        SPIFFE ID:\t\tspiffe://example.org/web\n\
        Hint:\t\t\tinternal\n\
        SVID Valid After:\t2024-05-01 12:00:00 +0000 UTC\n\
        SVID Valid Until:\t2024-05-01 13:00:00 +0000 UTC\n\
        Intermediate #1 Valid After:\t2024-04-24 23:06:40 +0000 UTC\n\
        Intermediate #1 Valid Until:\t2024-05-06 12:53:20 +0000 UTC\n\
        CA #1 Valid After:\t2023-11-14 22:13:20 +0000 UTC\n\
        CA #1 Valid Until:\t2027-01-15 08:00:00 +0000 UTC\n\
        [spiffe://partner.org] CA #1 Valid After:\t1970-01-01 00:01:40 +0000 UTC\n\
        [spiffe://partner.org] CA #1 Valid Until:\t1970-01-01 00:03:20 +0000 UTC\n\
        \n\
        SPIFFE ID:\t\tspiffe://example.org/db\n\
        SVID Valid After:\t1970-01-01 00:00:00 +0000 UTC\n\
        SVID Valid Until:\t1970-01-01 00:01:00 +0000 UTC\n\
        CA #1 Valid After:\t1970-01-01 00:00:00 +0000 UTC\n\
        CA #1 Valid Until:\t1970-01-01 00:02:00 +0000 UTC\n\
        \n";
    assert_eq!(text, want);
    assert!(
        format_svids(&svids[1..], Duration::from_millis(3))
            .starts_with("Received 1 svid after 3ms\n")
    );
}

#[test]
fn jwt_listing_and_validation_match_spires_layout() {
    let svids = JwtsvidResponse {
        svids: vec![
            Jwtsvid {
                spiffe_id: "spiffe://example.org/web".into(),
                svid: "aaa.bbb.ccc".into(),
                hint: "h1".into(),
            },
            Jwtsvid {
                spiffe_id: "spiffe://example.org/db".into(),
                svid: "ddd.eee.fff".into(),
                hint: String::new(),
            },
        ],
    };
    let bundles = JwtBundlesResponse {
        bundles: [
            ("spiffe://z.org".to_owned(), b"{\"keys\": []}".to_vec()),
            (
                "spiffe://example.org".to_owned(),
                b"{\n    \"keys\": []\n}".to_vec(),
            ),
        ]
        .into(),
    };
    assert_eq!(
        jwt::format_fetch_jwt(&svids, &bundles),
        "token(spiffe://example.org/web):\n\taaa.bbb.ccc\n\
         hint(spiffe://example.org/web):\n\th1\n\
         token(spiffe://example.org/db):\n\tddd.eee.fff\n\
         bundle(spiffe://example.org):\n\t{\n    \"keys\": []\n}\n\
         bundle(spiffe://z.org):\n\t{\"keys\": []}\n"
    );

    let claims = crate::workload::compose::validated_claims(
        serde_json::json!({
            "sub": "spiffe://example.org/web", "aud": ["db"], "exp": 1_700_000_000
        })
        .as_object()
        .expect("object"),
        false,
        &Default::default(),
    );
    let resp = ValidateJwtsvidResponse {
        spiffe_id: "spiffe://example.org/web".into(),
        claims: Some(claims),
    };
    assert_eq!(
        jwt::format_validate(&resp),
        "SVID is valid.\n\
         SPIFFE ID : spiffe://example.org/web\n\
         Claims    : {\"aud\":[\"db\"],\"exp\":1700000000,\"sub\":\"spiffe://example.org/web\"}\n"
    );
}

#[test]
fn x509_json_uses_proto_names_base64_and_every_field() {
    let resp = X509svidResponse {
        svids: vec![X509svid {
            spiffe_id: "spiffe://example.org/web".into(),
            x509_svid: vec![1, 2],
            x509_svid_key: vec![3],
            bundle: vec![4],
            hint: String::new(),
        }],
        crl: vec![],
        federated_bundles: Default::default(),
    };
    assert_eq!(
        format::x509_response_json(&resp).to_string(),
        r#"{"crl":[],"federated_bundles":{},"svids":[{"bundle":"BA==","hint":"","spiffe_id":"spiffe://example.org/web","x509_svid":"AQI=","x509_svid_key":"Aw=="}]}"#
    );
}

#[tokio::test]
async fn fetch_x509_write_saves_pem_files_with_a_private_key_mode() {
    let agent = TestAgent::start().await;
    let web = federating(
        agent.ca.svid("e1", "/web", &["unix:uid:1000"]),
        &["partner.org"],
    );
    let partner = TestCa::new("partner.org").bundle();
    agent.publish(vec![web.clone()], vec![partner.clone()]);
    let out_dir = tempfile::tempdir().expect("tempdir");
    // A key file left world-readable by someone else must end up 0600.
    let key_path = out_dir.path().join("svid.0.key");
    std::fs::write(&key_path, b"old").expect("pre-create");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let socket = agent.path().to_str().expect("utf8 path").to_owned();
    let dir = out_dir.path().to_str().expect("utf8 path").to_owned();
    let (code, out, err) = run(api(&[
        "api",
        "fetch",
        "x509",
        "-socketPath",
        &socket,
        "-write",
        &dir,
    ]))
    .await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(out.starts_with("Received 1 svid after "), "{out}");
    assert!(
        out.contains("SPIFFE ID:\t\tspiffe://example.org/web\n"),
        "{out}"
    );
    assert!(
        out.contains("[spiffe://partner.org] CA #1 Valid After:\t"),
        "{out}"
    );
    let svid_path = out_dir.path().join("svid.0.pem");
    assert!(out.contains(&format!(
        "Writing SVID #0 to file {}.\n",
        svid_path.display()
    )));
    assert!(out.contains(&format!(
        "Writing federated bundle #0 for trust domain spiffe://partner.org to file {}.\n",
        out_dir.path().join("federated_bundle.0.0.pem").display()
    )));

    let blocks = |name: &str| {
        let text = std::fs::read(out_dir.path().join(name)).expect("written");
        pem::parse_many(text).expect("pem")
    };
    let svid = blocks("svid.0.pem");
    assert_eq!(svid.len(), 1);
    assert_eq!(svid[0].tag(), "CERTIFICATE");
    assert_eq!(svid[0].contents(), web.chain[0].as_slice());
    let key = blocks("svid.0.key");
    assert_eq!(key.len(), 1);
    assert_eq!(key[0].tag(), "PRIVATE KEY");
    assert_eq!(key[0].contents(), web.key_pkcs8.as_slice());
    let mode = std::fs::metadata(&key_path)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let bundle = blocks("bundle.0.pem");
    assert_eq!(bundle[0].tag(), "CERTIFICATE");
    assert_eq!(bundle[0].contents(), agent.ca.cert.as_slice());
    let federated = blocks("federated_bundle.0.0.pem");
    assert_eq!(
        federated[0].contents(),
        partner.x509_authorities[0].as_slice()
    );
    let bundle_mode = std::fs::metadata(out_dir.path().join("bundle.0.pem"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(bundle_mode & 0o777, 0o644);

    // -silent suppresses the listing but not the file messages.
    let (code, out, _) = run(api(&[
        "api",
        "fetch",
        "x509",
        "-socketPath",
        &socket,
        "-write",
        &dir,
        "-silent",
    ]))
    .await;
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(out.starts_with("Writing SVID #0 to file "), "{out}");
}

#[tokio::test]
async fn fetch_x509_without_identity_fails_with_the_agents_reason() {
    let agent = TestAgent::start().await;
    agent.publish(vec![agent.ca.svid("e1", "/web", &["unix:uid:0"])], vec![]);
    let socket = agent.path().to_str().expect("utf8 path").to_owned();
    let (code, out, err) = run(api(&["api", "fetch", "x509", "-socketPath", &socket])).await;
    assert_eq!(code, ExitCode::FAILURE);
    assert!(out.is_empty());
    assert_eq!(
        err,
        "rpc error: code = PermissionDenied desc = no identity issued\n"
    );
}

#[tokio::test]
async fn fetch_jwt_then_validate_jwt_through_the_cli() {
    let agent = TestAgent::start().await;
    agent.publish(
        vec![agent.ca.svid("e1", "/web", &["unix:uid:1000"])],
        vec![],
    );
    let socket = agent.path().to_str().expect("utf8 path").to_owned();

    let (code, out, err) = run(api(&[
        "api",
        "fetch",
        "jwt",
        "-audience",
        "db",
        "-socketPath",
        &socket,
    ]))
    .await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("token(spiffe://example.org/web):"));
    let token = lines
        .next()
        .expect("token line")
        .trim_start_matches('\t')
        .to_owned();
    assert_eq!(lines.next(), Some("bundle(spiffe://example.org):"));
    assert!(out.contains("\"kid\": \"test-kid\""), "{out}");

    let (code, out, err) = run(api(&[
        "api",
        "validate",
        "jwt",
        "-audience",
        "db",
        "-svid",
        &token,
        "-socketPath",
        &socket,
    ]))
    .await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(
        out.starts_with(
            "SVID is valid.\nSPIFFE ID : spiffe://example.org/web\nClaims    : {\"aud\":[\"db\"],"
        ),
        "{out}"
    );

    let (code, _, err) = run(api(&[
        "api",
        "validate",
        "jwt",
        "-audience",
        "other",
        "-svid",
        &token,
        "-socketPath",
        &socket,
    ]))
    .await;
    assert_eq!(code, ExitCode::FAILURE);
    assert!(err.starts_with("SVID is not valid: "), "{err}");

    let (code, _, err) = run(api(&["api", "fetch", "jwt", "-socketPath", &socket])).await;
    assert_eq!(code, ExitCode::FAILURE);
    assert_eq!(err, "audience must be specified\n");

    let (code, out, _) = run(api(&[
        "api",
        "fetch",
        "jwt",
        "-audience",
        "db",
        "-socketPath",
        &socket,
        "-output",
        "json",
    ]))
    .await;
    assert_eq!(code, ExitCode::SUCCESS);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc[0]["svids"][0]["spiffe_id"], "spiffe://example.org/web");
    assert!(doc[1]["bundles"]["spiffe://example.org"].is_string());
}

#[tokio::test]
async fn connection_errors_name_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("missing.sock");
    let socket_str = socket.to_str().expect("utf8").to_owned();
    let (code, _, err) = run(api(&["api", "fetch", "x509", "-socketPath", &socket_str])).await;
    assert_eq!(code, ExitCode::FAILURE);
    assert!(err.contains(&socket_str), "{err}");
    assert!(err.contains("No such file"), "{err}");

    let args = HealthcheckArgs {
        socket_path: socket,
        shallow: false,
        verbose: true,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_healthcheck_with(&args, &mut out, &mut err).await;
    assert_eq!(code, ExitCode::FAILURE);
    assert_eq!(
        String::from_utf8(out).expect("utf8"),
        "Checking agent health...\n"
    );
    let err = String::from_utf8(err).expect("utf8");
    assert!(err.starts_with("Failed to check health: "), "{err}");
    assert!(err.contains(&socket_str), "{err}");
    assert!(
        err.ends_with("Agent is unhealthy: unable to determine health\n"),
        "{err}"
    );
}

#[tokio::test]
async fn healthcheck_is_healthy_once_the_agent_has_a_snapshot() {
    let ca = TestCa::new("example.org");
    let (tx, rx) = tokio::sync::watch::channel(None);
    let cache = crate::cache::CacheHandle {
        snapshots: rx,
        jwt: Arc::new(crate::workload::testutil::FakeMinter {
            key: ca.jwt_key.clone(),
            entries: Default::default(),
        }),
        subscriptions: Default::default(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("api.sock");
    let server_socket = socket.clone();
    let attestor = crate::workload::testutil::FakeAttestor::with(&[]);
    let server = tokio::spawn(async move {
        crate::workload::serve(&server_socket, cache, attestor, Default::default(), None).await
    });
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let args = HealthcheckArgs {
        socket_path: socket,
        shallow: false,
        verbose: false,
    };
    let check = || async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_healthcheck_with(&args, &mut out, &mut err).await;
        (
            code,
            String::from_utf8(out).expect("utf8"),
            String::from_utf8(err).expect("utf8"),
        )
    };
    let (code, _, err) = check().await;
    assert_eq!(code, ExitCode::FAILURE);
    assert_eq!(
        err,
        "Agent is unhealthy: agent returned status \"NOT_SERVING\"\n"
    );

    tx.send_replace(Some(Arc::new(crate::cache::Snapshot {
        bundle: Arc::new(ca.bundle()),
        federated_bundles: vec![],
        svids: vec![],
        unsigned: vec![],
    })));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out, _) = check().await;
        if code == ExitCode::SUCCESS {
            assert_eq!(out, "Agent is healthy.\n");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.abort();
}

/// A writer the test can read while `api watch` is still writing to it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf8")
    }
}

#[tokio::test]
async fn watch_prints_every_update_until_interrupted() {
    let agent = TestAgent::start().await;
    agent.publish(
        vec![agent.ca.svid("e1", "/web", &["unix:uid:1000"])],
        vec![],
    );
    let args = WatchArgs {
        socket_path: agent.path().to_owned(),
    };
    let (mut out, mut err) = (Shared::default(), Shared::default());
    let reader = out.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let interrupted = async {
        let _ = stopped.await;
    };
    let driver = async {
        let wait_for = |n: usize| {
            let reader = reader.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while reader.text().matches("Received 1 svid after ").count() < n {
                    assert!(tokio::time::Instant::now() < deadline, "{}", reader.text());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        wait_for(1).await;
        agent.publish(
            vec![federating(
                agent.ca.svid("e1", "/web", &["unix:uid:1000"]),
                &["partner.org"],
            )],
            vec![TestCa::new("partner.org").bundle()],
        );
        wait_for(2).await;
        let _ = stop.send(());
    };
    let (result, ()) = tokio::join!(x509::watch(&args, &mut out, &mut err, interrupted), driver);
    result.expect("watch ends cleanly");
    let text = reader.text();
    assert_eq!(
        text.matches("SPIFFE ID:\t\tspiffe://example.org/web\n")
            .count(),
        2
    );
    // watch keys federated bundles by trust domain name, as SPIRE's does.
    assert!(
        text.contains("[partner.org] CA #1 Valid After:\t"),
        "{text}"
    );
}
