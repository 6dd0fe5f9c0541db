//! Envoy over SDS: real Envoy proxies whose static configuration holds no
//! certificate and no CA, only an SDS cluster pointing at sigil-agent's
//! Workload API socket. Envoy is attested like any workload (by uid); it
//! asks for its TLS certificates by SPIFFE ID or by Istio's names
//! (`default`, `ROOTCA`), and for validation contexts by trust domain ID or
//! `ALL`, as with SPIRE's agent.
//!
//! Topology: plain HTTP client -> front Envoy (upstream mTLS with
//! `default`/`ROOTCA`) -> back Envoy (downstream mTLS requiring a client
//! certificate, `spiffe://example.org/back` and `ALL`) -> a tiny HTTP
//! backend on 127.0.0.1. Needs `SIGIL_TEST_ENVOY_BIN` (`.ci/install-envoy.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sigil_e2e::{envoy_bin, my_uid};
use sigil_testkit::{CmdResult, Options, TrustDomain, free_port, wait_for};

const BODY: &str = "hello from the backend";

/// A running Envoy, killed on drop; its log is printed if the test fails.
struct Envoy {
    child: Child,
    admin_port: u16,
    log: PathBuf,
}

impl Envoy {
    fn start(bin: &Path, dir: &Path, name: &str, config: &str, admin_port: u16) -> Envoy {
        let conf = dir.join(format!("{name}.json"));
        std::fs::write(&conf, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
            .args(["--component-log-level", "config:debug,secret:debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        Envoy {
            child,
            admin_port,
            log,
        }
    }

    /// Whether the process is still the one started (not exited).
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The admin `/certs` document.
    fn certs(&self) -> Option<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/certs", self.admin_port);
        let body = ureq::get(&url)
            .call()
            .ok()?
            .into_body()
            .read_to_string()
            .ok()?;
        serde_json::from_str(&body).ok()
    }

    /// Serial numbers (hex, as Envoy prints them) of the certificates Envoy
    /// holds whose URI SAN is `id`.
    fn serials_of(&self, id: &str) -> Vec<String> {
        let Some(certs) = self.certs() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for context in certs["certificates"].as_array().into_iter().flatten() {
            for cert in context["cert_chain"].as_array().into_iter().flatten() {
                let has_id = cert["subject_alt_names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|san| san["uri"] == id);
                if has_id && let Some(serial) = cert["serial_number"].as_str() {
                    out.push(serial.to_ascii_lowercase());
                }
            }
        }
        out
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "---- {} (last lines)\n{}",
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// An HTTP/1.1 server on 127.0.0.1 answering every request with [`BODY`].
fn start_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
            });
        }
    });
    port
}

/// A plain HTTP GET to 127.0.0.1:`port`; the response body when 200.
fn http_get(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// `curl` over TLS to 127.0.0.1:`port` (server certificate not checked:
/// these calls test whether Envoy accepts the client), with a client
/// certificate when given.
fn curl(port: u16, client: Option<(&Path, &Path)>) -> CmdResult {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-k", "--max-time", "5"]);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cmd.arg(format!("https://127.0.0.1:{port}/"));
    let out = cmd.output().expect("run curl");
    CmdResult {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The serial number (lowercase hex, no leading zeros) of the certificate
/// a TLS server on 127.0.0.1:`port` presents, read by `openssl s_client`.
fn served_serial(port: u16) -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let serial = text.trim().strip_prefix("serial=")?;
    Some(normalize_serial(serial))
}

fn normalize_serial(hex: &str) -> String {
    let hex = hex.to_ascii_lowercase().replace(':', "");
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() { "0" } else { trimmed }.to_owned()
}

/// A self-signed certificate with a SPIFFE ID of a trust domain nobody
/// trusts, and its key: `(cert.pem, key.pem)`.
fn foreign_client(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("evil.pem");
    let key = dir.join("evil-key.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/O=evil",
            "-addext",
            "subjectAltName=URI:spiffe://evil.org/client",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl req");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A secret fetched over SDS v3 from the `sigil_agent` cluster.
fn sds_secret(name: &str) -> Value {
    json!({
        "name": name,
        "sds_config": {
            "resource_api_version": "V3",
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{ "envoy_grpc": { "cluster_name": "sigil_agent" } }]
            }
        }
    })
}

/// The cluster reaching sigil-agent's Workload API socket over HTTP/2.
fn agent_cluster(socket: &Path) -> Value {
    json!({
        "name": "sigil_agent",
        "connect_timeout": "1s",
        "type": "STATIC",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} }
            }
        },
        "load_assignment": {
            "cluster_name": "sigil_agent",
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "pipe": { "path": socket.to_str().unwrap() }
            } } }] }]
        }
    })
}

