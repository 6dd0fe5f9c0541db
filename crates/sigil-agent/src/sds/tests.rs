//! SDS behaviour: the secrets names stand for and their encoding (pure
//! functions), the stream protocol (the sans-IO state machine), and the
//! service as Envoy reaches it (a real tonic server on a temp Unix socket
//! through `UdsIncoming`, a real tonic client, a fake attestor).

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
use envoy_types::pb::envoy::config::core::v3::{BuildVersion, Node, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, SpiffeCertValidatorConfig, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message as _;
use sigil_spiffe::Bundle;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

use super::delta::DeltaState;
use super::resources::{self, WorkloadView};
use super::stream::StreamState;
use super::{SdsConfig, SdsError, SecretDiscovery};
use crate::cache::{CacheHandle, Snapshot, X509SvidRecord};
use crate::uds::UdsIncoming;
use crate::workload::testutil::{FakeAttestor, FakeMinter, TestCa, federating, selector};
use crate::workload::{WorkloadRateLimiter, WorkloadRateLimits};

const TIMEOUT: Duration = Duration::from_secs(10);
const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

struct Fixture {
    ca: TestCa,
    other: TestCa,
    web: X509SvidRecord,
    api: X509SvidRecord,
}

impl Fixture {
    fn new() -> Fixture {
        let ca = TestCa::new("example.org");
        let other = TestCa::new("other.org");
        let web = federating(ca.svid("e1", "/web", &["unix:uid:1000"]), &["other.org"]);
        let api = ca.svid("e2", "/api", &["unix:uid:1000"]);
        Fixture {
            ca,
            other,
            web,
            api,
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            bundle: Arc::new(self.ca.bundle()),
            federated_bundles: vec![Arc::new(self.other.bundle())],
            svids: vec![Arc::new(self.web.clone()), Arc::new(self.api.clone())],
            unsigned: vec![],
        }
    }

    fn view(&self) -> WorkloadView {
        WorkloadView::of(&self.snapshot(), &[selector("unix:uid:1000")])
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn envoy(major: u32, minor: u32) -> Node {
    Node {
        user_agent_version_type: Some(UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
            version: Some(SemanticVersion {
                major_number: major,
                minor_number: minor,
                patch: 0,
            }),
            metadata: None,
        })),
        ..Default::default()
    }
}

fn with_metadata(mut node: Node, value: value::Kind) -> Node {
    node.metadata = Some(Struct {
        fields: [(
            "disable_spiffe_cert_validation".to_owned(),
            Value { kind: Some(value) },
        )]
        .into_iter()
        .collect(),
    });
    node
}

fn secret_names(secrets: &[Secret]) -> Vec<&str> {
    secrets.iter().map(|s| s.name.as_str()).collect()
}

fn inline_bytes(source: Option<&envoy_types::pb::envoy::config::core::v3::DataSource>) -> &[u8] {
    match source.and_then(|s| s.specifier.as_ref()) {
        Some(data_source::Specifier::InlineBytes(b)) => b,
        other => panic!("expected inline bytes, got {other:?}"),
    }
}

fn validation_context(secret: &Secret) -> &CertificateValidationContext {
    match &secret.r#type {
        Some(secret::Type::ValidationContext(v)) => v,
        other => panic!("expected a validation context, got {other:?}"),
    }
}

/// The trust domains and their PEM bundles in a SPIFFE validator context.
fn spiffe_trust_domains(secret: &Secret) -> Vec<(String, Vec<u8>)> {
    let context = validation_context(secret);
    assert!(context.trusted_ca.is_none());
    let custom = context
        .custom_validator_config
        .as_ref()
        .expect("a custom validator");
    assert_eq!(custom.name, "envoy.tls.cert_validator.spiffe");
    let any = custom.typed_config.as_ref().expect("typed config");
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig"
    );
    SpiffeCertValidatorConfig::decode(&any.value[..])
        .expect("decodes")
        .trust_domains
        .into_iter()
        .map(|td| {
            (
                td.name.clone(),
                inline_bytes(td.trust_bundle.as_ref()).to_vec(),
            )
        })
        .collect()
}

