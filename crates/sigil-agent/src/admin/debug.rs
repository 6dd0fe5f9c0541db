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
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate, X509Name};

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
        subject: go_name_string(cert.subject()),
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

/// Go's `pkix.Name.String()`, so `subject` reads as SPIRE reports it
/// (`O=SPIRE,C=US`): the well-known attributes in Go's fixed order, most
/// specific first, several values of one type joined with `+`; other
/// attributes after them as `<oid>=#<hex DER>`.
fn go_name_string(name: &X509Name<'_>) -> String {
    // Go's ToRDNSequence order, which String() then reverses.
    const KNOWN: [(&str, &str); 9] = [
        ("2.5.4.6", "C"),
        ("2.5.4.8", "ST"),
        ("2.5.4.7", "L"),
        ("2.5.4.9", "STREET"),
        ("2.5.4.17", "POSTALCODE"),
        ("2.5.4.10", "O"),
        ("2.5.4.11", "OU"),
        ("2.5.4.3", "CN"),
        ("2.5.4.5", "SERIALNUMBER"),
    ];
    let attrs: Vec<(String, String, Vec<u8>)> = name
        .iter_attributes()
        .map(|a| {
            let value = a
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|_| String::from_utf8_lossy(a.attr_value().as_bytes()).into());
            (a.attr_type().to_id_string(), value, go_marshal_value(a))
        })
        .collect();

    // Go keeps one CN and one SERIALNUMBER (the last); the others collect.
    let mut rdns: Vec<String> = Vec::new();
    for (oid, _, der) in &attrs {
        if !KNOWN.iter().any(|(k, _)| k == oid) {
            rdns.push(format!("{oid}=#{}", hex::encode(der)));
        }
    }
    for (oid, label) in KNOWN {
        let values: Vec<&str> = attrs
            .iter()
            .filter(|(o, _, _)| o == oid)
            .map(|(_, v, _)| v.as_str())
            .collect();
        let values = match label {
            "CN" | "SERIALNUMBER" => values.last().copied().into_iter().collect(),
            _ => values,
        };
        if values.is_empty() {
            continue;
        }
        rdns.push(
            values
                .iter()
                .map(|v| format!("{label}={}", go_escape(v)))
                .collect::<Vec<_>>()
                .join("+"),
        );
    }
    rdns.reverse();
    rdns.join(",")
}

/// Go's escaping of attribute values in `RDNSequence.String()`.
fn go_escape(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let escape = match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => true,
            ' ' => i == 0 || i == last,
            '#' => i == 0,
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// How Go re-marshals an attribute value it does not name: strings as
/// PrintableString when they fit its alphabet, else UTF8String; anything
/// else as it came.
fn go_marshal_value(attr: &x509_parser::x509::AttributeTypeAndValue<'_>) -> Vec<u8> {
    let any = attr.attr_value();
    let (tag, body) = match attr.as_str() {
        Ok(s) => {
            let printable = s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?*".contains(&b));
            (if printable { 0x13 } else { 0x0c }, s.as_bytes())
        }
        Err(_) => {
            let header = &any.header;
            let class = (header.class() as u8) << 6;
            let constructed = if header.is_constructed() { 0x20 } else { 0 };
            let number = u8::try_from(header.tag().0).unwrap_or(0x1f).min(0x1e);
            (class | constructed | number, any.as_bytes())
        }
    };
    let mut der = vec![tag];
    let len = body.len();
    if len < 0x80 {
        der.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        der.push(0x80 | bytes.len() as u8);
        der.extend(bytes);
    }
    der.extend_from_slice(body);
    der
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_escaping_matches_pkix() {
        assert_eq!(go_escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(go_escape(" x "), "\\ x\\ ");
        assert_eq!(go_escape("#x#"), "\\#x#");
        assert_eq!(go_escape("plain"), "plain");
    }

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
