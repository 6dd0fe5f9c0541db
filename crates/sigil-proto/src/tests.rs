//! Wire-level checks: field numbers are what SPIFFE/SPIRE clients expect, and
//! the descriptor set exposes exactly upstream's services and methods.
//!
//! Expected bytes are built by hand from field numbers, independently of the
//! generated code, so a wrong number in a `.proto` file fails here.

use std::collections::BTreeMap;
use std::fmt::Debug;

use prost::Message;

use crate::spire::agent::debug::v1 as agent_debug;
use crate::spire::api::agent::{delegatedidentity::v1 as delegated, logger::v1 as agent_logger};
use crate::spire::api::server::{
    agent::v1 as agent, bundle::v1 as bundle, debug::v1 as server_debug, entry::v1 as entry,
    localauthority::v1 as localauthority, logger::v1 as server_logger, svid::v1 as svid,
    trustdomain::v1 as trustdomain,
};
use crate::spire::api::types;
use crate::workload;

const VARINT: u64 = 0;
const LEN: u64 = 2;

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return out;
        }
        out.push(low | 0x80);
    }
}

/// A varint field: key then value.
fn vi(field: u64, value: u64) -> Vec<u8> {
    [varint((field << 3) | VARINT), varint(value)].concat()
}

/// A length-delimited field (string, bytes, message, map entry).
fn ld(field: u64, payload: &[u8]) -> Vec<u8> {
    [
        varint((field << 3) | LEN),
        varint(payload.len() as u64),
        payload.to_vec(),
    ]
    .concat()
}

/// Encodes `msg`, compares with `expected` byte for byte, and decodes back.
fn assert_wire<M: Message + Default + PartialEq + Debug>(msg: M, expected: Vec<u8>) {
    let bytes = msg.encode_to_vec();
    assert_eq!(bytes, expected, "wire bytes of {msg:?}");
    let decoded = M::decode(bytes.as_slice()).expect("bytes we just encoded decode");
    assert_eq!(decoded, msg);
}

fn spiffe_id(td: &str, path: &str) -> types::Spiffeid {
    types::Spiffeid {
        trust_domain: td.into(),
        path: path.into(),
    }
}

fn spiffe_id_bytes(td: &str, path: &str) -> Vec<u8> {
    [ld(1, td.as_bytes()), ld(2, path.as_bytes())].concat()
}

#[test]
fn workload_x509_svid_puts_spiffe_id_at_1_key_at_3_hint_at_5() {
    assert_wire(
        workload::X509svid {
            spiffe_id: "spiffe://td/w".into(),
            x509_svid_key: vec![0xaa],
            hint: "internal".into(),
            ..Default::default()
        },
        [ld(1, b"spiffe://td/w"), ld(3, &[0xaa]), ld(5, b"internal")].concat(),
    );
}

#[test]
fn workload_x509_svid_response_has_crl_2_and_federated_bundle_map_3() {
    assert_wire(
        workload::X509svidResponse {
            svids: vec![workload::X509svid {
                x509_svid: vec![1],
                bundle: vec![2],
                ..Default::default()
            }],
            crl: vec![vec![7]],
            federated_bundles: [("spiffe://other".to_string(), vec![9])].into(),
        },
        [
            ld(1, &[ld(2, &[1]), ld(4, &[2])].concat()),
            ld(2, &[7]),
            ld(3, &[ld(1, b"spiffe://other"), ld(2, &[9])].concat()),
        ]
        .concat(),
    );
}