fn pem_of(bundle: &Bundle) -> Vec<u8> {
    resources::certificates_pem(&bundle.x509_authorities)
}

// ---- resources

#[test]
fn no_names_means_every_secret_the_caller_may_have() {
    let f = Fixture::new();
    let secrets = resources::secrets(&SdsConfig::default(), &[], None, &f.view()).unwrap();
    assert_eq!(
        secret_names(&secrets),
        [
            "spiffe://example.org",
            "spiffe://other.org",
            "spiffe://example.org/web",
            "spiffe://example.org/api"
        ]
    );
    // An empty name counts as no name, as in SPIRE.
    let again = resources::secrets(&SdsConfig::default(), &names(&[""]), None, &f.view()).unwrap();
    assert_eq!(again, secrets);
}

#[test]
fn tls_certificate_is_the_svid_chain_and_pkcs8_key_in_pem() {
    let f = Fixture::new();
    let secrets = resources::secrets(
        &SdsConfig::default(),
        &names(&["spiffe://example.org/api"]),
        None,
        &f.view(),
    )
    .unwrap();
    let [secret] = &secrets[..] else {
        panic!("one secret: {secrets:?}")
    };
    let Some(secret::Type::TlsCertificate(tls)) = &secret.r#type else {
        panic!("a TLS certificate: {secret:?}")
    };
    let chain = pem::parse_many(inline_bytes(tls.certificate_chain.as_ref())).unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].tag(), "CERTIFICATE");
    assert_eq!(chain[0].contents(), &f.api.chain[0][..]);
    let key_pem = inline_bytes(tls.private_key.as_ref());
    assert!(
        !key_pem.contains(&b'\r'),
        "Go's PEM layout has LF line ends"
    );
    let key = pem::parse(key_pem).unwrap();
    assert_eq!(key.tag(), "PRIVATE KEY");
    assert_eq!(key.contents(), &f.api.key_pkcs8[..]);
}

#[test]
fn istio_names_default_and_rootca_are_the_first_svid_and_our_bundle() {
    let f = Fixture::new();
    let secrets = resources::secrets(
        &SdsConfig::default(),
        &names(&["default", "ROOTCA"]),
        Some(&envoy(1, 40)),
        &f.view(),
    )
    .unwrap();
    assert_eq!(secret_names(&secrets), ["ROOTCA", "default"]);
    assert_eq!(
        spiffe_trust_domains(&secrets[0]),
        [("example.org".to_owned(), pem_of(&f.ca.bundle()))]
    );
    let Some(secret::Type::TlsCertificate(tls)) = &secrets[1].r#type else {
        panic!("a TLS certificate")
    };
    let chain = pem::parse_many(inline_bytes(tls.certificate_chain.as_ref())).unwrap();
    assert_eq!(
        chain[0].contents(),
        &f.web.chain[0][..],
        "the first entry's SVID"
    );
}

#[test]
fn configured_default_names_replace_spire_defaults() {
    let f = Fixture::new();
    let config = SdsConfig {
        default_svid_name: "svid".into(),
        default_bundle_name: "bundle".into(),
        default_all_bundles_name: "everything".into(),
        disable_spiffe_cert_validation: false,
    };
    let secrets =
        resources::secrets(&config, &names(&["svid", "bundle"]), None, &f.view()).unwrap();
    assert_eq!(secret_names(&secrets), ["bundle", "svid"]);
    let err = resources::secrets(&config, &names(&["default"]), None, &f.view()).unwrap_err();
    assert!(matches!(err, SdsError::NotAuthorized(_)), "{err}");
    let all = resources::secrets(&config, &names(&["everything"]), None, &f.view()).unwrap();
    assert_eq!(secret_names(&all), ["everything"]);
}

