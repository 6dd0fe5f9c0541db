//! The audit log (SPIRE's `audit_log_enabled`): one record per server API
//! call, written to the server's log as SPIRE writes it (message
//! `API accessed`, `type=audit`).
//!
//! It is a tower layer around all the API services, on both the agent (mTLS)
//! endpoint and the admin socket, so no handler has to remember to audit.
//! Each record carries SPIRE's fields: `request_id`, `service`, `method`,
//! the caller (`caller_uid`, `caller_gid`, `caller_path` on the admin socket;
//! `caller_addr`, `caller_id` over TLS), `status` (`success`/`error`) and,
//! on error, `status_code` and `status_message`. For the RPCs listed in
//! [`request_fields`] it also logs the request parameters SPIRE logs for
//! them; batch entry RPCs give one record per item with that item's status,
//! as SPIRE does.
//!
//! A record is never dropped quietly: audit records bypass the log level
//! (see `sigil_cli::logging`), and when a record cannot be written the call
//! ends with `Internal` ("audit log could not be written") instead of its
//! own status, so the caller learns of it.
//!
//! This module never authorizes or changes a call otherwise; it only reads.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use prost::Message;
use sigil_proto::spire::api::server as srv;
use sigil_proto::spire::api::types;
use tonic::Code;
use tower::{Layer, Service};

use crate::endpoints::CallerInfo;

/// Largest request body the layer buffers to read its parameters: the
/// message-size limit every service has, plus the gRPC frame header.
/// Larger requests are refused with `ResourceExhausted` (and audited).
const MAX_BUFFERED_REQUEST: usize = sigil_proto::MAX_MESSAGE_SIZE + 5;
/// Largest batch response the layer keeps to read per-item statuses; past
/// it, items get the call's status.
const MAX_BUFFERED_RESPONSE: usize = sigil_proto::MAX_MESSAGE_SIZE + 5;
/// The status message of a call whose audit record could not be written.
const AUDIT_WRITE_FAILED: &str = "audit log could not be written";
/// The prefix SPIRE strips from service names in logs.
const SERVER_API_PREFIX: &str = "spire.api.server.";

/// Wraps API services so that every call is audited when enabled.
#[derive(Debug, Clone, Copy)]
pub struct AuditLayer {
    enabled: bool,
}

impl AuditLayer {
    /// A layer that audits when `enabled`, and passes calls through
    /// untouched otherwise.
    pub fn new(enabled: bool) -> Self {
        AuditLayer { enabled }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;
    fn layer(&self, inner: S) -> Audit<S> {
        Audit {
            inner,
            enabled: self.enabled,
        }
    }
}

/// The service made by [`AuditLayer`].
#[derive(Debug, Clone)]
pub struct Audit<S> {
    inner: S,
    enabled: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Audit<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + Unpin + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let names = self
            .enabled
            .then(|| Names::parse(req.uri().path()))
            .flatten();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(names) = names else {
            let req = req.map(tonic::body::Body::new);
            return Box::pin(async move {
                let resp = inner.call(req).await?;
                Ok(resp.map(tonic::body::Body::new))
            });
        };
        let record = Record {
            request_id: uuid::Uuid::new_v4().to_string(),
            caller: CallerFields::of(req.extensions().get::<CallerInfo>()),
            names,
        };
        Box::pin(async move {
            let (req, items) = if request_fields_known(&record.names.full) {
                let (parts, body) = req.into_parts();
                let limited = http_body_util::Limited::new(body, MAX_BUFFERED_REQUEST);
                let bytes = match limited.collect().await {
                    Ok(c) => c.to_bytes(),
                    Err(_) => {
                        let status = CallStatus::error(
                            Code::ResourceExhausted,
                            "request too large or unreadable".into(),
                        );
                        let written =
                            record.emit(&[Fields::default()], std::slice::from_ref(&status));
                        return Ok(if written.code == Code::Ok {
                            status
                        } else {
                            written
                        }
                        .into_response());
                    }
                };
                let items = request_fields(&record.names.full, grpc_message(&bytes));
                let req = http::Request::from_parts(
                    parts,
                    tonic::body::Body::new(http_body_util::Full::new(bytes)),
                );
                (req, items)
            } else {
                (req.map(tonic::body::Body::new), vec![Fields::default()])
            };
            let resp = inner.call(req).await?;
            if let Some(status) = CallStatus::from_headers(resp.headers()) {
                // A trailers-only response: the call failed before any
                // message, and the status is already known.
                let statuses = vec![status; items.len()];
                if record.emit(&items, &statuses).code != Code::Ok {
                    return Ok(CallStatus::audit_write_failed().into_response());
                }
                return Ok(resp.map(tonic::body::Body::new));
            }
            let collect = batch_results_known(&record.names.full);
            Ok(resp.map(|body| {
                tonic::body::Body::new(AuditBody {
                    inner: body,
                    pending: Some(Pending {
                        record,
                        items,
                        collected: collect.then(Vec::new),
                    }),
                })
            }))
        })
    }
}