#[test]
fn workload_jwt_messages_put_audience_at_1_and_claims_struct_at_2() {
    assert_wire(
        workload::JwtsvidRequest {
            audience: vec!["a1".into(), "a2".into()],
            spiffe_id: "spiffe://td/w".into(),
        },
        [ld(1, b"a1"), ld(1, b"a2"), ld(2, b"spiffe://td/w")].concat(),
    );
    assert_wire(
        workload::Jwtsvid {
            spiffe_id: "spiffe://td/w".into(),
            svid: "h.p.s".into(),
            hint: "ext".into(),
        },
        [ld(1, b"spiffe://td/w"), ld(2, b"h.p.s"), ld(3, b"ext")].concat(),
    );
    let claims = prost_types::Struct {
        fields: BTreeMap::from([(
            "sub".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("x".into())),
            },
        )]),
    };
    // Struct.fields is map field 1; Value.string_value is field 3.
    assert_wire(
        workload::ValidateJwtsvidResponse {
            spiffe_id: "spiffe://td/w".into(),
            claims: Some(claims),
        },
        [
            ld(1, b"spiffe://td/w"),
            ld(2, &ld(1, &[ld(1, b"sub"), ld(2, &ld(3, b"x"))].concat())),
        ]
        .concat(),
    );
    assert_wire(
        workload::ValidateJwtsvidRequest {
            audience: "aud".into(),
            svid: "tok".into(),
        },
        [ld(1, b"aud"), ld(2, b"tok")].concat(),
    );
}

#[test]
fn workload_wit_svid_key_is_field_3_and_wit_bundles_are_strings() {
    assert_wire(
        workload::Witsvid {
            spiffe_id: "spiffe://td/w".into(),
            wit_svid: "tok".into(),
            wit_svid_key: "{}".into(),
            hint: "h".into(),
        },
        [
            ld(1, b"spiffe://td/w"),
            ld(2, b"tok"),
            ld(3, b"{}"),
            ld(4, b"h"),
        ]
        .concat(),
    );
    assert_wire(
        workload::WitBundlesResponse {
            bundles: [("spiffe://td".to_string(), "{\"keys\":[]}".to_string())].into(),
        },
        ld(
            1,
            &[ld(1, b"spiffe://td"), ld(2, b"{\"keys\":[]}")].concat(),
        ),
    );
}

#[test]
fn types_spiffeid_selector_attestation_jointoken_field_numbers() {
    assert_wire(spiffe_id("td", "/p"), spiffe_id_bytes("td", "/p"));
    assert_wire(
        types::Selector {
            r#type: "unix".into(),
            value: "uid:0".into(),
        },
        [ld(1, b"unix"), ld(2, b"uid:0")].concat(),
    );
    assert_wire(
        types::SelectorMatch {
            selectors: vec![],
            r#match: types::selector_match::MatchBehavior::MatchAny as i32,
        },
        vi(2, 3),
    );
    assert_wire(
        types::AttestationData {
            r#type: "join_token".into(),
            payload: vec![5],
        },
        [ld(1, b"join_token"), ld(2, &[5])].concat(),
    );
    assert_wire(
        types::JoinToken {
            value: "t".into(),
            expires_at: 300,
        },
        [ld(1, b"t"), vi(2, 300)].concat(),
    );
}

#[test]
fn types_agent_and_mask_field_numbers() {
    assert_wire(
        types::Agent {
            id: Some(spiffe_id("td", "/a")),
            banned: true,
            agent_version: "1.0".into(),
            ..Default::default()
        },
        [ld(1, &spiffe_id_bytes("td", "/a")), vi(6, 1), ld(8, b"1.0")].concat(),
    );
    assert_wire(
        types::AgentMask {
            attestation_type: true,
            agent_version: true,
            ..Default::default()
        },
        [vi(2, 1), vi(8, 1)].concat(),
    );
}

#[test]
fn types_bundle_and_keys_field_numbers() {
    assert_wire(
        types::Bundle {
            trust_domain: "td".into(),
            x509_authorities: vec![types::X509Certificate {
                asn1: vec![1],
                tainted: true,
            }],
            sequence_number: 9,
            wit_authorities: vec![types::WitKey {
                key_id: "k".into(),
                tainted: true,
                ..Default::default()
            }],
            ..Default::default()
        },
        [
            ld(1, b"td"),
            ld(2, &[ld(1, &[1]), vi(2, 1)].concat()),
            vi(5, 9),
            ld(6, &[ld(2, b"k"), vi(4, 1)].concat()),
        ]
        .concat(),
    );
    assert_wire(
        types::JwtKey {
            public_key: vec![4],
            key_id: "k".into(),
            expires_at: 1,
            tainted: true,
        },
        [ld(1, &[4]), ld(2, b"k"), vi(3, 1), vi(4, 1)].concat(),
    );
    assert_wire(
        types::BundleMask {
            wit_authorities: true,
            ..Default::default()
        },
        vi(6, 1),
    );
}

