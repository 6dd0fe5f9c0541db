//! `renew_signal`: the signal names spiffe-helper accepts (Go's
//! `unix.SignalNum`, so `SIGUSR1`, with the prefix and in capitals) and
//! sending one to a process. This module owns the name table and the
//! `kill(2)` call, nothing about which process to signal.

use rustix::process::{Pid, Signal};

/// A signal name spiffe-helper does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown signal {0:?} (write it as spiffe-helper does, for example \"SIGUSR1\" or \"SIGHUP\")"
)]
pub struct UnknownSignal(pub String);

/// Why a signal could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The pid is not a valid process id.
    #[error("{0} is not a process id")]
    BadPid(i64),
    /// `kill(2)` failed (no such process, not permitted).
    #[error("error signaling process {pid} with {signal}: {source}")]
    Kill {
        /// The process.
        pid: i32,
        /// The signal's name.
        signal: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Linux's signal names as Go's `unix.SignalNum` knows them.
const SIGNALS: &[(&str, Signal)] = &[
    ("SIGHUP", Signal::HUP),
    ("SIGINT", Signal::INT),
    ("SIGQUIT", Signal::QUIT),
    ("SIGILL", Signal::ILL),
    ("SIGTRAP", Signal::TRAP),
    ("SIGABRT", Signal::ABORT),
    ("SIGBUS", Signal::BUS),
    ("SIGFPE", Signal::FPE),
    ("SIGKILL", Signal::KILL),
    ("SIGUSR1", Signal::USR1),
    ("SIGSEGV", Signal::SEGV),
    ("SIGUSR2", Signal::USR2),
    ("SIGPIPE", Signal::PIPE),
    ("SIGALRM", Signal::ALARM),
    ("SIGTERM", Signal::TERM),
    ("SIGSTKFLT", Signal::STKFLT),
    ("SIGCHLD", Signal::CHILD),
    ("SIGCONT", Signal::CONT),
    ("SIGSTOP", Signal::STOP),
    ("SIGTSTP", Signal::TSTP),
    ("SIGTTIN", Signal::TTIN),
    ("SIGTTOU", Signal::TTOU),
    ("SIGURG", Signal::URG),
    ("SIGXCPU", Signal::XCPU),
    ("SIGXFSZ", Signal::XFSZ),
    ("SIGVTALRM", Signal::VTALARM),
    ("SIGPROF", Signal::PROF),
    ("SIGWINCH", Signal::WINCH),
    ("SIGIO", Signal::IO),
    ("SIGPWR", Signal::POWER),
    ("SIGSYS", Signal::SYS),
];

/// A signal to send on renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewSignal {
    name: &'static str,
    signal: Signal,
}

impl RenewSignal {
    /// The signal called `name` (`"SIGUSR1"`).
    pub fn from_name(name: &str) -> Result<Self, UnknownSignal> {
        SIGNALS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(name, signal)| RenewSignal { name, signal })
            .ok_or_else(|| UnknownSignal(name.to_owned()))
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Sends it to process `pid`.
    pub fn send(&self, pid: i64) -> Result<(), SignalError> {
        // Only a positive pid names one process (0 and negatives name
        // groups, -1 everyone); `Pid::from_raw` also panics on negatives.
        let raw = i32::try_from(pid)
            .ok()
            .filter(|p| *p > 0)
            .ok_or(SignalError::BadPid(pid))?;
        let target = Pid::from_raw(raw).ok_or(SignalError::BadPid(pid))?;
        rustix::process::kill_process(target, self.signal).map_err(|e| SignalError::Kill {
            pid: raw,
            signal: self.name,
            source: e.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_gos_with_the_sig_prefix_and_exact_case() {
        assert_eq!(
            RenewSignal::from_name("SIGUSR1").map(|s| s.name()),
            Ok("SIGUSR1")
        );
        assert_eq!(
            RenewSignal::from_name("SIGHUP").map(|s| s.name()),
            Ok("SIGHUP")
        );
        for bad in ["USR1", "sigusr1", "SIGFOO", "10", ""] {
            assert_eq!(RenewSignal::from_name(bad), Err(UnknownSignal(bad.into())));
        }
    }

    #[test]
    fn pids_that_are_not_processes_are_refused_before_kill() {
        let s = RenewSignal::from_name("SIGUSR1").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(s.send(0), Err(SignalError::BadPid(0))));
        assert!(matches!(s.send(-1), Err(SignalError::BadPid(-1))));
        assert!(matches!(s.send(1 << 40), Err(SignalError::BadPid(_))));
    }
}
