//! The `unix` workload attestor: SPIRE's selectors for a local process.
//!
//! Produces, in SPIRE's order and spelling: `unix:uid:<euid>`,
//! `unix:user:<name>`, `unix:gid:<egid>`, `unix:group:<name>`, then
//! `unix:supplementary_gid:<gid>` / `unix:supplementary_group:<name>` for each
//! supplementary group, and with `discover_workload_path = true`,
//! `unix:path:<exe>` and (unless `workload_size_limit` is negative)
//! `unix:sha256:<hex digest of the binary>`.
//!
//! As in SPIRE: IDs come from `/proc/<pid>/status` and are the *effective*
//! ones (second column of `Uid:`/`Gid:`); a name selector is emitted only when
//! the ID has an entry in `/etc/passwd` / `/etc/group` (files are parsed
//! directly; NSS sources such as LDAP are not consulted); the path is the
//! `/proc/<pid>/exe` link target, and the digest is taken by opening
//! `/proc/<pid>/exe` itself, so it hashes the binary the process runs even if
//! the path was replaced or deleted. `workload_size_limit` 0 (the default)
//! hashes any size, a positive value refuses larger binaries, a negative one
//! skips hashing.
//!
//! PID reuse: everything is read through a directory handle on `/proc/<pid>`
//! opened while the caller's pidfd showed it alive. Such a handle stays bound
//! to that one process; reads through it fail once it is gone rather than
//! reaching a newcomer with the same PID. The pidfd is checked again after the
//! last read, and any failure while the caller is gone is reported as
//! [`AttestError::ProcessGone`].

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};
use sigil_spiffe::Selector;

use super::{AttestError, WorkloadAttestor};
use crate::uds::PeerInfo;

/// Options of the `unix` attestor's `plugin_data` block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnixAttestorConfig {
    /// Emit `path` and `sha256` selectors. Needs the agent to be able to read
    /// other users' `/proc/<pid>/exe` (root or `CAP_SYS_PTRACE`).
    pub discover_workload_path: bool,
    /// Largest binary to hash, in bytes: 0 means no limit, negative means do
    /// not hash at all.
    pub workload_size_limit: i64,
}

impl UnixAttestorConfig {
    /// Option names this attestor accepts.
    pub const KEYS: [&'static str; 2] = ["discover_workload_path", "workload_size_limit"];

    /// Reads `plugin_data` (as JSON, however the HCL was parsed). A missing
    /// or null block means all defaults; unknown keys are an error naming
    /// every one of them.
    pub fn from_plugin_data(data: &serde_json::Value) -> Result<UnixAttestorConfig, AttestError> {
        let invalid = |reason: String| AttestError::Config {
            plugin: UnixAttestor::NAME,
            reason,
        };
        let map = match data {
            serde_json::Value::Null => return Ok(UnixAttestorConfig::default()),
            serde_json::Value::Object(map) => map,
            other => return Err(invalid(format!("plugin_data must be a block, got {other}"))),
        };
        let mut unknown: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !Self::KEYS.contains(k))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(invalid(format!(
                "unknown option(s) {} (supported: {})",
                unknown.join(", "),
                Self::KEYS.join(", ")
            )));
        }
        let mut config = UnixAttestorConfig::default();
        if let Some(v) = map.get("discover_workload_path") {
            config.discover_workload_path = v.as_bool().ok_or_else(|| {
                invalid(format!(
                    "discover_workload_path must be true or false, got {v}"
                ))
            })?;
        }
        if let Some(v) = map.get("workload_size_limit") {
            config.workload_size_limit = v.as_i64().ok_or_else(|| {
                invalid(format!(
                    "workload_size_limit must be an integer number of bytes, got {v}"
                ))
            })?;
        }
        Ok(config)
    }
}

/// Builds the `unix` attestor for the catalog.
pub fn build(
    data: &serde_json::Value,
    _ctx: &crate::catalog::AgentContext,
) -> Result<std::sync::Arc<dyn WorkloadAttestor>, sigil_plugin::PluginError> {
    let config = UnixAttestorConfig::from_plugin_data(data)
        .map_err(|e| super::plugin_error(UnixAttestor::NAME, e))?;
    Ok(std::sync::Arc::new(UnixAttestor::new(config)))
}

/// The `unix` workload attestor.
#[derive(Debug, Clone)]
pub struct UnixAttestor {
    config: UnixAttestorConfig,
    proc_root: PathBuf,
    passwd: PathBuf,
    group: PathBuf,
}