#[test]
fn trust_domain_names_give_spiffe_validation_contexts_of_that_trust_domain() {
    let f = Fixture::new();
    let secrets = resources::secrets(
        &SdsConfig::default(),
        &names(&["spiffe://other.org", "spiffe://example.org"]),
        None,
        &f.view(),
    )
    .unwrap();
    assert_eq!(
        secret_names(&secrets),
        ["spiffe://example.org", "spiffe://other.org"]
    );
    assert_eq!(
        spiffe_trust_domains(&secrets[1]),
        [("other.org".to_owned(), pem_of(&f.other.bundle()))]
    );
}

#[test]
fn all_bundles_is_one_spiffe_validator_with_our_and_federated_bundles_sorted() {
    let f = Fixture::new();
    let secrets = resources::secrets(
        &SdsConfig::default(),
        &names(&["ALL"]),
        Some(&envoy(1, 40)),
        &f.view(),
    )
    .unwrap();
    assert_eq!(secret_names(&secrets), ["ALL"]);
    assert_eq!(
        spiffe_trust_domains(&secrets[0]),
        [
            ("example.org".to_owned(), pem_of(&f.ca.bundle())),
            ("other.org".to_owned(), pem_of(&f.other.bundle())),
        ]
    );
}

#[test]
fn federated_bundles_go_only_to_callers_whose_entries_federate() {
    let f = Fixture::new();
    let mut snapshot = f.snapshot();
    snapshot.svids = vec![Arc::new(f.api.clone())];
    let view = WorkloadView::of(&snapshot, &[selector("unix:uid:1000")]);
    let all = resources::secrets(&SdsConfig::default(), &names(&["ALL"]), None, &view).unwrap();
    assert_eq!(
        spiffe_trust_domains(&all[0])
            .into_iter()
            .map(|(td, _)| td)
            .collect::<Vec<_>>(),
        ["example.org"]
    );
    let err = resources::secrets(
        &SdsConfig::default(),
        &names(&["spiffe://other.org"]),
        None,
        &view,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"workload is not authorized for the requested identities ["spiffe://other.org"]"#
    );
}

#[test]
fn disabled_spiffe_validation_sends_trusted_ca_and_refuses_all_bundles() {
    let f = Fixture::new();
    let config = SdsConfig {
        disable_spiffe_cert_validation: true,
        ..SdsConfig::default()
    };
    let secrets =
        resources::secrets(&config, &names(&["spiffe://example.org"]), None, &f.view()).unwrap();
    let context = validation_context(&secrets[0]);
    assert!(context.custom_validator_config.is_none());
    assert_eq!(
        inline_bytes(context.trusted_ca.as_ref()),
        &pem_of(&f.ca.bundle())[..]
    );
    let err = resources::secrets(&config, &names(&["ALL"]), None, &f.view()).unwrap_err();
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(
        status.message(),
        r#"unable to use "SPIFFE validator" on Envoy below 1.17"#
    );
}

#[test]
fn node_metadata_and_old_envoy_versions_choose_the_validation_form() {
    let config = SdsConfig::default();
    let disabled = SdsConfig {
        disable_spiffe_cert_validation: true,
        ..SdsConfig::default()
    };
    assert!(resources::spiffe_validator(&config, None));
    assert!(resources::spiffe_validator(&config, Some(&envoy(1, 18))));
    assert!(resources::spiffe_validator(&config, Some(&envoy(2, 0))));
    assert!(!resources::spiffe_validator(&config, Some(&envoy(1, 17))));
    assert!(!resources::spiffe_validator(&disabled, Some(&envoy(1, 40))));
    let node = |kind| with_metadata(envoy(1, 40), kind);
    assert!(!resources::spiffe_validator(
        &config,
        Some(&node(value::Kind::BoolValue(true)))
    ));
    assert!(!resources::spiffe_validator(
        &config,
        Some(&node(value::Kind::StringValue("T".into())))
    ));
    assert!(resources::spiffe_validator(
        &disabled,
        Some(&node(value::Kind::StringValue("false".into())))
    ));
    // A value Go's ParseBool refuses leaves the configured setting.
    assert!(!resources::spiffe_validator(
        &disabled,
        Some(&node(value::Kind::StringValue("nope".into())))
    ));
    assert!(!resources::spiffe_validator(
        &disabled,
        Some(&node(value::Kind::NumberValue(0.0)))
    ));
}

