//! The SPIRE server admin APIs (bundle, debug, logger, localauthority) over
//! the real admin socket of an in-process server (SQLite datastore, memory
//! keys), and their refusal to agents over mTLS. Every check reads results
//! the way a SPIRE client would: codes, messages and the bundle it gets back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use sigil_crypto::key::{KeyType, Signer, SoftwareKey};
use sigil_proto::spire::api::server::bundle::v1 as bundlepb;
use sigil_proto::spire::api::server::debug::v1 as debugpb;
use sigil_proto::spire::api::server::entry::v1 as entrypb;
use sigil_proto::spire::api::server::localauthority::v1 as lapb;
use sigil_proto::spire::api::server::logger::v1 as loggerpb;
use sigil_proto::spire::api::types;
use tonic::Code;

use bundlepb::bundle_client::BundleClient;
use common::{agent_channel, assert_status, codes, foreign_ca, start};
use lapb::local_authority_client::LocalAuthorityClient;

fn jwt_key(kid: &str) -> types::JwtKey {
    let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
    types::JwtKey {
        public_key: key.public_key_der().to_vec(),
        key_id: kid.into(),
        expires_at: 2_000_000_000,
        tainted: false,
    }
}

fn federated(td: &str) -> types::Bundle {
    types::Bundle {
        trust_domain: td.into(),
        x509_authorities: vec![types::X509Certificate {
            asn1: foreign_ca(td),
            tainted: false,
        }],
        jwt_authorities: vec![jwt_key(&format!("{td}-key"))],
        refresh_hint: 60,
        sequence_number: 3,
        wit_authorities: vec![],
    }
}

