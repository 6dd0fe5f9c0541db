//! Workload API behaviour as a client sees it: a real tonic server on a temp
//! Unix socket (through `UdsIncoming`, so `PeerInfo` is real) and a real
//! tonic client. The agent's moving parts are fakes (see
//! [`super::testutil`]): the snapshot is published by the test, the
//! attestor reports the selectors the test chose, and the JWT minter signs
//! real tokens with a test key that is in the bundle.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sigil_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, WitBundlesRequest, WitsvidRequest,
    X509BundlesRequest, X509svidRequest, X509svidResponse,
};
use sigil_spiffe::Bundle;
use tonic::transport::Channel;
use tonic::{Code, Request, Streaming};

use super::compose;
use super::testutil::{TestAgent, TestCa, federating, selector};
use crate::cache::Snapshot;

const TIMEOUT: Duration = Duration::from_secs(10);

async fn client(agent: &TestAgent) -> SpiffeWorkloadApiClient<Channel> {
    let channel = crate::cli::workload_channel(agent.path())
        .await
        .expect("connect");
    SpiffeWorkloadApiClient::new(channel)
}

fn req<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().expect("ascii"));
    request
}

async fn next<T>(stream: &mut Streaming<T>) -> Result<Option<T>, tonic::Status> {
    tokio::time::timeout(TIMEOUT, stream.message())
        .await
        .expect("a message in time")
}

async fn x509_stream(agent: &TestAgent) -> Streaming<X509svidResponse> {
    client(agent)
        .await
        .fetch_x509svid(req(X509svidRequest {}))
        .await
        .expect("stream opens")
        .into_inner()
}

fn other_td(name: &str) -> Bundle {
    TestCa::new(name).bundle()
}

