//! `spire.api.server.debug.v1.Debug`: a health summary for operators on the
//! local admin socket (as in SPIRE, admins over mTLS may not call it):
//! uptime, counts of agents, entries and bundles, and the server's own SVID
//! chain as verified against the bundle. Answers are cached for five seconds
//! like SPIRE's, so polling cannot load the datastore.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sigil_datastore::{ListEntriesRequest, ListNodesRequest};
use sigil_plugin::clock::unix;
use sigil_proto::spire::api::server::debug::v1 as pb;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use super::convert::id_to_proto;
use super::{ApiState, Caller, authenticate};

/// How long one GetInfo answer is reused.
const CACHE_EXPIRY: Duration = Duration::from_secs(5);

/// Fails unless the caller came through the local admin socket (SPIRE's
/// `allow_local` without `allow_admin`).
pub fn require_local(caller: &Caller) -> Result<(), Status> {
    match caller {
        Caller::LocalAdmin => Ok(()),
        other => Err(Status::permission_denied(format!(
            "{} is not authorized for this operation; it is only available on the local admin socket",
            other.describe()
        ))),
    }
}

/// The debug service.
#[derive(Debug, Clone)]
pub struct DebugService {
    state: Arc<ApiState>,
    started: Instant,
    cache: Arc<Mutex<Option<(Instant, pb::GetInfoResponse)>>>,
}

impl DebugService {
    /// Wraps the shared state; uptime counts from now (the server builds its
    /// services as the last step of starting).
    pub fn new(state: Arc<ApiState>) -> Self {
        DebugService {
            state,
            started: Instant::now(),
            cache: Arc::new(Mutex::new(None)),
        }
    }

    async fn info(&self) -> Result<pb::GetInfoResponse, Status> {
        let ds = &self.state.ds;
        let agents = ds
            .count_attested_nodes(&ListNodesRequest::default())
            .await
            .map_err(|e| Status::internal(format!("failed to count agents: {e}")))?;
        let entries = ds
            .count_entries(&ListEntriesRequest::default())
            .await
            .map_err(|e| Status::internal(format!("failed to count entries: {e}")))?;
        // SPIRE reports the count of every bundle, its own included, here.
        let bundles = ds
            .list_bundles()
            .await
            .map_err(|e| Status::internal(format!("failed to count bundles: {e}")))?
            .len();
        let svid_chain = self.svid_chain()?;
        Ok(pb::GetInfoResponse {
            svid_chain,
            uptime: clamp(self.started.elapsed().as_secs()),
            agents_count: clamp(agents),
            federated_bundles_count: clamp(bundles as u64),
            entries_count: clamp(entries),
        })
    }

    /// The server SVID and the bundle root it chains to, leaf first.
    fn svid_chain(&self) -> Result<Vec<pb::get_info_response::Cert>, Status> {
        let chain = self.state.server_svid.borrow().clone();
        let bundle = self.state.ca.bundle();
        if bundle.x509_authorities.is_empty() {
            return Err(Status::not_found("trust domain bundle not found"));
        }
        let now = self.state.clock.now();
        let root = bundle
            .x509_authorities
            .iter()
            .find(|root| {
                sigil_crypto::x509::verify_chain(&chain, std::slice::from_ref(root), now).is_ok()
            })
            .ok_or_else(|| {
                Status::internal(
                    "failed verification against bundle: the server SVID does not chain to any X.509 authority",
                )
            })?;
        chain
            .iter()
            .chain(std::iter::once(root))
            .map(|der| cert_entry(der))
            .collect()
    }
}