/// SPIRE's `service` and `method` log fields.
#[derive(Debug, Clone)]
struct Names {
    /// `/spire.api.server.entry.v1.Entry/BatchCreateEntry`.
    full: String,
    /// `entry.v1.Entry`.
    service: String,
    /// `BatchCreateEntry`.
    method: String,
}

impl Names {
    /// The names of an audited RPC; `None` for calls SPIRE does not audit
    /// (health checks, reflection).
    fn parse(path: &str) -> Option<Names> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        if service.starts_with("grpc.") {
            return None;
        }
        Some(Names {
            full: path.to_owned(),
            service: service
                .strip_prefix(SERVER_API_PREFIX)
                .unwrap_or(service)
                .to_owned(),
            method: method.to_owned(),
        })
    }
}

/// Who called, in SPIRE's field names.
#[derive(Debug, Clone, Default)]
struct CallerFields {
    addr: Option<String>,
    id: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    path: Option<String>,
}

impl CallerFields {
    fn of(info: Option<&CallerInfo>) -> Self {
        match info {
            None => CallerFields::default(),
            Some(CallerInfo::Local(peer)) => CallerFields {
                uid: peer.uid,
                gid: peer.gid,
                path: peer.path.as_ref().map(|p| p.display().to_string()),
                ..CallerFields::default()
            },
            Some(CallerInfo::Tls { addr, peer, .. }) => CallerFields {
                addr: Some(addr.to_string()),
                id: peer.as_ref().map(|p| p.spiffe_id.to_string()),
                ..CallerFields::default()
            },
        }
    }
}

/// A call's (or a batch item's) outcome.
#[derive(Debug, Clone, PartialEq)]
struct CallStatus {
    code: Code,
    message: String,
}

impl CallStatus {
    fn ok() -> Self {
        CallStatus {
            code: Code::Ok,
            message: String::new(),
        }
    }

    fn error(code: Code, message: String) -> Self {
        CallStatus { code, message }
    }

    /// What a call ends with when its audit record could not be written.
    fn audit_write_failed() -> Self {
        CallStatus::error(Code::Internal, AUDIT_WRITE_FAILED.into())
    }

    fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        let code = headers.get("grpc-status")?;
        let code = code
            .to_str()
            .ok()
            .and_then(|c| c.parse::<i32>().ok())
            .map(Code::from_i32)
            .unwrap_or(Code::Unknown);
        let message = headers
            .get("grpc-message")
            .map(|m| percent_decode(m.as_bytes()))
            .unwrap_or_default();
        Some(CallStatus { code, message })
    }

    fn from_types(s: Option<&types::Status>) -> Self {
        match s {
            None => CallStatus::ok(),
            Some(s) => CallStatus {
                code: Code::from_i32(s.code),
                message: s.message.clone(),
            },
        }
    }

    /// A trailers-only gRPC response carrying this status.
    fn into_response(self) -> http::Response<tonic::body::Body> {
        tonic::Status::new(self.code, self.message).into_http()
    }
}

/// The request parameters SPIRE logs, by its field names. Every field is
/// optional; unset ones are left out of the record.
#[derive(Debug, Clone, Default)]
struct Fields {
    entry_id: Option<String>,
    spiffe_id: Option<String>,
    parent_id: Option<String>,
    selectors: Option<String>,
    x509_svid_ttl: Option<i32>,
    jwt_svid_ttl: Option<i32>,
    federates_with: Option<String>,
    admin: Option<bool>,
    downstream: Option<bool>,
    expires_at: Option<i64>,
    dns_name: Option<String>,
    store_svid: Option<bool>,
    hint: Option<String>,
    ttl: Option<i32>,
    audience: Option<String>,
}

/// What is known about a call before its outcome.
#[derive(Debug)]
struct Record {
    request_id: String,
    caller: CallerFields,
    names: Names,
}

