//! The Rust `spiffe` crate (crates.io, unmodified) against a real
//! sigil-agent: X509-SVID, bundles, JWT-SVID, JWT bundles, validation by the
//! agent and local validation, and the X509Source/JwtSource helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sigil_e2e::my_uid;
use sigil_testkit::{TrustDomain, wait_for};
use spiffe::{
    JwtSource, JwtSvid, SpiffeId, TrustDomain as SpiffeTd, WorkloadApiClient, X509Source,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_spiffe_crate_fetches_and_validates_from_sigil_agent() {
    let (td, endpoint, id) = tokio::task::block_in_place(|| {
        let mut td = TrustDomain::new();
        td.start_server();
        let token = td.join_token();
        td.start_agent(0, Some(&token));
        let id = "spiffe://example.org/workload/rust-client".to_owned();
        td.server_cli(&[
            "entry",
            "create",
            "-parentID",
            &td.join_token_agent_id(&token),
            "-spiffeID",
            &id,
            "-selector",
            &format!("unix:uid:{}", my_uid()),
        ])
        .ok();
        wait_for("SVID", Duration::from_secs(30), || {
            let out = td.agent_cli(0, &["api", "fetch", "x509"]);
            (out.code == 0 && out.stdout.contains(&id)).then_some(())
        });
        let endpoint = format!("unix:{}", td.agent_socket(0).display());
        (td, endpoint, id)
    });
    let want = SpiffeId::new(&id).unwrap();
    let tdom = SpiffeTd::new("example.org").unwrap();

    let client = WorkloadApiClient::connect_to(&endpoint)
        .await
        .expect("connect");
    let svid = client.fetch_x509_svid().await.expect("X509-SVID");
    assert_eq!(svid.spiffe_id(), &want);
    assert!(!svid.cert_chain().is_empty());
    let bundles = client.fetch_x509_bundles().await.expect("X509 bundles");
    assert!(
        !bundles
            .get(&tdom)
            .expect("our bundle")
            .authorities()
            .is_empty()
    );

    let jwt = client
        .fetch_jwt_svid(["my-audience"], None)
        .await
        .expect("JWT-SVID");
    assert_eq!(jwt.spiffe_id(), &want);
    assert_eq!(jwt.audience(), ["my-audience".to_owned()]);
    let validated = client
        .validate_jwt_token("my-audience", jwt.token())
        .await
        .expect("agent validates the token");
    assert_eq!(validated.spiffe_id(), &want);
    let jwt_bundles = client.fetch_jwt_bundles().await.expect("JWT bundles");
    let local = JwtSvid::parse_and_validate(jwt.token(), &jwt_bundles, &["my-audience"])
        .expect("token verifies locally against the JWT bundle");
    assert_eq!(local.spiffe_id(), &want);
    assert!(
        JwtSvid::parse_and_validate(jwt.token(), &jwt_bundles, &["someone-else"]).is_err(),
        "wrong audience is rejected"
    );

    let source = X509Source::builder()
        .endpoint(&endpoint)
        .build()
        .await
        .expect("X509Source");
    assert_eq!(source.svid().expect("svid").spiffe_id(), &want);
    source.shutdown().await;

    let jwt_source = JwtSource::builder()
        .endpoint(&endpoint)
        .build()
        .await
        .expect("JwtSource");
    let from_source = jwt_source
        .fetch_jwt_svid(["aud2"])
        .await
        .expect("JWT via source");
    assert_eq!(from_source.spiffe_id(), &want);
    drop(td);
}