fn entry_federated_with(path: &str, tds: &[&str]) -> types::Entry {
    types::Entry {
        parent_id: Some(types::Spiffeid {
            trust_domain: "example.org".into(),
            path: "/spire/agent/x".into(),
        }),
        spiffe_id: Some(types::Spiffeid {
            trust_domain: "example.org".into(),
            path: path.into(),
        }),
        selectors: vec![types::Selector {
            r#type: "unix".into(),
            value: "uid:1".into(),
        }],
        federates_with: tds.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appending_to_our_bundle_validates_and_deduplicates() {
    let server = start("sgbapp").await;
    let mut bundles = BundleClient::new(server.admin.clone());
    let before = bundles
        .get_bundle(bundlepb::GetBundleRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.trust_domain, "example.org");
    assert_eq!(before.x509_authorities.len(), 1);
    assert_eq!(before.jwt_authorities.len(), 1);

    // Output masks clear what they leave out.
    let masked = bundles
        .get_bundle(bundlepb::GetBundleRequest {
            output_mask: Some(types::BundleMask {
                x509_authorities: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(masked.x509_authorities.len(), 1);
    assert!(masked.jwt_authorities.is_empty());
    assert_eq!(masked.sequence_number, 0);

    let err = bundles
        .append_bundle(bundlepb::AppendBundleRequest::default())
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "no authorities to append");
    let err = bundles
        .append_bundle(bundlepb::AppendBundleRequest {
            jwt_authorities: vec![jwt_key("")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::InvalidArgument,
        "failed to convert JWT authority: missing key ID",
    );
    let err = bundles
        .append_bundle(bundlepb::AppendBundleRequest {
            x509_authorities: vec![types::X509Certificate {
                asn1: vec![0x30, 0x03, 0x01, 0x01, 0xff],
                tainted: false,
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("failed to convert X.509 authority: "),
        "{}",
        err.message()
    );

    let extra_ca = foreign_ca("example.org");
    let extra_jwt = jwt_key("appended");
    let req = bundlepb::AppendBundleRequest {
        x509_authorities: vec![types::X509Certificate {
            asn1: extra_ca.clone(),
            tainted: false,
        }],
        jwt_authorities: vec![extra_jwt.clone()],
        output_mask: None,
        wit_authorities: vec![],
    };
    let appended = bundles
        .append_bundle(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(appended.x509_authorities.len(), 2);
    assert_eq!(appended.x509_authorities[1].asn1, extra_ca);
    assert_eq!(appended.jwt_authorities.len(), 2);
    assert_eq!(appended.jwt_authorities[1], extra_jwt);
    assert_eq!(appended.sequence_number, before.sequence_number + 1);
    // Appending the same again changes nothing.
    let again = bundles.append_bundle(req).await.unwrap().into_inner();
    assert_eq!(again, appended);
    // A different key under a taken key ID cannot be stored.
    let err = bundles
        .append_bundle(bundlepb::AppendBundleRequest {
            jwt_authorities: vec![jwt_key("appended")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Everyone reading the bundle sees the change.
    let after = bundles
        .get_bundle(bundlepb::GetBundleRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after, appended);

    // PublishJWTAuthority (administrators, as sigil has no downstream servers).
    let err = bundles
        .publish_jwt_authority(bundlepb::PublishJwtAuthorityRequest {
            jwt_authority: None,
        })
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "missing JWT authority");
    let err = bundles
        .publish_jwt_authority(bundlepb::PublishJwtAuthorityRequest {
            jwt_authority: Some(jwt_key("")),
        })
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::InvalidArgument,
        "invalid JWT authority: missing key ID",
    );
    let published = bundles
        .publish_jwt_authority(bundlepb::PublishJwtAuthorityRequest {
            jwt_authority: Some(jwt_key("downstream")),
        })
        .await
        .unwrap()
        .into_inner();
    let kids: Vec<&str> = published
        .jwt_authorities
        .iter()
        .map(|k| k.key_id.as_str())
        .collect();
    assert_eq!(kids.len(), 3);
    assert!(kids.contains(&"downstream") && kids.contains(&"appended"));

    let err = bundles
        .publish_wit_authority(bundlepb::PublishWitAuthorityRequest::default())
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::Unimplemented,
        "WIT-SVIDs are not supported by sigil yet",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_bundles_round_trip_through_create_update_set_list_delete() {
    let server = start("sgbfed").await;
    let mut bundles = BundleClient::new(server.admin.clone());
    let mut entries = entrypb::entry_client::EntryClient::new(server.admin.clone());

    let other = federated("other.org");
    let created = bundles
        .batch_create_federated_bundle(bundlepb::BatchCreateFederatedBundleRequest {
            bundle: vec![
                other.clone(),
                federated("example.org"),
                types::Bundle {
                    trust_domain: "Bad Domain".into(),
                    ..Default::default()
                },
                other.clone(),
                types::Bundle {
                    jwt_authorities: vec![jwt_key("")],
                    ..federated("broken.org")
                },
            ],
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    let got = codes(created.results.iter().map(|r| r.status.clone()));
    assert_eq!(got[0], (Code::Ok, "OK".into()));
    assert_eq!(
        got[1],
        (
            Code::InvalidArgument,
            "creating a federated bundle for the server's own trust domain is not allowed".into()
        )
    );
    assert_eq!(got[2].0, Code::InvalidArgument);
    assert!(
        got[2].1.starts_with("trust domain argument is not valid: "),
        "{}",
        got[2].1
    );
    assert_eq!(
        got[3],
        (Code::AlreadyExists, "bundle already exists".into())
    );
    assert_eq!(
        got[4],
        (
            Code::InvalidArgument,
            "failed to convert bundle: unable to parse JWT authority: missing key ID".into()
        )
    );
    assert_eq!(created.results[0].bundle.as_ref(), Some(&other));

    // Read back, by admins.
    let fetched = bundles
        .get_federated_bundle(bundlepb::GetFederatedBundleRequest {
            trust_domain: "other.org".into(),
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, other);
    for (td, code, msg) in [
        ("nope.org", Code::NotFound, "bundle not found"),
        (
            "example.org",
            Code::InvalidArgument,
            "getting a federated bundle for the server's own trust domain is not allowed",
        ),
        (
            "",
            Code::InvalidArgument,
            "trust domain argument is not valid: trust domain is missing",
        ),
    ] {
        let err = bundles
            .get_federated_bundle(bundlepb::GetFederatedBundleRequest {
                trust_domain: td.into(),
                output_mask: None,
            })
            .await
            .unwrap_err();
        assert_status(err, code, msg);
    }

    // Update honours the input mask: only the refresh hint changes.
    let replacement = federated("other.org");
    let updated = bundles
        .batch_update_federated_bundle(bundlepb::BatchUpdateFederatedBundleRequest {
            bundle: vec![
                types::Bundle {
                    refresh_hint: 300,
                    ..replacement.clone()
                },
                federated("missing.org"),
                federated("example.org"),
            ],
            input_mask: Some(types::BundleMask {
                refresh_hint: true,
                ..Default::default()
            }),
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    let got = codes(updated.results.iter().map(|r| r.status.clone()));
    assert_eq!(got[0].0, Code::Ok);
    assert_eq!(got[1], (Code::NotFound, "bundle not found".into()));
    assert_eq!(
        got[2],
        (
            Code::InvalidArgument,
            "updating a federated bundle for the server's own trust domain is not allowed".into()
        )
    );
    let after = updated.results[0].bundle.clone().unwrap();
    assert_eq!(after.refresh_hint, 300);
    assert_eq!(after.x509_authorities, other.x509_authorities);
    assert_eq!(after.jwt_authorities, other.jwt_authorities);
    // Without a mask everything is replaced; the output mask trims the answer.
    let updated = bundles
        .batch_update_federated_bundle(bundlepb::BatchUpdateFederatedBundleRequest {
            bundle: vec![replacement.clone()],
            input_mask: None,
            output_mask: Some(types::BundleMask {
                jwt_authorities: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let trimmed = updated.results[0].bundle.clone().unwrap();
    assert_eq!(trimmed.jwt_authorities, replacement.jwt_authorities);
    assert!(trimmed.x509_authorities.is_empty());
    assert_eq!(trimmed.refresh_hint, 0);

    // Set creates or replaces.
    let set = bundles
        .batch_set_federated_bundle(bundlepb::BatchSetFederatedBundleRequest {
            bundle: vec![
                federated("a.org"),
                federated("z.org"),
                federated("other.org"),
                federated("example.org"),
            ],
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    let got = codes(set.results.iter().map(|r| r.status.clone()));
    assert_eq!(
        got.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        [Code::Ok, Code::Ok, Code::Ok, Code::InvalidArgument]
    );
    assert_eq!(
        got[3].1,
        "setting a federated bundle for the server's own trust domain is not allowed"
    );

    // Four bundles in all: ours and three federated ones.
    let count = bundles
        .count_bundles(bundlepb::CountBundlesRequest {})
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 4);
    let all = bundles
        .list_federated_bundles(bundlepb::ListFederatedBundlesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = all
        .bundles
        .iter()
        .map(|b| b.trust_domain.as_str())
        .collect();
    assert_eq!(names, ["a.org", "other.org", "z.org"]);
    assert!(all.next_page_token.is_empty());
    // Paging one at a time visits each once.
    let mut token = String::new();
    let mut paged = Vec::new();
    for _ in 0..10 {
        let page = bundles
            .list_federated_bundles(bundlepb::ListFederatedBundlesRequest {
                output_mask: Some(types::BundleMask::default()),
                page_size: 1,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        for b in &page.bundles {
            assert!(b.x509_authorities.is_empty(), "output mask applies");
            paged.push(b.trust_domain.clone());
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(paged, ["a.org", "other.org", "z.org"]);

    // Deleting: RESTRICT refuses while entries federate with the domain.
    let created = entries
        .batch_create_entry(entrypb::BatchCreateEntryRequest {
            entries: vec![
                entry_federated_with("/fed", &["other.org", "a.org"]),
                entry_federated_with("/only-a", &["a.org"]),
            ],
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = created
        .results
        .iter()
        .map(|r| {
            assert_eq!(r.status.as_ref().unwrap().code, 0, "{:?}", r.status);
            r.entry.as_ref().unwrap().id.clone()
        })
        .collect();
    let delete = |tds: &[&str], mode: bundlepb::batch_delete_federated_bundle_request::Mode| {
        let mut bundles = bundles.clone();
        let req = bundlepb::BatchDeleteFederatedBundleRequest {
            trust_domains: tds.iter().map(|s| (*s).to_owned()).collect(),
            mode: mode as i32,
        };
        async move {
            bundles
                .batch_delete_federated_bundle(req)
                .await
                .unwrap()
                .into_inner()
        }
    };
    use bundlepb::batch_delete_federated_bundle_request::Mode;
    let resp = delete(&["other.org", "example.org", "nope.org"], Mode::Restrict).await;
    let got = codes(resp.results.iter().map(|r| r.status.clone()));
    assert_eq!(
        got,
        [
            (
                Code::FailedPrecondition,
                "failed to delete federated bundle: datastore-sql: cannot delete bundle; federated with 1 registration entries".to_owned()
            ),
            (
                Code::InvalidArgument,
                "removing the bundle for the server trust domain is not allowed".to_owned()
            ),
            (Code::NotFound, "bundle not found".to_owned()),
        ]
    );
    assert_eq!(resp.results[0].trust_domain, "other.org");

    // DISSOCIATE drops the domain from entries, then deletes the bundle.
    let resp = delete(&["other.org"], Mode::Dissociate).await;
    assert_eq!(resp.results[0].status.as_ref().unwrap().code, 0);
    let e = entries
        .get_entry(entrypb::GetEntryRequest {
            id: ids[0].clone(),
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.federates_with, ["a.org"]);

    // DELETE deletes the entries federating with the domain.
    let resp = delete(&["a.org"], Mode::Delete).await;
    assert_eq!(resp.results[0].status.as_ref().unwrap().code, 0);
    let left = entries
        .count_entries(entrypb::CountEntriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(left, 0);

    let err = bundles
        .batch_delete_federated_bundle(bundlepb::BatchDeleteFederatedBundleRequest {
            trust_domains: vec!["z.org".into()],
            mode: 7,
        })
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::InvalidArgument,
        "failed to parse deletion mode: unhandled delete mode \"7\"",
    );
    let all = bundles
        .list_federated_bundles(bundlepb::ListFederatedBundlesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = all
        .bundles
        .iter()
        .map(|b| b.trust_domain.as_str())
        .collect();
    assert_eq!(names, ["z.org"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_over_mtls_cannot_call_admin_rpcs() {
    let server = start("sgbauth").await;
    BundleClient::new(server.admin.clone())
        .batch_set_federated_bundle(bundlepb::BatchSetFederatedBundleRequest {
            bundle: vec![federated("other.org")],
            output_mask: None,
        })
        .await
        .unwrap();
    let agent = agent_channel(&server).await;
    let mut bundles = BundleClient::new(agent.clone());

    // What agents may do: read our bundle and federated ones.
    bundles
        .get_bundle(bundlepb::GetBundleRequest::default())
        .await
        .unwrap();
    let fed = bundles
        .get_federated_bundle(bundlepb::GetFederatedBundleRequest {
            trust_domain: "other.org".into(),
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fed.trust_domain, "other.org");

    let denied = |r: Result<tonic::Response<_>, tonic::Status>, what: &str| {
        let err = r.err().unwrap_or_else(|| panic!("{what} was allowed"));
        assert_eq!(err.code(), Code::PermissionDenied, "{what}: {err:?}");
    };
    denied(
        bundles
            .count_bundles(bundlepb::CountBundlesRequest {})
            .await
            .map(|_| tonic::Response::new(())),
        "CountBundles",
    );
    denied(
        bundles
            .append_bundle(bundlepb::AppendBundleRequest {
                jwt_authorities: vec![jwt_key("x")],
                ..Default::default()
            })
            .await
            .map(|_| tonic::Response::new(())),
        "AppendBundle",
    );
    denied(
        bundles
            .publish_jwt_authority(bundlepb::PublishJwtAuthorityRequest {
                jwt_authority: Some(jwt_key("x")),
            })
            .await
            .map(|_| tonic::Response::new(())),
        "PublishJWTAuthority",
    );
    denied(
        bundles
            .list_federated_bundles(bundlepb::ListFederatedBundlesRequest::default())
            .await
            .map(|_| tonic::Response::new(())),
        "ListFederatedBundles",
    );
    denied(
        bundles
            .batch_create_federated_bundle(bundlepb::BatchCreateFederatedBundleRequest {
                bundle: vec![federated("x.org")],
                output_mask: None,
            })
            .await
            .map(|_| tonic::Response::new(())),
        "BatchCreateFederatedBundle",
    );
    denied(
        bundles
            .batch_delete_federated_bundle(bundlepb::BatchDeleteFederatedBundleRequest {
                trust_domains: vec!["other.org".into()],
                mode: 0,
            })
            .await
            .map(|_| tonic::Response::new(())),
        "BatchDeleteFederatedBundle",
    );
    denied(
        debugpb::debug_client::DebugClient::new(agent.clone())
            .get_info(debugpb::GetInfoRequest {})
            .await
            .map(|_| tonic::Response::new(())),
        "GetInfo",
    );
    denied(
        loggerpb::logger_client::LoggerClient::new(agent.clone())
            .set_log_level(loggerpb::SetLogLevelRequest {
                new_level: types::LogLevel::Debug as i32,
            })
            .await
            .map(|_| tonic::Response::new(())),
        "SetLogLevel",
    );
    let mut la = LocalAuthorityClient::new(agent.clone());
    denied(
        la.get_x509_authority_state(lapb::GetX509AuthorityStateRequest {})
            .await
            .map(|_| tonic::Response::new(())),
        "GetX509AuthorityState",
    );
    denied(
        la.prepare_jwt_authority(lapb::PrepareJwtAuthorityRequest {})
            .await
            .map(|_| tonic::Response::new(())),
        "PrepareJWTAuthority",
    );
    // Nothing the agent tried changed the federated bundle.
    let still = BundleClient::new(server.admin.clone())
        .count_bundles(bundlepb::CountBundlesRequest {})
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(still, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_authority_prepare_activate_taint_revoke() {
    let server = start("sgla509").await;
    let mut la = LocalAuthorityClient::new(server.admin.clone());
    let bundles = BundleClient::new(server.admin.clone());
    let get_bundle = || {
        let mut bundles = bundles.clone();
        async move {
            bundles
                .get_bundle(bundlepb::GetBundleRequest::default())
                .await
                .unwrap()
                .into_inner()
        }
    };

    let state = la
        .get_x509_authority_state(lapb::GetX509AuthorityStateRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = state.active.expect("active authority");
    assert!(state.prepared.is_none() && state.old.is_none());
    assert_eq!(first.authority_id.len(), 40, "{}", first.authority_id);
    assert!(
        first
            .authority_id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert!(first.expires_at > 0);
    assert!(first.upstream_authority_subject_key_id.is_empty());
    let first_der = get_bundle().await.x509_authorities[0].asn1.clone();

    let err = la
        .taint_x509_authority(lapb::TaintX509AuthorityRequest {
            authority_id: first.authority_id.clone(),
        })
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::InvalidArgument,
        "unable to taint current local authority",
    );
    let err = la
        .activate_x509_authority(lapb::ActivateX509AuthorityRequest {
            authority_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "no authority ID provided");

    let prepared = la
        .prepare_x509_authority(lapb::PrepareX509AuthorityRequest {})
        .await
        .unwrap()
        .into_inner()
        .prepared_authority
        .unwrap();
    assert_ne!(prepared.authority_id, first.authority_id);
    assert_eq!(get_bundle().await.x509_authorities.len(), 2, "published");
    let state = la
        .get_x509_authority_state(lapb::GetX509AuthorityStateRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.prepared.as_ref(), Some(&prepared));

    let err = la
        .activate_x509_authority(lapb::ActivateX509AuthorityRequest {
            authority_id: "abcdef".into(),
        })
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "unexpected authority ID");
    let err = la
        .taint_x509_authority(lapb::TaintX509AuthorityRequest {
            authority_id: prepared.authority_id.clone(),
        })
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::InvalidArgument,
        "only Old local authorities can be tainted: unsupported local authority status: PREPARED",
    );

    let activated = la
        .activate_x509_authority(lapb::ActivateX509AuthorityRequest {
            authority_id: prepared.authority_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .activated_authority
        .unwrap();
    assert_eq!(activated, prepared);
    let state = la
        .get_x509_authority_state(lapb::GetX509AuthorityStateRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.active.as_ref(), Some(&prepared));
    assert_eq!(state.old.as_ref(), Some(&first));
    let err = la
        .activate_x509_authority(lapb::ActivateX509AuthorityRequest {
            authority_id: first.authority_id.clone(),
        })
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::Internal,
        "only Prepared authorities can be activated: unsupported local authority status: OLD",
    );

    let err = la
        .revoke_x509_authority(lapb::RevokeX509AuthorityRequest {
            authority_id: prepared.authority_id.clone(),
        })
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::InvalidArgument,
        "invalid authority ID: unable to use current authority",
    );
    let err = la
        .revoke_x509_authority(lapb::RevokeX509AuthorityRequest {
            authority_id: first.authority_id.clone(),
        })
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::Internal,
        "failed to revoke X.509 authority: it is not possible to revoke an untainted root CA",
    );

    let seq = get_bundle().await.sequence_number;
    let tainted = la
        .taint_x509_authority(lapb::TaintX509AuthorityRequest {
            authority_id: first.authority_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tainted_authority
        .unwrap();
    assert_eq!(tainted, first);
    let b = get_bundle().await;
    assert_eq!(b.sequence_number, seq + 1);
    for a in &b.x509_authorities {
        assert_eq!(a.tainted, a.asn1 == first_der, "only the old CA is tainted");
    }
    let err = la
        .taint_x509_authority(lapb::TaintX509AuthorityRequest {
            authority_id: first.authority_id.clone(),
        })
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::Internal,
        "failed to taint X.509 authority: root CA is already tainted",
    );

    let revoked = la
        .revoke_x509_authority(lapb::RevokeX509AuthorityRequest {
            authority_id: first.authority_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .revoked_authority
        .unwrap();
    assert_eq!(revoked.authority_id, first.authority_id);
    let b = get_bundle().await;
    assert_eq!(b.x509_authorities.len(), 1);
    assert_ne!(b.x509_authorities[0].asn1, first_der);
    assert!(!b.x509_authorities[0].tainted);

    // Without an UpstreamAuthority, SPIRE's precondition error; WIT-SVIDs do
    // not exist in sigil yet.
    let err = la
        .taint_x509_upstream_authority(lapb::TaintX509UpstreamAuthorityRequest {
            subject_key_id: first.authority_id.clone(),
        })
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::FailedPrecondition,
        "upstream authority is not configured",
    );
    let err = la
        .revoke_x509_upstream_authority(lapb::RevokeX509UpstreamAuthorityRequest {
            subject_key_id: first.authority_id.clone(),
        })
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::FailedPrecondition,
        "upstream authority is not configured",
    );
    let err = la
        .get_wit_authority_state(lapb::GetWitAuthorityStateRequest {})
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::Unimplemented,
        "WIT-SVIDs are not supported by sigil yet",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_authority_prepare_activate_taint_revoke() {
    let server = start("sglajwt").await;
    let mut la = LocalAuthorityClient::new(server.admin.clone());
    let bundles = BundleClient::new(server.admin.clone());
    let get_bundle = || {
        let mut bundles = bundles.clone();
        async move {
            bundles
                .get_bundle(bundlepb::GetBundleRequest::default())
                .await
                .unwrap()
                .into_inner()
        }
    };
    let first = la
        .get_jwt_authority_state(lapb::GetJwtAuthorityStateRequest {})
        .await
        .unwrap()
        .into_inner()
        .active
        .unwrap();
    assert_eq!(
        get_bundle().await.jwt_authorities[0].key_id,
        first.authority_id
    );

    let prepared = la
        .prepare_jwt_authority(lapb::PrepareJwtAuthorityRequest {})
        .await
        .unwrap()
        .into_inner()
        .prepared_authority
        .unwrap();
    let kids: Vec<String> = get_bundle()
        .await
        .jwt_authorities
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(
        kids,
        [first.authority_id.clone(), prepared.authority_id.clone()]
    );

    for (id, msg) in [
        (
            String::new(),
            "invalid authority ID: no authority ID provided",
        ),
        (
            prepared.authority_id.clone(),
            "invalid authority ID: unable to use a prepared key",
        ),
        (
            first.authority_id.clone(),
            "invalid authority ID: unable to use current authority",
        ),
        (
            "unknown".to_owned(),
            "invalid authority ID: no JWT authority found with provided authority ID",
        ),
    ] {
        let err = la
            .revoke_jwt_authority(lapb::RevokeJwtAuthorityRequest { authority_id: id })
            .await
            .unwrap_err();
        assert_status(err, Code::InvalidArgument, msg);
    }

    la.activate_jwt_authority(lapb::ActivateJwtAuthorityRequest {
        authority_id: prepared.authority_id.clone(),
    })
    .await
    .unwrap();
    let state = la
        .get_jwt_authority_state(lapb::GetJwtAuthorityStateRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.active.unwrap().authority_id, prepared.authority_id);
    assert_eq!(state.old.unwrap().authority_id, first.authority_id);

    let err = la
        .revoke_jwt_authority(lapb::RevokeJwtAuthorityRequest {
            authority_id: first.authority_id.clone(),
        })
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::Internal,
        "failed to revoke JWT authority: it is not possible to revoke an untainted key",
    );
    let tainted = la
        .taint_jwt_authority(lapb::TaintJwtAuthorityRequest {
            authority_id: first.authority_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tainted_authority
        .unwrap();
    assert_eq!(tainted.authority_id, first.authority_id);
    let b = get_bundle().await;
    for k in &b.jwt_authorities {
        assert_eq!(k.tainted, k.key_id == first.authority_id);
    }
    let err = la
        .taint_jwt_authority(lapb::TaintJwtAuthorityRequest {
            authority_id: first.authority_id.clone(),
        })
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::Internal,
        "failed to taint JWT authority: key is already tainted",
    );
    la.revoke_jwt_authority(lapb::RevokeJwtAuthorityRequest {
        authority_id: first.authority_id.clone(),
    })
    .await
    .unwrap();
    let kids: Vec<String> = get_bundle()
        .await
        .jwt_authorities
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(kids, [prepared.authority_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_info_and_logger_levels_on_the_admin_socket() {
    sigil_cli::init_logging("WARN", "text");
    let server = start("sgdbg").await;
    let agents = agent_channel(&server).await;
    drop(agents);
    entrypb::entry_client::EntryClient::new(server.admin.clone())
        .batch_create_entry(entrypb::BatchCreateEntryRequest {
            entries: vec![entry_federated_with("/w", &[])],
            output_mask: None,
        })
        .await
        .unwrap();
    BundleClient::new(server.admin.clone())
        .batch_set_federated_bundle(bundlepb::BatchSetFederatedBundleRequest {
            bundle: vec![federated("other.org")],
            output_mask: None,
        })
        .await
        .unwrap();

    let info = debugpb::debug_client::DebugClient::new(server.admin.clone())
        .get_info(debugpb::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.agents_count, 1);
    assert_eq!(info.entries_count, 1);
    assert_eq!(info.federated_bundles_count, 2, "SPIRE counts every bundle");
    assert!(info.uptime >= 0);
    assert_eq!(info.svid_chain.len(), 2, "{:?}", info.svid_chain);
    let leaf = &info.svid_chain[0];
    assert_eq!(
        leaf.id,
        Some(types::Spiffeid {
            trust_domain: "example.org".into(),
            path: "/spire/server".into(),
        })
    );
    let root = &info.svid_chain[1];
    assert_eq!(
        root.id,
        Some(types::Spiffeid {
            trust_domain: "example.org".into(),
            path: String::new(),
        })
    );
    assert_eq!(root.subject, "O=SPIFFE,C=US");
    assert!(root.expires_at >= leaf.expires_at && leaf.expires_at > 0);

    let mut logger = loggerpb::logger_client::LoggerClient::new(server.admin.clone());
    let l = logger
        .get_logger(loggerpb::GetLoggerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.launch_level, types::LogLevel::Warn as i32);
    assert_eq!(l.current_level, types::LogLevel::Warn as i32);
    let l = logger
        .set_log_level(loggerpb::SetLogLevelRequest {
            new_level: types::LogLevel::Debug as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.current_level, types::LogLevel::Debug as i32);
    assert_eq!(l.launch_level, types::LogLevel::Warn as i32);
    let err = logger
        .set_log_level(loggerpb::SetLogLevelRequest { new_level: 0 })
        .await
        .unwrap_err();
    assert_status(
        err,
        Code::InvalidArgument,
        "newLevel value cannot be LogLevel_UNSPECIFIED",
    );
    let err = logger
        .set_log_level(loggerpb::SetLogLevelRequest { new_level: 99 })
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "unsupported log level");
    let l = logger
        .reset_log_level(loggerpb::ResetLogLevelRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.current_level, types::LogLevel::Warn as i32);
}