impl UnixAttestor {
    /// The plugin name, and the type of every selector it produces.
    pub const NAME: &'static str = "unix";

    /// An attestor reading `/proc`, `/etc/passwd` and `/etc/group`.
    pub fn new(config: UnixAttestorConfig) -> UnixAttestor {
        UnixAttestor {
            config,
            proc_root: PathBuf::from("/proc"),
            passwd: PathBuf::from("/etc/passwd"),
            group: PathBuf::from("/etc/group"),
        }
    }

    /// Reads process information from another procfs mount (SPIRE's
    /// `HOST_PROC`, for an agent in a container looking at the host).
    pub fn with_proc_root(mut self, proc_root: impl Into<PathBuf>) -> UnixAttestor {
        self.proc_root = proc_root.into();
        self
    }

    /// Resolves user and group names from these files instead of
    /// `/etc/passwd` and `/etc/group`.
    pub fn with_account_files(
        mut self,
        passwd: impl Into<PathBuf>,
        group: impl Into<PathBuf>,
    ) -> UnixAttestor {
        self.passwd = passwd.into();
        self.group = group.into();
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &UnixAttestorConfig {
        &self.config
    }

    /// Selectors for the peer (see the module docs). Runs the file reads and
    /// hashing on the blocking pool.
    pub async fn attest(&self, peer: &PeerInfo) -> Result<Vec<Selector>, AttestError> {
        let this = self.clone();
        let peer = peer.clone();
        tokio::task::spawn_blocking(move || this.attest_blocking(&peer))
            .await
            .map_err(|e| AttestError::Task(e.to_string()))?
    }

    fn attest_blocking(&self, peer: &PeerInfo) -> Result<Vec<Selector>, AttestError> {
        let pid = peer.pid;
        if pid <= 0 {
            return Err(AttestError::PidUnknown { pid });
        }
        let proc_dir = self.proc_root.join(pid.to_string());
        let reader = ProcReader {
            peer,
            proc_dir: &proc_dir,
        };
        let dir = reader.open_dir()?;
        // The handle is bound to whichever process had the PID when it was
        // opened; if the caller was still alive after that, it is the caller.
        reader.ensure_alive()?;

        let status = reader.read_to_string(&dir, "status")?;
        let uid = reader.status_id(&status, "Uid")?;
        let gid = reader.status_id(&status, "Gid")?;
        let groups = status_field(&status, "Groups").unwrap_or_default();

        let passwd = read_account_file(&self.passwd);
        let group_file = read_account_file(&self.group);
        let mut selectors = vec![unix("uid", uid)?];
        if let Some(name) = lookup_name(&passwd, uid, 6) {
            selectors.push(unix("user", name)?);
        }
        selectors.push(unix("gid", gid)?);
        if let Some(name) = lookup_name(&group_file, gid, 3) {
            selectors.push(unix("group", name)?);
        }
        for sgid in groups {
            selectors.push(unix("supplementary_gid", sgid)?);
            if let Some(name) = lookup_name(&group_file, sgid, 3) {
                selectors.push(unix("supplementary_group", name)?);
            }
        }

        if self.config.discover_workload_path {
            let exe = reader.read_exe_link(&dir)?;
            selectors.push(unix("path", &exe.to_string_lossy())?);
            if self.config.workload_size_limit >= 0 {
                let digest = reader.hash_exe(&dir, &exe, self.config.workload_size_limit)?;
                selectors.push(unix("sha256", &digest)?);
            }
        }

        reader.ensure_alive()?;
        Ok(selectors)
    }
}

#[async_trait]
impl WorkloadAttestor for UnixAttestor {
    fn name(&self) -> &str {
        UnixAttestor::NAME
    }

    async fn attest(&self, peer: &PeerInfo) -> Result<Vec<Selector>, AttestError> {
        UnixAttestor::attest(self, peer).await
    }
}

/// Reads under one `/proc/<pid>` and turns failures into precise errors.
/// Shared with the other attestors that read `/proc`.
pub(super) struct ProcReader<'a> {
    pub(super) peer: &'a PeerInfo,
    pub(super) proc_dir: &'a Path,
}

