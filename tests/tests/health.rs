//! The `health_checks` listener of sigil-server and sigil-agent, with
//! SPIRE's options: `live_path` answers while the process runs; `ready_path`
//! answers 200 only when the server's datastore and CA work, and the agent
//! has an SVID and serves the Workload API. The PostgreSQL case needs
//! `SIGIL_TEST_POSTGRES_URL` (as `.ci/run` sets it); the test puts a TCP
//! proxy it controls between the server and the database and cuts it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sigil_testkit::{Options, TrustDomain, free_port, wait_for};

use sigil_testkit::http::get as http_get;

fn health_block(port: u16) -> String {
    format!(
        "health_checks {{\n    listener_enabled = true\n    bind_address = \"127.0.0.1\"\n    bind_port = \"{port}\"\n}}\n"
    )
}

/// Waits until `path` on `addr` answers `status`; returns the body.
fn wait_status(addr: &str, path: &str, status: u16) -> serde_json::Value {
    let mut last = None;
    let body = wait_for(
        &format!("{path} answering {status}"),
        Duration::from_secs(60),
        || match http_get(addr, path) {
            Ok((s, body)) if s == status => Some(body),
            other => {
                last = Some(other);
                None
            }
        },
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body:?} (last {last:?})"))
}

#[test]
fn server_and_agent_answer_live_and_ready_and_the_agent_is_not_ready_before_it_has_an_svid() {
    let (server_port, agent_port) = (free_port(), free_port());
    let mut td = TrustDomain::with(Options {
        server_top_config: health_block(server_port),
        agent_top_config: health_block(agent_port),
        ..Options::default()
    });
    td.start_server();
    let server = format!("127.0.0.1:{server_port}");
    let ready = wait_status(&server, "/ready", 200);
    assert_eq!(ready["datastore"]["ready"], true, "{ready}");
    assert_eq!(ready["ca"]["ready"], true, "{ready}");
    wait_status(&server, "/live", 200);

    // The agent starts while the server is down: it cannot attest, so it is
    // live but not ready.
    let token = td.join_token();
    td.write_agent_conf(0);
    td.stop_server();
    td.spawn_agent(0, Some(&token));
    let agent = format!("127.0.0.1:{agent_port}");
    let not_ready = wait_status(&agent, "/ready", 500);
    assert_eq!(not_ready["agent_svid"]["ready"], false, "{not_ready}");
    assert_eq!(not_ready["workload_api"]["ready"], false, "{not_ready}");
    wait_status(&agent, "/live", 200);

    // Once the server is back the agent attests and turns ready.
    td.start_server();
    let ready = wait_status(&agent, "/ready", 200);
    assert_eq!(ready["agent_svid"]["ready"], true, "{ready}");
    assert_eq!(ready["workload_api"]["ready"], true, "{ready}");
    let out = td.agent_cli(0, &["healthcheck"]);
    assert_eq!(out.code, 0, "{}", out.all());
}

/// A TCP proxy to `upstream` that the test can cut (closing every
/// connection and refusing new ones) and restore.
struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, c) = (open.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !o.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut all = c.lock().unwrap();
                all.push(client.try_clone().unwrap());
                all.push(server.try_clone().unwrap());
                drop(all);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, open, conns }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[test]
fn server_turns_not_ready_while_its_postgres_datastore_is_cut_off_and_ready_again_after() {
    let Some(url) = std::env::var("SIGIL_TEST_POSTGRES_URL").ok() else {
        assert!(
            std::env::var("CI").is_err(),
            "SIGIL_TEST_POSTGRES_URL must be set in CI"
        );
        eprintln!("skipping: SIGIL_TEST_POSTGRES_URL not set");
        return;
    };
    // A database of its own, reached through the proxy.
    let db = format!("sigil_health_{}", std::process::id());
    for sql in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
    ] {
        let ok = Command::new("psql")
            .arg(&url)
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", &sql])
            .status()
            .expect("psql");
        assert!(ok.success(), "{sql}");
    }
    // postgres://user:pass@host:port/db
    let (base, _) = url.rsplit_once('/').expect("URL with a database");
    let (creds, hostport) = base.rsplit_once('@').expect("URL with a host");
    let proxy = Proxy::start(hostport.to_owned());
    let through_proxy = format!("{creds}@127.0.0.1:{}/{db}", proxy.port);

    let port = free_port();
    let mut td = TrustDomain::with(Options {
        datastore: Some(("postgres".into(), through_proxy)),
        server_top_config: health_block(port),
        ..Options::default()
    });
    td.start_server();
    let addr = format!("127.0.0.1:{port}");
    wait_status(&addr, "/ready", 200);

    proxy.cut();
    let not_ready = wait_status(&addr, "/ready", 500);
    assert_eq!(not_ready["datastore"]["ready"], false, "{not_ready}");
    assert_eq!(not_ready["ca"]["ready"], true, "{not_ready}");
    // Not ready is still live: the server recovers without a restart.
    wait_status(&addr, "/live", 200);

    proxy.restore();
    let ready = wait_status(&addr, "/ready", 200);
    assert_eq!(ready["datastore"]["ready"], true, "{ready}");
}