#[test]
fn types_entry_has_id_1_hint_14_and_additional_attributes_16() {
    assert_wire(
        types::Entry {
            id: "e1".into(),
            parent_id: Some(spiffe_id("td", "/agent")),
            x509_svid_ttl: 60,
            hint: "h".into(),
            created_at: 7,
            additional_attributes: Some(types::entry::AdditionalAttributes {
                disable_x509_svid_prefetch: false,
                jwt_svid_include_jti: true,
            }),
            ..Default::default()
        },
        [
            ld(1, b"e1"),
            ld(3, &spiffe_id_bytes("td", "/agent")),
            vi(5, 60),
            ld(14, b"h"),
            vi(15, 7),
            ld(16, &vi(2, 1)),
        ]
        .concat(),
    );
    // `optional` keeps an all-default message distinguishable from unset.
    assert_wire(
        types::Entry {
            additional_attributes: Some(types::entry::AdditionalAttributes::default()),
            ..Default::default()
        },
        ld(16, &[]),
    );
    assert_wire(
        types::EntryMask {
            jwt_svid_ttl: true,
            additional_attributes: true,
            ..Default::default()
        },
        [vi(13, 1), vi(16, 1)].concat(),
    );
}

#[test]
fn types_federation_messages_field_numbers() {
    assert_wire(
        types::FederatesWithMatch {
            trust_domains: vec!["a.org".into()],
            r#match: types::federates_with_match::MatchBehavior::MatchSuperset as i32,
        },
        [ld(1, b"a.org"), vi(2, 2)].concat(),
    );
    assert_wire(
        types::FederationRelationship {
            trust_domain: "a.org".into(),
            bundle_endpoint_url: "https://a.org/b".into(),
            bundle_endpoint_profile: Some(
                types::federation_relationship::BundleEndpointProfile::HttpsSpiffe(
                    types::HttpsspiffeProfile {
                        endpoint_spiffe_id: "spiffe://a.org/s".into(),
                    },
                ),
            ),
            trust_domain_bundle: None,
        },
        [
            ld(1, b"a.org"),
            ld(2, b"https://a.org/b"),
            ld(4, &ld(1, b"spiffe://a.org/s")),
        ]
        .concat(),
    );
    assert_wire(
        types::FederationRelationship {
            bundle_endpoint_profile: Some(
                types::federation_relationship::BundleEndpointProfile::HttpsWeb(
                    types::HttpsWebProfile {},
                ),
            ),
            ..Default::default()
        },
        ld(3, &[]),
    );
    assert_wire(
        types::FederationRelationshipMask {
            trust_domain_bundle: true,
            ..Default::default()
        },
        vi(3, 1),
    );
}

#[test]
fn types_svid_messages_field_numbers() {
    assert_wire(
        types::X509svid {
            cert_chain: vec![vec![1], vec![2]],
            id: None,
            expires_at: 5,
            hint: "h".into(),
        },
        [ld(1, &[1]), ld(1, &[2]), vi(3, 5), ld(4, b"h")].concat(),
    );
    assert_wire(
        types::Jwtsvid {
            token: "t".into(),
            id: Some(spiffe_id("td", "/w")),
            issued_at: 4,
            hint: "h".into(),
            ..Default::default()
        },
        [
            ld(1, b"t"),
            ld(2, &spiffe_id_bytes("td", "/w")),
            vi(4, 4),
            ld(5, b"h"),
        ]
        .concat(),
    );
    assert_wire(
        types::Witsvid {
            token: "t".into(),
            expires_at: 3,
            hint: "h".into(),
            ..Default::default()
        },
        [ld(1, b"t"), vi(3, 3), ld(5, b"h")].concat(),
    );
}