impl ProcReader<'_> {
    pub(super) fn ensure_alive(&self) -> Result<(), AttestError> {
        if self.peer.still_alive() {
            Ok(())
        } else {
            Err(AttestError::ProcessGone { pid: self.peer.pid })
        }
    }

    /// A read failure is reported as the caller being gone when it is, since
    /// that is the cause the operator needs to see.
    pub(super) fn fail(&self, what: &str, source: io::Error) -> AttestError {
        if !self.peer.still_alive() {
            return AttestError::ProcessGone { pid: self.peer.pid };
        }
        AttestError::Proc {
            pid: self.peer.pid,
            path: self.proc_dir.join(what),
            source,
        }
    }

    pub(super) fn open_dir(&self) -> Result<OwnedFd, AttestError> {
        rustix::fs::open(
            self.proc_dir,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.fail("", e.into()))
    }

    fn open_in(&self, dir: &OwnedFd, name: &str) -> Result<File, AttestError> {
        rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map(File::from)
            .map_err(|e| self.fail(name, e.into()))
    }

    pub(super) fn read_to_string(&self, dir: &OwnedFd, name: &str) -> Result<String, AttestError> {
        let mut text = String::new();
        self.open_in(dir, name)?
            .read_to_string(&mut text)
            .map_err(|e| self.fail(name, e))?;
        Ok(text)
    }

    /// The effective ID from a `Uid:`/`Gid:` line (real, effective, saved,
    /// filesystem), or the only one if there is just one, as SPIRE does.
    fn status_id<'s>(&self, status: &'s str, field: &'static str) -> Result<&'s str, AttestError> {
        let malformed = || AttestError::MalformedStatus {
            pid: self.peer.pid,
            path: self.proc_dir.join("status"),
            field,
        };
        let ids = status_field(status, field).ok_or_else(malformed)?;
        let id = ids.get(1).or(ids.first()).copied().ok_or_else(malformed)?;
        id.parse::<u32>().map_err(|_| malformed())?;
        Ok(id)
    }

    fn read_exe_link(&self, dir: &OwnedFd) -> Result<PathBuf, AttestError> {
        use std::os::unix::ffi::OsStringExt;
        let target = rustix::fs::readlinkat(dir, "exe", Vec::new())
            .map_err(|e| self.fail("exe", e.into()))?;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(
            target.into_bytes(),
        )))
    }

    fn hash_exe(&self, dir: &OwnedFd, exe: &Path, limit: i64) -> Result<String, AttestError> {
        let mut file = self.open_in(dir, "exe")?;
        if limit > 0 {
            let size = file.metadata().map_err(|e| self.fail("exe", e))?.len();
            if size > limit.unsigned_abs() {
                return Err(AttestError::WorkloadTooLarge {
                    path: exe.to_owned(),
                    size,
                    limit,
                });
            }
        }
        let mut hasher = Sha256::new();
        io::copy(&mut file, &mut hasher).map_err(|e| self.fail("exe", e))?;
        Ok(hex::encode(hasher.finalize()))
    }
}

fn unix(kind: &str, value: &str) -> Result<Selector, AttestError> {
    Ok(Selector::new(
        UnixAttestor::NAME,
        &format!("{kind}:{value}"),
    )?)
}

/// The whitespace-separated values of `Name:` in `/proc/<pid>/status`.
fn status_field<'s>(status: &'s str, name: &str) -> Option<Vec<&'s str>> {
    status.lines().find_map(|line| {
        let (key, rest) = line.split_once(':')?;
        (key.trim() == name).then(|| rest.split_whitespace().collect())
    })
}