#[tokio::test]
async fn every_rpc_without_the_security_header_is_invalid_argument() {
    let agent = TestAgent::start().await;
    agent.publish(
        vec![agent.ca.svid("e1", "/web", &["unix:uid:1000"])],
        vec![],
    );
    let mut c = client(&agent).await;

    let mut wrong_value = Request::new(X509svidRequest {});
    wrong_value
        .metadata_mut()
        .insert("workload.spiffe.io", "false".parse().expect("ascii"));
    let statuses = [
        c.fetch_x509svid(Request::new(X509svidRequest {}))
            .await
            .err(),
        c.fetch_x509svid(wrong_value).await.err(),
        c.fetch_x509_bundles(Request::new(X509BundlesRequest {}))
            .await
            .err(),
        c.fetch_jwt_bundles(Request::new(JwtBundlesRequest {}))
            .await
            .err(),
        c.fetch_jwtsvid(Request::new(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .err(),
        c.validate_jwtsvid(Request::new(ValidateJwtsvidRequest {
            audience: "a".into(),
            svid: "x.y.z".into(),
        }))
        .await
        .err(),
        c.fetch_witsvid(Request::new(WitsvidRequest::default()))
            .await
            .err(),
    ];
    for status in statuses {
        let status = status.expect("rejected");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "security header missing from request");
    }
}

#[tokio::test]
async fn caller_without_matching_entry_gets_permission_denied() {
    let agent = TestAgent::start().await;
    agent.publish(vec![agent.ca.svid("e1", "/web", &["unix:uid:0"])], vec![]);
    let mut c = client(&agent).await;

    let statuses = [
        c.fetch_x509svid(req(X509svidRequest {})).await.err(),
        c.fetch_x509_bundles(req(X509BundlesRequest {})).await.err(),
        c.fetch_jwt_bundles(req(JwtBundlesRequest {})).await.err(),
        c.fetch_jwtsvid(req(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .err(),
    ];
    for status in statuses {
        let status = status.expect("denied");
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), "no identity issued");
    }
}

#[tokio::test]
async fn calls_before_the_first_snapshot_are_unavailable() {
    let agent = TestAgent::start().await;
    let mut c = client(&agent).await;
    let status = c
        .fetch_x509svid(req(X509svidRequest {}))
        .await
        .expect_err("nothing to serve");
    assert_eq!(status.code(), Code::Unavailable);
    let status = c
        .fetch_jwtsvid(req(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .expect_err("nothing to serve");
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn failed_attestation_is_unavailable_without_details() {
    let agent = TestAgent::start().await;
    agent.publish(
        vec![agent.ca.svid("e1", "/web", &["unix:uid:1000"])],
        vec![],
    );
    *agent.attestor.fail.lock().expect("lock") = true;
    let status = client(&agent)
        .await
        .fetch_x509svid(req(X509svidRequest {}))
        .await
        .expect_err("attestation fails");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "workload attestation failed");
}

#[tokio::test]
async fn x509_stream_first_message_is_complete() {
    let agent = TestAgent::start().await;
    let mut web = federating(
        agent.ca.svid("e1", "/web", &["unix:uid:1000"]),
        &["partner.org"],
    );
    web.hint = "internal".into();
    let federated = other_td("partner.org");
    agent.publish(vec![web.clone()], vec![federated.clone()]);

    let mut stream = x509_stream(&agent).await;
    let first = next(&mut stream).await.expect("ok").expect("message");
    assert_eq!(first.svids.len(), 1);
    let svid = &first.svids[0];
    assert_eq!(svid.spiffe_id, "spiffe://example.org/web");
    assert_eq!(svid.x509_svid, web.chain.concat());
    assert_eq!(svid.x509_svid_key, web.key_pkcs8);
    assert_eq!(svid.bundle, agent.ca.cert);
    assert_eq!(svid.hint, "internal");
    assert!(first.crl.is_empty());
    assert_eq!(first.federated_bundles.len(), 1);
    assert_eq!(
        first.federated_bundles["spiffe://partner.org"],
        federated.x509_authorities.concat()
    );
    // The leaf verifies against the bundle it came with.
    let id = sigil_crypto::verify_chain(
        &web.chain,
        std::slice::from_ref(&svid.bundle),
        std::time::SystemTime::now(),
    )
    .expect("verifies");
    assert_eq!(id.as_str(), svid.spiffe_id);
}

#[tokio::test]
async fn x509_stream_pushes_the_full_state_on_rotation_and_only_on_relevant_changes() {
    let agent = TestAgent::start().await;
    let web = federating(
        agent.ca.svid("e1", "/web", &["unix:uid:1000"]),
        &["partner.org"],
    );
    let db = agent.ca.svid("e2", "/db", &["unix:uid:0"]);
    agent.publish(vec![web.clone(), db.clone()], vec![]);

    let mut stream = x509_stream(&agent).await;
    let first = next(&mut stream).await.expect("ok").expect("message");
    assert_eq!(first.svids.len(), 1);

    // Another workload's rotation changes nothing for this caller: no message.
    let db2 = agent.ca.svid("e2", "/db", &["unix:uid:0"]);
    agent.publish(vec![web.clone(), db2.clone()], vec![]);
    let quiet = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(
        quiet.is_err(),
        "no message for an irrelevant change: {quiet:?}"
    );

    // Rotation of the caller's SVID: a complete new message.
    let web2 = federating(
        agent.ca.svid("e1", "/web", &["unix:uid:1000"]),
        &["partner.org"],
    );
    agent.publish(vec![web2.clone(), db2.clone()], vec![]);
    let rotated = next(&mut stream).await.expect("ok").expect("message");
    assert_eq!(rotated.svids.len(), 1);
    assert_eq!(rotated.svids[0].x509_svid, web2.chain.concat());
    assert_eq!(rotated.svids[0].x509_svid_key, web2.key_pkcs8);
    assert_eq!(rotated.svids[0].bundle, agent.ca.cert);
    assert_ne!(rotated.svids[0].x509_svid, first.svids[0].x509_svid);

    // A second identity for the caller: both are in the next message.
    let admin = agent.ca.svid("e3", "/admin", &["unix:uid:1000"]);
    agent.publish(vec![web2.clone(), db2.clone(), admin.clone()], vec![]);
    let both = next(&mut stream).await.expect("ok").expect("message");
    let ids: Vec<&str> = both.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(
        ids,
        ["spiffe://example.org/web", "spiffe://example.org/admin"]
    );

    // A federated bundle appearing is pushed too.
    agent.publish(
        vec![web2.clone(), db2.clone(), admin],
        vec![other_td("partner.org")],
    );
    let federated = next(&mut stream).await.expect("ok").expect("message");
    assert_eq!(federated.svids.len(), 2);
    assert!(
        federated
            .federated_bundles
            .contains_key("spiffe://partner.org")
    );

    // Identities gone: PermissionDenied, then the stream ends.
    agent.publish(vec![db2], vec![]);
    let status = next(&mut stream).await.expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "no identity issued");
}

#[tokio::test]
async fn x509_stream_ends_unavailable_when_the_manager_stops() {
    let mut agent = TestAgent::start().await;
    agent.publish(
        vec![agent.ca.svid("e1", "/web", &["unix:uid:1000"])],
        vec![],
    );
    let mut stream = x509_stream(&agent).await;
    next(&mut stream).await.expect("ok").expect("message");
    let (replacement, _rx) = tokio::sync::watch::channel(None);
    drop(std::mem::replace(&mut agent.snapshots, replacement));
    let status = next(&mut stream).await.expect_err("ended");
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn x509_bundles_are_keyed_by_trust_domain_id_and_pushed_on_change() {
    let agent = TestAgent::start().await;
    let web = federating(
        agent.ca.svid("e1", "/web", &["unix:uid:1000"]),
        &["partner.org"],
    );
    agent.publish(vec![web.clone()], vec![]);
    let mut stream = client(&agent)
        .await
        .fetch_x509_bundles(req(X509BundlesRequest {}))
        .await
        .expect("opens")
        .into_inner();
    let first = next(&mut stream).await.expect("ok").expect("message");
    assert_eq!(first.bundles.len(), 1);
    assert_eq!(first.bundles["spiffe://example.org"], agent.ca.cert);
    assert!(first.crl.is_empty());

    // An SVID rotation leaves the bundles alone: no message.
    agent.publish(
        vec![agent.ca.svid("e1", "/web", &["unix:uid:1000"])],
        vec![],
    );
    let quiet = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(quiet.is_err(), "bundles unchanged: {quiet:?}");

    let partner = other_td("partner.org");
    agent.publish(vec![web], vec![partner.clone()]);
    let second = next(&mut stream).await.expect("ok").expect("message");
    assert_eq!(second.bundles.len(), 2);
    assert_eq!(
        second.bundles["spiffe://partner.org"],
        partner.x509_authorities.concat()
    );
}

#[tokio::test]
async fn jwt_bundles_are_standard_jwks_of_jwt_authorities_only() {
    let agent = TestAgent::start().await;
    let partner = other_td("partner.org");
    agent.publish(
        vec![federating(
            agent.ca.svid("e1", "/web", &["unix:uid:1000"]),
            &["partner.org"],
        )],
        vec![partner.clone()],
    );
    let mut stream = client(&agent)
        .await
        .fetch_jwt_bundles(req(JwtBundlesRequest {}))
        .await
        .expect("opens")
        .into_inner();
    let message = next(&mut stream).await.expect("ok").expect("message");
    assert_eq!(message.bundles.len(), 2);
    let ours = &message.bundles["spiffe://example.org"];
    let doc: Value = serde_json::from_slice(ours).expect("json");
    let keys = doc["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "only the JWT authority: {doc}");
    assert_eq!(keys[0]["kid"], "test-kid");
    assert_eq!(keys[0]["kty"], "EC");
    assert!(keys[0].get("x5c").is_none() && keys[0].get("use").is_none());
    assert!(doc.get("spiffe_sequence").is_none());
    // The document carries the very key the bundle holds.
    let td = agent.ca.td.clone();
    let parsed: serde_json::Map<String, Value> = doc.as_object().expect("object").clone();
    let mut as_spiffe = parsed;
    as_spiffe["keys"][0]
        .as_object_mut()
        .expect("jwk")
        .insert("use".into(), json!("jwt-svid"));
    let reparsed =
        Bundle::parse_jwks(&td, &serde_json::to_vec(&as_spiffe).expect("json")).expect("parses");
    assert_eq!(reparsed.jwt_authorities, agent.ca.bundle().jwt_authorities);
    assert!(message.bundles.contains_key("spiffe://partner.org"));
}

#[tokio::test]
async fn fetched_jwt_svid_validates_through_the_api() {
    let agent = TestAgent::start().await;
    let mut web = agent.ca.svid("e1", "/web", &["unix:uid:1000"]);
    web.hint = "primary".into();
    agent.publish(vec![web], vec![]);
    let mut c = client(&agent).await;

    let svids = c
        .fetch_jwtsvid(req(JwtsvidRequest {
            audience: vec!["db".into()],
            spiffe_id: String::new(),
        }))
        .await
        .expect("fetch")
        .into_inner()
        .svids;
    assert_eq!(svids.len(), 1);
    assert_eq!(svids[0].spiffe_id, "spiffe://example.org/web");
    assert_eq!(svids[0].hint, "primary");

    // A verifier with no identity of its own may validate.
    *agent.attestor.selectors.lock().expect("lock") = vec![selector("unix:uid:4242")];
    let validated = c
        .validate_jwtsvid(req(ValidateJwtsvidRequest {
            audience: "db".into(),
            svid: svids[0].svid.clone(),
        }))
        .await
        .expect("valid")
        .into_inner();
    assert_eq!(validated.spiffe_id, "spiffe://example.org/web");
    let claims = validated.claims.expect("claims");
    let aud = &claims.fields["aud"];
    let Some(prost_types::value::Kind::ListValue(list)) = &aud.kind else {
        panic!("aud must be a list, got {aud:?}");
    };
    assert_eq!(list.values.len(), 1);
    assert!(claims.fields.contains_key("exp"));
    assert!(claims.fields.contains_key("iat"));
    let Some(prost_types::value::Kind::StringValue(sub)) = &claims.fields["sub"].kind else {
        panic!("sub must be a string");
    };
    assert_eq!(sub, "spiffe://example.org/web");

    let status = c
        .validate_jwtsvid(req(ValidateJwtsvidRequest {
            audience: "other".into(),
            svid: svids[0].svid.clone(),
        }))
        .await
        .expect_err("wrong audience");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("audience"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn jwt_svid_for_a_chosen_identity_only() {
    let agent = TestAgent::start().await;
    agent.publish(
        vec![
            agent.ca.svid("e1", "/web", &["unix:uid:1000"]),
            agent.ca.svid("e2", "/admin", &["unix:uid:1000"]),
            agent.ca.svid("e3", "/db", &["unix:uid:0"]),
        ],
        vec![],
    );
    let mut c = client(&agent).await;
    let fetch = |spiffe_id: &str| JwtsvidRequest {
        audience: vec!["a".into(), "b".into()],
        spiffe_id: spiffe_id.into(),
    };

    let all = c
        .fetch_jwtsvid(req(fetch("")))
        .await
        .expect("all")
        .into_inner();
    assert_eq!(all.svids.len(), 2);
    let one = c
        .fetch_jwtsvid(req(fetch("spiffe://example.org/admin")))
        .await
        .expect("one")
        .into_inner();
    assert_eq!(one.svids.len(), 1);
    assert_eq!(one.svids[0].spiffe_id, "spiffe://example.org/admin");

    let status = c
        .fetch_jwtsvid(req(fetch("spiffe://example.org/db")))
        .await
        .expect_err("not the caller's");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = c
        .fetch_jwtsvid(req(fetch("not-an-id")))
        .await
        .expect_err("malformed");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("invalid requested SPIFFE ID"));
    let status = c
        .fetch_jwtsvid(req(JwtsvidRequest::default()))
        .await
        .expect_err("no audience");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "audience must be specified");
}

#[tokio::test]
async fn validate_rejects_missing_fields_garbage_and_unknown_trust_domains() {
    let agent = TestAgent::start().await;
    agent.publish(
        vec![agent.ca.svid("e1", "/web", &["unix:uid:1000"])],
        vec![],
    );
    let mut c = client(&agent).await;
    let validate = |audience: &str, svid: &str| {
        req(ValidateJwtsvidRequest {
            audience: audience.into(),
            svid: svid.into(),
        })
    };

    let status = c
        .validate_jwtsvid(validate("", "x"))
        .await
        .expect_err("no aud");
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "audience must be specified")
    );
    let status = c
        .validate_jwtsvid(validate("a", ""))
        .await
        .expect_err("no svid");
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "svid must be specified")
    );
    let status = c
        .validate_jwtsvid(validate("a", "garbage"))
        .await
        .expect_err("garbage");
    assert_eq!(status.code(), Code::InvalidArgument);

    // A token signed by a trust domain we hold no bundle for.
    let stranger = TestCa::new("stranger.org");
    let token = sigil_crypto::sign_jwt_svid(
        stranger.jwt_key.as_ref(),
        "test-kid",
        &stranger.td.id_with_path("/x").expect("id"),
        &["a".to_owned()],
        std::time::SystemTime::now(),
        std::time::SystemTime::now() + Duration::from_secs(60),
        None,
    )
    .expect("sign");
    let status = c
        .validate_jwtsvid(validate("a", &token))
        .await
        .expect_err("unknown td");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "no keys found for trust domain \"stranger.org\""
    );

    // Same trust domain name, different key: the signature check fails.
    let impostor = TestCa::new("example.org");
    let forged = sigil_crypto::sign_jwt_svid(
        impostor.jwt_key.as_ref(),
        "test-kid",
        &impostor.td.id_with_path("/web").expect("id"),
        &["a".to_owned()],
        std::time::SystemTime::now(),
        std::time::SystemTime::now() + Duration::from_secs(60),
        None,
    )
    .expect("sign");
    let status = c
        .validate_jwtsvid(validate("a", &forged))
        .await
        .expect_err("forged");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("signature"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn federated_bundles_go_only_to_callers_whose_entries_federate_with_them() {
    let agent = TestAgent::start().await;
    let partner = other_td("partner.org");
    let third = other_td("third.org");
    let web = federating(
        agent.ca.svid("e1", "/web", &["unix:uid:1000"]),
        &["partner.org"],
    );
    let db = agent.ca.svid("e2", "/db", &["unix:uid:0"]);
    agent.publish(vec![web, db], vec![partner.clone(), third]);
    let mut c = client(&agent).await;

    // The caller federating with partner.org gets that bundle, not third.org's.
    let x509 = next(&mut x509_stream(&agent).await)
        .await
        .expect("ok")
        .expect("message");
    let keys: BTreeSet<&str> = x509.federated_bundles.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["spiffe://partner.org"]));
    assert_eq!(
        x509.federated_bundles["spiffe://partner.org"],
        partner.x509_authorities.concat()
    );
    let mut bundles = c
        .fetch_x509_bundles(req(X509BundlesRequest {}))
        .await
        .expect("opens")
        .into_inner();
    let bundles = next(&mut bundles).await.expect("ok").expect("message");
    let keys: BTreeSet<&str> = bundles.bundles.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["spiffe://example.org", "spiffe://partner.org"])
    );
    let mut jwt = c
        .fetch_jwt_bundles(req(JwtBundlesRequest {}))
        .await
        .expect("opens")
        .into_inner();
    let jwt = next(&mut jwt).await.expect("ok").expect("message");
    let keys: BTreeSet<&str> = jwt.bundles.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["spiffe://example.org", "spiffe://partner.org"])
    );
    assert_eq!(
        jwt.bundles["spiffe://partner.org"],
        compose::standard_jwks(&partner)
    );

    // A caller whose entry federates with nothing gets our bundle only.
    *agent.attestor.selectors.lock().expect("lock") = vec![selector("unix:uid:0")];
    let x509 = next(&mut x509_stream(&agent).await)
        .await
        .expect("ok")
        .expect("message");
    assert_eq!(x509.svids[0].spiffe_id, "spiffe://example.org/db");
    assert!(x509.federated_bundles.is_empty());
    let mut bundles = c
        .fetch_x509_bundles(req(X509BundlesRequest {}))
        .await
        .expect("opens")
        .into_inner();
    let bundles = next(&mut bundles).await.expect("ok").expect("message");
    assert_eq!(
        bundles.bundles.keys().collect::<Vec<_>>(),
        ["spiffe://example.org"]
    );
    let mut jwt = c
        .fetch_jwt_bundles(req(JwtBundlesRequest {}))
        .await
        .expect("opens")
        .into_inner();
    let jwt = next(&mut jwt).await.expect("ok").expect("message");
    assert_eq!(
        jwt.bundles.keys().collect::<Vec<_>>(),
        ["spiffe://example.org"]
    );
}

