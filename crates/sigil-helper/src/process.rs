//! Telling the program that uses the files that they changed, as
//! spiffe-helper does after each X.509 update:
//!
//! - with `cmd`: the first update starts `cmd` with `cmd_args` (its stdin,
//!   stdout and stderr are the helper's); later updates send it
//!   `renew_signal` while it runs, or start it again if it has exited (it
//!   is not restarted when it exits, only at the next update);
//! - with `pid_file_name`: the file is read afresh at each update and the
//!   pid in it sent `renew_signal`, retrying for a while (10 tries, from
//!   100 ms doubling) when the file is missing or the process is gone.
//!
//! Both may be set. The helper does not stop the command when it exits.
//! This module owns the child process; it does not know about files or
//! the agent.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::signal::{RenewSignal, SignalError};

/// Why the program could not be told.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// `cmd` could not be started.
    #[error("error executing process {cmd:?}: {source}")]
    Spawn {
        /// The command.
        cmd: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The pid file could not be read.
    #[error("failed to read pid file {path}: {source}")]
    PidFileRead {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The pid file does not hold a number.
    #[error("failed to parse pid file {path}: {content:?} is not a process id")]
    PidFileParse {
        /// The file.
        path: PathBuf,
        /// What it holds (trimmed).
        content: String,
    },
    /// The signal could not be sent.
    #[error(transparent)]
    Signal(#[from] SignalError),
}

/// Starts and signals the program that uses the files.
#[derive(Debug, Clone)]
pub struct Notifier {
    cmd: Option<(String, Vec<String>)>,
    pid_file: Option<PathBuf>,
    signal: Option<RenewSignal>,
    /// The running child's pid; `None` before the first start and after it
    /// has been reaped (the waiting task clears it right after reaping, so
    /// a signal never goes to a recycled pid except in that instant, as in
    /// spiffe-helper).
    child: Arc<Mutex<Option<u32>>>,
}

/// Tries and first delay for the pid file (spiffe-helper's backoff).
const PID_TRIES: u32 = 10;
const PID_FIRST_DELAY: Duration = Duration::from_millis(100);

impl Notifier {
    /// A notifier for `cmd` with `args`, and/or the pid in `pid_file`,
    /// sending `signal`.
    pub fn new(
        cmd: Option<(String, Vec<String>)>,
        pid_file: Option<PathBuf>,
        signal: Option<RenewSignal>,
    ) -> Self {
        Notifier {
            cmd,
            pid_file,
            signal,
            child: Arc::new(Mutex::new(None)),
        }
    }

    /// Whether there is anyone to tell.
    pub fn is_empty(&self) -> bool {
        self.cmd.is_none() && self.pid_file.is_none()
    }

    /// Called after the X.509 files were rewritten. Errors are logged, as
    /// spiffe-helper does: the next update tries again.
    pub async fn files_updated(&self) {
        if self.cmd.is_some()
            && let Err(e) = self.start_or_signal_cmd().await
        {
            tracing::error!(error = %e, "Unable to signal process");
        }
        if let Some(path) = &self.pid_file
            && let Err(e) = self.signal_pid_file(path).await
        {
            tracing::error!(error = %e, "Unable to signal PID file");
        }
    }

    async fn start_or_signal_cmd(&self) -> Result<(), NotifyError> {
        let Some((cmd, args)) = &self.cmd else {
            return Ok(());
        };
        let mut running = self.child.lock().await;
        if let Some(pid) = *running {
            return match self.signal {
                Some(signal) => {
                    signal.send(i64::from(pid))?;
                    tracing::info!(pid, signal = signal.name(), "Signaled process");
                    Ok(())
                }
                None => Ok(()),
            };
        }
        let mut child = tokio::process::Command::new(cmd)
            .args(args)
            .spawn()
            .map_err(|source| NotifyError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        let pid = child.id();
        tracing::info!(cmd = %cmd, pid, "Started process");
        *running = pid;
        let slot = Arc::clone(&self.child);
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => tracing::info!(pid, %status, "Process exited"),
                Err(e) => tracing::error!(pid, error = %e, "error waiting for process exit"),
            }
            *slot.lock().await = None;
        });
        Ok(())
    }

    async fn signal_pid_file(&self, path: &PathBuf) -> Result<(), NotifyError> {
        let mut delay = PID_FIRST_DELAY;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.signal_pid_file_once(path) {
                Ok(pid) => {
                    tracing::info!(pid, pid_file = %path.display(), "Signaled process from PID file");
                    return Ok(());
                }
                Err(e) if tries >= PID_TRIES => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "Signaling the PID file failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }

    fn signal_pid_file_once(&self, path: &PathBuf) -> Result<i64, NotifyError> {
        let text = std::fs::read_to_string(path).map_err(|source| NotifyError::PidFileRead {
            path: path.clone(),
            source,
        })?;
        let content = text.trim();
        let pid: i64 = content.parse().map_err(|_| NotifyError::PidFileParse {
            path: path.clone(),
            content: content.to_owned(),
        })?;
        if let Some(signal) = self.signal {
            signal.send(pid)?;
        }
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn pid_file_that_holds_no_number_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        std::fs::write(&path, "not a pid\n").unwrap();
        let n = Notifier::new(
            None,
            Some(path.clone()),
            RenewSignal::from_name("SIGUSR1").ok(),
        );
        let err = n.signal_pid_file_once(&path).unwrap_err();
        assert!(matches!(err, NotifyError::PidFileParse { .. }), "{err}");
        assert!(err.to_string().contains("app.pid"), "{err}");
        // A negative pid would signal a process group (or everyone): refused.
        std::fs::write(&path, "-1").unwrap();
        let err = n.signal_pid_file_once(&path).unwrap_err();
        assert!(
            matches!(err, NotifyError::Signal(SignalError::BadPid(-1))),
            "{err}"
        );
    }

    #[tokio::test]
    async fn cmd_is_started_once_then_signaled_and_restarted_after_it_exits() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        // Appends "start" when started and "usr1" on each SIGUSR1; exits on SIGTERM.
        let script = format!(
            "trap 'echo usr1 >> {log}' USR1; trap 'exit 0' TERM; echo start >> {log}; while :; do sleep 0.1; done",
            log = log.display()
        );
        let n = Notifier::new(
            Some(("sh".into(), vec!["-c".into(), script])),
            None,
            RenewSignal::from_name("SIGUSR1").ok(),
        );
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        n.files_updated().await;
        wait(|| read() == "start\n").await;
        n.files_updated().await;
        wait(|| read() == "start\nusr1\n").await;
        // Stop it; the next update starts it again.
        let pid = n.child.lock().await.unwrap();
        RenewSignal::from_name("SIGTERM")
            .unwrap()
            .send(i64::from(pid))
            .unwrap();
        let child = Arc::clone(&n.child);
        wait_async(|| {
            let child = Arc::clone(&child);
            async move { child.lock().await.is_none() }
        })
        .await;
        n.files_updated().await;
        wait(|| read() == "start\nusr1\nstart\n").await;
        let pid = n.child.lock().await.unwrap();
        RenewSignal::from_name("SIGTERM")
            .unwrap()
            .send(i64::from(pid))
            .unwrap();
    }

    #[tokio::test]
    async fn pid_in_the_pid_file_is_sent_the_signal_and_the_file_is_reread_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let ready = dir.path().join("ready");
        let script = format!(
            "trap 'echo usr1 >> {log}' USR1; touch {ready}; i=0; while [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done",
            log = log.display(),
            ready = ready.display()
        );
        let mut app = std::process::Command::new("sh")
            .args(["-c", &script])
            .spawn()
            .unwrap();
        wait(|| ready.exists()).await;
        let pid_file = dir.path().join("app.pid");
        // Written after the helper was configured: read at each update.
        std::fs::write(&pid_file, format!("{}\n", app.id())).unwrap();
        let n = Notifier::new(None, Some(pid_file), RenewSignal::from_name("SIGUSR1").ok());
        n.files_updated().await;
        wait(|| std::fs::read_to_string(&log).unwrap_or_default() == "usr1\n").await;
        n.files_updated().await;
        wait(|| std::fs::read_to_string(&log).unwrap_or_default() == "usr1\nusr1\n").await;
        app.kill().unwrap();
        app.wait().unwrap();
    }

    async fn wait(mut f: impl FnMut() -> bool) {
        for _ in 0..100 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("condition not met within 10s");
    }

    async fn wait_async<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) {
        for _ in 0..100 {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("condition not met within 10s");
    }
}
