//! Files and Unix sockets that other local users must not be able to
//! touch: the server's and agent's sockets, private keys and caches.
//!
//! The rules, the same for both programs:
//!
//! - **Directories are checked before use.** The directory holding a socket
//!   or a private file, and every directory above a socket, must be owned by
//!   root or by this process's effective user: another user who made
//!   `/tmp/spire-server` first could replace the socket inside at will. The
//!   directory holding the socket or file must also not be writable by every
//!   user (`o+w`) unless it has the sticky bit (as `/tmp` does); when this
//!   process owns it, it is tightened (`o-w`) with a warning instead, since
//!   nobody else could have made it. Directories above it may be
//!   world-writable (a Kubernetes `emptyDir` is `0777`, or `2777` with an
//!   `fsGroup`, and owned by root): put the socket or file in a directory
//!   of its own below such a volume, which sigil creates. Group write is
//!   left alone: as in SPIRE, the group is trusted (the admin socket is
//!   `0770`).
//! - **Sockets get their final mode before anyone can connect.** They are
//!   bound under a random name in their directory, given their mode, then
//!   renamed into place; there is no moment at which the umask decides who
//!   may connect.
//! - **Private files are written through a random name created
//!   exclusively** (`O_EXCL`, which also refuses to follow a planted
//!   symlink), with mode `0600` from the start, synced, then renamed over
//!   the target: a crash leaves the old file or the new one.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Why a directory, socket or file cannot be used safely.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecureFsError {
    /// A system call on `path` failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A directory on the way is owned by a user other than root and this
    /// process's.
    #[error(
        "refusing to use {path}: it is owned by uid {owner}, not by root or by this process's user (uid {euid}); another user could replace what sigil puts there"
    )]
    ForeignOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        euid: u32,
    },
    /// A directory on the way may be written by any user and has no sticky
    /// bit.
    #[error(
        "refusing to use {path}: it is writable by every user (mode {mode:04o}) without the sticky bit; another user could replace what sigil puts there (chmod o-w {path})"
    )]
    WritableByOthers {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A path that must be a directory is something else.
    #[error("refusing to use {path}: it is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The socket path holds something other than a socket.
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SecureFsError + 'a {
    move |source| SecureFsError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The directory `path` lives in (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates `dir` and its missing parents with `mode` (the umask cannot
/// loosen it: the mode is set after creation), then checks it as the module
/// documentation says. With `whole_chain`, every directory above it is
/// checked too (sockets); otherwise only `dir` itself (data files).
pub fn prepare_dir(dir: &Path, mode: u32, whole_chain: bool) -> Result<(), SecureFsError> {
    create_missing(dir, mode)?;
    let abs = if dir.is_absolute() {
        dir.to_owned()
    } else {
        std::env::current_dir()
            .map_err(io_err("resolving the current directory for", dir))?
            .join(dir)
    };
    let me = euid();
    check_dir(&abs, me, true)?;
    if whole_chain {
        for ancestor in abs.ancestors().skip(1) {
            check_dir(ancestor, me, false)?;
        }
    }
    Ok(())
}

fn create_missing(dir: &Path, mode: u32) -> Result<(), SecureFsError> {
    match fs::symlink_metadata(dir) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspecting", dir)(e)),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_missing(parent, mode)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            .map_err(io_err("setting the mode of", dir)),
        // Made by someone else in the meantime: the checks decide.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("creating", dir)(e)),
    }
}

/// Checks one directory (following a symlink to it, as opening a path
/// under it would) for a process whose effective uid is `me`. Only the
/// `innermost` directory is checked for world write (and tightened when
/// `me` owns it).
fn check_dir(dir: &Path, me: u32, innermost: bool) -> Result<(), SecureFsError> {
    let meta = fs::metadata(dir).map_err(io_err("inspecting", dir))?;
    if !meta.is_dir() {
        return Err(SecureFsError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    if meta.uid() != 0 && meta.uid() != me {
        return Err(SecureFsError::ForeignOwner {
            path: dir.to_owned(),
            owner: meta.uid(),
            euid: me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if innermost && mode & 0o002 != 0 && mode & 0o1000 == 0 {
        if meta.uid() == me {
            tracing::warn!(
                path = %dir.display(),
                mode = format!("{mode:04o}"),
                "Directory is writable by every user; removing that permission"
            );
            fs::set_permissions(dir, fs::Permissions::from_mode(mode & !0o002))
                .map_err(io_err("tightening the mode of", dir))?;
        } else {
            return Err(SecureFsError::WritableByOthers {
                path: dir.to_owned(),
                mode,
            });
        }
    }
    Ok(())
}

/// A name in `dir` nobody else can predict.
fn random_sibling(dir: &Path, tag: &str) -> PathBuf {
    let n: u64 = rand::random();
    dir.join(format!(".{tag}-{n:016x}"))
}

/// Binds a Unix socket at `path` with permission bits `mode`.
///
/// The directory is created (`dir_mode`) and checked with every directory
/// above it; a stale socket at `path` is replaced, anything else there is
/// refused. The socket is bound under a random name, given `mode`, and
/// renamed to `path`, so nobody can connect before its mode is final.
pub fn bind_unix_socket(
    path: &Path,
    mode: u32,
    dir_mode: u32,
) -> Result<UnixListener, SecureFsError> {
    let dir = parent_of(path);
    prepare_dir(dir, dir_mode, true)?;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {}
        Ok(_) => {
            return Err(SecureFsError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspecting", path)(e)),
    }
    let tmp = random_sibling(dir, "sock");
    let listener = UnixListener::bind(&tmp).map_err(io_err("binding", &tmp))?;
    let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .map_err(io_err("setting the mode of", &tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err("renaming a socket to", path)));
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// Writes `bytes` to `path` (mode `0600`) so that a crash at any point
/// leaves either the old file or the new one, through a temporary file no
/// other user can have planted. The directory is created (`0700`) and
/// checked.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), SecureFsError> {
    let dir = parent_of(path);
    prepare_dir(dir, 0o700, false)?;
    write_atomic_with_mode(path, bytes, 0o600)
}

/// Writes `bytes` to `path` with exactly the permission bits `mode` (the
/// umask does not change them), through a temporary file created
/// exclusively in the same directory with mode `0600`, synced, given `mode`
/// and renamed over `path`: readers see the old file or the new one, never
/// a torn one, and never one with looser bits than asked. The directory
/// must exist and is neither created nor checked: that is the caller's
/// policy (a certificate directory handed over by an operator may belong
/// to the user of the program that reads it).
pub fn write_atomic_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SecureFsError> {
    let dir = parent_of(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(io_err("creating a temporary file in", dir))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err("writing", tmp.path()))?;
    if mode != 0o600 {
        // On the open file: fchmod is not subject to the umask.
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("setting the mode of", tmp.path()))?;
    }
    tmp.persist(path)
        .map_err(|e| io_err("renaming a temporary file to", path)(e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

/// Removes the temporary files [`write_private_atomic`] leaves in `dir`
/// when the process dies between creating one and renaming it (SIGKILL,
/// power loss). Each holds a copy, whole or torn, of a private file (keys,
/// the SVID cache), and one more would be left by every such crash. Call
/// at startup, before this process writes in `dir`: a directory belongs to
/// one process at a time. A missing `dir` has nothing to remove. Returns
/// how many were removed.
pub fn remove_stale_temp_files(dir: &Path) -> Result<usize, SecureFsError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("listing", dir)(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io_err("listing", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)) {
            continue;
        }
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing a stale temporary file", &path)(e)),
        }
    }
    Ok(removed)
}

/// How the temporary files of [`write_private_atomic`] are named.
const TEMP_PREFIX: &str = ".sigil-";
const TEMP_SUFFIX: &str = ".tmp";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::os::unix::fs::symlink;

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    /// Whether this test process may chown files to another user (root in
    /// CI); tests that need it say so and return early otherwise.
    fn can_chown() -> bool {
        euid() == 0
    }

    #[test]
    fn temp_files_left_by_a_killed_write_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svid_cache.json");
        write_private_atomic(&path, b"kept").unwrap();
        // What a write killed before its rename leaves: a named temp file.
        let torn = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(TEMP_SUFFIX)
            .tempfile_in(dir.path())
            .unwrap();
        let (_, torn) = torn.keep().unwrap();
        fs::write(&torn, b"half a key").unwrap();
        fs::write(dir.path().join("other.tmp"), b"not ours").unwrap();
        assert_eq!(remove_stale_temp_files(dir.path()).unwrap(), 1);
        assert!(!torn.exists());
        assert_eq!(fs::read(&path).unwrap(), b"kept");
        assert!(dir.path().join("other.tmp").exists());
        assert_eq!(
            remove_stale_temp_files(&dir.path().join("absent")).unwrap(),
            0
        );
    }

    #[test]
    fn planted_symlink_at_the_old_temp_name_does_not_redirect_a_private_write() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("stolen");
        // The name the earlier code wrote through, pointing elsewhere.
        symlink(&target, dir.path().join(".keys.json.tmp")).unwrap();
        let path = dir.path().join("keys.json");
        write_private_atomic(&path, b"secret").unwrap();
        assert!(!target.exists(), "the key was written through the symlink");
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn planted_world_readable_temp_file_does_not_leak_its_mode_to_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let planted = dir.path().join(".keys.json.tmp");
        fs::write(&planted, b"").unwrap();
        fs::set_permissions(&planted, fs::Permissions::from_mode(0o666)).unwrap();
        let path = dir.path().join("keys.json");
        write_private_atomic(&path, b"secret").unwrap();
        assert_eq!(mode_of(&path), 0o600);
        write_private_atomic(&path, b"secret2").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"secret2");
        assert_eq!(mode_of(&path), 0o600);
        // No temporary file is left behind.
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".sigil-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn file_written_with_a_mode_has_exactly_that_mode_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svid.pem");
        write_atomic_with_mode(&path, b"one", 0o644).unwrap();
        assert_eq!(mode_of(&path), 0o644);
        // A read-only mode still lets the next write replace the file.
        write_atomic_with_mode(&path, b"two", 0o444).unwrap();
        assert_eq!(mode_of(&path), 0o444);
        assert_eq!(fs::read(&path).unwrap(), b"two");
        write_atomic_with_mode(&path, b"three", 0o640).unwrap();
        assert_eq!(mode_of(&path), 0o640);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        let err =
            write_atomic_with_mode(&dir.path().join("absent/x.pem"), b"x", 0o644).unwrap_err();
        assert!(matches!(err, SecureFsError::Io { .. }), "{err}");
    }

    #[test]
    fn socket_has_its_mode_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let _l = bind_unix_socket(&path, 0o770, 0o700).unwrap();
        assert_eq!(mode_of(&path), 0o770);
        let public = dir.path().join("api.sock");
        let _p = bind_unix_socket(&public, 0o777, 0o755).unwrap();
        assert_eq!(mode_of(&public), 0o777);
        // Only the two sockets: the random names were renamed away.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn stale_socket_is_replaced_and_a_regular_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let first = bind_unix_socket(&path, 0o770, 0o700).unwrap();
        drop(first);
        let _second = bind_unix_socket(&path, 0o770, 0o700).unwrap();
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, b"x").unwrap();
        let err = bind_unix_socket(&plain, 0o770, 0o700).unwrap_err();
        assert!(matches!(err, SecureFsError::NotASocket { .. }), "{err}");
        assert_eq!(fs::read(&plain).unwrap(), b"x");
    }

    #[test]
    fn missing_directories_are_created_with_the_given_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/private/api.sock");
        let _l = bind_unix_socket(&path, 0o770, 0o700).unwrap();
        assert_eq!(mode_of(&dir.path().join("a")), 0o700);
        assert_eq!(mode_of(&dir.path().join("a/private")), 0o700);
    }

    #[test]
    fn own_world_writable_socket_directory_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let sockets = dir.path().join("sockets");
        fs::create_dir(&sockets).unwrap();
        fs::set_permissions(&sockets, fs::Permissions::from_mode(0o777)).unwrap();
        let _l = bind_unix_socket(&sockets.join("api.sock"), 0o777, 0o755).unwrap();
        assert_eq!(mode_of(&sockets), 0o775);
    }

    #[test]
    fn world_writable_directory_of_the_socket_is_refused_unless_ours_or_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        // Seen by a process that does not own it (and is not root).
        let owner = fs::metadata(&open).unwrap().uid();
        let stranger = owner.wrapping_add(4242);
        if owner == 0 {
            let err = check_dir(&open, stranger, true).unwrap_err();
            assert!(
                matches!(&err, SecureFsError::WritableByOthers { path, mode: 0o777 } if path == &open),
                "{err}"
            );
            assert!(err.to_string().contains("chmod o-w"), "{err}");
        } else {
            let err = check_dir(&open, stranger, true).unwrap_err();
            assert!(matches!(&err, SecureFsError::ForeignOwner { .. }), "{err}");
        }
        assert_eq!(mode_of(&open), 0o777, "a stranger must not change it");
        // With the sticky bit (like /tmp) it is accepted as it is.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        if owner == 0 {
            check_dir(&open, stranger, true).unwrap();
        }
        check_dir(&open, owner, true).unwrap();
        assert_eq!(mode_of(&open), 0o1777);
    }

    #[test]
    fn world_writable_volume_above_a_private_socket_directory_is_accepted() {
        // A Kubernetes emptyDir (2777) with sigil's own directory below it.
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("volume");
        fs::create_dir(&volume).unwrap();
        fs::set_permissions(&volume, fs::Permissions::from_mode(0o2777)).unwrap();
        let socket = volume.join("private/api.sock");
        let _l = bind_unix_socket(&socket, 0o770, 0o700).unwrap();
        assert_eq!(mode_of(&volume.join("private")), 0o700);
        assert_eq!(
            mode_of(&volume),
            0o2777,
            "only the innermost directory is ours to change"
        );
    }

    #[test]
    fn socket_directory_precreated_by_another_user_is_refused() {
        if !can_chown() {
            eprintln!("skipped: needs root to chown a directory to another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("spire-server");
        fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let err = bind_unix_socket(&theirs.join("api.sock"), 0o770, 0o700).unwrap_err();
        assert!(
            matches!(&err, SecureFsError::ForeignOwner { owner: 65534, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        // A deeper directory of ours below theirs is refused too.
        let ours = theirs.join("private");
        fs::create_dir(&ours).unwrap();
        let err = bind_unix_socket(&ours.join("api.sock"), 0o770, 0o700).unwrap_err();
        assert!(matches!(&err, SecureFsError::ForeignOwner { path, .. } if path == &theirs));
        // Private files refuse a foreign directory as well.
        let err = write_private_atomic(&theirs.join("keys.json"), b"k").unwrap_err();
        assert!(matches!(err, SecureFsError::ForeignOwner { .. }), "{err}");
    }
}