#[test]
fn types_status_and_logger_field_numbers_and_enum_values() {
    assert_wire(
        types::Status {
            code: 6,
            message: "exists".into(),
        },
        [vi(1, 6), ld(2, b"exists")].concat(),
    );
    assert_wire(
        types::PermissionDeniedDetails {
            reason: types::permission_denied_details::Reason::AgentMustReattest as i32,
        },
        vi(1, 5),
    );
    assert_wire(
        types::Logger {
            current_level: types::LogLevel::Debug as i32,
            launch_level: types::LogLevel::Info as i32,
        },
        [vi(1, 6), vi(2, 5)].concat(),
    );
    assert_eq!(types::LogLevel::Trace as i32, 7);
    assert_eq!(types::LogLevel::Panic.as_str_name(), "PANIC");
}

#[test]
fn server_agent_attest_oneof_uses_params_1_and_challenge_2() {
    let params = agent::attest_agent_request::Params {
        data: Some(types::AttestationData {
            r#type: "x509pop".into(),
            payload: vec![1],
        }),
        params: Some(agent::AgentX509svidParams { csr: vec![2] }),
    };
    assert_wire(
        agent::AttestAgentRequest {
            step: Some(agent::attest_agent_request::Step::Params(params)),
        },
        ld(
            1,
            &[
                ld(1, &[ld(1, b"x509pop"), ld(2, &[1])].concat()),
                ld(2, &ld(1, &[2])),
            ]
            .concat(),
        ),
    );
    assert_wire(
        agent::AttestAgentRequest {
            step: Some(agent::attest_agent_request::Step::ChallengeResponse(vec![
                3,
            ])),
        },
        ld(2, &[3]),
    );
    assert_wire(
        agent::AttestAgentResponse {
            step: Some(agent::attest_agent_response::Step::Challenge(vec![4])),
        },
        ld(2, &[4]),
    );
    assert_wire(
        agent::AttestAgentResponse {
            step: Some(agent::attest_agent_response::Step::Result(
                agent::attest_agent_response::Result {
                    svid: None,
                    reattestable: true,
                },
            )),
        },
        ld(1, &vi(2, 1)),
    );
}

#[test]
fn server_agent_requests_field_numbers() {
    assert_wire(
        agent::CreateJoinTokenRequest {
            ttl: 600,
            token: "t".into(),
            agent_id: Some(spiffe_id("td", "/n")),
        },
        [vi(1, 600), ld(2, b"t"), ld(3, &spiffe_id_bytes("td", "/n"))].concat(),
    );
    assert_wire(
        agent::PostStatusRequest {
            current_bundle_serial: 8,
            agent_version: "v".into(),
        },
        [vi(1, 8), ld(2, b"v")].concat(),
    );
    assert_wire(
        agent::ListAgentsRequest {
            filter: Some(agent::list_agents_request::Filter {
                by_banned: Some(false),
                by_expires_before: "x".into(),
                ..Default::default()
            }),
            page_size: 10,
            page_token: "p".into(),
            ..Default::default()
        },
        [
            // BoolValue(false) is present but empty.
            ld(1, &[ld(3, &[]), ld(5, b"x")].concat()),
            vi(3, 10),
            ld(4, b"p"),
        ]
        .concat(),
    );
}

#[test]
fn server_bundle_requests_field_numbers() {
    assert_wire(
        bundle::BatchDeleteFederatedBundleRequest {
            trust_domains: vec!["a.org".into()],
            mode: bundle::batch_delete_federated_bundle_request::Mode::Dissociate as i32,
        },
        [ld(1, b"a.org"), vi(2, 2)].concat(),
    );
    assert_wire(
        bundle::AppendBundleRequest {
            output_mask: Some(types::BundleMask::default()),
            wit_authorities: vec![types::WitKey::default()],
            ..Default::default()
        },
        [ld(3, &[]), ld(4, &[])].concat(),
    );
    assert_wire(
        bundle::GetFederatedBundleRequest {
            trust_domain: "a.org".into(),
            output_mask: None,
        },
        ld(1, b"a.org"),
    );
}