impl Record {
    /// Writes one record per item (`items` and `statuses` have the same
    /// length; at least one). Returns `Internal` when a record could not be
    /// written, else `Ok`.
    fn emit(&self, items: &[Fields], statuses: &[CallStatus]) -> CallStatus {
        let before = sigil_cli::logging::log_write_failures();
        for (f, s) in items.iter().zip(statuses) {
            let ok = s.code == Code::Ok;
            let code = (!ok).then(|| format!("{:?}", s.code));
            let message = (!ok).then_some(s.message.as_str());
            let c = &self.caller;
            tracing::info!(
                target: "audit",
                r#type = "audit",
                request_id = %self.request_id,
                service = %self.names.service,
                method = %self.names.method,
                caller_addr = c.addr.as_deref(),
                caller_id = c.id.as_deref(),
                caller_uid = c.uid,
                caller_gid = c.gid,
                caller_path = c.path.as_deref(),
                status = if ok { "success" } else { "error" },
                status_code = code.as_deref(),
                status_message = message,
                entry_id = f.entry_id.as_deref(),
                spiffe_id = f.spiffe_id.as_deref(),
                parent_id = f.parent_id.as_deref(),
                selectors = f.selectors.as_deref(),
                x509_svid_ttl = f.x509_svid_ttl,
                jwt_svid_ttl = f.jwt_svid_ttl,
                federates_with = f.federates_with.as_deref(),
                admin = f.admin,
                downstream = f.downstream,
                expires_at = f.expires_at,
                dns_name = f.dns_name.as_deref(),
                store_svid = f.store_svid,
                hint = f.hint.as_deref(),
                ttl = f.ttl,
                audience = f.audience.as_deref(),
                "API accessed"
            );
        }
        if sigil_cli::logging::log_write_failures() != before {
            CallStatus::audit_write_failed()
        } else {
            CallStatus::ok()
        }
    }
}

/// Whether [`request_fields`] reads this RPC's request.
fn request_fields_known(full: &str) -> bool {
    matches!(
        full,
        "/spire.api.server.entry.v1.Entry/BatchCreateEntry"
            | "/spire.api.server.entry.v1.Entry/BatchUpdateEntry"
            | "/spire.api.server.entry.v1.Entry/BatchDeleteEntry"
            | "/spire.api.server.entry.v1.Entry/GetEntry"
            | "/spire.api.server.agent.v1.Agent/GetAgent"
            | "/spire.api.server.agent.v1.Agent/DeleteAgent"
            | "/spire.api.server.agent.v1.Agent/BanAgent"
            | "/spire.api.server.agent.v1.Agent/CreateJoinToken"
            | "/spire.api.server.svid.v1.SVID/MintX509SVID"
            | "/spire.api.server.svid.v1.SVID/MintJWTSVID"
    )
}

/// Whether the response carries per-item results ([`batch_statuses`]).
fn batch_results_known(full: &str) -> bool {
    matches!(
        full,
        "/spire.api.server.entry.v1.Entry/BatchCreateEntry"
            | "/spire.api.server.entry.v1.Entry/BatchUpdateEntry"
            | "/spire.api.server.entry.v1.Entry/BatchDeleteEntry"
    )
}

