//! Test harness: runs the real `sigil-server` and `sigil-agent` binaries in a
//! temporary directory, the way an operator would, and reads results the way
//! a client would. Binaries come from the cargo target directory of the test
//! that uses this crate (`cargo test --workspace` builds them first).
//!
//! Processes are killed when the [`TrustDomain`] is dropped; their logs are
//! kept in the temp dir and printed by [`TrustDomain::dump_logs`] (call it
//! when an assertion is about to fail).
//!
//! [`kube`] runs a real Kubernetes control plane (kube-apiserver and etcd,
//! no kubelet) and a fake kubelet, for the Kubernetes plugins' tests.
#![forbid(unsafe_code)]

pub mod cgroup;
pub mod http;
pub mod kube;
pub mod pebble;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the directory that holds the workspace's
/// binaries, for builds whose test executables do not sit beside them
/// (cargo's `build-dir` set apart from the target directory).
pub const BIN_DIR_ENV: &str = "SIGIL_BIN_DIR";

/// Path of a binary built by this workspace (`sigil-server`, `sigil-agent`).
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> -> target/<profile>/<name>
            let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found; build the binaries first: cargo build --workspace --bins",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (bound and released; tiny race accepted).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout`
/// with `what` in the message.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Result of running a CLI command.
#[derive(Debug, Clone)]
pub struct CmdResult {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for CmdResult {
    fn from(out: Output) -> Self {
        CmdResult {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl CmdResult {
    /// Panics with both streams unless the command succeeded.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "command failed\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command failed.
    pub fn failed(self) -> Self {
        assert_ne!(
            self.code, 0,
            "command unexpectedly succeeded\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// stdout and stderr together, for message checks.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Settings for a test trust domain.
#[derive(Debug, Clone)]
pub struct Options {
    /// Trust domain name.
    pub trust_domain: String,
    /// `default_x509_svid_ttl`.
    pub x509_svid_ttl: String,
    /// `default_jwt_svid_ttl`.
    pub jwt_svid_ttl: String,
    /// `ca_ttl`.
    pub ca_ttl: String,
    /// Server KeyManager (`disk` or `memory`).
    pub server_key_manager: String,
    /// Agent KeyManager (`disk` or `memory`).
    pub agent_key_manager: String,
    /// DataStore `database_type` and `connection_string`; `None` = SQLite in the temp dir.
    pub datastore: Option<(String, String)>,
    /// Agent sync interval, via `SIGIL_AGENT_SYNC_INTERVAL`.
    pub agent_sync_interval: String,
    /// Extra lines for the agent's unix WorkloadAttestor plugin_data.
    pub unix_attestor_data: String,
    /// Extra plugin blocks for the server config (e.g. an UpstreamAuthority,
    /// another NodeAttestor).
    pub server_extra_plugins: String,
    /// Extra plugin blocks for the agents' configs (e.g. another
    /// WorkloadAttestor).
    pub agent_extra_plugins: String,
    /// The agent's NodeAttestor block (`join_token` by default); read when
    /// an agent's config is written, so tests can change it per agent.
    pub agent_node_attestor: String,
    /// Extra lines inside the server's `server { }` block (e.g. a
    /// `pod_certificates { }` block).
    pub server_extra_config: String,
    /// Extra top-level blocks for the server config (`telemetry { }`,
    /// `health_checks { }`).
    pub server_top_config: String,
    /// Extra top-level blocks for the agents' configs.
    pub agent_top_config: String,
    /// Extra lines inside the agents' `agent { }` block (e.g.
    /// `x509_svid_cache_max_size = 100`).
    pub agent_extra_config: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            trust_domain: "example.org".into(),
            x509_svid_ttl: "1h".into(),
            jwt_svid_ttl: "5m".into(),
            ca_ttl: "24h".into(),
            server_key_manager: "disk".into(),
            agent_key_manager: "disk".into(),
            datastore: None,
            agent_sync_interval: "1s".into(),
            unix_attestor_data: String::new(),
            server_extra_plugins: String::new(),
            agent_extra_plugins: String::new(),
            agent_node_attestor: "NodeAttestor \"join_token\" {\n        plugin_data {}\n    }"
                .into(),
            server_extra_config: String::new(),
            server_top_config: String::new(),
            agent_top_config: String::new(),
            agent_extra_config: String::new(),
        }
    }
}

/// A trust domain under test: a server, zero or more agents, a temp dir.
pub struct TrustDomain {
    /// The temp dir (kept alive for the test's duration).
    pub dir: tempfile::TempDir,
    /// Settings.
    pub opts: Options,
    /// The server's agent-endpoint port.
    pub server_port: u16,
    server: Option<Child>,
    agents: Vec<Option<Child>>,
    others: Vec<Child>,
}

impl std::fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustDomain")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl TrustDomain {
    /// A new trust domain with default options (nothing started).
    pub fn new() -> Self {
        Self::with(Options::default())
    }

    /// A new trust domain with these options (nothing started).
    pub fn with(opts: Options) -> Self {
        // Short path: Unix socket paths are limited to ~108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("sg")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let td = TrustDomain {
            dir,
            opts,
            server_port: free_port(),
            server: None,
            agents: Vec::new(),
            others: Vec::new(),
        };
        td.write_server_conf();
        td
    }

    /// The temp dir path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The server's admin socket.
    pub fn server_socket(&self) -> PathBuf {
        self.path().join("server.sock")
    }

    /// Agent `n`'s Workload API socket.
    pub fn agent_socket(&self, n: usize) -> PathBuf {
        self.path().join(format!("agent{n}.sock"))
    }

    /// The server config file.
    pub fn server_conf(&self) -> PathBuf {
        self.path().join("server.conf")
    }

    fn write_server_conf(&self) {
        let o = &self.opts;
        let data = self.path().join("server-data");
        let (db_type, conn) = o.datastore.clone().unwrap_or_else(|| {
            (
                "sqlite3".into(),
                data.join("datastore.sqlite3").display().to_string(),
            )
        });
        let km = match o.server_key_manager.as_str() {
            "disk" => format!(
                "KeyManager \"disk\" {{\n        plugin_data {{\n            keys_path = \"{}\"\n        }}\n    }}",
                data.join("keys.json").display()
            ),
            other => format!("KeyManager \"{other}\" {{\n        plugin_data {{}}\n    }}"),
        };
        let conf = format!(
            r#"server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{sock}"
    trust_domain = "{td}"
    data_dir = "{data}"
    log_level = "DEBUG"
    ca_ttl = "{ca_ttl}"
    default_x509_svid_ttl = "{x509}"
    default_jwt_svid_ttl = "{jwt}"
{server_extra}
}}

plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "{db_type}"
            connection_string = "{conn}"
        }}
    }}
    {km}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
{extra}
}}
{top}
"#,
            top = o.server_top_config,
            extra = o.server_extra_plugins,
            server_extra = o.server_extra_config,
            port = self.server_port,
            sock = self.server_socket().display(),
            td = o.trust_domain,
            data = data.display(),
            ca_ttl = o.ca_ttl,
            x509 = o.x509_svid_ttl,
            jwt = o.jwt_svid_ttl,
        );
        fs::write(self.server_conf(), conf).expect("write server.conf");
    }

    /// Starts the server and waits until its admin API is healthy.
    pub fn start_server(&mut self) {
        assert!(self.server.is_none(), "server already running");
        let log = self.log_file("server.log");
        let child = Command::new(bin("sigil-server"))
            .arg("run")
            .arg("-config")
            .arg(self.server_conf())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn sigil-server");
        self.server = Some(child);
        let sock = self.server_socket();
        let server_bin = bin("sigil-server");
        wait_for("server healthcheck", Duration::from_secs(30), || {
            if let Some(Some(status)) = self.server.as_mut().map(|c| c.try_wait().ok().flatten()) {
                self.dump_logs();
                panic!("sigil-server exited during startup: {status}");
            }
            let ok = Command::new(&server_bin)
                .args(["healthcheck", "-socketPath"])
                .arg(&sock)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            ok.then_some(())
        });
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            signal(&child, "TERM");
            wait_exit(&mut child, Duration::from_secs(10));
        }
    }

    /// Kills the server with SIGKILL (no cleanup at all).
    pub fn kill_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// True while the server started by [`TrustDomain::start_server`] runs
    /// (the same process: it has not exited or been restarted).
    pub fn server_running(&mut self) -> bool {
        self.server
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Runs `sigil-server <args> -socketPath <admin socket>`.
    pub fn server_cli(&self, args: &[&str]) -> CmdResult {
        let out = Command::new(bin("sigil-server"))
            .args(args)
            .arg("-socketPath")
            .arg(self.server_socket())
            .output()
            .expect("run sigil-server CLI");
        CmdResult::from(out)
    }

    /// Generates a join token with the CLI and returns it.
    pub fn join_token(&self) -> String {
        let out = self.server_cli(&["token", "generate", "-ttl", "600"]).ok();
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix("Token: "))
            .map(|t| t.trim().to_owned())
            .unwrap_or_else(|| panic!("no token in output: {}", out.stdout))
    }

    /// The agent ID a join token gives.
    pub fn join_token_agent_id(&self, token: &str) -> String {
        format!(
            "spiffe://{}/spire/agent/join_token/{token}",
            self.opts.trust_domain
        )
    }

    /// Writes agent `n`'s config (bootstrap bundle from the server's
    /// `bundle show`) and returns its path.
    pub fn write_agent_conf(&self, n: usize) -> PathBuf {
        let bundle = self.path().join(format!("agent{n}-bootstrap.pem"));
        if !bundle.exists() {
            let pem = self.server_cli(&["bundle", "show"]).ok().stdout;
            fs::write(&bundle, pem).expect("write bootstrap bundle");
        }
        let data = self.path().join(format!("agent{n}-data"));
        let km = match self.opts.agent_key_manager.as_str() {
            "disk" => format!(
                "KeyManager \"disk\" {{\n        plugin_data {{\n            directory = \"{}\"\n        }}\n    }}",
                data.display()
            ),
            other => format!("KeyManager \"{other}\" {{\n        plugin_data {{}}\n    }}"),
        };
        let conf = format!(
            r#"agent {{
    server_address = "127.0.0.1"
    server_port = "{port}"
    socket_path = "{sock}"
    trust_domain = "{td}"
    data_dir = "{data}"
    trust_bundle_path = "{bundle}"
    log_level = "DEBUG"
{agent_extra}
}}

