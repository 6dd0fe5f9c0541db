//! Workload attestation: turning "the process on the other end of this
//! socket" into selectors that registration entries can match.
//!
//! This module owns the [`WorkloadAttestor`] shape and its error type; each
//! attestor (today [`unix::UnixAttestor`] and [`k8s::K8sAttestor`]) lives in a submodule. An attestor
//! only reports facts about the peer. It never decides which identities the
//! peer gets, and it fails rather than report facts about a process that may
//! not be the one that connected.

pub mod conformance;
pub mod k8s;
pub mod unix;

use std::io;
use std::path::PathBuf;

use async_trait::async_trait;
use sigil_spiffe::{Selector, SelectorError};

use crate::uds::PeerInfo;

pub use unix::{UnixAttestor, UnixAttestorConfig};

use std::sync::Arc;

/// A workload attestor's configuration error, as the catalog reports it.
pub(crate) fn plugin_error(plugin: &str, e: AttestError) -> sigil_plugin::PluginError {
    let reason = match e {
        AttestError::Config { reason, .. } => reason,
        other => other.to_string(),
    };
    sigil_plugin::PluginError::new(
        "WorkloadAttestor",
        plugin,
        sigil_plugin::Problem::Invalid(reason),
    )
}

/// Several attestors as one: each attests the caller and the selectors
/// are concatenated in declaration order, as SPIRE combines them. Any
/// attestor's failure fails the attestation, so a caller is never served
/// on partial facts.
pub struct Combined {
    attestors: Vec<Arc<dyn WorkloadAttestor>>,
}

impl Combined {
    /// Combines `attestors` (the catalog guarantees at least one); a
    /// single attestor is returned as is.
    pub fn of(mut attestors: Vec<Arc<dyn WorkloadAttestor>>) -> Arc<dyn WorkloadAttestor> {
        if attestors.len() == 1 {
            return attestors.remove(0);
        }
        Arc::new(Combined { attestors })
    }
}

#[async_trait]
impl WorkloadAttestor for Combined {
    fn name(&self) -> &str {
        "combined"
    }

    async fn attest(&self, peer: &PeerInfo) -> Result<Vec<Selector>, AttestError> {
        let all =
            futures::future::try_join_all(self.attestors.iter().map(|a| a.attest(peer))).await?;
        Ok(all.into_iter().flatten().collect())
    }
}

/// A workload attestor plugin: given the credentials of a connected peer,
/// returns the selectors that describe it.
#[async_trait]
pub trait WorkloadAttestor: Send + Sync {
    /// The plugin name as written in config (`unix`).
    fn name(&self) -> &str;

    /// Selectors for the peer. Every selector has this attestor's name as its
    /// type.
    async fn attest(&self, peer: &PeerInfo) -> Result<Vec<Selector>, AttestError>;
}

/// Why a workload could not be attested.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The kernel gave no PID for the peer (it lives in a PID namespace the
    /// agent cannot see).
    #[error(
        "the caller's PID is not visible to the agent (pid {pid}); run the agent in the host PID namespace"
    )]
    PidUnknown {
        /// The PID as reported by `SO_PEERCRED`.
        pid: i32,
    },
    /// The process that connected exited before attestation finished, so
    /// what was read may describe a different process that reused its PID.
    #[error(
        "process {pid} that called the Workload API has exited; its PID may have been reused, so it was not attested"
    )]
    ProcessGone {
        /// The caller's PID.
        pid: i32,
    },
    /// Reading something under `/proc/<pid>` failed.
    #[error("reading {} for process {pid}: {source}", path.display())]
    Proc {
        /// The caller's PID.
        pid: i32,
        /// What was being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `/proc/<pid>/status` lacks a line or has one we cannot parse.
    #[error("{} for process {pid} has no usable {field:?} line", path.display())]
    MalformedStatus {
        /// The caller's PID.
        pid: i32,
        /// The status file.
        path: PathBuf,
        /// The field that was missing or malformed (`Uid`, `Gid`).
        field: &'static str,
    },
    /// The workload binary is larger than `workload_size_limit`.
    #[error("workload {} exceeds the size limit for hashing ({size} > {limit} bytes)", path.display())]
    WorkloadTooLarge {
        /// The binary's path.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The configured limit.
        limit: i64,
    },
    /// A selector value could not be built (for example an empty group
    /// list entry).
    #[error("building selector: {0}")]
    Selector(#[from] SelectorError),
    /// The blocking attestation task did not complete.
    #[error("attestation task failed: {0}")]
    Task(String),
    /// The `k8s` attestor could not attest the caller.
    #[error("k8s workload attestation: {0}")]
    K8s(#[from] k8s::K8sError),
    /// The attestor's configuration is invalid.
    #[error("invalid {plugin} workload attestor configuration: {reason}")]
    Config {
        /// The plugin name.
        plugin: &'static str,
        /// What is wrong.
        reason: String,
    },
}
