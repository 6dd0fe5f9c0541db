//! Who is on the other end of an accepted Unix-socket connection.
//!
//! The kernel records the connecting process's credentials on the socket
//! (`SO_PEERCRED`): they are the ones in force when the peer called
//! `connect()`, not whatever the process (or a later owner of its PID) looks
//! like by the time a request arrives. [`PeerInfo`] captures them at accept
//! time and opens a pidfd for the PID straight away. A pidfd names one process
//! instance, never a reused PID, and becomes readable when that process exits,
//! so an attestor can read `/proc/<pid>` and then ask [`PeerInfo::still_alive`]
//! whether what it read belonged to the process that connected.
//!
//! Residual window: a peer that exits *and* whose PID is reused between its
//! `connect()` and our `pidfd_open()` (a few microseconds after `accept()`)
//! cannot be told apart from the new process. Closing it needs
//! `SO_PEERPIDFD` (Linux 6.5), which rustix does not expose yet.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, pidfd_open};
use tokio::net::UnixStream;

/// Credentials of a Unix-socket peer, taken when the connection was accepted.
///
/// Handlers served through [`super::UdsIncoming`] find it in the request
/// extensions: `request.extensions().get::<PeerInfo>()`.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// PID of the process that connected, in the agent's PID namespace;
    /// 0 when the kernel could not map it (the peer lives in a PID namespace
    /// the agent cannot see).
    pub pid: i32,
    /// Effective UID of the peer at `connect()` time.
    pub uid: u32,
    /// Effective GID of the peer at `connect()` time.
    pub gid: u32,
    /// A pidfd for `pid`, opened at accept time. `None` when the kernel has no
    /// pidfds (before Linux 5.3), the PID is unknown, or the process had
    /// already exited.
    pub pidfd: Option<Arc<OwnedFd>>,
}

impl PeerInfo {
    /// Reads `SO_PEERCRED` from an accepted Unix socket and opens a pidfd for
    /// the peer. Call it right after `accept()`.
    pub fn from_stream(stream: &UnixStream) -> io::Result<PeerInfo> {
        // tokio reads the raw `ucred`, so a PID the kernel could not map into
        // our namespace arrives as 0 instead of being forced into a non-zero
        // type.
        let cred = stream.peer_cred()?;
        Ok(PeerInfo::for_process(
            cred.pid().unwrap_or(0),
            cred.uid(),
            cred.gid(),
        ))
    }

    /// Describes a process known by PID, opening a pidfd for it now.
    ///
    /// For callers that learned the credentials some other way (tests, a
    /// delegated-identity request naming a PID). A PID that is not positive
    /// gets no pidfd and is never reported alive.
    pub fn for_process(pid: i32, uid: u32, gid: u32) -> PeerInfo {
        let pidfd = if pid > 0 {
            Pid::from_raw(pid)
                .and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok())
                .map(Arc::new)
        } else {
            None
        };
        PeerInfo {
            pid,
            uid,
            gid,
            pidfd,
        }
    }

    /// Whether the process that connected is still running.
    ///
    /// With a pidfd this is exact: the pidfd is readable once that very
    /// process has exited, whatever now holds its PID. Without one (old
    /// kernels) it falls back to "`/proc/<pid>` exists", which cannot detect
    /// PID reuse; attestors should treat that as best effort.
    pub fn still_alive(&self) -> bool {
        if self.pid <= 0 {
            return false;
        }
        match &self.pidfd {
            Some(fd) => pidfd_alive(fd),
            None => Path::new("/proc").join(self.pid.to_string()).exists(),
        }
    }

    /// Whether [`PeerInfo::still_alive`] is backed by a pidfd (exact) rather
    /// than the `/proc` fallback.
    pub fn has_pidfd(&self) -> bool {
        self.pidfd.is_some()
    }
}

/// A pidfd polls readable when its process has exited (zombie or reaped).
fn pidfd_alive(fd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match poll(&mut fds, Some(&zero)) {
            Ok(0) => return true,
            // Readable, hung up or in error: in every case not a live process
            // we can vouch for.
            Ok(_) => return false,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[tokio::test]
    async fn socketpair_peer_is_this_process_with_our_credentials() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let peer = PeerInfo::from_stream(&a).expect("peercred");
        assert_eq!(peer.pid, std::process::id() as i32);
        assert_eq!(peer.uid, rustix::process::geteuid().as_raw());
        assert_eq!(peer.gid, rustix::process::getegid().as_raw());
        assert!(peer.has_pidfd(), "this kernel supports pidfd_open");
        assert!(peer.still_alive());
    }

    #[test]
    fn pidfd_reports_exit_of_a_child_even_before_it_is_reaped() {
        let mut child = Command::new("sleep")
            .arg("0.1")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let peer = PeerInfo::for_process(child.id() as i32, 0, 0);
        assert!(peer.has_pidfd());
        assert!(peer.still_alive());
        // Wait for the exit without reaping: the PID stays a zombie, so
        // `/proc/<pid>` still exists and only the pidfd can tell.
        let mut fds = [PollFd::new(
            peer.pidfd.as_deref().expect("pidfd"),
            PollFlags::IN,
        )];
        let five_s = Timespec {
            tv_sec: 5,
            tv_nsec: 0,
        };
        assert_eq!(poll(&mut fds, Some(&five_s)).expect("poll"), 1);
        assert!(Path::new("/proc").join(child.id().to_string()).exists());
        assert!(!peer.still_alive());
        child.wait().expect("reap");
        assert!(!peer.still_alive());
    }

    #[test]
    fn unknown_pid_is_never_alive() {
        let peer = PeerInfo::for_process(0, 0, 0);
        assert!(!peer.has_pidfd());
        assert!(!peer.still_alive());
        assert!(!PeerInfo::for_process(-5, 0, 0).still_alive());
    }
}