#[test]
fn server_entry_requests_field_numbers() {
    assert_wire(
        entry::ListEntriesRequest {
            filter: Some(entry::list_entries_request::Filter {
                by_hint: Some("h".into()),
                by_downstream: Some(true),
                ..Default::default()
            }),
            page_size: 2,
            ..Default::default()
        },
        [
            ld(1, &[ld(5, &ld(1, b"h")), ld(6, &vi(1, 1))].concat()),
            vi(3, 2),
        ]
        .concat(),
    );
    assert_wire(
        entry::SyncAuthorizedEntriesResponse {
            entry_revisions: vec![entry::EntryRevision {
                id: "e".into(),
                revision_number: 3,
                created_at: 4,
            }],
            entries: vec![],
            more: true,
        },
        [ld(1, &[ld(1, b"e"), vi(2, 3), vi(3, 4)].concat()), vi(3, 1)].concat(),
    );
    assert_wire(
        entry::SyncAuthorizedEntriesRequest {
            output_mask: None,
            ids: vec!["a".into()],
        },
        ld(2, b"a"),
    );
}

#[test]
fn server_svid_requests_field_numbers() {
    assert_wire(
        svid::MintX509svidRequest {
            csr: vec![1],
            ttl: 60,
        },
        [ld(1, &[1]), vi(2, 60)].concat(),
    );
    assert_wire(
        svid::NewWitsvidParams {
            entry_id: "e".into(),
            public_key: vec![2],
            signing_algorithm: "ES256".into(),
        },
        [ld(1, b"e"), ld(2, &[2]), ld(3, b"ES256")].concat(),
    );
    assert_wire(
        svid::MintWitsvidRequest {
            ttl: 5,
            signing_algorithm: "ES256".into(),
            ..Default::default()
        },
        [vi(3, 5), ld(4, b"ES256")].concat(),
    );
    assert_wire(
        svid::NewDownstreamX509caResponse {
            ca_cert_chain: vec![vec![1]],
            x509_authorities: vec![vec![2]],
        },
        [ld(1, &[1]), ld(2, &[2])].concat(),
    );
}

#[test]
fn server_admin_apis_field_numbers() {
    assert_wire(
        trustdomain::ListFederationRelationshipsRequest {
            output_mask: None,
            page_size: 1,
            page_token: "p".into(),
        },
        [vi(2, 1), ld(3, b"p")].concat(),
    );
    assert_wire(
        localauthority::AuthorityState {
            authority_id: "a".into(),
            expires_at: 2,
            upstream_authority_subject_key_id: "s".into(),
        },
        [ld(1, b"a"), vi(2, 2), ld(3, b"s")].concat(),
    );
    assert_wire(
        localauthority::GetX509AuthorityStateResponse {
            old: Some(localauthority::AuthorityState::default()),
            ..Default::default()
        },
        ld(3, &[]),
    );
    assert_wire(
        server_debug::GetInfoResponse {
            uptime: 3,
            entries_count: 4,
            ..Default::default()
        },
        [vi(2, 3), vi(5, 4)].concat(),
    );
    assert_wire(
        server_logger::SetLogLevelRequest {
            new_level: types::LogLevel::Trace as i32,
        },
        vi(1, 7),
    );
}

#[test]
fn agent_admin_apis_field_numbers() {
    assert_wire(
        agent_debug::GetInfoResponse {
            last_sync_success: 9,
            cached_svidstore_x509_svids_count: 2,
            ..Default::default()
        },
        [vi(4, 9), vi(7, 2)].concat(),
    );
    assert_wire(
        delegated::FetchJwtsviDsRequest {
            audience: vec!["a".into()],
            selectors: vec![],
            pid: 42,
        },
        [ld(1, b"a"), vi(3, 42)].concat(),
    );
    assert_wire(
        delegated::X509svidWithKey {
            x509_svid: None,
            x509_svid_key: vec![1],
        },
        ld(2, &[1]),
    );
    assert_wire(
        delegated::SubscribeToX509BundlesResponse {
            ca_certificates: [("td".to_string(), vec![1])].into(),
        },
        ld(1, &[ld(1, b"td"), ld(2, &[1])].concat()),
    );
    assert_wire(
        agent_logger::SetLogLevelRequest {
            new_level: types::LogLevel::Warn as i32,
        },
        vi(1, 4),
    );
}

