//! Telemetry end to end: a real Prometheus (Debian's `prometheus`, the
//! directory holding `prometheus` and `promtool` in
//! `SIGIL_TEST_PROMETHEUS_BIN`, see `.ci/install-prometheus.sh`) scrapes a
//! sigil-server and a sigil-agent configured with SPIRE's
//! `telemetry { Prometheus { } }`; the test makes a known number of calls
//! and reads the counts back through Prometheus' HTTP API. The shipped
//! alert rules pass `promtool check rules`, and every metric the rules and
//! the Grafana dashboard use is one the running binaries emit.
//!
//! Without the binaries the tests print a skip line (outside CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sigil_e2e::my_uid;
use sigil_testkit::{Options, TrustDomain, free_port, wait_for};

const PROMETHEUS_BIN_ENV: &str = "SIGIL_TEST_PROMETHEUS_BIN";

/// The directory holding `prometheus` and `promtool`, or `None` (after a
/// skip line) outside CI.
fn prometheus_dir() -> Option<PathBuf> {
    match std::env::var(PROMETHEUS_BIN_ENV) {
        Ok(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => {
            let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(!in_ci, "{PROMETHEUS_BIN_ENV} must be set in CI");
            eprintln!("skipping: {PROMETHEUS_BIN_ENV} not set (see .ci/install-prometheus.sh)");
            None
        }
    }
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

use sigil_testkit::http::get as http_get;

/// The sum over all series of `name` in a /metrics text.
fn scraped_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// A running Prometheus scraping `targets` every second.
struct Prometheus {
    addr: String,
}

impl Prometheus {
    fn start(td: &mut TrustDomain, dir: &Path, targets: &[(&str, &str)]) -> Prometheus {
        let port = free_port();
        let home = td.path().join("prometheus");
        std::fs::create_dir_all(home.join("data")).unwrap();
        let mut conf = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, addr) in targets {
            conf.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
            ));
        }
        let conf_path = home.join("prometheus.yml");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = Command::new(dir.join("prometheus"));
        cmd.arg(format!("--config.file={}", conf_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                home.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let index = td.spawn_process("prometheus", cmd);
        let addr = format!("127.0.0.1:{port}");
        wait_for("prometheus ready", Duration::from_secs(60), || {
            assert!(
                td.process_running(index),
                "prometheus exited; see prometheus.log"
            );
            http_get(&addr, "/-/ready")
                .ok()
                .filter(|(s, _)| *s == 200)
                .map(|_| ())
        });
        Prometheus { addr }
    }

    /// The value of an instant query that returns one sample, if any.
    fn value(&self, query: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", encode(query));
        let (status, body) = http_get(&self.addr, &path).ok()?;
        assert_eq!(status, 200, "{query}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let result = v["data"]["result"].as_array()?;
        let sample = result.first()?;
        sample["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` yields `want`.
    fn wait_value(&self, query: &str, want: f64) {
        let mut last = None;
        let found = (0..60).any(|_| {
            last = self.value(query);
            if last == Some(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
            false
        });
        assert!(found, "{query}: want {want}, last saw {last:?}");
    }

    /// Every metric name Prometheus has stored.
    fn names(&self) -> BTreeSet<String> {
        let (_, body) = http_get(&self.addr, "/api/v1/label/__name__/values").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    }
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `spire_server_*` / `spire_agent_*` name written in `text`. A name
/// ending in `_` is a prefix (used in a `__name__=~` regex).
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for start in ["spire_server_", "spire_agent_"] {
        let mut rest = text;
        while let Some(i) = rest.find(start) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            out.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    out
}

fn telemetry_block(port: u16) -> String {
    format!(
        "telemetry {{\n    Prometheus {{\n        host = \"127.0.0.1\"\n        port = {port}\n    }}\n}}\n"
    )
}

#[test]
fn prometheus_scrapes_spire_named_api_and_issuance_counts_and_the_shipped_rules_and_dashboard_use_only_emitted_metrics()
 {
    let Some(dir) = prometheus_dir() else { return };
    let (server_port, agent_port) = (free_port(), free_port());
    let mut td = TrustDomain::with(Options {
        server_top_config: telemetry_block(server_port),
        agent_top_config: telemetry_block(agent_port),
        ..Options::default()
    });
    td.start_server();
    let server_metrics = format!("127.0.0.1:{server_port}");
    let agent_metrics = format!("127.0.0.1:{agent_port}");
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let parent = td.join_token_agent_id(&token);
    let prom = Prometheus::start(
        &mut td,
        &dir,
        &[
            ("sigil_server", &server_metrics),
            ("sigil_agent", &agent_metrics),
        ],
    );

    // N entries, each `entry create` one BatchCreateEntry call; each gives
    // the agent one X509-SVID to get signed.
    let (_, before) = http_get(&server_metrics, "/metrics").unwrap();
    let signed_before = scraped_sum(&before, "spire_server_server_ca_sign_x509_svid");
    const N: usize = 3;
    let uid = format!("unix:uid:{}", my_uid());
    for i in 0..N {
        let id = format!("spiffe://example.org/telemetry/{i}");
        td.server_cli(&[
            "entry",
            "create",
            "-parentID",
            &parent,
            "-spiffeID",
            &id,
            "-selector",
            &uid,
        ])
        .ok();
    }
    wait_for("all the workload's SVIDs", Duration::from_secs(30), || {
        let out = td.agent_cli(0, &["api", "fetch", "x509"]);
        (out.code == 0 && (0..N).all(|i| out.stdout.contains(&format!("/telemetry/{i}"))))
            .then_some(())
    });
    // One JWT-SVID, so the JWT signing counter exists too.
    td.agent_cli(0, &["api", "fetch", "jwt", "-audience", "telemetry"])
        .ok();
    prom.wait_value(
        "sum(spire_server_rpc_entry_v1_entry_batch_create_entry{status=\"OK\"})",
        N as f64,
    );
    prom.wait_value(
        "sum(spire_server_server_ca_sign_x509_svid)",
        signed_before + N as f64,
    );

    // M FetchX509SVID calls on top of those made while waiting.
    let (_, before) = http_get(&agent_metrics, "/metrics").unwrap();
    let fetched_before = scraped_sum(&before, "spire_agent_rpc_workload_api_fetch_x509svid");
    const M: usize = 4;
    for _ in 0..M {
        td.agent_cli(0, &["api", "fetch", "x509"]).ok();
    }
    prom.wait_value(
        "sum(spire_agent_rpc_workload_api_fetch_x509svid)",
        fetched_before + M as f64,
    );
    // Latencies come with the counts, as SPIRE's call counters.
    assert!(
        prom.value("sum(spire_agent_rpc_workload_api_fetch_x509svid_elapsed_time_count)")
            .is_some_and(|v| v >= M as f64)
    );
    // The agent attested once with join_token, and synced.
    prom.wait_value(
        "sum(spire_server_node_attestation{attestor=\"join_token\",status=\"OK\"})",
        1.0,
    );
    assert!(
        prom.value("sum(spire_agent_manager_sync_fetch_entries_updates{status=\"OK\"})")
            .is_some_and(|v| v >= 1.0)
    );
    prom.wait_value("sum(spire_agent_lru_cache_svid_map_size)", N as f64);
    assert!(
        prom.value("min(spire_server_x509_ca_expires_in_seconds)")
            .is_some_and(|v| v > 23.0 * 3600.0 && v <= 24.0 * 3600.0),
        "the CA is 24h"
    );

    // The shipped rules load, and every metric they and the dashboard name
    // is one these binaries emitted.
    let rules = repo_file("deploy/prometheus/sigil-alerts.yaml");
    let check = Command::new(dir.join("promtool"))
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .expect("run promtool");
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let mut used = metric_names_in(&std::fs::read_to_string(&rules).unwrap());
    let dashboard = std::fs::read_to_string(repo_file("deploy/grafana/sigil.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    used.extend(metric_names_in(&dashboard));
    assert!(used.len() > 10, "{used:?}");
    let emitted = prom.names();
    let missing: Vec<_> = used
        .iter()
        .filter(|n| {
            if n.ends_with('_') {
                !emitted.iter().any(|e| e.starts_with(n.as_str()))
            } else {
                !emitted.contains(n.as_str())
            }
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not emitted: {missing:?}\nemitted: {emitted:?}"
    );
}

#[test]
fn unsupported_telemetry_sinks_stop_the_server_naming_them() {
    let td = TrustDomain::with(Options {
        server_top_config: "telemetry {\n    Statsd = [{ address = \"localhost:8125\" }]\n}\n"
            .into(),
        ..Options::default()
    });
    let out = Command::new(sigil_testkit::bin("sigil-server"))
        .arg("run")
        .arg("-config")
        .arg(td.server_conf())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("option \"Statsd\" in telemetry is not supported by sigil yet"),
        "{err}"
    );
}