#[tokio::test]
async fn federation_added_to_an_entry_pushes_the_bundle_to_its_streams() {
    let agent = TestAgent::start().await;
    let web = agent.ca.svid("e1", "/web", &["unix:uid:1000"]);
    agent.publish(vec![web.clone()], vec![other_td("partner.org")]);
    let mut stream = x509_stream(&agent).await;
    let first = next(&mut stream).await.expect("ok").expect("message");
    assert!(first.federated_bundles.is_empty());

    agent.publish(
        vec![federating(web, &["partner.org"])],
        vec![other_td("partner.org")],
    );
    let second = next(&mut stream).await.expect("ok").expect("message");
    assert!(
        second
            .federated_bundles
            .contains_key("spiffe://partner.org")
    );
}

#[tokio::test]
async fn jwt_svid_of_a_federated_trust_domain_validates_for_callers_federating_with_it() {
    let agent = TestAgent::start().await;
    let partner = TestCa::new("partner.org");
    agent.publish(
        vec![
            federating(
                agent.ca.svid("e1", "/web", &["unix:uid:1000"]),
                &["partner.org"],
            ),
            agent.ca.svid("e2", "/db", &["unix:uid:0"]),
        ],
        vec![partner.bundle()],
    );
    let now = std::time::SystemTime::now();
    let token = sigil_crypto::sign_jwt_svid(
        partner.jwt_key.as_ref(),
        super::testutil::JWT_KID,
        &partner.td.id_with_path("/client").expect("id"),
        &["web".to_owned()],
        now,
        now + Duration::from_secs(60),
        None,
    )
    .expect("sign");
    let mut c = client(&agent).await;
    let validate = || {
        req(ValidateJwtsvidRequest {
            audience: "web".into(),
            svid: token.clone(),
        })
    };

    let validated = c
        .validate_jwtsvid(validate())
        .await
        .expect("valid")
        .into_inner();
    assert_eq!(validated.spiffe_id, "spiffe://partner.org/client");
    let claims = validated.claims.expect("claims");
    // A foreign token keeps only sub, exp and aud.
    let names: BTreeSet<&str> = claims.fields.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["aud", "exp", "sub"]));

    // A caller whose entries do not federate with partner.org has no keys
    // for it, even though the agent holds the bundle.
    *agent.attestor.selectors.lock().expect("lock") = vec![selector("unix:uid:0")];
    let status = c
        .validate_jwtsvid(validate())
        .await
        .expect_err("not federated");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "no keys found for trust domain \"partner.org\""
    );
}