plugins {{
    {node_attestor}
    {km}
    WorkloadAttestor "unix" {{
        plugin_data {{
{unix}
        }}
    }}
    {extra}
}}
{top}
"#,
            top = self.opts.agent_top_config,
            agent_extra = self.opts.agent_extra_config,
            port = self.server_port,
            sock = self.agent_socket(n).display(),
            td = self.opts.trust_domain,
            data = data.display(),
            bundle = bundle.display(),
            unix = self.opts.unix_attestor_data,
            extra = self.opts.agent_extra_plugins,
            node_attestor = self.opts.agent_node_attestor,
        );
        let path = self.path().join(format!("agent{n}.conf"));
        fs::write(&path, conf).expect("write agent.conf");
        path
    }

    /// Starts agent `n` (with `token` if given) without waiting for it; see
    /// [`TrustDomain::start_agent`] for the waiting kind.
    pub fn spawn_agent(&mut self, n: usize, token: Option<&str>) {
        assert!(
            self.agents.get(n).is_none_or(Option::is_none),
            "agent {n} already running"
        );
        let conf = self.write_agent_conf(n);
        let log = self.log_file(&format!("agent{n}.log"));
        let mut cmd = Command::new(bin("sigil-agent"));
        cmd.arg("run").arg("-config").arg(&conf);
        if let Some(t) = token {
            cmd.arg("-joinToken").arg(t);
        }
        let child = cmd
            .env("SIGIL_AGENT_SYNC_INTERVAL", &self.opts.agent_sync_interval)
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn sigil-agent");
        while self.agents.len() <= n {
            self.agents.push(None);
        }
        self.agents[n] = Some(child);
    }

    /// Starts agent `n` (with `token` if given) and waits until its Workload
    /// API is healthy.
    pub fn start_agent(&mut self, n: usize, token: Option<&str>) {
        self.spawn_agent(n, token);
        let sock = self.agent_socket(n);
        let agent_bin = bin("sigil-agent");
        wait_for("agent healthcheck", Duration::from_secs(30), || {
            if let Some(Some(status)) = self.agents[n].as_mut().map(|c| c.try_wait().ok().flatten())
            {
                self.dump_logs();
                panic!("sigil-agent exited during startup: {status}");
            }
            let ok = Command::new(&agent_bin)
                .args(["healthcheck", "-socketPath"])
                .arg(&sock)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            ok.then_some(())
        });
    }

    /// Starts agent `n` and returns the exit status if it exits within `timeout`.
    pub fn start_agent_expect_exit(
        &mut self,
        n: usize,
        token: Option<&str>,
        timeout: Duration,
    ) -> CmdResult {
        let conf = self.write_agent_conf(n);
        let mut cmd = Command::new(bin("sigil-agent"));
        cmd.arg("run").arg("-config").arg(&conf);
        if let Some(t) = token {
            cmd.arg("-joinToken").arg(t);
        }
        let mut child = cmd
            .env("SIGIL_AGENT_SYNC_INTERVAL", &self.opts.agent_sync_interval)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sigil-agent");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return CmdResult::from(child.wait_with_output().expect("agent output"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("agent output");
                panic!(
                    "sigil-agent did not exit within {timeout:?}\n--- stderr\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills agent `n` with SIGKILL (no cleanup at all).
    pub fn kill_agent(&mut self, n: usize) {
        if let Some(mut child) = self.agents.get_mut(n).and_then(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// True while agent `n` runs (it was started and has not exited).
    pub fn agent_running(&mut self, n: usize) -> bool {
        self.agents
            .get_mut(n)
            .and_then(Option::as_mut)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Whether agent `n`'s Workload API answers its healthcheck now.
    pub fn agent_healthy(&self, n: usize) -> bool {
        Command::new(bin("sigil-agent"))
            .args(["healthcheck", "-socketPath"])
            .arg(self.agent_socket(n))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Stops agent `n` with SIGTERM.
    pub fn stop_agent(&mut self, n: usize) {
        if let Some(mut child) = self.agents.get_mut(n).and_then(Option::take) {
            signal(&child, "TERM");
            wait_exit(&mut child, Duration::from_secs(10));
        }
    }

    /// Waits up to `timeout` for agent `n` to exit by itself; returns its
    /// exit code, or `None` if it is still running.
    pub fn wait_agent_exit(&mut self, n: usize, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.agents.get_mut(n).and_then(Option::as_mut)?;
            if let Ok(Some(status)) = child.try_wait() {
                self.agents[n] = None;
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `sigil-agent <args> -socketPath <agent n socket>`.
    pub fn agent_cli(&self, n: usize, args: &[&str]) -> CmdResult {
        let out = Command::new(bin("sigil-agent"))
            .args(args)
            .arg("-socketPath")
            .arg(self.agent_socket(n))
            .output()
            .expect("run sigil-agent CLI");
        CmdResult::from(out)
    }

    /// Starts another process (a SPIRE binary, a client) whose output goes
    /// to `<name>.log` in the temp dir; it is killed when this is dropped.
    /// Returns its index for [`TrustDomain::stop_process`].
    pub fn spawn_process(&mut self, name: &str, mut cmd: Command) -> usize {
        let log = self.log_file(&format!("{name}.log"));
        let child = cmd
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        self.others.push(child);
        self.others.len() - 1
    }

    /// Stops a process started with [`TrustDomain::spawn_process`] (SIGTERM).
    pub fn stop_process(&mut self, index: usize) {
        if let Some(child) = self.others.get_mut(index) {
            signal(child, "TERM");
            wait_exit(child, Duration::from_secs(10));
        }
    }

    /// True while a process started with [`TrustDomain::spawn_process`] runs.
    pub fn process_running(&mut self, index: usize) -> bool {
        self.others
            .get_mut(index)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn log_file(&self, name: &str) -> fs::File {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join(name))
            .expect("log file")
    }

    /// Prints every process log of this trust domain to stderr.
    pub fn dump_logs(&self) {
        let Ok(entries) = fs::read_dir(self.path()) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                eprintln!("===== {} =====", p.display());
                eprintln!("{}", fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
}

impl Default for TrustDomain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TrustDomain {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for child in self
            .agents
            .iter_mut()
            .filter_map(Option::as_mut)
            .chain(self.others.iter_mut())
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(child) = self.server.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

fn wait_exit(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