/// Every service and method upstream defines, as
/// `Method(stream? Input) -> stream? Output`, with types relative to the
/// service's package.
const EXPECTED_SERVICES: &[(&str, &[&str])] = &[
    (
        "sigil.api.server.sync.v1.Sync",
        &["WatchChanges(WatchChangesRequest) -> stream WatchChangesResponse"],
    ),
    (
        "SpiffeWorkloadAPI",
        &[
            "FetchX509SVID(X509SVIDRequest) -> stream X509SVIDResponse",
            "FetchX509Bundles(X509BundlesRequest) -> stream X509BundlesResponse",
            "FetchJWTSVID(JWTSVIDRequest) -> JWTSVIDResponse",
            "FetchJWTBundles(JWTBundlesRequest) -> stream JWTBundlesResponse",
            "ValidateJWTSVID(ValidateJWTSVIDRequest) -> ValidateJWTSVIDResponse",
            "FetchWITSVID(WITSVIDRequest) -> stream WITSVIDResponse",
            "FetchWITBundles(WITBundlesRequest) -> stream WITBundlesResponse",
        ],
    ),
    (
        "spire.api.server.agent.v1.Agent",
        &[
            "CountAgents(CountAgentsRequest) -> CountAgentsResponse",
            "ListAgents(ListAgentsRequest) -> ListAgentsResponse",
            "GetAgent(GetAgentRequest) -> spire.api.types.Agent",
            "DeleteAgent(DeleteAgentRequest) -> google.protobuf.Empty",
            "BanAgent(BanAgentRequest) -> google.protobuf.Empty",
            "AttestAgent(stream AttestAgentRequest) -> stream AttestAgentResponse",
            "RenewAgent(RenewAgentRequest) -> RenewAgentResponse",
            "CreateJoinToken(CreateJoinTokenRequest) -> spire.api.types.JoinToken",
            "PostStatus(PostStatusRequest) -> PostStatusResponse",
        ],
    ),
    (
        "spire.api.server.bundle.v1.Bundle",
        &[
            "CountBundles(CountBundlesRequest) -> CountBundlesResponse",
            "GetBundle(GetBundleRequest) -> spire.api.types.Bundle",
            "AppendBundle(AppendBundleRequest) -> spire.api.types.Bundle",
            "PublishJWTAuthority(PublishJWTAuthorityRequest) -> PublishJWTAuthorityResponse",
            "PublishWITAuthority(PublishWITAuthorityRequest) -> PublishWITAuthorityResponse",
            "ListFederatedBundles(ListFederatedBundlesRequest) -> ListFederatedBundlesResponse",
            "GetFederatedBundle(GetFederatedBundleRequest) -> spire.api.types.Bundle",
            "BatchCreateFederatedBundle(BatchCreateFederatedBundleRequest) -> BatchCreateFederatedBundleResponse",
            "BatchUpdateFederatedBundle(BatchUpdateFederatedBundleRequest) -> BatchUpdateFederatedBundleResponse",
            "BatchSetFederatedBundle(BatchSetFederatedBundleRequest) -> BatchSetFederatedBundleResponse",
            "BatchDeleteFederatedBundle(BatchDeleteFederatedBundleRequest) -> BatchDeleteFederatedBundleResponse",
        ],
    ),
    (
        "spire.api.server.entry.v1.Entry",
        &[
            "CountEntries(CountEntriesRequest) -> CountEntriesResponse",
            "ListEntries(ListEntriesRequest) -> ListEntriesResponse",
            "GetEntry(GetEntryRequest) -> spire.api.types.Entry",
            "BatchCreateEntry(BatchCreateEntryRequest) -> BatchCreateEntryResponse",
            "BatchUpdateEntry(BatchUpdateEntryRequest) -> BatchUpdateEntryResponse",
            "BatchDeleteEntry(BatchDeleteEntryRequest) -> BatchDeleteEntryResponse",
            "GetAuthorizedEntries(GetAuthorizedEntriesRequest) -> GetAuthorizedEntriesResponse",
            "SyncAuthorizedEntries(stream SyncAuthorizedEntriesRequest) -> stream SyncAuthorizedEntriesResponse",
        ],
    ),
    (
        "spire.api.server.svid.v1.SVID",
        &[
            "MintX509SVID(MintX509SVIDRequest) -> MintX509SVIDResponse",
            "MintJWTSVID(MintJWTSVIDRequest) -> MintJWTSVIDResponse",
            "MintWITSVID(MintWITSVIDRequest) -> MintWITSVIDResponse",
            "BatchNewX509SVID(BatchNewX509SVIDRequest) -> BatchNewX509SVIDResponse",
            "NewJWTSVID(NewJWTSVIDRequest) -> NewJWTSVIDResponse",
            "BatchNewWITSVID(BatchNewWITSVIDRequest) -> BatchNewWITSVIDResponse",
            "NewDownstreamX509CA(NewDownstreamX509CARequest) -> NewDownstreamX509CAResponse",
        ],
    ),
    (
        "spire.api.server.trustdomain.v1.TrustDomain",
        &[
            "ListFederationRelationships(ListFederationRelationshipsRequest) -> ListFederationRelationshipsResponse",
            "GetFederationRelationship(GetFederationRelationshipRequest) -> spire.api.types.FederationRelationship",
            "BatchCreateFederationRelationship(BatchCreateFederationRelationshipRequest) -> BatchCreateFederationRelationshipResponse",
            "BatchUpdateFederationRelationship(BatchUpdateFederationRelationshipRequest) -> BatchUpdateFederationRelationshipResponse",
            "BatchDeleteFederationRelationship(BatchDeleteFederationRelationshipRequest) -> BatchDeleteFederationRelationshipResponse",
            "RefreshBundle(RefreshBundleRequest) -> google.protobuf.Empty",
        ],
    ),
    (
        "spire.api.server.localauthority.v1.LocalAuthority",
        &[
            "GetJWTAuthorityState(GetJWTAuthorityStateRequest) -> GetJWTAuthorityStateResponse",
            "PrepareJWTAuthority(PrepareJWTAuthorityRequest) -> PrepareJWTAuthorityResponse",
            "ActivateJWTAuthority(ActivateJWTAuthorityRequest) -> ActivateJWTAuthorityResponse",
            "TaintJWTAuthority(TaintJWTAuthorityRequest) -> TaintJWTAuthorityResponse",
            "RevokeJWTAuthority(RevokeJWTAuthorityRequest) -> RevokeJWTAuthorityResponse",
            "GetX509AuthorityState(GetX509AuthorityStateRequest) -> GetX509AuthorityStateResponse",
            "PrepareX509Authority(PrepareX509AuthorityRequest) -> PrepareX509AuthorityResponse",
            "ActivateX509Authority(ActivateX509AuthorityRequest) -> ActivateX509AuthorityResponse",
            "TaintX509Authority(TaintX509AuthorityRequest) -> TaintX509AuthorityResponse",
            "TaintX509UpstreamAuthority(TaintX509UpstreamAuthorityRequest) -> TaintX509UpstreamAuthorityResponse",
            "RevokeX509Authority(RevokeX509AuthorityRequest) -> RevokeX509AuthorityResponse",
            "RevokeX509UpstreamAuthority(RevokeX509UpstreamAuthorityRequest) -> RevokeX509UpstreamAuthorityResponse",
            "GetWITAuthorityState(GetWITAuthorityStateRequest) -> GetWITAuthorityStateResponse",
            "PrepareWITAuthority(PrepareWITAuthorityRequest) -> PrepareWITAuthorityResponse",
            "ActivateWITAuthority(ActivateWITAuthorityRequest) -> ActivateWITAuthorityResponse",
            "TaintWITAuthority(TaintWITAuthorityRequest) -> TaintWITAuthorityResponse",
            "RevokeWITAuthority(RevokeWITAuthorityRequest) -> RevokeWITAuthorityResponse",
        ],
    ),
    (
        "spire.api.server.debug.v1.Debug",
        &["GetInfo(GetInfoRequest) -> GetInfoResponse"],
    ),
    (
        "spire.api.server.logger.v1.Logger",
        &[
            "GetLogger(GetLoggerRequest) -> spire.api.types.Logger",
            "SetLogLevel(SetLogLevelRequest) -> spire.api.types.Logger",
            "ResetLogLevel(ResetLogLevelRequest) -> spire.api.types.Logger",
        ],
    ),
    (
        "spire.agent.debug.v1.Debug",
        &["GetInfo(GetInfoRequest) -> GetInfoResponse"],
    ),
    (
        "spire.api.agent.delegatedidentity.v1.DelegatedIdentity",
        &[
            "SubscribeToX509SVIDs(SubscribeToX509SVIDsRequest) -> stream SubscribeToX509SVIDsResponse",
            "SubscribeToX509Bundles(SubscribeToX509BundlesRequest) -> stream SubscribeToX509BundlesResponse",
            "FetchJWTSVIDs(FetchJWTSVIDsRequest) -> FetchJWTSVIDsResponse",
            "SubscribeToJWTBundles(SubscribeToJWTBundlesRequest) -> stream SubscribeToJWTBundlesResponse",
        ],
    ),
    (
        "spire.api.agent.logger.v1.Logger",
        &[
            "GetLogger(GetLoggerRequest) -> spire.api.types.Logger",
            "SetLogLevel(SetLogLevelRequest) -> spire.api.types.Logger",
            "ResetLogLevel(ResetLogLevelRequest) -> spire.api.types.Logger",
        ],
    ),
];

