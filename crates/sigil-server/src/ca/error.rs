//! What can go wrong in the CA, as nested enums: [`CaError`] for the CA's
//! own work (keys, certificates, the bundle store, the journal, the
//! UpstreamAuthority), [`AuthorityError`] and [`UpstreamAuthorityError`] for
//! refusals of the LocalAuthority operations, which the API layer words the
//! way SPIRE does for each RPC.
//!
//! This module owns the error types only; it never maps them to gRPC
//! statuses (`api` does, in one place per service).

use std::path::PathBuf;

use sigil_plugin::upstreamauthority::UpstreamError;

use super::slot::SlotStatus;

/// What can go wrong in the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// No active authority (the server is still starting, or keys are gone).
    #[error("no active {0} authority")]
    NoAuthority(&'static str),
    /// Key management failed.
    #[error("key manager: {0}")]
    KeyManager(#[from] sigil_plugin::KeyManagerError),
    /// Signing or certificate building failed.
    #[error("crypto: {0}")]
    Crypto(#[from] sigil_crypto::CryptoError),
    /// The datastore failed (bundle updates).
    #[error("datastore: {0}")]
    DataStore(#[from] sigil_datastore::DataStoreError),
    /// The journal could not be written or read.
    #[error("CA journal {}: {reason}", .path.display())]
    Journal {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        reason: JournalError,
    },
    /// The UpstreamAuthority gave us no usable CA.
    #[error("upstream authority: {0}")]
    Upstream(#[from] UpstreamCaError),
    /// The stored bundle is unreadable (or ours could not be serialized).
    #[error("stored bundle: {0}")]
    Bundle(#[from] StoredBundleError),
    /// An authority offered for the bundle conflicts with one already in it.
    #[error("{0}")]
    ConflictingAuthority(String),
}

/// Why the UpstreamAuthority could not sign a CA we can use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamCaError {
    /// The plugin failed (its configuration, credentials, or signing).
    #[error(transparent)]
    Plugin(#[from] UpstreamError),
    /// The plugin answered with no certificate at all.
    #[error("upstream returned an empty CA chain")]
    EmptyChain,
    /// The certificate it signed is not for the key of our CSR.
    #[error("upstream signed a CA for a different key than the CSR's")]
    KeyMismatch,
    /// It gave no roots to publish, so nothing could verify the CA.
    #[error("upstream returned no roots")]
    NoRoots,
}

/// Why the journal file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Reading the file failed.
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// The file is not a journal (or the journal could not be serialized).
    #[error("{0}")]
    Format(#[source] serde_json::Error),
    /// Writing the file failed.
    #[error("{0}")]
    Write(#[source] sigil_cli::secure_fs::SecureFsError),
}

/// Why a stored bundle could not be read, or ours serialized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoredBundleError {
    /// The stored document is not JSON of the expected shape.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// Its JWKS is not a valid SPIFFE bundle.
    #[error("{0}")]
    Jwks(#[from] sigil_spiffe::BundleError),
}

/// Why a local authority operation (SPIRE's `LocalAuthority` API) was
/// refused. The API layer words each case the way SPIRE does for its RPC.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// The request named no authority.
    #[error("no authority ID provided")]
    MissingId,
    /// The authority is the active one.
    #[error("authority is the active one")]
    IsActive,
    /// The authority is the prepared one.
    #[error("authority is the prepared one")]
    IsPrepared,
    /// The authority is not the one in the next slot.
    #[error("authority is not in the next slot")]
    NotNext,
    /// The next slot holds the authority, in the wrong state for the operation.
    #[error("unsupported local authority status: {}", .0.spire_name())]
    WrongStatus(SlotStatus),
    /// No JWT authority of the bundle has that key ID (checked before acting).
    #[error("no JWT authority found with provided authority ID")]
    UnknownAuthority,
    /// The bundle holds no authority with that ID (found while acting).
    #[error("authority is not in the bundle")]
    NotInBundle,
    /// The authority is tainted already.
    #[error("authority is already tainted")]
    AlreadyTainted,
    /// Only tainted authorities can be revoked.
    #[error("authority is not tainted")]
    NotTainted,
    /// The CA failed.
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// Why an upstream authority cannot be tainted or revoked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamAuthorityError {
    /// The server has no UpstreamAuthority.
    #[error("upstream authority is not configured")]
    NotConfigured,
    /// The subject key ID is not one that may be used (SPIRE's reasons).
    #[error("{0}")]
    Invalid(&'static str),
    /// No authority of the bundle has that subject key ID.
    #[error("no upstream authority found with provided subject key ID")]
    NotInBundle,
    /// The authority is tainted already.
    #[error("upstream authority is already tainted")]
    AlreadyTainted,
    /// Only tainted authorities can be revoked.
    #[error("it is not possible to revoke an untainted root CA")]
    NotTainted,
    /// The CA failed.
    #[error(transparent)]
    Ca(#[from] CaError),
}