#[tokio::test]
async fn wit_svids_are_unimplemented() {
    let agent = TestAgent::start().await;
    agent.publish(
        vec![agent.ca.svid("e1", "/web", &["unix:uid:1000"])],
        vec![],
    );
    let mut c = client(&agent).await;
    let status = c
        .fetch_witsvid(req(WitsvidRequest::default()))
        .await
        .expect_err("unimplemented");
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(status.message(), "WIT-SVIDs are not supported by sigil yet");
    let status = c
        .fetch_wit_bundles(req(WitBundlesRequest {}))
        .await
        .expect_err("unimplemented");
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn serve_reports_health_once_a_snapshot_exists() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let ca = TestCa::new("example.org");
    let (tx, rx) = tokio::sync::watch::channel(None);
    let minter = Arc::new(super::testutil::FakeMinter {
        key: ca.jwt_key.clone(),
        entries: Default::default(),
    });
    let cache = crate::cache::CacheHandle {
        snapshots: rx,
        jwt: minter,
        subscriptions: Default::default(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("public/api.sock");
    let server_socket = socket.clone();
    let attestor = super::testutil::FakeAttestor::with(&["unix:uid:1000"]);
    let server = tokio::spawn(async move {
        super::serve(&server_socket, cache, attestor, Default::default(), None).await
    });

    let channel = loop {
        if let Ok(channel) = crate::cli::workload_channel(&socket).await {
            break channel;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut health = HealthClient::new(channel.clone());
    let status = |r: tonic_health::pb::HealthCheckResponse| r.status;
    let before = health
        .check(HealthCheckRequest::default())
        .await
        .expect("check")
        .into_inner();
    assert_eq!(status(before), ServingStatus::NotServing as i32);

    tx.send_replace(Some(Arc::new(Snapshot {
        bundle: Arc::new(ca.bundle()),
        federated_bundles: vec![],
        svids: vec![Arc::new(ca.svid("e1", "/web", &["unix:uid:1000"]))],
        unsigned: vec![],
    })));
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let now = health
            .check(HealthCheckRequest::default())
            .await
            .expect("check")
            .into_inner();
        if status(now) == ServingStatus::Serving as i32 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The Workload API is on the same socket.
    let mut api = SpiffeWorkloadApiClient::new(channel);
    let mut stream = api
        .fetch_x509svid(req(X509svidRequest {}))
        .await
        .expect("opens")
        .into_inner();
    assert_eq!(
        next(&mut stream)
            .await
            .expect("ok")
            .expect("msg")
            .svids
            .len(),
        1
    );
    server.abort();
}

#[test]
fn duplicate_hints_keep_the_first_entry_only() {
    let ca = TestCa::new("example.org");
    let mut a = ca.svid("a", "/one", &["unix:uid:1"]);
    let mut b = ca.svid("b", "/two", &["unix:uid:1"]);
    let c = ca.svid("c", "/three", &["unix:uid:1"]);
    a.hint = "h".into();
    b.hint = "h".into();
    let snapshot = Snapshot {
        bundle: Arc::new(ca.bundle()),
        federated_bundles: vec![],
        svids: vec![Arc::new(a), Arc::new(b), Arc::new(c)],
        unsigned: vec![],
    };
    let ids: Vec<&str> = compose::identities(&snapshot, &[selector("unix:uid:1")])
        .iter()
        .map(|s| s.entry_id.as_str())
        .collect();
    assert_eq!(ids, ["a", "c"]);
}

#[test]
fn entries_without_an_x509_svid_still_have_jwt_identities() {
    let ca = TestCa::new("example.org");
    let signed = ca.svid("b", "/signed", &["unix:uid:1"]);
    let unsigned = |id: &str, path: &str, hint: &str| {
        Arc::new(crate::cache::EntryRecord {
            entry_id: id.into(),
            spiffe_id: sigil_spiffe::SpiffeId::parse(&format!("spiffe://example.org{path}"))
                .unwrap(),
            selectors: vec![selector("unix:uid:1")],
            hint: hint.into(),
            federates_with: vec![],
        })
    };
    let snapshot = Snapshot {
        bundle: Arc::new(ca.bundle()),
        federated_bundles: vec![],
        svids: vec![Arc::new(signed)],
        unsigned: vec![unsigned("a", "/unsigned", ""), unsigned("c", "/dup", "")],
    };
    let ids: Vec<&str> = compose::jwt_identities(&snapshot, &[selector("unix:uid:1")])
        .iter()
        .map(|s| s.entry_id)
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    // X509-SVIDs are only those held.
    assert_eq!(
        compose::identities(&snapshot, &[selector("unix:uid:1")]).len(),
        1
    );
    assert!(compose::jwt_identities(&snapshot, &[selector("unix:uid:2")]).is_empty());
}

#[test]
fn standard_jwks_has_only_jwt_keys_without_use_or_spiffe_members() {
    let ca = TestCa::new("example.org");
    let mut bundle = ca.bundle();
    bundle.sequence_number = 7;
    bundle.refresh_hint_seconds = Some(300);
    let text = String::from_utf8(compose::standard_jwks(&bundle)).expect("utf8");
    assert!(text.starts_with("{\n    \"keys\": [\n        {\n            \"kty\": \"EC\",\n            \"kid\": \"test-kid\",\n            \"crv\": \"P-256\","), "{text}");
    assert!(!text.contains("use") && !text.contains("x5c") && !text.contains("spiffe_"));
    let empty = compose::standard_jwks(&Bundle::new(ca.td.clone()));
    assert_eq!(empty, b"{\n    \"keys\": []\n}");
}

#[test]
fn foreign_token_claims_are_limited_to_sub_exp_aud_and_allowed_ones() {
    let claims = json!({
        "sub": "spiffe://partner.org/x",
        "aud": "db",
        "exp": 1700000000,
        "iat": 1690000000,
        "email": "a@b",
        "groups": ["x"],
    });
    let claims = claims.as_object().expect("object");
    let allowed: BTreeSet<String> = ["email".to_owned()].into();
    let foreign = compose::validated_claims(claims, true, &allowed);
    let names: BTreeSet<&str> = foreign.fields.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["aud", "email", "exp", "sub"]));
    let local = compose::validated_claims(claims, false, &BTreeSet::new());
    assert_eq!(local.fields.len(), 6);
    let Some(prost_types::value::Kind::ListValue(aud)) = &local.fields["aud"].kind else {
        panic!("aud becomes a list");
    };
    assert_eq!(aud.values.len(), 1);
}

/// Published SVIDs for callers `unix:uid:1000` (`/web`) and
/// `unix:uid:2000` (`/db`).
fn two_callers(agent: &TestAgent) {
    let web = agent.ca.svid("e1", "/web", &["unix:uid:1000"]);
    let db = agent.ca.svid("e2", "/db", &["unix:uid:2000"]);
    agent.publish(vec![web, db], vec![]);
}

fn as_caller(agent: &TestAgent, s: &str) {
    *agent.attestor.selectors.lock().expect("lock") = vec![selector(s)];
}

async fn jwt_for(
    c: &mut SpiffeWorkloadApiClient<Channel>,
    audience: &str,
) -> Result<(), tonic::Status> {
    c.fetch_jwtsvid(req(JwtsvidRequest {
        audience: vec![audience.into()],
        spiffe_id: String::new(),
    }))
    .await
    .map(|_| ())
}

#[tokio::test]
async fn fetch_jwt_svid_past_the_callers_limit_is_unavailable_whatever_the_audience_and_other_callers_are_not_limited()
 {
    let agent = TestAgent::start_with(super::WorkloadRateLimits {
        fetch_jwt_svid: 2,
        ..Default::default()
    })
    .await;
    two_callers(&agent);
    let mut c = client(&agent).await;

    // A new audience each time: each would miss the JWT cache and cost the
    // server a signature; the third within the second is refused.
    as_caller(&agent, "unix:uid:1000");
    jwt_for(&mut c, "aud-1").await.expect("first");
    jwt_for(&mut c, "aud-2").await.expect("second");
    let status = jwt_for(&mut c, "aud-3").await.expect_err("limited");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.message(),
        "rate limit exceeded for /SpiffeWorkloadAPI/FetchJWTSVID"
    );
    // Another caller has its own budget; other methods are not limited.
    as_caller(&agent, "unix:uid:2000");
    jwt_for(&mut c, "aud-4").await.expect("another caller");
    as_caller(&agent, "unix:uid:1000");
    let mut stream = x509_stream(&agent).await;
    assert!(next(&mut stream).await.expect("x509").is_some());
    // Half a second later the first caller has one call again.
    tokio::time::sleep(Duration::from_millis(550)).await;
    jwt_for(&mut c, "aud-5").await.expect("refilled");
}

#[tokio::test]
async fn fetch_x509_svid_limit_counts_stream_opens_and_open_streams_keep_their_updates() {
    let agent = TestAgent::start_with(super::WorkloadRateLimits {
        fetch_x509_svid: 1,
        ..Default::default()
    })
    .await;
    two_callers(&agent);
    as_caller(&agent, "unix:uid:1000");
    let mut first = x509_stream(&agent).await;
    assert!(next(&mut first).await.expect("first message").is_some());
    let status = client(&agent)
        .await
        .fetch_x509svid(req(X509svidRequest {}))
        .await
        .expect_err("second open is limited");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.message(),
        "rate limit exceeded for /SpiffeWorkloadAPI/FetchX509SVID"
    );
    // The open stream still gets the next state.
    let web = agent.ca.svid("e1", "/web", &["unix:uid:1000"]);
    agent.publish(vec![web], vec![]);
    assert!(next(&mut first).await.expect("update").is_some());
}