#[test]
fn unknown_names_fail_with_invalid_argument_naming_them_sorted() {
    let f = Fixture::new();
    let err = resources::secrets(
        &SdsConfig::default(),
        &names(&[
            "spiffe://example.org/web",
            "zzz",
            "spiffe://example.org/nope",
        ]),
        None,
        &f.view(),
    )
    .unwrap_err();
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        r#"workload is not authorized for the requested identities ["spiffe://example.org/nope" "zzz"]"#
    );
}

#[test]
fn a_caller_without_identity_gets_bundles_but_no_certificate() {
    let f = Fixture::new();
    let view = WorkloadView::of(&f.snapshot(), &[selector("unix:uid:4242")]);
    let secrets =
        resources::secrets(&SdsConfig::default(), &names(&["ROOTCA"]), None, &view).unwrap();
    assert_eq!(secret_names(&secrets), ["ROOTCA"]);
    let err =
        resources::secrets(&SdsConfig::default(), &names(&["default"]), None, &view).unwrap_err();
    assert!(
        matches!(err, SdsError::NotAuthorized(ref n) if n == &["default"]),
        "{err}"
    );
}

// ---- stream state machine

fn request(names_: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        resource_names: names(names_),
        version_info: version.to_owned(),
        response_nonce: nonce.to_owned(),
        type_url: SECRET_TYPE.to_owned(),
        ..Default::default()
    }
}

fn decoded(response: &DiscoveryResponse) -> Vec<Secret> {
    response
        .resources
        .iter()
        .map(|any| {
            assert_eq!(any.type_url, SECRET_TYPE);
            Secret::decode(&any.value[..]).expect("a secret")
        })
        .collect()
}

fn rotated(f: &Fixture) -> WorkloadView {
    let mut snapshot = f.snapshot();
    snapshot.svids[0] = Arc::new(federating(
        f.ca.svid("e1", "/web", &["unix:uid:1000"]),
        &["other.org"],
    ));
    WorkloadView::of(&snapshot, &[selector("unix:uid:1000")])
}

#[test]
fn a_request_before_the_first_view_is_answered_when_it_arrives() {
    let f = Fixture::new();
    let mut state = StreamState::new(Arc::default());
    assert!(
        state
            .on_request(request(&["default"], "", ""))
            .unwrap()
            .is_none()
    );
    let response = state.on_update(f.view()).unwrap().expect("a response");
    assert_eq!(response.version_info, "1");
    assert_eq!(response.type_url, SECRET_TYPE);
    assert_eq!(response.nonce.len(), 8, "four random bytes in hex");
    assert_eq!(secret_names(&decoded(&response)), ["default"]);
}

#[test]
fn rotation_pushes_a_new_version_and_an_unchanged_view_pushes_nothing() {
    let f = Fixture::new();
    let mut state = StreamState::new(Arc::default());
    assert!(
        state.on_update(f.view()).unwrap().is_none(),
        "nothing asked yet"
    );
    let first = state
        .on_request(request(&["spiffe://example.org/web"], "", ""))
        .unwrap()
        .expect("answered");
    assert_eq!(first.version_info, "1");
    // The ACK changes nothing.
    assert!(
        state
            .on_request(request(&["spiffe://example.org/web"], "1", &first.nonce))
            .unwrap()
            .is_none()
    );
    assert!(state.on_update(f.view()).unwrap().is_none());
    let second = state.on_update(rotated(&f)).unwrap().expect("pushed");
    assert_eq!(second.version_info, "2");
    assert_ne!(second.nonce, first.nonce);
    assert_ne!(decoded(&second), decoded(&first));
}