/// Renders every service in the descriptor set in the `EXPECTED_SERVICES` form.
fn services_in_descriptor_set() -> BTreeMap<String, Vec<String>> {
    let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
        .expect("build.rs wrote a valid descriptor set");
    let mut services = BTreeMap::new();
    for file in &set.file {
        let package = file.package();
        let local = |type_name: &str| {
            let type_name = type_name.trim_start_matches('.');
            match type_name.strip_prefix(package) {
                Some(rest) if !package.is_empty() => rest.trim_start_matches('.').to_string(),
                _ => type_name.to_string(),
            }
        };
        for service in &file.service {
            let full_name = if package.is_empty() {
                service.name().to_string()
            } else {
                format!("{package}.{}", service.name())
            };
            let methods = service
                .method
                .iter()
                .map(|m| {
                    let stream_in = if m.client_streaming() { "stream " } else { "" };
                    let stream_out = if m.server_streaming() { "stream " } else { "" };
                    format!(
                        "{}({stream_in}{}) -> {stream_out}{}",
                        m.name(),
                        local(m.input_type()),
                        local(m.output_type()),
                    )
                })
                .collect();
            services.insert(full_name, methods);
        }
    }
    services
}

#[test]
fn file_descriptor_set_lists_every_service_and_method() {
    let actual = services_in_descriptor_set();
    let expected: BTreeMap<String, Vec<String>> = EXPECTED_SERVICES
        .iter()
        .map(|(name, methods)| {
            (
                (*name).to_string(),
                methods.iter().map(|m| (*m).to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert_eq!(actual, expected);
}

#[test]
fn generated_service_names_match_grpc_paths_clients_use() {
    use crate::spire::api::server::agent::v1::agent_server;
    use crate::workload::spiffe_workload_api_server;

    // No package upstream, so the path is /SpiffeWorkloadAPI/FetchX509SVID.
    assert_eq!(
        spiffe_workload_api_server::SERVICE_NAME,
        "SpiffeWorkloadAPI"
    );
    assert_eq!(
        agent_server::SERVICE_NAME,
        "spire.api.server.agent.v1.Agent"
    );
    assert_eq!(
        agent_debug::debug_server::SERVICE_NAME,
        "spire.agent.debug.v1.Debug"
    );
    assert_eq!(
        crate::spire::api::agent::debug::v1::debug_server::SERVICE_NAME,
        "spire.agent.debug.v1.Debug"
    );
}