fn clamp(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn cert_entry(der: &[u8]) -> Result<pb::get_info_response::Cert, Status> {
    let info = sigil_crypto::x509::cert_info(der)
        .map_err(|e| Status::internal(format!("failed to parse certificate: {e}")))?;
    // Like go-spiffe's IDFromCert: exactly one URI SAN, a SPIFFE ID.
    let id = match info.uri_sans.as_slice() {
        [uri] => sigil_spiffe::SpiffeId::parse(uri)
            .ok()
            .map(|id| id_to_proto(&id)),
        _ => None,
    };
    Ok(pb::get_info_response::Cert {
        id,
        expires_at: unix(info.not_after),
        subject: go_subject_string(der),
    })
}

/// A certificate subject as Go's `pkix.Name.String` prints it (RFC 2253
/// style: most specific attribute first, comma separated), so operators
/// see what SPIRE shows.
pub fn go_subject_string(der: &[u8]) -> String {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return String::new();
    };
    // Go's field order (see pkix.Name.ToRDNSequence); printed in reverse.
    const ORDER: [(&str, &str); 9] = [
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
    let mut known: Vec<Vec<String>> = vec![Vec::new(); ORDER.len()];
    let mut extra: Vec<String> = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            match ORDER.iter().position(|(o, _)| *o == oid) {
                Some(i) => {
                    let v = atv.as_str().unwrap_or_default().to_owned();
                    // Go keeps only the last CommonName and SerialNumber.
                    if ORDER[i].1 == "CN" || ORDER[i].1 == "SERIALNUMBER" {
                        known[i] = vec![v];
                    } else {
                        known[i].push(v);
                    }
                }
                None => {
                    let value = atv.attr_value();
                    let mut der = der_header(value.tag().0, value.data.len());
                    der.extend_from_slice(value.data);
                    extra.push(format!("{oid}=#{}", hex_lower(&der)));
                }
            }
        }
    }
    let mut rdns: Vec<String> = extra;
    for (i, values) in known.iter().enumerate() {
        if values.is_empty() {
            continue;
        }
        let name = ORDER[i].1;
        rdns.push(
            values
                .iter()
                .map(|v| format!("{name}={}", escape_dn_value(v)))
                .collect::<Vec<_>>()
                .join("+"),
        );
    }
    rdns.reverse();
    rdns.join(",")
}

fn escape_dn_value(v: &str) -> String {
    let n = v.chars().count();
    let mut out = String::with_capacity(v.len());
    for (k, c) in v.chars().enumerate() {
        let escape = match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => true,
            ' ' => k == 0 || k + 1 == n,
            '#' => k == 0,
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn der_header(tag: u32, len: usize) -> Vec<u8> {
    let mut out = vec![u8::try_from(tag).unwrap_or(0x04)];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl pb::debug_server::Debug for DebugService {
    async fn get_info(
        &self,
        request: Request<pb::GetInfoRequest>,
    ) -> Result<Response<pb::GetInfoResponse>, Status> {
        require_local(&authenticate(&self.state, &request).await?)?;
        let mut cache = self.cache.lock().await;
        if let Some((at, resp)) = cache.as_ref()
            && at.elapsed() < CACHE_EXPIRY
        {
            return Ok(Response::new(resp.clone()));
        }
        let resp = self.info().await?;
        *cache = Some((Instant::now(), resp.clone()));
        Ok(Response::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_print_like_go() {
        let key =
            sigil_crypto::key::SoftwareKey::generate(sigil_crypto::key::KeyType::EcP256).unwrap();
        let td = sigil_spiffe::TrustDomain::new("example.org").unwrap();
        let subject = sigil_crypto::x509::CaSubject {
            country: vec!["US".into()],
            organization: vec!["A, B".into()],
            common_name: "root".into(),
        };
        let now = std::time::SystemTime::now();
        let der = sigil_crypto::x509::self_signed_ca(
            &key,
            &td,
            &subject,
            now,
            now + Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(go_subject_string(&der), "CN=root,O=A\\, B,C=US");
    }

    #[test]
    fn dn_values_are_escaped_like_go() {
        assert_eq!(escape_dn_value(" a#b "), "\\ a#b\\ ");
        assert_eq!(escape_dn_value("#x"), "\\#x");
        assert_eq!(escape_dn_value("a+b;c"), "a\\+b\\;c");
    }
}
