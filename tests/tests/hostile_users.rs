//! Local users who are not the server's own must not reach its admin
//! socket, whatever the umask the server starts under, and must not be able
//! to prepare the socket's directory in advance and later swap the socket;
//! on the agent's Workload API, another user gets its own identities only.
//!
//! Runs the real `sigil-server`; the hostile clients run as `nobody`
//! (uid 65534) through `setpriv`, which needs root (CI runs as root; outside
//! it the tests print a skip line).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sigil_testkit::{CmdResult, TrustDomain, bin, wait_for};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // The owner of a file this process just made is its effective uid.
    let probe = tempfile::NamedTempFile::new().unwrap();
    std::os::unix::fs::MetadataExt::uid(&probe.as_file().metadata().unwrap()) == 0
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root to run clients as another user (CI runs as root)"
    );
    eprintln!("skipped {test}: needs root to run clients as another user");
    true
}

/// A copy of the `sigil-server` binary that `nobody` can execute (the build
/// directory may not be reachable by other users).
fn public_server_binary(dir: &Path) -> PathBuf {
    let copy = dir.join("sigil-server");
    fs::copy(bin("sigil-server"), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// Runs `sigil-server <args> -socketPath <socket>` as `nobody`.
fn cli_as_nobody(server_bin: &Path, socket: &Path, args: &[&str]) -> CmdResult {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(server_bin)
        .args(args)
        .arg("-socketPath")
        .arg(socket)
        .output()
        .expect("run setpriv");
    CmdResult::from(out)
}

/// Starts the server of `td` with umask 000, as a careless service manager
/// or shell would, and waits for its admin API.
fn start_server_with_open_umask(td: &mut TrustDomain) {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 000 && exec \"$0\" run -config \"$1\"")
        .arg(bin("sigil-server"))
        .arg(td.server_conf());
    td.spawn_process("sigil-server (umask 000)", cmd);
    wait_for("server healthcheck", Duration::from_secs(30), || {
        (td.server_cli(&["healthcheck"]).code == 0).then_some(())
    });
}

#[test]
fn admin_socket_refuses_other_users_even_under_an_open_umask() {
    if skip_unless_root("admin_socket_refuses_other_users_even_under_an_open_umask") {
        return;
    }
    let mut td = TrustDomain::new();
    // The socket's directory is reachable by everyone, as `mkdir -p
    // /tmp/sigil` leaves it; only the socket's own mode stands in the way.
    fs::set_permissions(td.path(), fs::Permissions::from_mode(0o755)).unwrap();
    start_server_with_open_umask(&mut td);
    let socket = td.server_socket();
    let mode = fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o770, "admin socket mode");

    // The server's own user is an admin.
    td.server_cli(&["entry", "show"]).ok();
    // `nobody` cannot connect at all, so cannot mint anything.
    let server_bin = public_server_binary(td.path());
    let denied = cli_as_nobody(
        &server_bin,
        &socket,
        &[
            "entry",
            "create",
            "-parentID",
            "spiffe://example.org/agent",
            "-spiffeID",
            "spiffe://example.org/stolen",
            "-selector",
            "unix:uid:65534",
        ],
    )
    .failed();
    assert!(
        denied.all().to_lowercase().contains("permission denied"),
        "{}",
        denied.all()
    );
    let entries = td.server_cli(&["entry", "show"]).ok();
    assert!(
        !entries.stdout.contains("stolen"),
        "an entry was created: {}",
        entries.stdout
    );
}

