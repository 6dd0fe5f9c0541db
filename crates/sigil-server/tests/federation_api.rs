//! The trust domain API (`spire.api.server.trustdomain.v1`: federation
//! relationships) over the real admin socket of an in-process server
//! (SQLite datastore, memory keys), its refusal to agents over mTLS, and the
//! `sigil-server federation` commands driving it as an operator would.
//! Every check reads results the way a SPIRE client would: per-item codes
//! and messages, and the relationships and bundles it gets back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use sigil_proto::spire::api::server::bundle::v1 as bundlepb;
use sigil_proto::spire::api::server::trustdomain::v1 as tdpb;
use sigil_proto::spire::api::types;
use sigil_proto::spire::api::types::federation_relationship::BundleEndpointProfile;
use tonic::Code;

use common::{Server, agent_channel, assert_status, codes, foreign_ca, start};
use tdpb::trust_domain_client::TrustDomainClient;

fn foreign_bundle(td: &str) -> types::Bundle {
    types::Bundle {
        trust_domain: td.into(),
        x509_authorities: vec![types::X509Certificate {
            asn1: foreign_ca(td),
            tainted: false,
        }],
        refresh_hint: 300,
        sequence_number: 2,
        ..Default::default()
    }
}

fn web(td: &str, url: &str) -> types::FederationRelationship {
    types::FederationRelationship {
        trust_domain: td.into(),
        bundle_endpoint_url: url.into(),
        bundle_endpoint_profile: Some(BundleEndpointProfile::HttpsWeb(types::HttpsWebProfile {})),
        trust_domain_bundle: None,
    }
}

fn spiffe(td: &str, url: &str, endpoint_id: &str) -> types::FederationRelationship {
    types::FederationRelationship {
        bundle_endpoint_profile: Some(BundleEndpointProfile::HttpsSpiffe(
            types::HttpsspiffeProfile {
                endpoint_spiffe_id: endpoint_id.into(),
            },
        )),
        ..web(td, url)
    }
}

fn ok() -> (Code, String) {
    (Code::Ok, "OK".into())
}

