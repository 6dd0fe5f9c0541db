//! `sigil-server dev`: a complete local trust domain in one command.
//!
//! It writes a server.conf and agent.conf into a working directory, starts
//! the server in this process (embedded SQLite, disk keys), creates a join
//! token and a registration entry for the invoking Unix user, starts a
//! `sigil-agent` process with that token, and prints the command that
//! fetches an SVID. Everything stops on Ctrl-C. The agent binary is taken
//! from beside this executable; when running from a source checkout and it
//! has not been built yet, it is built with cargo first.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use sigil_datastore::{JoinToken, RegistrationEntry};
use sigil_spiffe::Selector;

use crate::config::ServerConfig;

/// Options of `sigil-server dev`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Trust domain of the local trust domain
    #[arg(long = "trustDomain", default_value = "example.org")]
    pub trust_domain: String,
    /// Working directory for configs, data and sockets
    #[arg(long = "dir")]
    pub dir: Option<PathBuf>,
    /// Port of the server's agent endpoint (0 picks a free port)
    #[arg(long = "serverPort", default_value_t = 0)]
    pub server_port: u16,
}

/// Runs the quickstart until Ctrl-C.
pub async fn run(args: DevArgs) -> ExitCode {
    sigil_cli::init_logging("WARN", "text");
    match run_inner(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_inner(args: DevArgs) -> anyhow::Result<()> {
    let uid = rustix_uid();
    let dir = args
        .dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("sigil-dev-{uid}")));
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let server_sock = dir.join("server/private/api.sock");
    let agent_sock = dir.join("agent/public/api.sock");
    let server_conf = format!(
        r#"server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{sock}"
    trust_domain = "{td}"
    data_dir = "{data}"
    log_level = "WARN"
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
    KeyManager "disk" {{
        plugin_data {{
            keys_path = "{data}/keys.json"
        }}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
}}
"#,
        port = args.server_port,
        sock = server_sock.display(),
        td = args.trust_domain,
        data = dir.join("server/data").display(),
    );
    std::fs::write(dir.join("server.conf"), &server_conf)?;
    let cfg = ServerConfig::parse(&server_conf)?;
    let td = cfg.trust_domain.clone();
    let running = crate::run::start(cfg).await?;
    let state = running.state.clone();

    // A fresh agent identity each time: new join token, fresh agent data.
    let token = uuid::Uuid::new_v4().to_string();
    state
        .ds
        .create_join_token(JoinToken {
            token: token.clone(),
            expires_at: state.clock.unix_now() + 600,
        })
        .await?;
    let agent_id = crate::plugin::nodeattestor::join_token::agent_id(&td, &token)?;
    let user = std::env::var("USER").unwrap_or_else(|_| format!("uid{uid}"));
    let user_path: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let spiffe_id = td.id_with_path(&format!("/user/{user_path}"))?;
    let entry = RegistrationEntry {
        id: String::new(),
        spiffe_id: spiffe_id.clone(),
        parent_id: agent_id,
        selectors: vec![Selector::new("unix", &format!("uid:{uid}"))?],
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        dns_names: Vec::new(),
        federates_with: Vec::new(),
        admin: false,
        downstream: false,
        expires_at: 0,
        hint: String::new(),
        store_svid: false,
        revision_number: 0,
        created_at: 0,
    };
    state.ds.create_entry(entry).await?;

    let agent_data = dir.join("agent/data");
    let _ = std::fs::remove_dir_all(&agent_data);
    std::fs::create_dir_all(&agent_data)?;
    let bundle_path = dir.join("agent/bootstrap.pem");
    std::fs::write(
        &bundle_path,
        sigil_crypto::x509::pem_encode_certs(&state.ca.bundle().x509_authorities),
    )?;
    let agent_conf = format!(
        r#"agent {{
    server_address = "127.0.0.1"
    server_port = "{port}"
    socket_path = "{sock}"
    trust_domain = "{td}"
    data_dir = "{data}"
    trust_bundle_path = "{bundle}"
    log_level = "WARN"
}}

plugins {{
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "disk" {{
        plugin_data {{
            directory = "{data}"
        }}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
}}
"#,
        port = running.agent_addr.port(),
        sock = agent_sock.display(),
        td = td,
        data = agent_data.display(),
        bundle = bundle_path.display(),
    );
    let agent_conf_path = dir.join("agent.conf");
    std::fs::write(&agent_conf_path, agent_conf)?;

    let agent_bin = find_agent_binary()?;
    let mut agent = tokio::process::Command::new(&agent_bin)
        .arg("run")
        .arg("-config")
        .arg(&agent_conf_path)
        .arg("-joinToken")
        .arg(&token)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("could not start {}: {e}", agent_bin.display()))?;

    // Wait until the agent serves an SVID for the entry.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = agent.try_wait()? {
            anyhow::bail!("sigil-agent exited early ({status}); see its log above");
        }
        let ok = tokio::process::Command::new(&agent_bin)
            .args(["api", "fetch", "x509", "-silent", "-socketPath"])
            .arg(&agent_sock)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the agent did not serve an SVID within 30s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    println!();
    println!("sigil dev: trust domain \"{td}\" is up.");
    println!(
        "  server   : 127.0.0.1:{} (admin socket {})",
        running.agent_addr.port(),
        server_sock.display()
    );
    println!("  agent    : Workload API at {}", agent_sock.display());
    println!("  entry    : {spiffe_id} for processes with unix:uid:{uid}");
    println!("  configs  : {}", dir.display());
    println!();
    println!("Fetch an SVID (in another terminal):");
    println!(
        "  {} api fetch x509 -socketPath {}",
        agent_bin.display(),
        agent_sock.display()
    );
    println!();
    println!("Manage it with the SPIRE-style CLI, e.g.:");
    println!(
        "  {} entry show -socketPath {}",
        std::env::current_exe()
            .unwrap_or_else(|_| PathBuf::from("sigil-server"))
            .display(),
        server_sock.display()
    );
    println!();
    println!("Press Ctrl-C to stop.");

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        status = agent.wait() => {
            eprintln!("sigil-agent exited: {status:?}");
        }
    }
    let _ = agent.kill().await;
    Ok(())
}

fn rustix_uid() -> u32 {
    // The uid of this process, read from /proc so no libc call is needed.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(0)
}

/// The `sigil-agent` binary beside this one; from a source checkout it is
/// built first if missing.
fn find_agent_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidate = dir.join("sigil-agent");
    if candidate.exists() {
        return Ok(candidate);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if workspace.join("Cargo.toml").exists() {
        let release = dir.ends_with("release");
        eprintln!("sigil dev: building sigil-agent first...");
        let mut cmd =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.arg("build")
            .arg("-p")
            .arg("sigil-agent")
            .current_dir(&workspace);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status()?;
        if status.success() && candidate.exists() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "sigil-agent was not found next to {} (build it with: cargo build --release -p sigil-agent)",
        exe.display()
    )
}