/// An HTTP connection manager routing everything to `cluster`.
fn http_filters(stat: &str, cluster: &str) -> Value {
    json!([{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat,
            "route_config": {
                "virtual_hosts": [{
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": cluster } }]
                }]
            },
            "http_filters": [{
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                }
            }]
        }
    }])
}

fn static_cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "connect_timeout": "2s",
        "type": "STATIC",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "socket_address": { "address": "127.0.0.1", "port_value": port }
            } } }] }]
        }
    })
}

/// A downstream mTLS listener on `port` requiring a client certificate,
/// with `cert` and `validation` fetched over SDS, routing to `cluster`.
fn mtls_listener(name: &str, port: u16, cert: &str, validation: &str, cluster: &str) -> Value {
    json!({
        "name": name,
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
        "filter_chains": [{
            "filters": http_filters(name, cluster),
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "require_client_certificate": true,
                    "common_tls_context": {
                        "tls_certificate_sds_secret_configs": [sds_secret(cert)],
                        "validation_context_sds_secret_config": sds_secret(validation)
                    }
                }
            }
        }]
    })
}

/// How the proxies fetch secrets: state of the world (`StreamSecrets`) or
/// incremental (`DeltaSecrets`).
#[derive(Clone, Copy)]
enum Sds {
    Grpc,
    DeltaGrpc,
}

fn bootstrap(
    node: &str,
    admin_port: u16,
    listeners: Vec<Value>,
    clusters: Vec<Value>,
    sds: Sds,
) -> String {
    let text = json!({
        "node": { "id": node, "cluster": "sigil-test" },
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": admin_port } } },
        "static_resources": { "listeners": listeners, "clusters": clusters }
    })
    .to_string();
    match sds {
        Sds::Grpc => text,
        Sds::DeltaGrpc => text.replace(r#""api_type":"GRPC""#, r#""api_type":"DELTA_GRPC""#),
    }
}

/// The back Envoy: mTLS listeners (name, port, validation context name)
/// in front of the HTTP backend, presenting `spiffe://example.org/back`.
fn back_envoy(
    bin: &Path,
    td: &TrustDomain,
    listeners: &[(&str, u16, &str)],
    backend: u16,
    sds: Sds,
) -> Envoy {
    let admin = free_port();
    let listeners = listeners
        .iter()
        .map(|(name, port, validation)| {
            mtls_listener(
                name,
                *port,
                "spiffe://example.org/back",
                validation,
                "backend",
            )
        })
        .collect();
    let clusters = vec![
        agent_cluster(&td.agent_socket(0)),
        static_cluster("backend", backend),
    ];
    Envoy::start(
        bin,
        td.path(),
        "back",
        &bootstrap("back", admin, listeners, clusters, sds),
        admin,
    )
}

/// The front Envoy: plain HTTP on `port`, upstream mTLS to `back_port`
/// with Istio's names (`default` certificate, `ROOTCA` validation).
fn front_envoy(bin: &Path, td: &TrustDomain, port: u16, back_port: u16, sds: Sds) -> Envoy {
    let admin = free_port();
    let listener = json!({
        "name": "front",
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
        "filter_chains": [{ "filters": http_filters("front", "back") }]
    });
    let mut back = static_cluster("back", back_port);
    back["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "tls_certificate_sds_secret_configs": [sds_secret("default")],
                "validation_context_sds_secret_config": sds_secret("ROOTCA")
            }
        }
    });
    let clusters = vec![agent_cluster(&td.agent_socket(0)), back];
    Envoy::start(
        bin,
        td.path(),
        "front",
        &bootstrap("front", admin, vec![listener], clusters, sds),
        admin,
    )
}

