//! The one error type every datastore operation returns.

/// Why a datastore operation failed. Callers decide retry behaviour with
/// [`DataStoreError::is_transient`]; every other variant is final for the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataStoreError {
    /// The record addressed by ID does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A record with the same key (or, for entries, the same parent ID, SPIFFE ID
    /// and selector set) already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The input breaks a rule of the data model; nothing was stored.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A concurrent transaction won (serialization failure or deadlock); the
    /// operation changed nothing and may be retried.
    #[error("conflict with a concurrent change: {0}")]
    Conflict(String),
    /// The database could not be reached or is temporarily unable to serve
    /// (connection refused or lost, pool exhausted, database locked).
    #[error("datastore unavailable: {0}")]
    Unavailable(String),
    /// The record is not in the state the operation requires (an agent that
    /// is banned cannot attest again); nothing changed.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// `open` was given a database type or connection string it cannot use.
    #[error("invalid datastore configuration: {0}")]
    InvalidConfig(String),
    /// Anything else: a bug, or stored data this version cannot read.
    #[error("datastore internal error: {0}")]
    Internal(String),
}

impl DataStoreError {
    /// True when retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DataStoreError::Unavailable(_) | DataStoreError::Conflict(_)
        )
    }
}
