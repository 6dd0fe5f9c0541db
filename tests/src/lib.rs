//! Shared helpers for the end-to-end tests in `tests/tests/*.rs`: a raw
//! Workload API client over a Unix socket, for checks that need exact gRPC
//! status codes and stream timing.
#![forbid(unsafe_code)]

use std::path::Path;

use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::transport::Channel;

/// A channel to a Workload API socket.
pub async fn workload_channel(path: &Path) -> Channel {
    sigil_workload_client::unix_channel(path)
        .await
        .expect("connect to the Workload API socket")
}

/// A Workload API client.
pub async fn workload_client(path: &Path) -> SpiffeWorkloadApiClient<Channel> {
    SpiffeWorkloadApiClient::new(workload_channel(path).await)
}

/// Wraps a message in a request carrying the `workload.spiffe.io: true` header.
pub fn with_header<T>(msg: T) -> tonic::Request<T> {
    sigil_workload_client::with_header(msg)
}

/// The uid of this test process (entries select it with `unix:uid:<uid>`).
pub fn my_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|u| u.parse().ok())
        .expect("uid from /proc/self/status")
}

/// Real SPIRE binaries next to sigil: where they are, how to run their CLIs,
/// and a `spire-server` / `spire-agent` configured as SPIRE documents them,
/// with the node attestor a test names.
pub mod spire {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::Duration;

    use sigil_testkit::{CmdResult, TrustDomain, free_port, wait_for};

    /// The environment variable naming the directory that holds
    /// `spire-server` and `spire-agent` (built by `.ci/install-spire.sh`).
    pub const BIN_ENV: &str = "SIGIL_TEST_SPIRE_BIN";