#[test]
fn a_nack_is_not_answered_with_the_same_secrets_again() {
    let f = Fixture::new();
    let mut state = StreamState::new(Arc::default());
    state.on_update(f.view()).unwrap();
    let first = state
        .on_request(request(&["default"], "", ""))
        .unwrap()
        .expect("answered");
    let mut nack = request(&["default"], "", &first.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad secret".into(),
        details: vec![],
    });
    assert!(state.on_request(nack.clone()).unwrap().is_none(), "no loop");
    assert!(state.on_request(nack).unwrap().is_none(), "still no loop");
    // The next real change is still pushed.
    let pushed = state.on_update(rotated(&f)).unwrap().expect("pushed");
    assert_eq!(pushed.version_info, "2");
    // A NACK that changes the names is answered like any change.
    let mut nack = request(&["default", "ROOTCA"], "1", &pushed.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad secret".into(),
        details: vec![],
    });
    let answer = state.on_request(nack).unwrap().expect("answered");
    assert_eq!(answer.version_info, "2");
    assert_eq!(secret_names(&decoded(&answer)), ["ROOTCA", "default"]);
}

#[test]
fn subscription_changes_are_answered_at_the_current_version() {
    let f = Fixture::new();
    let mut state = StreamState::new(Arc::default());
    state.on_update(f.view()).unwrap();
    let first = state
        .on_request(request(&["spiffe://example.org/web"], "", ""))
        .unwrap()
        .expect("answered");
    let changed = state
        .on_request(request(&["spiffe://example.org"], "1", &first.nonce))
        .unwrap()
        .expect("answered");
    assert_eq!(changed.version_info, "1");
    assert_eq!(secret_names(&decoded(&changed)), ["spiffe://example.org"]);
    // The same set in another order is no change.
    let both = state
        .on_request(request(
            &["spiffe://example.org", "default"],
            "1",
            &changed.nonce,
        ))
        .unwrap()
        .expect("answered");
    assert!(
        state
            .on_request(request(
                &["default", "spiffe://example.org"],
                "1",
                &both.nonce
            ))
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_stale_nonce_is_ignored_even_with_new_names() {
    let f = Fixture::new();
    let mut state = StreamState::new(Arc::default());
    state.on_update(f.view()).unwrap();
    let first = state
        .on_request(request(&["default"], "", ""))
        .unwrap()
        .expect("answered");
    assert!(
        state
            .on_request(request(&["ROOTCA"], "1", "stale"))
            .unwrap()
            .is_none()
    );
    // The ignored request did not become the subscription.
    let pushed = state.on_update(rotated(&f)).unwrap().expect("pushed");
    assert_eq!(secret_names(&decoded(&pushed)), ["default"]);
    assert_ne!(pushed.nonce, first.nonce);
}

#[test]
fn the_node_of_an_earlier_request_keeps_choosing_the_validation_form() {
    let f = Fixture::new();
    let mut state = StreamState::new(Arc::default());
    state.on_update(f.view()).unwrap();
    let mut first = request(&["ROOTCA"], "", "");
    first.node = Some(envoy(1, 17));
    let answer = state.on_request(first).unwrap().expect("answered");
    let secrets = decoded(&answer);
    assert!(validation_context(&secrets[0]).trusted_ca.is_some());
    // An ACK without node, then a rotation: still the 1.17 form.
    state
        .on_request(request(&["ROOTCA"], "1", &answer.nonce))
        .unwrap();
    // Any change of the caller's view is pushed (as SPIRE pushes every
    // workload update), in the form the remembered node asks for.
    let pushed = state.on_update(rotated(&f)).unwrap().expect("pushed");
    assert_eq!(pushed.version_info, "2");
    assert!(
        validation_context(&decoded(&pushed)[0])
            .trusted_ca
            .is_some()
    );
}

#[test]
fn an_unknown_name_on_a_stream_is_an_error() {
    let f = Fixture::new();
    let mut state = StreamState::new(Arc::default());
    state.on_update(f.view()).unwrap();
    let err = state
        .on_request(request(&["spiffe://example.org/nope"], "", ""))
        .unwrap_err();
    assert!(matches!(err, SdsError::NotAuthorized(_)), "{err}");
}

// ---- the service on a Unix socket

async fn next(
    responses: &mut tonic::Streaming<DiscoveryResponse>,
) -> Result<Option<DiscoveryResponse>, tonic::Status> {
    tokio::time::timeout(TIMEOUT, responses.message())
        .await
        .expect("in time")
}

struct TestSds {
    fixture: Fixture,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    attestor: Arc<FakeAttestor>,
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl TestSds {
    async fn start(limits: WorkloadRateLimits) -> TestSds {
        let fixture = Fixture::new();
        let (snapshots, rx) = watch::channel(None);
        let attestor = FakeAttestor::with(&["unix:uid:1000"]);
        let cache = CacheHandle {
            snapshots: rx,
            jwt: Arc::new(FakeMinter {
                key: fixture.ca.jwt_key.clone(),
                entries: Default::default(),
            }),
            subscriptions: Default::default(),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("api.sock");
        let incoming = UdsIncoming::bind(&socket).expect("bind");
        let sds = SecretDiscovery::new(cache, attestor.clone(), SdsConfig::default())
            .with_rate_limiter(Arc::new(WorkloadRateLimiter::new(limits)));
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(sds.into_service())
                .serve_with_incoming(incoming)
                .await
                .expect("server");
        });
        TestSds {
            fixture,
            snapshots,
            attestor,
            _dir: dir,
            socket,
            server,
        }
    }

    fn publish(&self, snapshot: Snapshot) {
        self.snapshots.send_replace(Some(Arc::new(snapshot)));
    }

    async fn client(&self) -> SecretDiscoveryServiceClient<Channel> {
        let channel = crate::cli::workload_channel(&self.socket)
            .await
            .expect("connect");
        SecretDiscoveryServiceClient::new(channel)
    }
}

impl Drop for TestSds {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[tokio::test]
async fn fetch_secrets_needs_no_security_header_and_attests_the_caller() {
    let sds = TestSds::start(WorkloadRateLimits::default()).await;
    let mut client = sds.client().await;
    let status = client
        .fetch_secrets(request(&["default"], "", ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    sds.publish(sds.fixture.snapshot());
    let response = client
        .fetch_secrets(request(&["default", "ROOTCA"], "", ""))
        .await
        .expect("fetched")
        .into_inner();
    assert_eq!(response.version_info, "");
    assert_eq!(response.nonce, "");
    assert_eq!(response.type_url, SECRET_TYPE);
    assert_eq!(secret_names(&decoded(&response)), ["ROOTCA", "default"]);

    let status = client
        .fetch_secrets(request(&["spiffe://example.org/nope"], "", ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    *sds.attestor.fail.lock().unwrap() = true;
    let status = client
        .fetch_secrets(request(&["default"], "", ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "workload attestation failed");
}

#[tokio::test]
async fn stream_secrets_pushes_rotated_svids_and_ends_on_unknown_names() {
    let sds = TestSds::start(WorkloadRateLimits::default()).await;
    sds.publish(sds.fixture.snapshot());
    let mut client = sds.client().await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(request(&["default"], "", "")).await.unwrap();
    let mut responses = client
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .expect("opened")
        .into_inner();
    let first = next(&mut responses).await.unwrap().expect("a response");
    assert_eq!(first.version_info, "1");
    tx.send(request(&["default"], "1", &first.nonce))
        .await
        .unwrap();

    let mut snapshot = sds.fixture.snapshot();
    snapshot.svids[0] = Arc::new(sds.fixture.ca.svid("e1", "/web", &["unix:uid:1000"]));
    sds.publish(snapshot);
    let second = next(&mut responses).await.unwrap().expect("pushed");
    assert_eq!(second.version_info, "2");
    assert_ne!(decoded(&second), decoded(&first));

    tx.send(request(&["nope"], "2", &second.nonce))
        .await
        .unwrap();
    let status = next(&mut responses).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains(r#"["nope"]"#), "{status:?}");
}

#[tokio::test]
async fn delta_secrets_serves_subscribed_secrets_and_sds_calls_are_rate_limited() {
    let sds = TestSds::start(WorkloadRateLimits {
        fetch_secrets: 1,
        ..Default::default()
    })
    .await;
    sds.publish(sds.fixture.snapshot());
    let mut client = sds.client().await;
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(4);
    tx.send(delta(&["ROOTCA"], &[])).await.unwrap();
    let mut responses = client
        .delta_secrets(ReceiverStream::new(rx))
        .await
        .expect("opened")
        .into_inner();
    let first = tokio::time::timeout(TIMEOUT, responses.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("a response");
    assert_eq!(delta_names(&first), ["ROOTCA"]);

    client
        .fetch_secrets(request(&["ROOTCA"], "", ""))
        .await
        .expect("first call within the limit");
    let status = client
        .fetch_secrets(request(&["ROOTCA"], "", ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.message(),
        "rate limit exceeded for /envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets"
    );
}

// ---- the delta state machine

fn delta(subscribe: &[&str], unsubscribe: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        resource_names_subscribe: names(subscribe),
        resource_names_unsubscribe: names(unsubscribe),
        type_url: SECRET_TYPE.to_owned(),
        ..Default::default()
    }
}

fn delta_names(response: &DeltaDiscoveryResponse) -> Vec<String> {
    response.resources.iter().map(|r| r.name.clone()).collect()
}

#[test]
fn delta_sends_each_subscribed_secret_once_and_only_changed_ones_after() {
    let f = Fixture::new();
    let mut state = DeltaState::new(Arc::default());
    assert!(
        state.on_update(f.view()).unwrap().is_none(),
        "nothing subscribed"
    );

    let first = state
        .on_request(delta(&["default", "ROOTCA"], &[]))
        .unwrap()
        .expect("both secrets");
    let mut got = delta_names(&first);
    got.sort();
    assert_eq!(got, ["ROOTCA", "default"]);
    assert_eq!(first.type_url, SECRET_TYPE);
    assert!(first.resources.iter().all(|r| !r.version.is_empty()));

    // An ACK (no subscription change) and the same view send nothing.
    let ack = DeltaDiscoveryRequest {
        response_nonce: first.nonce.clone(),
        ..Default::default()
    };
    assert!(state.on_request(ack).unwrap().is_none());
    assert!(state.on_update(f.view()).unwrap().is_none());

    // A rotation sends the changed certificate only; the bundle is as held.
    let second = state.on_update(rotated(&f)).unwrap().expect("rotated");
    assert_eq!(delta_names(&second), ["default"]);
    assert_ne!(second.nonce, first.nonce);
}

#[test]
fn delta_nack_is_not_answered_and_unsubscribing_then_resubscribing_sends_again() {
    let f = Fixture::new();
    let mut state = DeltaState::new(Arc::default());
    state.on_update(f.view()).unwrap();
    state
        .on_request(delta(&["ROOTCA"], &[]))
        .unwrap()
        .expect("sent");
    let nack = DeltaDiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: 3,
            message: "bad secret".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(state.on_request(nack).unwrap().is_none(), "no resend loop");
    assert!(state.on_request(delta(&[], &["ROOTCA"])).unwrap().is_none());
    let again = state
        .on_request(delta(&["ROOTCA"], &[]))
        .unwrap()
        .expect("resent");
    assert_eq!(delta_names(&again), ["ROOTCA"]);
}

#[test]
fn delta_skips_versions_the_proxy_already_holds_and_refuses_unknown_names() {
    let f = Fixture::new();
    let mut fresh = DeltaState::new(Arc::default());
    fresh.on_update(f.view()).unwrap();
    let sent = fresh
        .on_request(delta(&["ROOTCA"], &[]))
        .unwrap()
        .expect("sent");
    let version = sent.resources[0].version.clone();

    // A reconnecting proxy that still holds that version gets nothing.
    let mut state = DeltaState::new(Arc::default());
    state.on_update(f.view()).unwrap();
    let mut reconnect = delta(&["ROOTCA"], &[]);
    reconnect
        .initial_resource_versions
        .insert("ROOTCA".into(), version);
    assert!(state.on_request(reconnect).unwrap().is_none());

    let err = state.on_request(delta(&["nope"], &[])).unwrap_err();
    assert!(
        matches!(err, SdsError::NotAuthorized(ref n) if n == &["nope"]),
        "{err}"
    );
}