/// Registers `spiffe://example.org/<name>` for this test's uid (Envoy runs
/// as the test's user) under agent 0, with extra `entry create` flags.
fn register(td: &TrustDomain, token: &str, name: &str, extra: &[&str]) {
    let id = format!("spiffe://example.org/{name}");
    let parent = td.join_token_agent_id(token);
    let selector = format!("unix:uid:{}", my_uid());
    let mut args = vec![
        "entry",
        "create",
        "-parentID",
        &parent,
        "-spiffeID",
        &id,
        "-selector",
        &selector,
    ];
    args.extend_from_slice(extra);
    td.server_cli(&args).ok();
}

#[test]
fn envoy_proxies_get_mtls_secrets_over_sds_and_use_rotated_svids_without_restart() {
    let Some(bin) = envoy_bin() else { return };
    let mut td = TrustDomain::new();
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    register(&td, &token, "front", &[]);
    // A short TTL: the agent renews at half life, every ~15 s.
    register(&td, &token, "back", &["-x509SVIDTTL", "30"]);
    wait_for("both SVIDs at the agent", Duration::from_secs(30), || {
        let out = td.agent_cli(0, &["api", "fetch", "x509"]);
        (out.stdout.contains("spiffe://example.org/front")
            && out.stdout.contains("spiffe://example.org/back"))
        .then_some(())
    });

    let backend = start_backend();
    let back_port = free_port();
    let front_port = free_port();
    let mut back = back_envoy(
        &bin,
        &td,
        &[("back", back_port, "spiffe://example.org")],
        backend,
        Sds::Grpc,
    );
    let _front = front_envoy(&bin, &td, front_port, back_port, Sds::Grpc);

    // HTTP through both proxies: the hop between them is mTLS with
    // certificates and CAs that came only from SDS.
    let body = wait_for(
        "HTTP through front and back Envoy",
        Duration::from_secs(60),
        || http_get(front_port),
    );
    assert_eq!(body, BODY);

    // Without a client certificate, or with one no trusted CA signed, the
    // back Envoy refuses the connection.
    let out = curl(back_port, None);
    assert_ne!(out.code, 0, "no client certificate: {}", out.stdout);
    let (evil_cert, evil_key) = foreign_client(td.path());
    let out = curl(back_port, Some((&evil_cert, &evil_key)));
    assert_ne!(out.code, 0, "foreign client certificate: {}", out.stdout);
    assert!(!out.stdout.contains(BODY));

    // Rotation: the served certificate changes while Envoy keeps running.
    let first = wait_for(
        "back Envoy's certificate in /certs",
        Duration::from_secs(10),
        || back.serials_of("spiffe://example.org/back").pop(),
    );
    let served = wait_for("served certificate", Duration::from_secs(10), || {
        served_serial(back_port)
    });
    assert_eq!(served, normalize_serial(&first));
    let rotated = wait_for(
        "a rotated certificate served by the back Envoy",
        Duration::from_secs(60),
        || served_serial(back_port).filter(|s| *s != served),
    );
    assert!(
        back.running(),
        "the back Envoy rotated without being restarted"
    );
    let held = back.serials_of("spiffe://example.org/back");
    assert!(
        held.iter().any(|s| normalize_serial(s) == rotated),
        "the served certificate is the one Envoy got over SDS: {held:?} vs {rotated}"
    );
    // And traffic still flows over the rotated certificates.
    let body = wait_for(
        "HTTP through both Envoys after rotation",
        Duration::from_secs(20),
        || http_get(front_port),
    );
    assert_eq!(body, BODY);
}