    /// The SPIRE binaries' directory, or `None` (after printing a skip line)
    /// when [`BIN_ENV`] is unset or empty. In CI they are required: this
    /// panics there instead of skipping.
    pub fn bin_dir() -> Option<PathBuf> {
        match std::env::var(BIN_ENV) {
            Ok(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
            _ => {
                let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
                assert!(!in_ci, "{BIN_ENV} must be set in CI");
                eprintln!("skipping: {BIN_ENV} not set (see .ci/install-spire.sh)");
                None
            }
        }
    }

    /// Runs a SPIRE binary to completion.
    pub fn run(bin: &Path, args: &[&str]) -> CmdResult {
        let out = Command::new(bin)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
        CmdResult {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Waits until `bin healthcheck -socketPath sock` passes, failing early
    /// if process `index` of `td` exits.
    fn wait_healthy(td: &mut TrustDomain, index: usize, name: &str, bin: &Path, sock: &Path) {
        let sock = sock.to_str().expect("UTF-8 socket path").to_owned();
        wait_for(&format!("{name} healthy"), Duration::from_secs(60), || {
            assert!(td.process_running(index), "{name} exited; see {name}.log");
            (run(bin, &["healthcheck", "-socketPath", &sock]).code == 0).then_some(())
        });
    }

    /// A real `spire-server` for trust domain `example.org` in `td`'s
    /// directory (SQLite datastore, memory key manager).
    pub struct SpireServer {
        /// The `spire-server` binary.
        pub bin: PathBuf,
        /// Its admin socket.
        pub sock: PathBuf,
        /// Its agent port on 127.0.0.1.
        pub port: u16,
        /// Its index among `td`'s processes.
        pub process: usize,
    }

    impl SpireServer {
        /// Writes `spire-server.conf` with `node_attestor` (one or more
        /// complete `NodeAttestor "..." { ... }` blocks), starts the server
        /// from `spire_dir` and waits until it is healthy.
        pub fn start(td: &mut TrustDomain, spire_dir: &Path, node_attestor: &str) -> SpireServer {
            let bin = spire_dir.join("spire-server");
            let port = free_port();
            let dir = td.path().to_path_buf();
            let data = dir.join("spire-server-data");
            let sock = dir.join("spire-server.sock");
            let conf = dir.join("spire-server.conf");
            std::fs::write(
                &conf,
                format!(
                    r#"server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{sock}"
    trust_domain = "example.org"
    data_dir = "{data}"
    log_level = "DEBUG"
    ca_ttl = "24h"
    default_x509_svid_ttl = "1h"
}}

plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{data}/datastore.sqlite3"
        }}
    }}
{node_attestor}
    KeyManager "memory" {{
        plugin_data = {{}}
    }}
}}
"#,
                    sock = sock.display(),
                    data = data.display(),
                ),
            )
            .expect("write spire-server.conf");
            let mut cmd = Command::new(&bin);
            cmd.arg("run").arg("-config").arg(&conf);
            let process = td.spawn_process("spire-server", cmd);
            wait_healthy(td, process, "spire-server", &bin, &sock);
            SpireServer {
                bin,
                sock,
                port,
                process,
            }
        }

        /// Runs a `spire-server` CLI command against this server.
        pub fn cli(&self, args: &[&str]) -> CmdResult {
            let mut full = args.to_vec();
            let sock = self.sock.to_str().expect("UTF-8 socket path");
            full.extend(["-socketPath", sock]);
            run(&self.bin, &full)
        }

        /// Points `td`'s sigil-agent `n` at this server: bootstrap bundle
        /// from `bundle show`, and the server port.
        pub fn serve_sigil_agent(&self, td: &mut TrustDomain, n: usize) {
            let pem = self.cli(&["bundle", "show"]).ok().stdout;
            std::fs::write(td.path().join(format!("agent{n}-bootstrap.pem")), pem)
                .expect("write bootstrap bundle");
            td.server_port = self.port;
        }
    }

    /// A real `spire-agent` in `td`'s directory (disk key manager, unix
    /// workload attestor).
    pub struct SpireAgent {
        /// The `spire-agent` binary.
        pub bin: PathBuf,
        /// Its Workload API socket.
        pub sock: PathBuf,
        /// Its index among `td`'s processes.
        pub process: usize,
    }

    impl SpireAgent {
        /// Writes `spire-agent.conf` with `node_attestor` (a complete
        /// `NodeAttestor "..." { ... }` block) for `td`'s sigil-server,
        /// bootstrapped from its `bundle show`; starts the agent from
        /// `spire_dir` with `extra_args` after `run -config <conf>`, and
        /// waits until it is healthy.
        pub fn start(
            td: &mut TrustDomain,
            spire_dir: &Path,
            node_attestor: &str,
            extra_args: &[&str],
        ) -> SpireAgent {
            let bin = spire_dir.join("spire-agent");
            let dir = td.path().to_path_buf();
            let bundle = dir.join("bootstrap.pem");
            std::fs::write(&bundle, td.server_cli(&["bundle", "show"]).ok().stdout)
                .expect("write bootstrap bundle");
            let data = dir.join("spire-agent-data");
            let sock = dir.join("spire-agent.sock");
            let conf = dir.join("spire-agent.conf");
            std::fs::write(
                &conf,
                format!(
                    r#"agent {{
    data_dir = "{data}"
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "{port}"
    socket_path = "{sock}"
    trust_bundle_path = "{bundle}"
    trust_domain = "example.org"
}}

plugins {{
    {node_attestor}
    KeyManager "disk" {{
        plugin_data {{
            directory = "{data}"
        }}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{
        }}
    }}
}}
"#,
                    data = data.display(),
                    port = td.server_port,
                    sock = sock.display(),
                    bundle = bundle.display(),
                ),
            )
            .expect("write spire-agent.conf");
            let mut cmd = Command::new(&bin);
            cmd.arg("run").arg("-config").arg(&conf).args(extra_args);
            let process = td.spawn_process("spire-agent", cmd);
            wait_healthy(td, process, "spire-agent", &bin, &sock);
            SpireAgent { bin, sock, process }
        }

        /// Runs a `spire-agent` CLI command against this agent's socket.
        pub fn cli(&self, args: &[&str]) -> CmdResult {
            let mut full = args.to_vec();
            let sock = self.sock.to_str().expect("UTF-8 socket path");
            full.extend(["-socketPath", sock]);
            run(&self.bin, &full)
        }

        /// Waits until the agent serves an X509-SVID for `id` to this
        /// process.
        pub fn wait_for_x509_svid(&self, id: &str) {
            wait_for(
                &format!("X509-SVID {id} from spire-agent"),
                Duration::from_secs(60),
                || {
                    let out = self.cli(&["api", "fetch", "x509"]);
                    (out.code == 0 && out.stdout.contains(id)).then_some(())
                },
            );
        }
    }
}

/// The environment variable naming the envoy binary (printed by
/// `.ci/install-envoy.sh`) that the SDS tests run.
pub const ENVOY_BIN_ENV: &str = "SIGIL_TEST_ENVOY_BIN";

/// The envoy binary from [`ENVOY_BIN_ENV`]; `None` (after printing a skip
/// notice) when it is unset, except in CI (`CI=true`), where it is required.
pub fn envoy_bin() -> Option<std::path::PathBuf> {
    match std::env::var_os(ENVOY_BIN_ENV) {
        Some(bin) if !bin.is_empty() => {
            let bin = std::path::PathBuf::from(bin);
            assert!(bin.is_file(), "{} does not exist", bin.display());
            Some(bin)
        }
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{ENVOY_BIN_ENV} must be set in CI (the path printed by .ci/install-envoy.sh)"
            );
            eprintln!(
                "skipping: {ENVOY_BIN_ENV} not set (install envoy with .ci/install-envoy.sh)"
            );
            None
        }
    }
}