/// The file's text, or empty when it cannot be read: a missing account file
/// just means no name selectors, as in SPIRE.
fn read_account_file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Finds the name whose third field is `id` in an `/etc/passwd`-style
/// (`min_fields` 6) or `/etc/group`-style (`min_fields` 3) file, skipping
/// comments, short lines and NIS `+`/`-` entries.
fn lookup_name<'f>(file: &'f str, id: &str, min_fields: usize) -> Option<&'f str> {
    file.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let name = *fields.first()?;
            if fields.len() < min_fields || name.is_empty() || name.starts_with(['+', '-']) {
                return None;
            }
            (fields.get(2) == Some(&id)).then_some(name)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use tokio::net::UnixStream;

    fn values(selectors: &[Selector]) -> Vec<String> {
        selectors
            .iter()
            .inspect(|s| assert_eq!(s.kind(), "unix"))
            .map(|s| s.value().to_owned())
            .collect()
    }

    fn account_files(dir: &Path, uid: u32, gid: u32) -> (PathBuf, PathBuf) {
        let passwd = dir.join("passwd");
        let group = dir.join("group");
        std::fs::write(
            &passwd,
            format!("# comment\n+nis::0:0:::\ntester:x:{uid}:{gid}:T:/home/t:/bin/sh\n"),
        )
        .expect("passwd");
        std::fs::write(&group, format!("testers:x:{gid}:\nwheel:x:10:tester\n")).expect("group");
        (passwd, group)
    }

    fn sha256_file(path: &Path) -> String {
        hex::encode(Sha256::digest(std::fs::read(path).expect("read exe")))
    }

    #[tokio::test]
    async fn attests_this_test_process_over_a_real_socket() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let peer = PeerInfo::from_stream(&a).expect("peercred");
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let dir = tempfile::tempdir().expect("tempdir");
        let (passwd, group) = account_files(dir.path(), uid, gid);
        let attestor = UnixAttestor::new(UnixAttestorConfig {
            discover_workload_path: true,
            workload_size_limit: 0,
        })
        .with_account_files(passwd, group);

        let got = values(&attestor.attest(&peer).await.expect("attest"));
        let exe = std::env::current_exe().expect("current_exe");
        assert_eq!(got[0], format!("uid:{uid}"));
        assert_eq!(got[1], "user:tester");
        assert_eq!(got[2], format!("gid:{gid}"));
        assert_eq!(got[3], "group:testers");
        let n = got.len();
        assert_eq!(got[n - 2], format!("path:{}", exe.display()));
        assert_eq!(got[n - 1], format!("sha256:{}", sha256_file(&exe)));
        for middle in &got[4..n - 2] {
            assert!(
                middle.starts_with("supplementary_gid:")
                    || middle.starts_with("supplementary_group:"),
                "{middle}"
            );
        }
    }

    #[tokio::test]
    async fn without_discover_workload_path_there_is_no_path_or_digest() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let peer = PeerInfo::from_stream(&a).expect("peercred");
        let got = values(
            &UnixAttestor::new(UnixAttestorConfig::default())
                .attest(&peer)
                .await
                .expect("attest"),
        );
        assert!(
            got.iter()
                .all(|v| !v.starts_with("path:") && !v.starts_with("sha256:"))
        );
        assert!(got[0].starts_with("uid:"));
    }

    /// A fake procfs entry for our own PID (so the pidfd shows it alive).
    fn fake_proc(status: &str, exe_target: &Path) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join(std::process::id().to_string());
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("status"), status).expect("status");
        std::os::unix::fs::symlink(exe_target, dir.join("exe")).expect("symlink");
        root
    }

    #[tokio::test]
    async fn uses_effective_ids_and_lists_supplementary_groups_in_spire_order() {
        let work = tempfile::tempdir().expect("tempdir");
        let exe = work.path().join("workload-bin");
        std::fs::write(&exe, b"#!/bin/true\n").expect("exe");
        let proc_root = fake_proc(
            "Name:\tworkload\nUid:\t1000\t1001\t1001\t1001\nGid:\t2000\t2001\t2001\t2001\nGroups:\t10 4242 \n",
            &exe,
        );
        let (passwd, group) = account_files(work.path(), 1001, 2001);
        let peer = PeerInfo::for_process(std::process::id() as i32, 1001, 2001);
        let attestor = UnixAttestor::new(UnixAttestorConfig {
            discover_workload_path: true,
            workload_size_limit: 1024,
        })
        .with_proc_root(proc_root.path())
        .with_account_files(passwd, group);
        let got = values(&attestor.attest(&peer).await.expect("attest"));
        let digest = sha256_file(&exe);
        let path = format!("path:{}", exe.display());
        let sha = format!("sha256:{digest}");
        assert_eq!(
            got,
            vec![
                "uid:1001",
                "user:tester",
                "gid:2001",
                "group:testers",
                "supplementary_gid:10",
                "supplementary_group:wheel",
                "supplementary_gid:4242",
                path.as_str(),
                sha.as_str(),
            ]
        );
    }

    #[tokio::test]
    async fn workload_size_limit_matches_spire() {
        let work = tempfile::tempdir().expect("tempdir");
        let exe = work.path().join("big");
        std::fs::write(&exe, vec![7u8; 2048]).expect("exe");
        let proc_root = fake_proc("Uid:\t5\t5\t5\t5\nGid:\t6\t6\t6\t6\nGroups:\n", &exe);
        let peer = PeerInfo::for_process(std::process::id() as i32, 5, 6);
        let attestor = |limit| {
            UnixAttestor::new(UnixAttestorConfig {
                discover_workload_path: true,
                workload_size_limit: limit,
            })
            .with_proc_root(proc_root.path())
            .with_account_files(work.path().join("none"), work.path().join("none"))
        };

        let err = attestor(1000).attest(&peer).await.expect_err("too large");
        assert!(
            matches!(
                err,
                AttestError::WorkloadTooLarge {
                    size: 2048,
                    limit: 1000,
                    ..
                }
            ),
            "{err}"
        );
        let no_hash = values(&attestor(-1).attest(&peer).await.expect("attest"));
        assert_eq!(
            no_hash,
            vec!["uid:5", "gid:6", &format!("path:{}", exe.display())]
        );
        let unlimited = values(&attestor(0).attest(&peer).await.expect("attest"));
        assert_eq!(
            unlimited.last().map(String::as_str),
            Some(format!("sha256:{}", sha256_file(&exe)).as_str())
        );
    }

    #[tokio::test]
    async fn a_caller_that_exited_is_reported_gone_not_attested() {
        let attestor = UnixAttestor::new(UnixAttestorConfig {
            discover_workload_path: true,
            workload_size_limit: 0,
        });

        // Exited but not reaped: /proc/<pid> is still there (a zombie), only
        // the pidfd knows the process is over.
        let mut child = Command::new("sleep")
            .arg("0.1")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        let peer = PeerInfo::for_process(pid, 0, 0);
        assert!(peer.still_alive());
        while peer.still_alive() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(Path::new("/proc").join(pid.to_string()).exists());
        let err = attestor.attest(&peer).await.expect_err("zombie");
        assert!(
            matches!(err, AttestError::ProcessGone { pid: p } if p == pid),
            "{err}"
        );

        // Reaped: the PID is free for reuse.
        child.wait().expect("reap");
        let err = attestor.attest(&peer).await.expect_err("reaped");
        assert!(
            matches!(err, AttestError::ProcessGone { pid: p } if p == pid),
            "{err}"
        );
        assert!(err.to_string().contains("may have been reused"));
    }

    #[tokio::test]
    async fn unknown_pid_is_refused() {
        let err = UnixAttestor::new(UnixAttestorConfig::default())
            .attest(&PeerInfo::for_process(0, 0, 0))
            .await
            .expect_err("pid 0");
        assert!(matches!(err, AttestError::PidUnknown { pid: 0 }));
    }

    #[test]
    fn plugin_data_parses_spire_options_and_names_unknown_keys() {
        use serde_json::json;
        assert_eq!(
            UnixAttestorConfig::from_plugin_data(&json!(null)).expect("null"),
            UnixAttestorConfig::default()
        );
        assert_eq!(
            UnixAttestorConfig::from_plugin_data(&json!({
                "discover_workload_path": true,
                "workload_size_limit": -1
            }))
            .expect("valid"),
            UnixAttestorConfig {
                discover_workload_path: true,
                workload_size_limit: -1
            }
        );
        let err = UnixAttestorConfig::from_plugin_data(&json!({
            "discover_workload_path": true,
            "workload_size_limt": 5,
            "bogus": 1
        }))
        .expect_err("unknown keys")
        .to_string();
        assert!(err.contains("bogus, workload_size_limt"), "{err}");
        let err = UnixAttestorConfig::from_plugin_data(&json!({"workload_size_limit": "10"}))
            .expect_err("string")
            .to_string();
        assert!(err.contains("workload_size_limit"), "{err}");
        assert!(UnixAttestorConfig::from_plugin_data(&json!([1])).is_err());
    }

    #[test]
    fn account_lookup_follows_the_file_formats() {
        let passwd =
            "# x\n\nroot:x:0:0:root:/root:/bin/bash\nshort:x:5\n-nis:x:7:7:::\nsvc:x:7:7:::\n";
        assert_eq!(lookup_name(passwd, "0", 6), Some("root"));
        assert_eq!(lookup_name(passwd, "5", 6), None);
        assert_eq!(lookup_name(passwd, "7", 6), Some("svc"));
        assert_eq!(lookup_name(passwd, "9", 6), None);
        let group = "root:x:0:\ndocker:x:999:alice,bob\n";
        assert_eq!(lookup_name(group, "999", 3), Some("docker"));
    }
}
