//! `spire.agent.debug.v1.Debug/GetInfo`: the agent's own SVID chain (up to
//! and including the trust bundle root it verifies against), uptime, cache
//! counts and the time of the last successful sync, filled as SPIRE fills
//! them. As in SPIRE the answer is cached for five seconds, so a busy
//! monitoring loop does not re-verify the chain on every call, and any
//! caller that can open the admin socket may ask.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sigil_plugin::clock::Clock;
use sigil_proto::spire::api::agent::debug::v1::debug_server::{Debug, DebugServer};
use sigil_proto::spire::api::agent::debug::v1::get_info_response::Cert;
use sigil_proto::spire::api::agent::debug::v1::{GetInfoRequest, GetInfoResponse};
use sigil_proto::spire::api::types::Spiffeid;
use sigil_spiffe::SpiffeId;
use tonic::{Request, Response, Status};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use super::{AdminError, AgentStatus};
use crate::cache::CacheHandle;

/// How long a `GetInfo` answer is reused (SPIRE's `cacheExpiry`).
pub const INFO_CACHE_EXPIRY: Duration = Duration::from_secs(5);

/// The Debug service.
#[derive(Clone)]
pub struct DebugService {
    cache: CacheHandle,
    status: Arc<dyn AgentStatus>,
    clock: Arc<dyn Clock>,
    started_at: SystemTime,
    last: Arc<Mutex<Option<(SystemTime, GetInfoResponse)>>>,
}

impl DebugService {
    /// Reports on the agent whose cache is `cache` and whose identity and
    /// sync state `status` tells; uptime counts from `started_at`.
    pub fn new(
        cache: CacheHandle,
        status: Arc<dyn AgentStatus>,
        clock: Arc<dyn Clock>,
        started_at: SystemTime,
    ) -> DebugService {
        DebugService {
            cache,
            status,
            clock,
            started_at,
            last: Arc::new(Mutex::new(None)),
        }
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> DebugServer<DebugService> {
        DebugServer::new(self)
    }

    /// The current answer, from the cache while it is fresh.
    pub fn info(&self) -> Result<GetInfoResponse, AdminError> {
        let now = self.clock.now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, info)) = last.as_ref()
            && now.duration_since(*at).unwrap_or(Duration::ZERO) < INFO_CACHE_EXPIRY
        {
            return Ok(info.clone());
        }
        let info = self.compute(now)?;
        *last = Some((now, info.clone()));
        Ok(info)
    }

    fn compute(&self, now: SystemTime) -> Result<GetInfoResponse, AdminError> {
        let snapshot = self
            .cache
            .snapshots
            .borrow()
            .clone()
            .ok_or(AdminError::NotReady)?;
        let chain = verified_chain(
            &self.status.agent_svid_chain(),
            &snapshot.bundle.x509_authorities,
            now,
        )
        .inspect_err(|e| tracing::error!(error = %e, "Failed to verify agent SVID"))?;
        let svid_chain = chain
            .iter()
            .map(|der| describe_cert(der))
            .collect::<Result<Vec<_>, _>>()?;

        let uptime = now.duration_since(self.started_at).unwrap_or_default();
        let uptime = i32::try_from(uptime.as_secs())
            .map_err(|e| AdminError::OutOfRange(format!("invalid value for uptime: {e}")))?;
        let x509_count = i32::try_from(snapshot.svids.len()).map_err(|e| {
            AdminError::OutOfRange(format!("out of range value for X.509 SVIDs count: {e}"))
        })?;
        let jwt_count = i32::try_from(self.status.cached_jwt_svids()).map_err(|e| {
            AdminError::OutOfRange(format!("out of range value for JWT SVIDs count: {e}"))
        })?;
        #[allow(deprecated)] // SPIRE still fills the old count.
        Ok(GetInfoResponse {
            svid_chain,
            uptime,
            svids_count: x509_count,
            last_sync_success: self.status.last_sync_success().unwrap_or(0),
            cached_x509_svids_count: x509_count,
            cached_jwt_svids_count: jwt_count,
            // sigil has no SVIDStore plugins.
            cached_svidstore_x509_svids_count: 0,
        })
    }
}

impl std::fmt::Debug for DebugService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugService")
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl Debug for DebugService {
    async fn get_info(
        &self,
        _request: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        Ok(Response::new(self.info()?))
    }
}

/// The chain from the agent SVID up to the bundle root it verifies against,
/// root included, as go-spiffe's `x509svid.Verify` returns it.
fn verified_chain(
    chain: &[Vec<u8>],
    roots: &[Vec<u8>],
    now: SystemTime,
) -> Result<Vec<Vec<u8>>, AdminError> {
    let unverified = |e: sigil_crypto::CryptoError| AdminError::AgentSvidUnverified(e.to_string());
    sigil_crypto::x509::verify_chain(chain, roots, now).map_err(unverified)?;
    let root = roots
        .iter()
        .find(|root| {
            sigil_crypto::x509::verify_chain(chain, std::slice::from_ref(root), now).is_ok()
        })
        .ok_or_else(|| AdminError::AgentSvidUnverified("no root verifies the chain".into()))?;
    let mut full = chain.to_vec();
    if full.last() != Some(root) {
        full.push(root.clone());
    }
    Ok(full)
}

fn describe_cert(der: &[u8]) -> Result<Cert, AdminError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| AdminError::AgentSvidUnverified(format!("parsing certificate: {e}")))?;
    let expires_at = cert.validity().not_after.timestamp();
    Ok(Cert {
        id: spiffe_id_of(&cert).map(|id| Spiffeid {
            trust_domain: id.trust_domain_name().to_owned(),
            path: id.path().to_owned(),
        }),
        expires_at,
        subject: sigil_crypto::pkix::go_subject_string(der),
    })
}

/// go-spiffe's `x509svid.IDFromCert`: the one URI SAN, if it is a SPIFFE
/// ID. CA certificates qualify too (a root names its trust domain).
fn spiffe_id_of(cert: &X509Certificate<'_>) -> Option<SpiffeId> {
    let san = cert.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => SpiffeId::parse(uri).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_is_formatted_as_go_does() {
        let key = sigil_crypto::SoftwareKey::generate(sigil_crypto::KeyType::EcP256).unwrap();
        let td = sigil_spiffe::TrustDomain::new("example.org").unwrap();
        let subject = sigil_crypto::CaSubject {
            country: vec!["US".into()],
            organization: vec!["Acme, Inc".into()],
            common_name: "root".into(),
        };
        let now = SystemTime::now();
        let der =
            sigil_crypto::self_signed_ca(&key, &td, &subject, now, now + Duration::from_secs(60))
                .unwrap();
        let cert = describe_cert(&der).unwrap();
        assert_eq!(cert.subject, "CN=root,O=Acme\\, Inc,C=US");
        assert_eq!(
            cert.id,
            Some(Spiffeid {
                trust_domain: "example.org".into(),
                path: String::new()
            })
        );
        let expected = now + Duration::from_secs(60);
        let expected = expected
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(cert.expires_at, expected);
    }
}