async fn create(
    server: &Server,
    rels: Vec<types::FederationRelationship>,
) -> Vec<tdpb::batch_create_federation_relationship_response::Result> {
    server
        .trust_domains()
        .batch_create_federation_relationship(tdpb::BatchCreateFederationRelationshipRequest {
            federation_relationships: rels,
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results
}

async fn get(server: &Server, td: &str) -> Result<types::FederationRelationship, tonic::Status> {
    server
        .trust_domains()
        .get_federation_relationship(tdpb::GetFederationRelationshipRequest {
            trust_domain: td.into(),
            output_mask: None,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_validates_each_item_like_spire_and_stores_the_bundle() {
    let server = start("sgfcreate").await;
    let mut with_bundle = spiffe(
        "spiffe.org",
        "https://spiffe.org:8443/bundle",
        "spiffe://spiffe.org/spire/server",
    );
    with_bundle.trust_domain_bundle = Some(foreign_bundle("spiffe.org"));
    let mut wrong_bundle = web("mismatch.org", "https://mismatch.org");
    wrong_bundle.trust_domain_bundle = Some(foreign_bundle("other.org"));
    let mut no_profile = web("noprofile.org", "https://noprofile.org");
    no_profile.bundle_endpoint_profile = None;

    let results = create(
        &server,
        vec![
            web("web.org", "https://web.org/bundle"),
            with_bundle.clone(),
            web("example.org", "https://example.org"),
            web("http.org", "http://http.org"),
            web("nohost.org", "https:///bundle"),
            web("user.org", "https://me@user.org"),
            spiffe("noid.org", "https://noid.org", ""),
            no_profile,
            wrong_bundle,
            web("Bad Domain", "https://x"),
            web("web.org", "https://web.org/again"),
        ],
    )
    .await;
    let convert = |e: &str| {
        (
            Code::InvalidArgument,
            format!("failed to convert federation relationship: {e}"),
        )
    };
    let got = codes(results.iter().map(|r| r.status.clone()));
    assert_eq!(got[..2], [ok(), ok()]);
    assert_eq!(
        got[2],
        (
            Code::InvalidArgument,
            "unable to create federation relationship for server trust domain".into()
        )
    );
    assert_eq!(
        got[3],
        convert("bundle endpoint URL must use the https scheme")
    );
    assert_eq!(got[4], convert("bundle endpoint URL must specify the host"));
    assert_eq!(
        got[5],
        convert("bundle endpoint URL must not contain user info")
    );
    assert_eq!(
        got[6],
        convert("failed to parse endpoint SPIFFE ID: cannot be empty")
    );
    assert_eq!(
        got[7],
        convert("unsupported bundle endpoint profile type: <nil>")
    );
    assert_eq!(
        got[8],
        convert(
            "trust domain bundle (\"other.org\") must match the trust domain of the federation \
             relationship (\"mismatch.org\")"
        )
    );
    assert_eq!(got[9].0, Code::InvalidArgument);
    assert!(
        got[9].1.starts_with(
            "failed to convert federation relationship: failed to parse trust domain: "
        ),
        "{got:?}"
    );
    // A duplicate is a datastore failure, reported as SPIRE reports it.
    assert_eq!(got[10].0, Code::Internal);
    assert!(
        got[10]
            .1
            .starts_with("failed to create federation relationship: "),
        "{got:?}"
    );

    // Results carry what was created, the bundle when one was given.
    assert_eq!(
        results[0].federation_relationship,
        Some(web("web.org", "https://web.org/bundle"))
    );
    assert_eq!(
        results[1].federation_relationship,
        Some(with_bundle.clone())
    );
    assert!(
        results[2..]
            .iter()
            .all(|r| r.federation_relationship.is_none())
    );

    // The bundle went where the bundle service reads federated bundles.
    let fed = bundlepb::bundle_client::BundleClient::new(server.admin.clone())
        .get_federated_bundle(bundlepb::GetFederatedBundleRequest {
            trust_domain: "spiffe.org".into(),
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(Some(fed), with_bundle.trust_domain_bundle);

    // Nothing was stored for the refused items.
    let list = server
        .trust_domains()
        .list_federation_relationships(tdpb::ListFederationRelationshipsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = list
        .federation_relationships
        .iter()
        .map(|r| r.trust_domain.as_str())
        .collect();
    assert_eq!(names, ["spiffe.org", "web.org"]);
    assert_eq!(list.next_page_token, "");
    assert_eq!(
        list.federation_relationships[1].bundle_endpoint_url, "https://web.org/bundle",
        "the duplicate did not overwrite the original"
    );
    for td in ["mismatch.org", "other.org"] {
        let err = bundlepb::bundle_client::BundleClient::new(server.admin.clone())
            .get_federated_bundle(bundlepb::GetFederatedBundleRequest {
                trust_domain: td.into(),
                output_mask: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{td}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_list_read_back_relationships_with_their_bundles() {
    let server = start("sgfget").await;
    let mut with_bundle = web("b.org", "https://b.org");
    with_bundle.trust_domain_bundle = Some(foreign_bundle("b.org"));
    let created = create(
        &server,
        vec![
            spiffe("c.org", "https://c.org", "spiffe://c.org/s"),
            with_bundle.clone(),
            web("a.org", "https://a.org"),
        ],
    )
    .await;
    assert_eq!(
        codes(created.into_iter().map(|r| r.status)),
        [ok(), ok(), ok()]
    );

    assert_eq!(get(&server, "b.org").await.unwrap(), with_bundle);
    assert_eq!(
        get(&server, "spiffe://c.org").await.unwrap(),
        spiffe("c.org", "https://c.org", "spiffe://c.org/s")
    );
    assert_status(
        get(&server, "none.org").await.unwrap_err(),
        Code::NotFound,
        "federation relationship does not exist",
    );
    assert_status(
        get(&server, "").await.unwrap_err(),
        Code::InvalidArgument,
        "failed to parse trust domain: trust domain is missing",
    );
    let masked = server
        .trust_domains()
        .get_federation_relationship(tdpb::GetFederationRelationshipRequest {
            trust_domain: "b.org".into(),
            output_mask: Some(types::FederationRelationshipMask {
                bundle_endpoint_url: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        masked,
        types::FederationRelationship {
            trust_domain: "b.org".into(),
            bundle_endpoint_url: "https://b.org".into(),
            ..Default::default()
        }
    );

    // Pages run in trust domain order and cover everything once.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = server
            .trust_domains()
            .list_federation_relationships(tdpb::ListFederationRelationshipsRequest {
                output_mask: None,
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.federation_relationships.len() <= 2);
        seen.extend(page.federation_relationships);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        seen,
        vec![
            web("a.org", "https://a.org"),
            with_bundle,
            spiffe("c.org", "https://c.org", "spiffe://c.org/s"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_applies_the_input_mask_and_delete_keeps_the_bundle() {
    let server = start("sgfupd").await;
    create(
        &server,
        vec![spiffe(
            "a.org",
            "https://a.org/old",
            "spiffe://a.org/spire/server",
        )],
    )
    .await;
    let mut change = web("a.org", "https://a.org/new");
    change.trust_domain_bundle = Some(foreign_bundle("a.org"));
    let update = |rels: Vec<types::FederationRelationship>,
                  input_mask: Option<types::FederationRelationshipMask>| {
        let mut client = server.trust_domains();
        async move {
            client
                .batch_update_federation_relationship(
                    tdpb::BatchUpdateFederationRelationshipRequest {
                        federation_relationships: rels,
                        input_mask,
                        output_mask: None,
                    },
                )
                .await
                .unwrap()
                .into_inner()
                .results
        }
    };

    // Only the URL: the profile and bundle stay as stored (no bundle yet).
    let results = update(
        vec![change.clone()],
        Some(types::FederationRelationshipMask {
            bundle_endpoint_url: true,
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(codes(results.iter().map(|r| r.status.clone())), [ok()]);
    assert_eq!(
        results[0].federation_relationship,
        Some(spiffe(
            "a.org",
            "https://a.org/new",
            "spiffe://a.org/spire/server"
        ))
    );

    // Everything (no mask): profile and bundle too; the result shows the
    // stored bundle.
    let results = update(vec![change.clone()], None).await;
    assert_eq!(codes(results.iter().map(|r| r.status.clone())), [ok()]);
    assert_eq!(results[0].federation_relationship, Some(change.clone()));
    assert_eq!(get(&server, "a.org").await.unwrap(), change);

    // Every field is checked whatever the mask; a missing relationship is
    // a datastore failure (Internal), as in SPIRE.
    let results = update(
        vec![
            web("a.org", "http://a.org"),
            web("missing.org", "https://missing.org"),
        ],
        Some(types::FederationRelationshipMask::default()),
    )
    .await;
    let got = codes(results.iter().map(|r| r.status.clone()));
    assert_eq!(
        got[0],
        (
            Code::InvalidArgument,
            "failed to convert federation relationship: bundle endpoint URL must use the https \
             scheme"
                .into()
        )
    );
    assert_eq!(got[1].0, Code::Internal);
    assert!(
        got[1]
            .1
            .starts_with("failed to update federation relationship: "),
        "{got:?}"
    );

    // Delete: per-item results, and the bundle stays behind.
    let results = server
        .trust_domains()
        .batch_delete_federation_relationship(tdpb::BatchDeleteFederationRelationshipRequest {
            trust_domains: vec![
                "spiffe://a.org".into(),
                "a.org".into(),
                String::new(),
                "Bad Domain".into(),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let tds: Vec<&str> = results.iter().map(|r| r.trust_domain.as_str()).collect();
    assert_eq!(tds, ["a.org", "a.org", "", "Bad Domain"]);
    let got = codes(results.iter().map(|r| r.status.clone()));
    assert_eq!(
        got[..3],
        [
            ok(),
            (Code::NotFound, "federation relationship not found".into()),
            (Code::InvalidArgument, "missing trust domain".into()),
        ]
    );
    assert_eq!(got[3].0, Code::InvalidArgument);
    assert!(
        got[3].1.starts_with("failed to parse trust domain: "),
        "{got:?}"
    );
    assert_eq!(
        get(&server, "a.org").await.unwrap_err().code(),
        Code::NotFound
    );
    bundlepb::bundle_client::BundleClient::new(server.admin.clone())
        .get_federated_bundle(bundlepb::GetFederatedBundleRequest {
            trust_domain: "a.org".into(),
            output_mask: None,
        })
        .await
        .expect("the bundle outlives the relationship");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_bundle_fetches_at_once_and_reports_the_endpoint_error() {
    let server = start("sgfrefresh").await;
    // Nothing listens on port 1: the fetch fails without leaving the host.
    create(&server, vec![web("a.org", "https://127.0.0.1:1")]).await;
    let refresh = |td: &str| {
        let mut client = server.trust_domains();
        let td = td.to_owned();
        async move {
            client
                .refresh_bundle(tdpb::RefreshBundleRequest { trust_domain: td })
                .await
                .unwrap_err()
        }
    };
    let err = refresh("a.org").await;
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(
        err.message().starts_with(
            "failed to refresh bundle: failed to fetch federated bundle from endpoint: \
             failed to fetch bundle: connecting to https://127.0.0.1:1: "
        ),
        "{err:?}"
    );
    assert_status(
        refresh("b.org").await,
        Code::NotFound,
        "no relationship with trust domain \"b.org\"",
    );
    assert_status(
        refresh("").await,
        Code::InvalidArgument,
        "failed to parse trust domain: trust domain is missing",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_over_mtls_cannot_touch_federation_relationships() {
    let server = start("sgfauth").await;
    create(&server, vec![web("a.org", "https://a.org")]).await;
    let mut client = TrustDomainClient::new(agent_channel(&server).await);
    let denied = |r: Result<(), tonic::Status>, what: &str| {
        let err = r.err().unwrap_or_else(|| panic!("{what} was allowed"));
        assert_eq!(err.code(), Code::PermissionDenied, "{what}: {err:?}");
    };
    denied(
        client
            .list_federation_relationships(tdpb::ListFederationRelationshipsRequest::default())
            .await
            .map(|_| ()),
        "ListFederationRelationships",
    );
    denied(
        client
            .get_federation_relationship(tdpb::GetFederationRelationshipRequest {
                trust_domain: "a.org".into(),
                output_mask: None,
            })
            .await
            .map(|_| ()),
        "GetFederationRelationship",
    );
    denied(
        client
            .batch_create_federation_relationship(tdpb::BatchCreateFederationRelationshipRequest {
                federation_relationships: vec![web("b.org", "https://b.org")],
                output_mask: None,
            })
            .await
            .map(|_| ()),
        "BatchCreateFederationRelationship",
    );
    denied(
        client
            .batch_update_federation_relationship(tdpb::BatchUpdateFederationRelationshipRequest {
                federation_relationships: vec![web("a.org", "https://evil.org")],
                input_mask: None,
                output_mask: None,
            })
            .await
            .map(|_| ()),
        "BatchUpdateFederationRelationship",
    );
    denied(
        client
            .batch_delete_federation_relationship(tdpb::BatchDeleteFederationRelationshipRequest {
                trust_domains: vec!["a.org".into()],
            })
            .await
            .map(|_| ()),
        "BatchDeleteFederationRelationship",
    );
    denied(
        client
            .refresh_bundle(tdpb::RefreshBundleRequest {
                trust_domain: "a.org".into(),
            })
            .await
            .map(|_| ()),
        "RefreshBundle",
    );
    assert_eq!(
        get(&server, "a.org").await.unwrap(),
        web("a.org", "https://a.org")
    );
}

/// Runs `sigil-server federation <args> -socketPath <socket>`; returns the
/// exit code, stdout and stderr.
async fn cli(server: &Server, args: &[&str]) -> (i32, String, String) {
    let mut argv: Vec<String> = vec!["federation".into()];
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    argv.push("-socketPath".into());
    argv.push(server.socket().display().to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sigil-server"))
            .args(&argv)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_commands_create_list_show_update_delete_refresh() {
    let server = start("sgfcli").await;
    let pem_path = server.dir.path().join("other.pem");
    let der = foreign_ca("other.org");
    std::fs::write(
        &pem_path,
        pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())),
    )
    .unwrap();

    let (code, out, err) = cli(
        &server,
        &[
            "create",
            "-trustDomain",
            "other.org",
            "-bundleEndpointURL",
            "https://other.org:8443",
            "-bundleEndpointProfile",
            "https_spiffe",
            "-endpointSpiffeID",
            "spiffe://other.org/spire/server",
            "-trustDomainBundlePath",
            pem_path.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert_eq!(
        out,
        "
Trust domain              : other.org
Bundle endpoint URL       : https://other.org:8443
Bundle endpoint profile   : https_spiffe
Endpoint SPIFFE ID        : spiffe://other.org/spire/server
"
    );

    let (code, out, err) = cli(
        &server,
        &[
            "create",
            "-trustDomain",
            "example.org",
            "-bundleEndpointURL",
            "https://example.org",
            "-bundleEndpointProfile",
            "https_web",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert_eq!(out, "\n");
    assert_eq!(
        err,
        "Failed to create the following federation relationship (code: InvalidArgument, msg: \
         \"unable to create federation relationship for server trust domain\"):
Trust domain              : example.org
Bundle endpoint URL       : https://example.org
Bundle endpoint profile   : https_web
Error: failed to create one or more federation relationships
"
    );

    let (code, out, _) = cli(&server, &["list"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "Found 1 federation relationship

Trust domain              : other.org
Bundle endpoint URL       : https://other.org:8443
Bundle endpoint profile   : https_spiffe
Endpoint SPIFFE ID        : spiffe://other.org/spire/server
"
    );

    let (code, out, _) = cli(
        &server,
        &[
            "update",
            "-trustDomain",
            "other.org",
            "-bundleEndpointURL",
            "https://other.org/bundle",
            "-bundleEndpointProfile",
            "https_web",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = cli(&server, &["show", "-trustDomain", "other.org"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "Found a federation relationship with trust domain other.org:

Trust domain              : other.org
Bundle endpoint URL       : https://other.org/bundle
Bundle endpoint profile   : https_web
"
    );
    // The bundle given at creation is the relationship's bundle.
    let (_, json, _) = cli(
        &server,
        &["show", "-trustDomain", "other.org", "-output", "json"],
    )
    .await;
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["https_web"], serde_json::json!({}));
    assert_eq!(doc["trust_domain_bundle"]["trust_domain"], "other.org");

    let (code, _, err) = cli(&server, &["refresh", "-id", "other.org"]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with(
            "Error: failed to refresh bundle: rpc error: code = Internal desc = failed to \
             refresh bundle: failed to fetch federated bundle from endpoint: failed to fetch \
             bundle: connecting to https://other.org/bundle: "
        ),
        "{err}"
    );
    let (code, _, err) = cli(&server, &["refresh", "-id", "nobody.org"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "Error: there is no federation relationship with trust domain \"nobody.org\"\n"
    );

    let (code, out, _) = cli(&server, &["delete", "-id", "other.org"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "federation relationship deleted.\n")
    );
    let (code, _, err) = cli(&server, &["delete", "-id", "other.org"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "Error: failed to delete federation relationship \"other.org\": federation \
         relationship not found\n"
    );
    let (code, out, _) = cli(&server, &["list"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "Found 0 federation relationships\n")
    );
    let (code, _, err) = cli(&server, &["show"]).await;
    assert_eq!(code, 1);
    assert_eq!(err, "Error: a trust domain name is required\n");
}
