//! Per-call metrics for every gRPC server, as SPIRE's metrics middleware:
//! each call counts in `rpc_<service>_<method>` and its duration goes to
//! `rpc_<service>_<method>_elapsed_time`, labelled with the call's gRPC
//! `status`. Names are SPIRE's: the service with its well-known prefix
//! shortened (`spire.api.server.` dropped, `SpiffeWorkloadAPI` →
//! `WorkloadAPI`, ...), split on dots, every part snake_cased
//! (`BatchNewX509SVID` → `batch_new_x509svid`).
//!
//! Beside SPIRE's per-method names, every call also counts in one
//! `rpc_calls{service, method, status}` counter (sigil's own): per-method
//! metric names cannot be summed by `rate()` in one PromQL expression, so
//! error-rate alerts and dashboards use this one.
//!
//! A unary call or a failed one is recorded when its status is known; a
//! stream when it ends (its trailers) or, when the client goes away first,
//! as `Canceled` when its response body is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

use crate::metrics::{CallCounter, code_name};

/// Service-name replacements SPIRE applies before building metric keys.
const SERVICE_REPLACEMENTS: &[(&str, &str)] = &[
    ("spire.api.server.", ""),
    ("SpiffeWorkloadAPI", "WorkloadAPI"),
    (
        "envoy.service.discovery.v2.SecretDiscoveryService",
        "SDS.v2",
    ),
    ("envoy.service.secret.v3.SecretDiscoveryService", "SDS.v3"),
    ("grpc.health.v1.Health", "Health"),
    (
        "spire.api.agent.delegatedidentity.v1.DelegatedIdentity",
        "DelegatedIdentity",
    ),
];

/// The metric name (without prefix) of the call at `path`
/// (`/spire.api.server.agent.v1.Agent/AttestAgent` →
/// `rpc_agent_v1_agent_attest_agent`); `None` for a path that is not a
/// gRPC method.
pub fn metric_name(path: &str) -> Option<String> {
    names(path).map(|n| n.metric)
}

/// A call's names: SPIRE's shortened service, the method, and the
/// per-method metric name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Names {
    service: String,
    method: String,
    metric: String,
}

fn names(path: &str) -> Option<Names> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if service.is_empty() || method.is_empty() {
        return None;
    }
    let mut service = service.to_owned();
    for (from, to) in SERVICE_REPLACEMENTS {
        service = service.replace(from, to);
    }
    let mut metric = String::from("rpc");
    for part in service.split('.').chain(std::iter::once(method)) {
        metric.push('_');
        metric.push_str(&metric_key(part));
    }
    Some(Names {
        service,
        method: method.to_owned(),
        metric,
    })
}

/// A call being measured.
#[derive(Debug)]
struct Call {
    counter: CallCounter,
    service: String,
    method: String,
}

impl Call {
    fn start(path: &str) -> Option<Call> {
        let n = names(path)?;
        Some(Call {
            counter: CallCounter::start(n.metric),
            service: n.service,
            method: n.method,
        })
    }

    fn finish(self, code: i32) {
        let status = code_name(code);
        metrics::counter!(
            "rpc_calls",
            "service" => self.service,
            "method" => self.method,
            "status" => status
        )
        .increment(1);
        self.counter.finish(status);
    }
}

/// SPIRE's conversion of a service or method name to a metric key:
/// lower case, an underscore before an upper-case letter that begins a
/// word (one next to a lower-case letter, not first or last), and any
/// character that is not a letter or digit replaced by an underscore.
pub fn metric_key(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            out.push('_');
            continue;
        }
        let starts_word = c.is_uppercase()
            && i > 0
            && i + 1 < chars.len()
            && (chars[i + 1].is_lowercase() || chars[i - 1].is_lowercase())
            && !out.ends_with('_');
        if starts_word {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// Wraps gRPC services so every call is counted and timed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

/// The service made by [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<RpcBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let counter = Call::start(req.uri().path());
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let resp = match inner.call(req).await {
                Ok(resp) => resp,
                Err(e) => {
                    if let Some(c) = counter {
                        c.finish(13);
                    }
                    return Err(e);
                }
            };
            // A trailers-only response: the status is in the headers.
            let pending = match (counter, grpc_status(resp.headers())) {
                (Some(c), Some(code)) => {
                    c.finish(code);
                    None
                }
                (c, _) => c,
            };
            Ok(resp.map(|inner| RpcBody { inner, pending }))
        })
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    let v = headers.get("grpc-status")?;
    Some(v.to_str().ok().and_then(|s| s.parse().ok()).unwrap_or(2))
}

