//! The agent's own identity: node attestation, reuse of a stored agent SVID,
//! and rotation.
//!
//! The agent key lives in the KeyManager under one of two IDs,
//! [`KEY_A`] / [`KEY_B`] (SPIRE's names); rotation writes the other slot so
//! the key in use is never overwritten before the new SVID is in hand. A
//! stored SVID is reused only if it has not expired and the KeyManager
//! still holds its key; otherwise the agent attests again with its node
//! attestor (which, for a single-use join token, needs a new token).

use std::sync::Arc;
use std::time::Duration;

use sigil_crypto::key::{KeyType, Signer};
use sigil_plugin::clock::{self, Clock};
use sigil_plugin::keymanager::KeyManager;
use sigil_plugin::nodeattestor::AgentNodeAttestor;
use sigil_spiffe::{SpiffeId, TrustDomain};
use tonic::Status;

use super::ManagerError;
use super::api::{ServerApi, is_transient};
use super::store::DataDir;

/// KeyManager ID of the first agent key slot.
pub const KEY_A: &str = "agent-svid-A";
/// KeyManager ID of the second agent key slot.
pub const KEY_B: &str = "agent-svid-B";

/// Key type of the agent's own key (SPIRE's agents use EC P-256).
pub const AGENT_KEY_TYPE: KeyType = KeyType::EcP256;

/// The agent SVID and its key.
#[derive(Debug, Clone)]
pub struct AgentSvid {
    /// Chain, leaf first, DER.
    pub chain: Vec<Vec<u8>>,
    /// The private key, held by the KeyManager.
    pub key: Arc<dyn Signer>,
    /// Its KeyManager ID ([`KEY_A`] or [`KEY_B`]).
    pub key_id: &'static str,
    /// The agent's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// Leaf `notBefore`, unix seconds.
    pub not_before: i64,
    /// Leaf `notAfter`, unix seconds.
    pub not_after: i64,
}

impl AgentSvid {
    /// Checks a chain from the server (or disk) against our key and trust
    /// domain.
    pub fn from_chain(
        chain: Vec<Vec<u8>>,
        key: Arc<dyn Signer>,
        key_id: &'static str,
        td: &TrustDomain,
    ) -> Result<AgentSvid, String> {
        let leaf = chain.first().ok_or("empty certificate chain")?;
        let info = sigil_crypto::x509::cert_info(leaf).map_err(|e| e.to_string())?;
        if info.public_key_der != key.public_key_der() {
            return Err("the certificate does not carry the agent's public key".into());
        }
        let spiffe_id = sigil_crypto::x509::leaf_spiffe_id(leaf).map_err(|e| e.to_string())?;
        if !spiffe_id.is_member_of(td) || !spiffe_id.path().starts_with("/spire/agent/") {
            return Err(format!(
                "{spiffe_id} is not an agent ID of trust domain {td}"
            ));
        }
        Ok(AgentSvid {
            chain,
            key,
            key_id,
            spiffe_id,
            not_before: clock::unix(info.not_before),
            not_after: clock::unix(info.not_after),
        })
    }

    /// The slot the next key goes to.
    pub fn next_key_id(&self) -> &'static str {
        other_slot(self.key_id)
    }
}

/// The other key slot.
pub fn other_slot(id: &str) -> &'static str {
    if id == KEY_A { KEY_B } else { KEY_A }
}

/// Loads the stored agent SVID if it is still usable: present, not expired
/// (with a second of margin, as SPIRE) and its key in the KeyManager.
pub async fn load_stored(
    data: &DataDir,
    km: &dyn KeyManager,
    td: &TrustDomain,
    clock: &dyn Clock,
) -> Result<Option<AgentSvid>, ManagerError> {
    let chain = match data.load_agent_svid() {
        Ok(Some(chain)) => chain,
        Ok(None) => {
            tracing::debug!("No pre-existing agent SVID found; will perform node attestation");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(error = %e, "Could not read the stored agent SVID; will perform node attestation");
            return Ok(None);
        }
    };
    let mut found_any_key = false;
    for id in [KEY_A, KEY_B] {
        let Some(key) = km.get_key(id).await? else {
            continue;
        };
        found_any_key = true;
        let Ok(svid) = AgentSvid::from_chain(chain.clone(), key, id, td) else {
            continue;
        };
        if clock.unix_now() + 1 >= svid.not_after {
            tracing::warn!(
                expiry = svid.not_after,
                "SVID key recovered, but SVID is expired; will perform node attestation"
            );
            return Ok(None);
        }
        tracing::info!(spiffe_id = %svid.spiffe_id, "SVID loaded");
        return Ok(Some(svid));
    }
    if found_any_key {
        tracing::warn!("SVID recovered, but no SVID key found; will perform node attestation");
    } else {
        tracing::warn!(
            key_manager = km.name(),
            "SVID recovered, but no keys found; will perform node attestation"
        );
    }
    Ok(None)
}

