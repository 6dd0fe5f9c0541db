//! Federated bundles reach workloads through the real binaries: an operator
//! stores another trust domain's bundle on the server (`bundle set`),
//! registers an entry that federates with it (`entry create
//! -federatesWith`), and the workload's `api fetch x509 -write` saves that
//! bundle as `federated_bundle.0.0.pem`, as SPIRE's agent does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sigil_e2e::my_uid;
use sigil_testkit::{Options, TrustDomain, wait_for};

/// The X.509 authorities in a PEM file, as DER.
fn pem_certs(path: &std::path::Path, td: &str) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let td = sigil_spiffe::TrustDomain::new(td).unwrap();
    sigil_spiffe::Bundle::from_pem_certs(&td, &bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .x509_authorities
}

#[test]
fn workload_of_a_federating_entry_receives_the_federated_bundle() {
    // The other trust domain: only its server, for a real CA bundle.
    let mut other = TrustDomain::with(Options {
        trust_domain: "other.org".into(),
        ..Options::default()
    });
    other.start_server();
    let other_pem = other.server_cli(&["bundle", "show"]).ok().stdout;
    let other_pem_path = other.path().join("other.pem");
    std::fs::write(&other_pem_path, &other_pem).unwrap();
    let other_certs = pem_certs(&other_pem_path, "other.org");
    assert!(!other_certs.is_empty(), "bundle show printed certificates");

    let mut td = TrustDomain::new();
    td.start_server();
    td.server_cli(&[
        "bundle",
        "set",
        "-id",
        "spiffe://other.org",
        "-path",
        other_pem_path.to_str().unwrap(),
    ])
    .ok();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let id = "spiffe://example.org/workload/federated";
    td.server_cli(&[
        "entry",
        "create",
        "-parentID",
        &td.join_token_agent_id(&token),
        "-spiffeID",
        id,
        "-selector",
        &format!("unix:uid:{}", my_uid()),
        "-federatesWith",
        "spiffe://other.org",
    ])
    .ok();

    let out_dir = td.path().join("svids");
    std::fs::create_dir_all(&out_dir).unwrap();
    let federated = out_dir.join("federated_bundle.0.0.pem");
    let out = wait_for(
        "the federated bundle in the workload's X509 response",
        Duration::from_secs(30),
        || {
            let out = td.agent_cli(
                0,
                &["api", "fetch", "x509", "-write", out_dir.to_str().unwrap()],
            );
            (out.code == 0 && out.stdout.contains(id) && federated.exists()).then_some(out)
        },
    );
    assert!(
        out.stdout
            .contains("Writing federated bundle #0 for trust domain spiffe://other.org"),
        "{}",
        out.stdout
    );
    assert_eq!(pem_certs(&federated, "other.org"), other_certs);
    // Our own bundle is still ours.
    let ours = pem_certs(&out_dir.join("bundle.0.pem"), "example.org");
    assert!(!ours.is_empty());
    assert!(ours.iter().all(|c| !other_certs.contains(c)));

    // FetchJWTBundles carries it too, keyed by trust domain ID.
    let jwt = td
        .agent_cli(0, &["api", "fetch", "jwt", "-audience", "fed-test"])
        .ok();
    assert!(
        jwt.stdout.contains("bundle(spiffe://other.org):"),
        "{}",
        jwt.stdout
    );
}