/// A response body that records its call when the status trailer passes
/// (or when it is dropped before that: the client cancelled).
#[derive(Debug)]
pub struct RpcBody<B> {
    inner: B,
    pending: Option<Call>,
}

impl<B> Drop for RpcBody<B> {
    fn drop(&mut self) {
        if let Some(c) = self.pending.take() {
            c.finish(1);
        }
    }
}

impl<B: Body + Unpin> Body for RpcBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status)
                    && let Some(c) = this.pending.take()
                {
                    c.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(c) = this.pending.take() {
                    c.finish(13);
                }
            }
            Poll::Ready(None) => {
                if let Some(c) = this.pending.take() {
                    c.finish(2);
                }
            }
            Poll::Pending => {}
        }
        polled
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
    fn metric_names_are_spires() {
        for (path, want) in [
            (
                "/spire.api.server.agent.v1.Agent/AttestAgent",
                "rpc_agent_v1_agent_attest_agent",
            ),
            (
                "/spire.api.server.svid.v1.SVID/BatchNewX509SVID",
                "rpc_svid_v1_svid_batch_new_x509svid",
            ),
            (
                "/spire.api.server.entry.v1.Entry/BatchCreateEntry",
                "rpc_entry_v1_entry_batch_create_entry",
            ),
            (
                "/SpiffeWorkloadAPI/FetchX509SVID",
                "rpc_workload_api_fetch_x509svid",
            ),
            (
                "/SpiffeWorkloadAPI/FetchJWTSVID",
                "rpc_workload_api_fetch_jwtsvid",
            ),
            (
                "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
                "rpc_sds_v3_stream_secrets",
            ),
            ("/grpc.health.v1.Health/Check", "rpc_health_check"),
        ] {
            assert_eq!(metric_name(path).as_deref(), Some(want), "{path}");
        }
        assert_eq!(metric_name("/"), None);
        assert_eq!(metric_name("/metrics"), None);
    }

    #[test]
    fn metric_keys_follow_spires_word_rules() {
        assert_eq!(metric_key("WorkloadAPI"), "workload_api");
        assert_eq!(metric_key("GetAgent"), "get_agent");
        assert_eq!(metric_key("X509SVID"), "x509svid");
        assert_eq!(metric_key("v1"), "v1");
        assert_eq!(metric_key("a-b"), "a_b");
    }

    #[derive(Clone)]
    struct Fixed(http::HeaderMap);

    impl Service<http::Request<()>> for Fixed {
        type Response = http::Response<http_body_util::Full<bytes_alias::Bytes>>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let mut resp =
                http::Response::new(http_body_util::Full::new(bytes_alias::Bytes::new()));
            *resp.headers_mut() = self.0.clone();
            std::future::ready(Ok(resp))
        }
    }

    mod bytes_alias {
        pub use axum::body::Bytes;
    }

    #[test]
    fn a_trailers_only_failure_is_recorded_with_its_status() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("7"));
        let mut svc = RpcMetricsLayer.layer(Fixed(headers));
        let req = http::Request::builder()
            .uri("/spire.api.server.agent.v1.Agent/AttestAgent")
            .body(())
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            let resp = futures::executor::block_on(svc.call(req)).unwrap();
            drop(resp);
        });
        let snap = snapshotter.snapshot().into_vec();
        let counted: Vec<_> = snap
            .iter()
            .filter(|(k, ..)| k.key().name() == "rpc_agent_v1_agent_attest_agent")
            .map(|(k, ..)| {
                k.key()
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(counted, vec![vec!["status=PermissionDenied".to_owned()]]);
        let all: Vec<_> = snap
            .iter()
            .filter(|(k, ..)| k.key().name() == "rpc_calls")
            .map(|(k, ..)| {
                k.key()
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            all,
            vec![vec![
                "service=agent.v1.Agent".to_owned(),
                "method=AttestAgent".to_owned(),
                "status=PermissionDenied".to_owned()
            ]]
        );
    }
}