/// The parameters SPIRE logs for the RPCs in [`request_fields_known`]: one
/// [`Fields`] per batch item, else one. A request that does not decode
/// yields one empty [`Fields`] (the handler will refuse it).
fn request_fields(full: &str, msg: Option<&[u8]>) -> Vec<Fields> {
    let one = vec![Fields::default()];
    let Some(msg) = msg else { return one };
    let items = match full {
        "/spire.api.server.entry.v1.Entry/BatchCreateEntry" => {
            srv::entry::v1::BatchCreateEntryRequest::decode(msg)
                .map(|r| r.entries.iter().map(entry_fields).collect())
        }
        "/spire.api.server.entry.v1.Entry/BatchUpdateEntry" => {
            srv::entry::v1::BatchUpdateEntryRequest::decode(msg)
                .map(|r| r.entries.iter().map(entry_fields).collect())
        }
        "/spire.api.server.entry.v1.Entry/BatchDeleteEntry" => {
            srv::entry::v1::BatchDeleteEntryRequest::decode(msg).map(|r| {
                r.ids
                    .into_iter()
                    .map(|id| Fields {
                        entry_id: Some(id),
                        ..Fields::default()
                    })
                    .collect()
            })
        }
        "/spire.api.server.entry.v1.Entry/GetEntry" => srv::entry::v1::GetEntryRequest::decode(msg)
            .map(|r| {
                vec![Fields {
                    entry_id: Some(r.id),
                    ..Fields::default()
                }]
            }),
        "/spire.api.server.agent.v1.Agent/GetAgent" => {
            srv::agent::v1::GetAgentRequest::decode(msg).map(|r| vec![id_fields(r.id.as_ref())])
        }
        "/spire.api.server.agent.v1.Agent/DeleteAgent" => {
            srv::agent::v1::DeleteAgentRequest::decode(msg).map(|r| vec![id_fields(r.id.as_ref())])
        }
        "/spire.api.server.agent.v1.Agent/BanAgent" => {
            srv::agent::v1::BanAgentRequest::decode(msg).map(|r| vec![id_fields(r.id.as_ref())])
        }
        "/spire.api.server.agent.v1.Agent/CreateJoinToken" => {
            srv::agent::v1::CreateJoinTokenRequest::decode(msg).map(|r| {
                vec![Fields {
                    ttl: Some(r.ttl),
                    ..id_fields(r.agent_id.as_ref())
                }]
            })
        }
        "/spire.api.server.svid.v1.SVID/MintX509SVID" => {
            srv::svid::v1::MintX509svidRequest::decode(msg).map(|r| {
                vec![Fields {
                    ttl: Some(r.ttl),
                    ..Fields::default()
                }]
            })
        }
        "/spire.api.server.svid.v1.SVID/MintJWTSVID" => {
            srv::svid::v1::MintJwtsvidRequest::decode(msg).map(|r| {
                vec![Fields {
                    ttl: Some(r.ttl),
                    audience: Some(r.audience.join(",")),
                    ..id_fields(r.id.as_ref())
                }]
            })
        }
        _ => return one,
    };
    match items {
        Ok(items) if !items.is_empty() => items,
        _ => one,
    }
}

fn spiffe_id_string(id: &types::Spiffeid) -> String {
    format!("spiffe://{}{}", id.trust_domain, id.path)
}

fn id_fields(id: Option<&types::Spiffeid>) -> Fields {
    Fields {
        spiffe_id: id.map(spiffe_id_string),
        ..Fields::default()
    }
}

