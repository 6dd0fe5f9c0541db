//! The two public endpoints: `/.well-known/openid-configuration` and
//! `/keys`, with SPIRE's document shape, Host check and error statuses,
//! plus revalidation headers (ETag, Last-Modified, `Cache-Control:
//! no-cache`) and 304 answers.
//!
//! Handlers read the shared [`KeyStore`]; they never build the JWKS (that
//! happens once per key-set change) and never talk to the key source.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE, ETAG, HOST, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED,
};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::HttpUrl;
use crate::domain::DomainPolicy;
use crate::keys::KeyStore;

/// Path of the discovery document.
pub const WELL_KNOWN_PATH: &str = "/.well-known/openid-configuration";
/// Path of the JWKS.
pub const KEYS_PATH: &str = "/keys";

/// How the request reached us; set per connection by the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The connection is TLS.
    pub tls: bool,
}

/// What the handlers need.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The published keys.
    pub keys: KeyStore,
    /// `domains`.
    pub domains: DomainPolicy,
    /// `allow_insecure_scheme`.
    pub allow_insecure_scheme: bool,
    /// `jwt_issuer`.
    pub jwt_issuer: Option<HttpUrl>,
    /// `jwks_uri`.
    pub jwks_uri: Option<String>,
}

/// The router for the public endpoints.
pub fn router(d: Discovery) -> Router {
    Router::new()
        .route(
            WELL_KNOWN_PATH,
            get(well_known).fallback(method_not_allowed),
        )
        .route(KEYS_PATH, get(keys).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(Arc::new(d))
}

/// The discovery document's fields, in SPIRE's order.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct Document<'a> {
    issuer: String,
    jwks_uri: String,
    authorization_endpoint: &'a str,
    response_types_supported: [&'a str; 1],
    subject_types_supported: [&'a str; 1],
    id_token_signing_alg_values_supported: [&'a str; 3],
}

/// A plain-text error, as Go's `http.Error` writes it.
fn error(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("{msg}\n")));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn method_not_allowed() -> Response<Body> {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

async fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "404 page not found")
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A `key=value` parameter of the first element of a `Forwarded` header.
fn forwarded(h: &HeaderMap, key: &str) -> Option<String> {
    let v = header(h, "forwarded")?;
    let first = v.split(',').next()?;
    first.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// The Host the client asked for: `X-Forwarded-Host`, then `Forwarded:
/// host=`, then the request's own Host (as SPIRE's proxy-header handling).
fn request_host<B>(req: &Request<B>) -> String {
    let h = req.headers();
    if let Some(v) = header(h, "x-forwarded-host") {
        return v.to_owned();
    }
    if let Some(v) = forwarded(h, "host") {
        return v;
    }
    header(h, HOST.as_str())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// The scheme a proxy says the client used, if it says.
fn forwarded_scheme(h: &HeaderMap) -> Option<String> {
    header(h, "x-forwarded-proto")
        .or_else(|| header(h, "x-forwarded-scheme"))
        .map(str::to_owned)
        .or_else(|| forwarded(h, "proto"))
        .map(|s| s.to_ascii_lowercase())
}

/// The issuer and JWKS URI for this request, as SPIRE computes them.
fn urls(d: &Discovery, scheme: &str, host: &str) -> (String, String) {
    let issuer = match &d.jwt_issuer {
        Some(u) => u.raw.clone(),
        None => format!("{scheme}://{host}"),
    };
    let jwks_uri = match (&d.jwks_uri, &d.jwt_issuer) {
        (Some(u), _) => u.clone(),
        // SPIRE derives it from jwt_issuer when jwks_uri is not set.
        (None, Some(iss)) => format!(
            "{}://{}{}/keys",
            iss.scheme,
            iss.host,
            iss.path.trim_end_matches('/')
        ),
        (None, None) => format!("{scheme}://{host}{KEYS_PATH}"),
    };
    (issuer, jwks_uri)
}

async fn well_known(State(d): State<Arc<Discovery>>, req: Request<Body>) -> Response<Body> {
    let tls = req.extensions().get::<ConnInfo>().is_some_and(|c| c.tls);
    let host = request_host(&req);
    let scheme = if d.allow_insecure_scheme
        && !tls
        && forwarded_scheme(req.headers()).as_deref() != Some("https")
    {
        "http"
    } else {
        "https"
    };
    if let Err(e) = d.domains.check_host(&host) {
        return error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    let (issuer, jwks_uri) = urls(&d, scheme, &host);
    let doc = Document {
        issuer,
        jwks_uri,
        authorization_endpoint: "",
        response_types_supported: ["id_token"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: ["RS256", "ES256", "ES384"],
    };
    // A struct of strings always serialises.
    let body = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    let digest = Sha256::digest(&body);
    let etag = format!("\"{}\"", hex::encode(&digest[..16]));
    respond(req.headers(), body.into(), &etag, None)
}

async fn keys(State(d): State<Arc<Discovery>>, req: Request<Body>) -> Response<Body> {
    let Some(jwks) = d.keys.current() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "document not available");
    };
    if jwks.key_count == 0 {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "jwt not supported/enabled in this service",
        );
    }
    respond(
        req.headers(),
        jwks.body.clone(),
        &jwks.etag,
        Some(jwks.modified),
    )
}

/// True when the client's cached copy (`If-None-Match`, else
/// `If-Modified-Since`) is still current (RFC 9110 section 13.2.2).
fn not_modified(h: &HeaderMap, etag: &str, modified: Option<SystemTime>) -> bool {
    if let Some(inm) = header(h, IF_NONE_MATCH.as_str()) {
        return inm
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag);
    }
    match (modified, header(h, IF_MODIFIED_SINCE.as_str())) {
        (Some(m), Some(ims)) => httpdate::parse_http_date(ims).is_ok_and(|since| {
            // HTTP dates have whole seconds.
            let m = httpdate::parse_http_date(&httpdate::fmt_http_date(m)).unwrap_or(m);
            m <= since
        }),
        _ => false,
    }
}

fn respond(
    req: &HeaderMap,
    body: bytes::Bytes,
    etag: &str,
    modified: Option<SystemTime>,
) -> Response<Body> {
    let fresh = not_modified(req, etag, modified);
    let mut r = if fresh {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(body));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    };
    let h = r.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    // Stored copies must be revalidated: a new key may appear at any poll.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(ETAG, v);
    }
    if let Some(m) = modified
        && let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(m))
    {
        h.insert(LAST_MODIFIED, v);
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::keys::tests::{authority, p256_spki};
    use serde_json::Value;
    use tower::ServiceExt as _;

    fn discovery(domains: &[&str]) -> Discovery {
        Discovery {
            keys: KeyStore::new(false),
            domains: DomainPolicy::allow(
                &domains.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap(),
            allow_insecure_scheme: false,
            jwt_issuer: None,
            jwks_uri: None,
        }
    }

    async fn get(d: Discovery, path: &str, headers: &[(&str, &str)]) -> Response<Body> {
        let mut b = Request::builder().uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        router(d)
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn body(r: Response<Body>) -> Vec<u8> {
        axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn discovery_document_has_spires_fields_and_https_urls() {
        let r = get(
            discovery(&["oidc.test"]),
            WELL_KNOWN_PATH,
            &[("host", "oidc.test:8443")],
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let doc: Value = serde_json::from_slice(&body(r).await).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "issuer": "https://oidc.test:8443",
                "jwks_uri": "https://oidc.test:8443/keys",
                "authorization_endpoint": "",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256", "ES384"],
            })
        );
    }

    #[tokio::test]
    async fn insecure_scheme_is_used_only_when_allowed_and_not_forwarded_as_https() {
        let mut d = discovery(&["oidc.test"]);
        d.allow_insecure_scheme = true;
        let r = get(d.clone(), WELL_KNOWN_PATH, &[("host", "oidc.test")]).await;
        let doc: Value = serde_json::from_slice(&body(r).await).unwrap();
        assert_eq!(doc["issuer"], "http://oidc.test");
        assert_eq!(doc["jwks_uri"], "http://oidc.test/keys");
        let r = get(
            d,
            WELL_KNOWN_PATH,
            &[("host", "oidc.test"), ("x-forwarded-proto", "https")],
        )
        .await;
        let doc: Value = serde_json::from_slice(&body(r).await).unwrap();
        assert_eq!(doc["issuer"], "https://oidc.test");
    }

    #[tokio::test]
    async fn jwt_issuer_and_jwks_uri_override_the_request_host() {
        let mut d = discovery(&["oidc.test"]);
        d.jwt_issuer = Some(HttpUrl::parse("https://issuer.test/path/one/").unwrap());
        let r = get(d.clone(), WELL_KNOWN_PATH, &[("host", "oidc.test")]).await;
        let doc: Value = serde_json::from_slice(&body(r).await).unwrap();
        assert_eq!(doc["issuer"], "https://issuer.test/path/one/");
        assert_eq!(doc["jwks_uri"], "https://issuer.test/path/one/keys");
        d.jwks_uri = Some("https://lb.test/k".into());
        let r = get(d, WELL_KNOWN_PATH, &[("host", "oidc.test")]).await;
        let doc: Value = serde_json::from_slice(&body(r).await).unwrap();
        assert_eq!(doc["jwks_uri"], "https://lb.test/k");
    }

    #[tokio::test]
    async fn host_not_in_domains_is_refused_with_400() {
        let r = get(
            discovery(&["oidc.test"]),
            WELL_KNOWN_PATH,
            &[("host", "other.test")],
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(r).await, b"domain \"other.test\" is not allowed\n");
    }

    #[tokio::test]
    async fn forwarded_host_is_the_one_checked() {
        let d = discovery(&["public.test"]);
        let r = get(
            d.clone(),
            WELL_KNOWN_PATH,
            &[
                ("host", "internal:8080"),
                ("x-forwarded-host", "public.test"),
            ],
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        let doc: Value = serde_json::from_slice(&body(r).await).unwrap();
        assert_eq!(doc["issuer"], "https://public.test");
        let r = get(
            d,
            WELL_KNOWN_PATH,
            &[
                ("host", "public.test"),
                ("forwarded", "for=1.2.3.4;host=evil.test"),
            ],
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn keys_before_the_first_poll_is_500_and_empty_set_is_501() {
        let d = discovery(&["oidc.test"]);
        let r = get(d.clone(), KEYS_PATH, &[]).await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        d.keys.publish(&[]);
        let r = get(d, KEYS_PATH, &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED);
    }

    #[tokio::test]
    async fn keys_carry_validators_and_answer_304_when_unchanged() {
        let d = discovery(&["oidc.test"]);
        d.keys.publish(&[authority("k1", p256_spki())]);
        let r = get(d.clone(), KEYS_PATH, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CACHE_CONTROL], "no-cache");
        let etag = r.headers()[ETAG].to_str().unwrap().to_owned();
        let lm = r.headers()[LAST_MODIFIED].to_str().unwrap().to_owned();
        let doc: Value = serde_json::from_slice(&body(r).await).unwrap();
        assert_eq!(doc["keys"][0]["kid"], "k1");

        let r = get(d.clone(), KEYS_PATH, &[("if-none-match", &etag)]).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[ETAG], etag.as_str());
        assert!(body(r).await.is_empty());
        let r = get(d.clone(), KEYS_PATH, &[("if-modified-since", &lm)]).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

        // A new key: the old validators no longer match.
        d.keys
            .publish(&[authority("k1", p256_spki()), authority("k2", p256_spki())]);
        let r = get(d.clone(), KEYS_PATH, &[("if-none-match", &etag)]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_ne!(r.headers()[ETAG], etag.as_str());
    }

    #[tokio::test]
    async fn discovery_document_answers_304_for_its_etag() {
        let d = discovery(&["oidc.test"]);
        let r = get(d.clone(), WELL_KNOWN_PATH, &[("host", "oidc.test")]).await;
        let etag = r.headers()[ETAG].to_str().unwrap().to_owned();
        let r = get(
            d,
            WELL_KNOWN_PATH,
            &[("host", "oidc.test"), ("if-none-match", &etag)],
        )
        .await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    }

    #[tokio::test]
    async fn other_methods_and_paths_are_refused() {
        let d = discovery(&["oidc.test"]);
        let r = router(d.clone())
            .oneshot(Request::post(KEYS_PATH).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let r = get(d, "/nope", &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}