#[test]
fn all_bundles_lets_envoy_accept_a_peer_of_a_federated_trust_domain() {
    let Some(bin) = envoy_bin() else { return };
    // The other trust domain: a server whose CA signs the peer's SVID.
    let mut other = TrustDomain::with(Options {
        trust_domain: "other.org".into(),
        ..Options::default()
    });
    other.start_server();
    let other_pem = other.server_cli(&["bundle", "show"]).ok().stdout;
    let other_pem_path = other.path().join("other.pem");
    std::fs::write(&other_pem_path, &other_pem).unwrap();
    let peer_dir = other.path().join("peer");
    std::fs::create_dir_all(&peer_dir).unwrap();
    other
        .server_cli(&[
            "x509",
            "mint",
            "-spiffeID",
            "spiffe://other.org/peer",
            "-write",
            peer_dir.to_str().unwrap(),
        ])
        .ok();

    let mut td = TrustDomain::new();
    td.start_server();
    td.server_cli(&[
        "bundle",
        "set",
        "-id",
        "spiffe://other.org",
        "-path",
        other_pem_path.to_str().unwrap(),
    ])
    .ok();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    register(
        &td,
        &token,
        "back",
        &["-federatesWith", "spiffe://other.org"],
    );
    wait_for("the SVID at the agent", Duration::from_secs(30), || {
        let out = td.agent_cli(0, &["api", "fetch", "x509"]);
        out.stdout
            .contains("spiffe://example.org/back")
            .then_some(())
    });

    let backend = start_backend();
    let all_port = free_port();
    let own_port = free_port();
    let _back = back_envoy(
        &bin,
        &td,
        &[
            ("all", all_port, "ALL"),
            ("own", own_port, "spiffe://example.org"),
        ],
        backend,
        Sds::Grpc,
    );
    let peer = (peer_dir.join("svid.pem"), peer_dir.join("key.pem"));
    let out = wait_for(
        "the other.org peer accepted on the ALL listener",
        Duration::from_secs(60),
        || {
            let out = curl(all_port, Some((&peer.0, &peer.1)));
            (out.code == 0).then_some(out)
        },
    );
    assert_eq!(out.stdout, BODY);
    // The listener trusting only our trust domain refuses the same peer.
    wait_for(
        "the own-trust-domain listener up",
        Duration::from_secs(30),
        || served_serial(own_port),
    );
    let out = curl(own_port, Some((&peer.0, &peer.1)));
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(!out.stdout.contains(BODY));
}

#[test]
fn envoy_proxies_configured_for_delta_sds_get_their_secrets_incrementally() {
    let Some(bin) = envoy_bin() else { return };
    let mut td = TrustDomain::new();
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    register(&td, &token, "front", &[]);
    register(&td, &token, "back", &[]);
    wait_for("both SVIDs at the agent", Duration::from_secs(30), || {
        let out = td.agent_cli(0, &["api", "fetch", "x509"]);
        (out.stdout.contains("spiffe://example.org/front")
            && out.stdout.contains("spiffe://example.org/back"))
        .then_some(())
    });

    let backend = start_backend();
    let back_port = free_port();
    let front_port = free_port();
    let _back = back_envoy(
        &bin,
        &td,
        &[("back", back_port, "spiffe://example.org")],
        backend,
        Sds::DeltaGrpc,
    );
    let _front = front_envoy(&bin, &td, front_port, back_port, Sds::DeltaGrpc);
    let body = wait_for(
        "HTTP through front and back Envoy over delta SDS",
        Duration::from_secs(60),
        || http_get(front_port),
    );
    assert_eq!(body, BODY);
    let (evil_cert, evil_key) = foreign_client(td.path());
    let out = curl(back_port, Some((&evil_cert, &evil_key)));
    assert_ne!(out.code, 0, "a foreign client certificate: {}", out.stdout);
}