fn entry_fields(e: &types::Entry) -> Fields {
    let joined = |v: &[String]| (!v.is_empty()).then(|| v.join(","));
    Fields {
        entry_id: (!e.id.is_empty()).then(|| e.id.clone()),
        spiffe_id: e.spiffe_id.as_ref().map(spiffe_id_string),
        parent_id: e.parent_id.as_ref().map(spiffe_id_string),
        selectors: {
            let s: Vec<String> = e
                .selectors
                .iter()
                .map(|s| format!("{}:{}", s.r#type, s.value))
                .collect();
            joined(&s)
        },
        x509_svid_ttl: Some(e.x509_svid_ttl),
        jwt_svid_ttl: Some(e.jwt_svid_ttl),
        federates_with: joined(&e.federates_with),
        admin: Some(e.admin),
        downstream: Some(e.downstream),
        expires_at: Some(e.expires_at),
        dns_name: joined(&e.dns_names),
        store_svid: Some(e.store_svid),
        hint: Some(e.hint.clone()),
        ttl: None,
        audience: None,
    }
}

/// Per-item statuses of a batch response, with the created entry's ID
/// filled in; `None` when the response does not decode.
fn batch_statuses(full: &str, msg: &[u8]) -> Option<Vec<(CallStatus, Option<String>)>> {
    let results = match full {
        "/spire.api.server.entry.v1.Entry/BatchCreateEntry" => {
            srv::entry::v1::BatchCreateEntryResponse::decode(msg)
                .ok()?
                .results
                .into_iter()
                .map(|r| {
                    let id = r.entry.map(|e| e.id).filter(|id| !id.is_empty());
                    (CallStatus::from_types(r.status.as_ref()), id)
                })
                .collect()
        }
        "/spire.api.server.entry.v1.Entry/BatchUpdateEntry" => {
            srv::entry::v1::BatchUpdateEntryResponse::decode(msg)
                .ok()?
                .results
                .into_iter()
                .map(|r| (CallStatus::from_types(r.status.as_ref()), None))
                .collect()
        }
        "/spire.api.server.entry.v1.Entry/BatchDeleteEntry" => {
            srv::entry::v1::BatchDeleteEntryResponse::decode(msg)
                .ok()?
                .results
                .into_iter()
                .map(|r| (CallStatus::from_types(r.status.as_ref()), None))
                .collect()
        }
        _ => return None,
    };
    Some(results)
}

/// The first message of a gRPC body (5-byte prefix: compressed flag and
/// length). `None` when compressed or truncated.
fn grpc_message(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    rest.get(..len)
}

/// `grpc-message` is percent-encoded.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if raw[i] == b'%'
            && let (Some(h), Some(l)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The audit record still to write when the response ends.
#[derive(Debug)]
struct Pending {
    record: Record,
    items: Vec<Fields>,
    /// Response bytes kept to read per-item statuses (batch RPCs).
    collected: Option<Vec<u8>>,
}

impl Pending {
    /// Writes the record(s) for a call that ended with `status`.
    fn finish(mut self, status: CallStatus) -> CallStatus {
        let n = self.items.len();
        let mut statuses = vec![status.clone(); n];
        if status.code == Code::Ok
            && let Some(results) = self
                .collected
                .as_deref()
                .and_then(grpc_message)
                .and_then(|m| batch_statuses(&self.record.names.full, m))
            && results.len() == n
        {
            for (i, (s, id)) in results.into_iter().enumerate() {
                statuses[i] = s;
                if let Some(id) = id {
                    self.items[i].entry_id = Some(id);
                }
            }
        }
        self.record.emit(&self.items, &statuses)
    }
}

/// A response body that writes the audit record when the call's status
/// (the trailers) goes by, or when the response ends without one.
struct AuditBody<B> {
    inner: B,
    pending: Option<Pending>,
}

impl<B> Drop for AuditBody<B> {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            p.finish(CallStatus::error(
                Code::Cancelled,
                "the call ended before its status was sent".into(),
            ));
        }
    }
}

impl<B> Body for AuditBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(f) => f,
        };
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(p) = this.pending.as_mut()
                        && let Some(buf) = p.collected.as_mut()
                    {
                        if buf.len() + data.len() <= MAX_BUFFERED_RESPONSE {
                            buf.extend_from_slice(data);
                        } else {
                            p.collected = None;
                        }
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                let Ok(mut trailers) = frame.into_trailers() else {
                    return Poll::Ready(None);
                };
                if let Some(p) = this.pending.take() {
                    let status = CallStatus::from_headers(&trailers).unwrap_or(CallStatus::ok());
                    let written = p.finish(status);
                    if written.code != Code::Ok {
                        trailers.insert(
                            "grpc-status",
                            http::HeaderValue::from(Code::Internal as i32),
                        );
                        trailers.insert(
                            "grpc-message",
                            http::HeaderValue::from_static(AUDIT_WRITE_FAILED),
                        );
                    }
                }
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Some(Err(e)) => {
                let e: BoxError = e.into();
                if let Some(p) = this.pending.take() {
                    p.finish(CallStatus::error(Code::Internal, e.to_string()));
                }
                Poll::Ready(Some(Err(e)))
            }
            None => {
                if let Some(p) = this.pending.take() {
                    p.finish(CallStatus::error(
                        Code::Unknown,
                        "the response ended without a status".into(),
                    ));
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_spire_service_and_method_fields() {
        let n = Names::parse("/spire.api.server.entry.v1.Entry/BatchCreateEntry").unwrap();
        assert_eq!(n.service, "entry.v1.Entry");
        assert_eq!(n.method, "BatchCreateEntry");
        assert!(Names::parse("/grpc.health.v1.Health/Check").is_none());
    }

    #[test]
    fn grpc_message_is_percent_decoded() {
        assert_eq!(percent_decode(b"no%20such%20entry%"), "no such entry%");
    }

    #[test]
    fn batch_create_request_gives_one_field_set_per_entry() {
        let req = srv::entry::v1::BatchCreateEntryRequest {
            entries: vec![types::Entry {
                spiffe_id: Some(types::Spiffeid {
                    trust_domain: "example.org".into(),
                    path: "/w".into(),
                }),
                selectors: vec![types::Selector {
                    r#type: "unix".into(),
                    value: "uid:0".into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let fields = request_fields(
            "/spire.api.server.entry.v1.Entry/BatchCreateEntry",
            Some(&req.encode_to_vec()),
        );
        assert_eq!(fields.len(), 1);
        assert_eq!(
            fields[0].spiffe_id.as_deref(),
            Some("spiffe://example.org/w")
        );
        assert_eq!(fields[0].selectors.as_deref(), Some("unix:uid:0"));
    }
}