/// Node attestation with the configured attestor: a new key in `key_id`,
/// a CSR without SPIFFE ID, the attestor's payload, `AttestAgent` (with any
/// challenge rounds the server half asks for). Returns the agent SVID and
/// whether the server lets the agent re-attest by itself. Transient
/// failures are retried for up to `timeout` (zero: one attempt); a refusal
/// is returned at once with the server's message.
pub async fn attest(
    api: &dyn ServerApi,
    km: &dyn KeyManager,
    td: &TrustDomain,
    attestor: &dyn AgentNodeAttestor,
    key_id: &'static str,
    server: &str,
    timeout: Duration,
) -> Result<(AgentSvid, bool), ManagerError> {
    let payload = attestor
        .payload()
        .await
        .map_err(ManagerError::NodeAttestor)?;
    let key = km.generate_key(key_id, AGENT_KEY_TYPE).await?;
    let csr = sigil_crypto::csr::create_csr(key.as_ref(), None)?;
    let attested = retry_transient(server, "node attestation", timeout, || {
        api.attest_agent(attestor, payload.clone(), csr.clone())
    })
    .await
    .map_err(|e| match e {
        Retry::GaveUp(e) => e,
        Retry::Refused(status) => ManagerError::AttestationRefused {
            code: status.code(),
            message: status.message().to_owned(),
        },
    })?;
    let svid = AgentSvid::from_chain(attested.chain, key, key_id, td)
        .map_err(ManagerError::BadAgentSvid)?;
    tracing::info!(
        spiffe_id = %svid.spiffe_id,
        reattestable = attested.reattestable,
        node_attestor = attestor.name(),
        "Node attestation was successful"
    );
    Ok((svid, attested.reattestable))
}

/// Renews the agent SVID with a new key in the other slot.
pub async fn renew(
    api: &dyn ServerApi,
    km: &dyn KeyManager,
    current: &AgentSvid,
    td: &TrustDomain,
) -> Result<AgentSvid, ManagerError> {
    tracing::debug!("Rotating agent SVID");
    let key_id = current.next_key_id();
    let key = km.generate_key(key_id, AGENT_KEY_TYPE).await?;
    let csr = sigil_crypto::csr::create_csr(key.as_ref(), None)?;
    let chain = api
        .renew_agent(csr)
        .await
        .map_err(|s| ManagerError::Rotation {
            code: s.code(),
            message: s.message().to_owned(),
        })?;
    let svid = AgentSvid::from_chain(chain, key, key_id, td).map_err(ManagerError::BadAgentSvid)?;
    tracing::info!(spiffe_id = %svid.spiffe_id, expires_at = svid.not_after, "Successfully rotated agent SVID");
    Ok(svid)
}

/// How a retried call ended without success.
pub(crate) enum Retry {
    /// Still failing transiently when time ran out.
    GaveUp(ManagerError),
    /// The server answered with a non-transient error.
    Refused(Status),
}

/// Calls `f` until it succeeds, fails non-transiently, or `timeout` passes,
/// waiting 0.5 s, 1 s, 2 s, then 5 s between attempts.
pub(crate) async fn retry_transient<T, F, Fut>(
    server: &str,
    what: &str,
    timeout: Duration,
    mut f: F,
) -> Result<T, Retry>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(status) if is_transient(&status) => {
                let elapsed = start.elapsed();
                if elapsed + delay > timeout {
                    return Err(Retry::GaveUp(ManagerError::ServerUnreachable {
                        server: server.to_owned(),
                        what: what.to_owned(),
                        elapsed,
                        last: status.message().to_owned(),
                    }));
                }
                tracing::warn!(error = %status.message(), retry_in = ?delay, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(status) => return Err(Retry::Refused(status)),
        }
    }
}