#[test]
fn server_refuses_a_socket_directory_made_by_another_user() {
    if skip_unless_root("server_refuses_a_socket_directory_made_by_another_user") {
        return;
    }
    let td = TrustDomain::new();
    fs::set_permissions(td.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // Another user got there first and made the directory the socket
    // will live in; they could replace the socket at any time.
    let theirs = td.path().join("spire-server");
    fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let socket = theirs.join("private/api.sock");
    let conf = fs::read_to_string(td.server_conf()).unwrap().replace(
        &format!("socket_path = \"{}\"", td.server_socket().display()),
        &format!("socket_path = \"{}\"", socket.display()),
    );
    assert!(conf.contains(&socket.display().to_string()));
    fs::write(td.server_conf(), conf).unwrap();

    let mut child = Command::new(bin("sigil-server"))
        .arg("run")
        .arg("-config")
        .arg(td.server_conf())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sigil-server");
    let exited = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("wait for sigil-server");
    assert!(
        exited,
        "sigil-server started with its socket in a directory owned by another user"
    );
    let res = CmdResult::from(out).failed();
    let text = res.all();
    assert!(
        text.contains(&theirs.display().to_string()) && text.contains("owned by uid 65534"),
        "the error must name the directory and its owner: {text}"
    );
    assert!(!socket.exists(), "no socket may be created there");
}

/// A copy of the `sigil-agent` binary that `nobody` can execute.
fn public_agent_binary(dir: &Path) -> PathBuf {
    let copy = dir.join("sigil-agent");
    fs::copy(bin("sigil-agent"), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// `sigil-agent api fetch x509 -socketPath <socket>` as `uid`.
fn fetch_x509_as(agent_bin: &Path, socket: &Path, uid: u32) -> CmdResult {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(agent_bin)
        .args(["api", "fetch", "x509", "-socketPath"])
        .arg(socket)
        .output()
        .expect("run setpriv");
    CmdResult::from(out)
}

#[test]
fn workload_api_gives_another_user_only_its_own_identity() {
    if skip_unless_root("workload_api_gives_another_user_only_its_own_identity") {
        return;
    }
    let mut td = TrustDomain::new();
    fs::set_permissions(td.path(), fs::Permissions::from_mode(0o755)).unwrap();
    td.start_server();
    let token = td.join_token();
    let agent_id = td.join_token_agent_id(&token);
    td.start_agent(0, Some(&token));
    for (uid, name) in [(0, "root-workload"), (NOBODY, "nobody-workload")] {
        td.server_cli(&[
            "entry",
            "create",
            "-parentID",
            &agent_id,
            "-spiffeID",
            &format!("spiffe://example.org/{name}"),
            "-selector",
            &format!("unix:uid:{uid}"),
        ])
        .ok();
    }
    let agent_bin = public_agent_binary(td.path());
    let socket = td.agent_socket(0);
    let theirs = wait_for("nobody's X509-SVID", Duration::from_secs(30), || {
        let out = fetch_x509_as(&agent_bin, &socket, NOBODY);
        (out.code == 0 && out.stdout.contains("nobody-workload")).then_some(out)
    });
    assert!(
        !theirs.stdout.contains("root-workload"),
        "nobody got root's identity: {}",
        theirs.stdout
    );
    let ours = fetch_x509_as(&agent_bin, &socket, 0).ok();
    assert!(ours.stdout.contains("root-workload"), "{}", ours.stdout);
    assert!(!ours.stdout.contains("nobody-workload"), "{}", ours.stdout);
    // A user with no entry gets no identity at all.
    let stranger = fetch_x509_as(&agent_bin, &socket, 65533).failed();
    assert!(
        !stranger.stdout.contains("spiffe://"),
        "a user without entries got an SVID: {}",
        stranger.stdout
    );
}

#[test]
fn agent_admin_socket_refuses_other_users_even_under_an_open_umask() {
    if skip_unless_root("agent_admin_socket_refuses_other_users_even_under_an_open_umask") {
        return;
    }
    let mut td = TrustDomain::new();
    fs::set_permissions(td.path(), fs::Permissions::from_mode(0o755)).unwrap();
    td.start_server();
    let token = td.join_token();
    let conf_path = td.write_agent_conf(0);
    // Not below the Workload API socket's directory (the agent refuses
    // that, as SPIRE's does).
    let admin_dir = tempfile::Builder::new()
        .prefix("sga")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(admin_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let admin = admin_dir.path().join("private/admin.sock");
    let conf = fs::read_to_string(&conf_path).unwrap().replacen(
        "agent {\n",
        &format!(
            "agent {{\n    admin_socket_path = \"{}\"\n",
            admin.display()
        ),
        1,
    );
    fs::write(&conf_path, conf).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 000 && exec \"$0\" run -config \"$1\" -joinToken \"$2\"")
        .arg(bin("sigil-agent"))
        .arg(&conf_path)
        .arg(&token);
    td.spawn_process("sigil-agent (umask 000)", cmd);
    let up = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the agent's admin socket", Duration::from_secs(30), || {
            admin.exists().then_some(())
        })
    }));
    if let Err(e) = up {
        td.dump_logs();
        std::panic::resume_unwind(e);
    }
    let mode = fs::metadata(&admin).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o770, "agent admin socket mode");
    // Connecting is what the socket's mode decides: root may, nobody may not.
    let connect = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nprint('connected')";
    // Debian's python3: reachable by every user, unlike a per-user install.
    let as_root = Command::new("/usr/bin/python3")
        .args(["-c", connect])
        .arg(&admin)
        .output()
        .unwrap();
    assert!(as_root.status.success(), "{as_root:?}");
    let as_nobody = CmdResult::from(
        Command::new("setpriv")
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .args(["/usr/bin/python3", "-c", connect])
            .arg(&admin)
            .output()
            .unwrap(),
    )
    .failed();
    assert!(
        as_nobody.all().contains("PermissionError"),
        "{}",
        as_nobody.all()
    );
}
