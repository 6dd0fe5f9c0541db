//! `federation create|list|show|update|delete|refresh`: dynamic federation
//! relationships, through `spire.api.server.trustdomain.v1`.
//!
//! Flags, the `-data` JSON format, validation order, error texts and the
//! printed layout are SPIRE's, so `spire-server federation ...` scripts work
//! unchanged.

use std::io::Read as _;

use serde_json::{Map, Value};
use sigil_proto::spire::api::server::trustdomain::v1::{
    BatchCreateFederationRelationshipRequest, BatchDeleteFederationRelationshipRequest,
    BatchDeleteFederationRelationshipResponse, BatchUpdateFederationRelationshipRequest,
    GetFederationRelationshipRequest, ListFederationRelationshipsRequest,
    ListFederationRelationshipsResponse, RefreshBundleRequest,
    trust_domain_client::TrustDomainClient,
};
use sigil_proto::spire::api::types::federation_relationship::BundleEndpointProfile;
use sigil_proto::spire::api::types::{
    Bundle, FederationRelationship, HttpsWebProfile, HttpsspiffeProfile, JwtKey, Status,
    X509Certificate,
};
use sigil_spiffe::{IdError, SpiffeId, TrustDomain};
use tonic::Code;

use super::bundle::{FORMAT_PEM, FORMAT_SPIFFE};
use super::rpc::{connect, status_in};
use super::{CliError, ConnArgs, Outcome, OutputFormat, fmt, json, parse_output_format};

/// `-bundleEndpointProfile https_web`.
pub const PROFILE_HTTPS_WEB: &str = "https_web";
/// `-bundleEndpointProfile https_spiffe`.
pub const PROFILE_HTTPS_SPIFFE: &str = "https_spiffe";

/// `federation` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum FederationCommand {
    /// Creates a dynamic federation relationship with a foreign trust domain
    Create(FederationWriteArgs),
    /// Lists all dynamic federation relationships
    List(FederationListArgs),
    /// Shows a dynamic federation relationship
    Show(FederationShowArgs),
    /// Updates a dynamic federation relationship with a foreign trust domain
    Update(FederationWriteArgs),
    /// Deletes a dynamic federation relationship
    Delete(FederationIdArgs),
    /// Refreshes the bundle from the specified federated trust domain
    Refresh(FederationIdArgs),
}

/// Flags of `federation create` and `federation update`.
#[derive(clap::Args, Debug, Clone)]
pub struct FederationWriteArgs {
    /// Path to a file containing federation relationships in JSON format
    /// (optional). If set to '-', read the JSON from stdin.
    #[arg(long = "data", default_value = "", hide_default_value = true)]
    pub data: String,
    /// Name of the trust domain to federate with (e.g., example.org)
    #[arg(long = "trustDomain", default_value = "", hide_default_value = true)]
    pub trust_domain: String,
    /// URL of the SPIFFE bundle endpoint that provides the trust bundle (must
    /// use the HTTPS protocol)
    #[arg(
        long = "bundleEndpointURL",
        default_value = "",
        hide_default_value = true
    )]
    pub bundle_endpoint_url: String,
    /// Endpoint profile type (either "https_web" or "https_spiffe")
    #[arg(
        long = "bundleEndpointProfile",
        default_value = "",
        hide_default_value = true
    )]
    pub bundle_endpoint_profile: String,
    /// SPIFFE ID of the SPIFFE bundle endpoint server. Only used for 'spiffe'
    /// profile.
    #[arg(
        long = "endpointSpiffeID",
        default_value = "",
        hide_default_value = true
    )]
    pub endpoint_spiffe_id: String,
    /// Path to the trust domain bundle data (optional).
    #[arg(
        long = "trustDomainBundlePath",
        default_value = "",
        hide_default_value = true
    )]
    pub trust_domain_bundle_path: String,
    /// The format of the bundle data (optional). Either "pem" or "spiffe".
    #[arg(long = "trustDomainBundleFormat", default_value = FORMAT_PEM)]
    pub trust_domain_bundle_format: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

impl Default for FederationWriteArgs {
    fn default() -> Self {
        FederationWriteArgs {
            data: String::new(),
            trust_domain: String::new(),
            bundle_endpoint_url: String::new(),
            bundle_endpoint_profile: String::new(),
            endpoint_spiffe_id: String::new(),
            trust_domain_bundle_path: String::new(),
            trust_domain_bundle_format: FORMAT_PEM.to_owned(),
            conn: ConnArgs::default(),
            output: OutputFormat::Pretty,
        }
    }
}

/// Flags of `federation list`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FederationListArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Flags of `federation show`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FederationShowArgs {
    /// The trust domain name of the federation relationship to show
    #[arg(long = "trustDomain", default_value = "", hide_default_value = true)]
    pub trust_domain: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Flags of `federation delete` and `federation refresh`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FederationIdArgs {
    /// SPIFFE ID of the trust domain
    #[arg(long = "id", default_value = "", hide_default_value = true)]
    pub id: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Which batch response is being printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Create,
    Update,
}

pub(crate) async fn run(cmd: FederationCommand) -> Result<Outcome, CliError> {
    match cmd {
        FederationCommand::Create(args) => {
            let requested = relationships_from_args(&args)?;
            const CONTEXT: &str = "request failed";
            let mut client = TrustDomainClient::new(connect(&args.conn, Some(CONTEXT)).await?);
            let resp = client
                .batch_create_federation_relationship(BatchCreateFederationRelationshipRequest {
                    federation_relationships: requested.clone(),
                    output_mask: None,
                })
                .await
                .map_err(status_in(Some(CONTEXT)))?
                .into_inner();
            let results = resp
                .results
                .into_iter()
                .map(|r| (r.status, r.federation_relationship));
            Ok(render_batch(Verb::Create, results, &requested, args.output))
        }
        FederationCommand::Update(args) => {
            let requested = relationships_from_args(&args)?;
            const CONTEXT: &str = "request failed";
            let mut client = TrustDomainClient::new(connect(&args.conn, Some(CONTEXT)).await?);
            let resp = client
                .batch_update_federation_relationship(BatchUpdateFederationRelationshipRequest {
                    federation_relationships: requested.clone(),
                    input_mask: None,
                    output_mask: None,
                })
                .await
                .map_err(status_in(Some(CONTEXT)))?
                .into_inner();
            let results = resp
                .results
                .into_iter()
                .map(|r| (r.status, r.federation_relationship));
            Ok(render_batch(Verb::Update, results, &requested, args.output))
        }
        FederationCommand::List(args) => {
            const CONTEXT: &str = "error listing federation relationship";
            let mut client = TrustDomainClient::new(connect(&args.conn, Some(CONTEXT)).await?);
            let resp = client
                .list_federation_relationships(ListFederationRelationshipsRequest::default())
                .await
                .map_err(status_in(Some(CONTEXT)))?
                .into_inner();
            Ok(render_list(&resp, args.output))
        }
        FederationCommand::Show(args) => {
            if args.trust_domain.is_empty() {
                return Err(CliError::Invalid("a trust domain name is required".into()));
            }
            const CONTEXT: &str = "error showing federation relationship";
            let mut client = TrustDomainClient::new(connect(&args.conn, Some(CONTEXT)).await?);
            let rel = client
                .get_federation_relationship(GetFederationRelationshipRequest {
                    trust_domain: args.trust_domain.clone(),
                    output_mask: None,
                })
                .await
                .map_err(status_in(Some(CONTEXT)))?
                .into_inner();
            Ok(render_show(&args.trust_domain, &rel, args.output))
        }
        FederationCommand::Delete(args) => {
            if args.id.is_empty() {
                return Err(CliError::Invalid("id is required".into()));
            }
            const CONTEXT: &str = "failed to delete federation relationship";
            let mut client = TrustDomainClient::new(connect(&args.conn, Some(CONTEXT)).await?);
            let resp = client
                .batch_delete_federation_relationship(BatchDeleteFederationRelationshipRequest {
                    trust_domains: vec![args.id.clone()],
                })
                .await
                .map_err(status_in(Some(CONTEXT)))?
                .into_inner();
            render_delete(&resp, args.output)
        }
        FederationCommand::Refresh(args) => {
            if args.id.is_empty() {
                return Err(CliError::Invalid("id is required".into()));
            }
            const CONTEXT: &str = "failed to refresh bundle";
            let mut client = TrustDomainClient::new(connect(&args.conn, Some(CONTEXT)).await?);
            let result = client
                .refresh_bundle(RefreshBundleRequest {
                    trust_domain: args.id.clone(),
                })
                .await;
            render_refresh(&args.id, result.map(|_| ()), args.output)
        }
    }
}

/// SPIRE's `federationRelationshipConfig`: one relationship as the flags or
/// one item of a `-data` file describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RelationshipConfig {
    pub(crate) trust_domain: String,
    pub(crate) bundle_endpoint_url: String,
    pub(crate) bundle_endpoint_profile: String,
    pub(crate) endpoint_spiffe_id: String,
    /// The bundle embedded in a `-data` item (raw JSON), if any.
    pub(crate) trust_domain_bundle: Option<Value>,
    pub(crate) trust_domain_bundle_format: String,
    /// Only from `-trustDomainBundlePath`.
    pub(crate) trust_domain_bundle_path: String,
}

impl RelationshipConfig {
    fn from_flags(args: &FederationWriteArgs) -> Self {
        RelationshipConfig {
            trust_domain: args.trust_domain.clone(),
            bundle_endpoint_url: args.bundle_endpoint_url.clone(),
            bundle_endpoint_profile: args.bundle_endpoint_profile.clone(),
            endpoint_spiffe_id: args.endpoint_spiffe_id.clone(),
            trust_domain_bundle: None,
            trust_domain_bundle_format: args.trust_domain_bundle_format.clone(),
            trust_domain_bundle_path: args.trust_domain_bundle_path.clone(),
        }
    }

    /// No relationship field was set on the command line (the format at its
    /// default).
    fn is_empty(&self) -> bool {
        self.bundle_endpoint_profile.is_empty()
            && self.bundle_endpoint_url.is_empty()
            && self.trust_domain_bundle_format == FORMAT_PEM
            && self.trust_domain_bundle_path.is_empty()
            && self.endpoint_spiffe_id.is_empty()
            && self.trust_domain.is_empty()
    }
}

/// The relationships `create`/`update` send: from the `-data` file, or the
/// one the flags describe (SPIRE's `getRelationships`).
pub(crate) fn relationships_from_args(
    args: &FederationWriteArgs,
) -> Result<Vec<FederationRelationship>, CliError> {
    let config = RelationshipConfig::from_flags(args);
    if !args.data.is_empty() {
        if !config.is_empty() {
            return Err(CliError::Invalid(
                "cannot use other flags to specify relationship fields when 'data' flag is set"
                    .into(),
            ));
        }
        let data = read_input(&args.data)?;
        return parse_relationships_json(&data).map_err(|e| CliError::Invalid(e.to_string()));
    }
    Ok(vec![
        config_to_proto(&config).map_err(|e| CliError::Invalid(e.to_string()))?,
    ])
}

/// Reads a `-data` document (`{"federationRelationships": [...]}`) as Go's
/// `encoding/json` would (keys match case-insensitively) and converts each
/// item.
pub(crate) fn parse_relationships_json(
    data: &[u8],
) -> Result<Vec<FederationRelationship>, RelationshipsDataError> {
    let doc: Value = serde_json::from_slice(data).map_err(RelationshipsDataError::Json)?;
    let items = match &doc {
        Value::Null => return Ok(Vec::new()),
        Value::Object(o) => match field(o, "federationRelationships") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(RelationshipsDataError::ListNotArray(json_kind(other))),
        },
        other => return Err(RelationshipsDataError::NotObject(json_kind(other))),
    };
    let configs = items
        .iter()
        .map(config_from_json)
        .collect::<Result<Vec<_>, _>>()
        .map_err(RelationshipsDataError::Item)?;
    configs
        .iter()
        .enumerate()
        .map(|(index, c)| {
            config_to_proto(c).map_err(|source| RelationshipsDataError::Config { index, source })
        })
        .collect()
}

/// Why a `-data` relationships document cannot be used; the texts are
/// SPIRE's (Go's `encoding/json` ones inside).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelationshipsDataError {
    /// Not JSON.
    #[error("failed to parse JSON: {0}")]
    Json(serde_json::Error),
    /// `federationRelationships` is not an array; the JSON kind found.
    #[error(
        "failed to parse JSON: json: cannot unmarshal {0} into Go struct field \
         federationRelationships.federationRelationships of type \
         []*federation.federationRelationshipConfig"
    )]
    ListNotArray(&'static str),
    /// The document is not an object; the JSON kind found.
    #[error(
        "failed to parse JSON: json: cannot unmarshal {0} into Go value of type \
         federation.federationRelationships"
    )]
    NotObject(&'static str),
    /// An item has the wrong JSON shape.
    #[error("failed to parse JSON: {0}")]
    Item(#[source] JsonShapeError),
    /// An item's fields are not a valid relationship.
    #[error("could not parse item {index}: {source}")]
    Config {
        /// Position in the list.
        index: usize,
        /// What is wrong with it.
        source: RelationshipConfigError,
    },
}

/// A `-data` item or field of another JSON kind than Go expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JsonShapeError {
    /// The item is not an object; the JSON kind found.
    #[error(
        "json: cannot unmarshal {0} into Go struct field \
         federationRelationships.federationRelationships of type \
         federation.federationRelationshipConfig"
    )]
    ItemNotObject(&'static str),
    /// A field that must be a string is not.
    #[error(
        "json: cannot unmarshal {kind} into Go struct field \
         federationRelationshipConfig.federationRelationships.{name} of type string"
    )]
    FieldNotString {
        /// The JSON kind found.
        kind: &'static str,
        /// The field.
        name: String,
    },
}

/// Why a relationship's fields (flags or a `-data` item) are not valid
/// (SPIRE's texts).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelationshipConfigError {
    /// No trust domain.
    #[error("trust domain is required")]
    MissingTrustDomain,
    /// No bundle endpoint URL.
    #[error("bundle endpoint URL is required")]
    MissingEndpointUrl,
    /// https_spiffe without an endpoint SPIFFE ID.
    #[error("endpoint SPIFFE ID is required if 'https_spiffe' endpoint profile is set")]
    MissingEndpointSpiffeId,
    /// The endpoint SPIFFE ID does not parse.
    #[error("cannot parse bundle endpoint SPIFFE ID: {0}")]
    EndpointSpiffeId(#[source] IdError),
    /// A profile other than https_web and https_spiffe.
    #[error("unknown bundle endpoint profile type: {}", fmt::go_quote(.0))]
    UnknownProfile(String),
    /// The `-trustDomainBundlePath` file could not be read.
    #[error("cannot read bundle file: open {path}: {}", fmt::go_errno_text(.source))]
    ReadBundleFile {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bundle file does not parse.
    #[error("cannot parse bundle file: {0}")]
    BundleFile(#[source] BundleDataError),
    /// The item's embedded bundle does not parse.
    #[error("cannot parse bundle raw message: {0}")]
    BundleRaw(#[source] BundleDataError),
}

/// Why bundle data is not a bundle (SPIRE's `util.ParseBundle` texts).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BundleDataError {
    /// The PEM text is not certificate blocks; the reason in `pemutil`'s
    /// words.
    #[error("unable to parse bundle data: {0}")]
    Pem(String),
    /// A PEM block that is not exactly one certificate.
    #[error("unable to parse bundle data: x509: malformed certificate")]
    MalformedCertificate,
    /// The trust domain does not parse.
    #[error(transparent)]
    TrustDomain(#[from] IdError),
    /// The SPIFFE bundle document does not parse.
    #[error("unable to parse to spiffe bundle: {0}")]
    Jwks(#[source] sigil_spiffe::bundle::BundleError),
    /// An embedded PEM bundle that is not a JSON string; the kind found.
    #[error("failed to unmarshal json: json: cannot unmarshal {0} into Go value of type string")]
    RawNotString(&'static str),
    /// A bundle format other than pem and spiffe.
    #[error("bundle format {} is unsupported", fmt::go_quote(.0))]
    UnsupportedFormat(String),
}

/// Checks one relationship's fields and builds its API form, reading its
/// bundle when one is given (SPIRE's `jsonToProto`).
pub(crate) fn config_to_proto(
    c: &RelationshipConfig,
) -> Result<FederationRelationship, RelationshipConfigError> {
    if c.trust_domain.is_empty() {
        return Err(RelationshipConfigError::MissingTrustDomain);
    }
    if c.bundle_endpoint_url.is_empty() {
        return Err(RelationshipConfigError::MissingEndpointUrl);
    }
    let mut bundle_trust_domain = c.trust_domain.clone();
    let profile = match c.bundle_endpoint_profile.as_str() {
        PROFILE_HTTPS_WEB => BundleEndpointProfile::HttpsWeb(HttpsWebProfile {}),
        PROFILE_HTTPS_SPIFFE => {
            if c.endpoint_spiffe_id.is_empty() {
                return Err(RelationshipConfigError::MissingEndpointSpiffeId);
            }
            let id = SpiffeId::parse(&c.endpoint_spiffe_id)
                .map_err(RelationshipConfigError::EndpointSpiffeId)?;
            // SPIRE reads the bundle as the endpoint's trust domain's.
            bundle_trust_domain = id.trust_domain_name().to_owned();
            BundleEndpointProfile::HttpsSpiffe(HttpsspiffeProfile {
                endpoint_spiffe_id: c.endpoint_spiffe_id.clone(),
            })
        }
        other => return Err(RelationshipConfigError::UnknownProfile(other.to_owned())),
    };
    let trust_domain_bundle = if !c.trust_domain_bundle_path.is_empty() {
        let data = std::fs::read(&c.trust_domain_bundle_path).map_err(|source| {
            RelationshipConfigError::ReadBundleFile {
                path: c.trust_domain_bundle_path.clone(),
                source,
            }
        })?;
        let b = parse_bundle(&data, &c.trust_domain_bundle_format, &bundle_trust_domain)
            .map_err(RelationshipConfigError::BundleFile)?;
        Some(b)
    } else if let Some(raw) = &c.trust_domain_bundle {
        let b = bundle_from_raw(raw, &c.trust_domain_bundle_format, &bundle_trust_domain)
            .map_err(RelationshipConfigError::BundleRaw)?;
        Some(b)
    } else {
        None
    };
    Ok(FederationRelationship {
        trust_domain: c.trust_domain.clone(),
        bundle_endpoint_url: c.bundle_endpoint_url.clone(),
        bundle_endpoint_profile: Some(profile),
        trust_domain_bundle,
    })
}

/// SPIRE's `util.ParseBundle`: PEM certificates (the trust domain kept as
/// given), or, for any other format, a SPIFFE bundle document.
pub(crate) fn parse_bundle(
    data: &[u8],
    format: &str,
    trust_domain: &str,
) -> Result<Bundle, BundleDataError> {
    if format == FORMAT_PEM {
        let ders = sigil_spiffe::bundle::certificates_from_pem(data).map_err(|e| {
            let reason = match e {
                sigil_spiffe::bundle::BundleError::NoPemCertificates => "no PEM blocks".to_owned(),
                sigil_spiffe::bundle::BundleError::UnexpectedPemBlock { label, .. } => format!(
                    "expected block type \"CERTIFICATE\"; got {}",
                    fmt::go_quote(&label)
                ),
                other => other.to_string(),
            };
            BundleDataError::Pem(reason)
        })?;
        for der in &ders {
            match x509_parser::parse_x509_certificate(der) {
                Ok(([], _)) => {}
                _ => return Err(BundleDataError::MalformedCertificate),
            }
        }
        return Ok(Bundle {
            trust_domain: trust_domain.to_owned(),
            x509_authorities: ders
                .into_iter()
                .map(|asn1| X509Certificate {
                    asn1,
                    tainted: false,
                })
                .collect(),
            ..Bundle::default()
        });
    }
    let td = TrustDomain::new(trust_domain)?;
    let b = sigil_spiffe::Bundle::parse_jwks(&td, data).map_err(BundleDataError::Jwks)?;
    Ok(Bundle {
        trust_domain: b.trust_domain.name().to_owned(),
        x509_authorities: b
            .x509_authorities
            .into_iter()
            .map(|asn1| X509Certificate {
                asn1,
                tainted: false,
            })
            .collect(),
        jwt_authorities: b
            .jwt_authorities
            .into_iter()
            .map(|a| JwtKey {
                public_key: a.public_key_der,
                key_id: a.key_id,
                expires_at: 0,
                tainted: false,
            })
            .collect(),
        refresh_hint: b.refresh_hint_seconds.unwrap_or(0),
        sequence_number: b.sequence_number,
        wit_authorities: Vec::new(),
    })
}

/// A bundle embedded in a `-data` item: a JSON string of PEM, or the SPIFFE
/// document itself.
fn bundle_from_raw(
    raw: &Value,
    format: &str,
    trust_domain: &str,
) -> Result<Bundle, BundleDataError> {
    let data = match format {
        FORMAT_PEM => match raw {
            Value::String(s) => s.clone().into_bytes(),
            other => return Err(BundleDataError::RawNotString(json_kind(other))),
        },
        FORMAT_SPIFFE => raw.to_string().into_bytes(),
        other => return Err(BundleDataError::UnsupportedFormat(other.to_owned())),
    };
    parse_bundle(&data, format, trust_domain)
}

/// One `-data` item; Go leaves a field that is absent or null empty.
fn config_from_json(item: &Value) -> Result<RelationshipConfig, JsonShapeError> {
    let o = match item {
        Value::Null => return Ok(RelationshipConfig::default()),
        Value::Object(o) => o,
        other => return Err(JsonShapeError::ItemNotObject(json_kind(other))),
    };
    let text = |name: &str| -> Result<String, JsonShapeError> {
        match field(o, name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(JsonShapeError::FieldNotString {
                kind: json_kind(other),
                name: name.to_owned(),
            }),
        }
    };
    Ok(RelationshipConfig {
        trust_domain: text("trustDomain")?,
        bundle_endpoint_url: text("bundleEndpointURL")?,
        bundle_endpoint_profile: text("bundleEndpointProfile")?,
        endpoint_spiffe_id: text("endpointSPIFFEID")?,
        trust_domain_bundle: field(o, "trustDomainBundle")
            .filter(|v| !v.is_null())
            .cloned(),
        trust_domain_bundle_format: text("trustDomainBundleFormat")?,
        trust_domain_bundle_path: String::new(),
    })
}

/// A member by name: the exact key, else one equal ignoring ASCII case (as
/// Go's `encoding/json` matches struct fields).
fn field<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    o.get(name).or_else(|| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// Go's name for a JSON value's kind in unmarshal errors.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Succeeded relationships on stdout, failed ones (as requested) on stderr,
/// then an error when any failed; with `-output json`, the response as is.
pub(crate) fn render_batch(
    verb: Verb,
    results: impl IntoIterator<Item = (Option<Status>, Option<FederationRelationship>)>,
    requested: &[FederationRelationship],
    output: OutputFormat,
) -> Outcome {
    let results: Vec<(Status, Option<FederationRelationship>)> = results
        .into_iter()
        .map(|(s, r)| (s.unwrap_or_default(), r))
        .collect();
    if output == OutputFormat::Json {
        let results = results
            .iter()
            .map(|(s, r)| {
                let mut fields = Map::new();
                fields.insert("status".into(), json::status(Some(s)));
                if let Some(r) = r {
                    fields.insert("federation_relationship".into(), relationship_json(r));
                }
                Value::Object(fields)
            })
            .collect();
        let mut top = Map::new();
        top.insert("results".into(), Value::Array(results));
        return Outcome::stdout(json::encode(&Value::Object(top)));
    }
    let (word, summary) = match verb {
        Verb::Create => (
            "create",
            "failed to create one or more federation relationships",
        ),
        Verb::Update => (
            "update",
            "failed to update one or more federation relationships",
        ),
    };
    let mut out = Outcome::default();
    let empty = FederationRelationship::default();
    for (status, rel) in &results {
        if status.code == 0 {
            out.stdout.push('\n');
            out.stdout
                .push_str(&print_relationship(rel.as_ref().unwrap_or(&empty)));
        }
    }
    let mut failed = false;
    for (i, (status, _)) in results.iter().enumerate() {
        if status.code != 0 {
            failed = true;
            // The API leaves failed results empty; show what was asked.
            out.stdout.push('\n');
            out.stderr.push_str(&format!(
                "Failed to {word} the following federation relationship (code: {}, msg: {}):\n",
                fmt::code_name(status.code),
                fmt::go_quote(&status.message)
            ));
            out.stderr
                .push_str(&print_relationship(requested.get(i).unwrap_or(&empty)));
        }
    }
    if failed {
        out.error = Some(summary.to_owned());
    }
    out
}

/// `Found N federation relationships` and each one.
pub(crate) fn render_list(
    resp: &ListFederationRelationshipsResponse,
    output: OutputFormat,
) -> Outcome {
    if output == OutputFormat::Json {
        let mut top = Map::new();
        top.insert(
            "federation_relationships".into(),
            Value::Array(
                resp.federation_relationships
                    .iter()
                    .map(relationship_json)
                    .collect(),
            ),
        );
        top.insert(
            "next_page_token".into(),
            resp.next_page_token.as_str().into(),
        );
        return Outcome::stdout(json::encode(&Value::Object(top)));
    }
    let n = resp.federation_relationships.len();
    let mut out = fmt::pluralize(
        &format!("Found {n} "),
        "federation relationship",
        "federation relationships",
        n,
    );
    out.push('\n');
    for rel in &resp.federation_relationships {
        out.push('\n');
        out.push_str(&print_relationship(rel));
    }
    Outcome::stdout(out)
}

/// One relationship, introduced with the trust domain as it was asked for.
pub(crate) fn render_show(
    asked: &str,
    rel: &FederationRelationship,
    output: OutputFormat,
) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&relationship_json(rel)));
    }
    let mut out = format!("Found a federation relationship with trust domain {asked}:\n\n");
    out.push_str(&print_relationship(rel));
    Outcome::stdout(out)
}

/// `federation relationship deleted.`, or the item's failure as the error.
pub(crate) fn render_delete(
    resp: &BatchDeleteFederationRelationshipResponse,
    output: OutputFormat,
) -> Result<Outcome, CliError> {
    if output == OutputFormat::Json {
        let results = resp
            .results
            .iter()
            .map(|r| {
                let mut fields = Map::new();
                fields.insert("status".into(), json::status(r.status.as_ref()));
                fields.insert("trust_domain".into(), r.trust_domain.as_str().into());
                Value::Object(fields)
            })
            .collect();
        let mut top = Map::new();
        top.insert("results".into(), Value::Array(results));
        return Ok(Outcome::stdout(json::encode(&Value::Object(top))));
    }
    let Some(result) = resp.results.first() else {
        return Err(CliError::Output(
            "internal error: the server returned no result".into(),
        ));
    };
    let status = result.status.clone().unwrap_or_default();
    if status.code == 0 {
        return Ok(Outcome::stdout(
            "federation relationship deleted.\n".to_owned(),
        ));
    }
    Err(CliError::Output(format!(
        "failed to delete federation relationship {}: {}",
        fmt::go_quote(&result.trust_domain),
        status.message
    )))
}

/// `Bundle refreshed`, or SPIRE's error for the status the server gave.
pub(crate) fn render_refresh(
    id: &str,
    result: Result<(), tonic::Status>,
    output: OutputFormat,
) -> Result<Outcome, CliError> {
    match result {
        Ok(()) if output == OutputFormat::Json => {
            let ok = Status {
                code: 0,
                message: "OK".into(),
            };
            Ok(Outcome::stdout(json::encode(&json::status(Some(&ok)))))
        }
        Ok(()) => Ok(Outcome::stdout("Bundle refreshed\n".to_owned())),
        Err(s) if s.code() == Code::NotFound => Err(CliError::Output(format!(
            "there is no federation relationship with trust domain {}",
            fmt::go_quote(id)
        ))),
        Err(s) => Err(status_in(Some("failed to refresh bundle"))(s)),
    }
}

/// SPIRE's `printFederationRelationship`.
fn print_relationship(rel: &FederationRelationship) -> String {
    let mut out = format!(
        "{:<26}: {}\n{:<26}: {}\n",
        "Trust domain", rel.trust_domain, "Bundle endpoint URL", rel.bundle_endpoint_url
    );
    match &rel.bundle_endpoint_profile {
        Some(BundleEndpointProfile::HttpsWeb(_)) => {
            out.push_str(&format!(
                "{:<26}: {PROFILE_HTTPS_WEB}\n",
                "Bundle endpoint profile"
            ));
        }
        Some(BundleEndpointProfile::HttpsSpiffe(p)) => {
            out.push_str(&format!(
                "{:<26}: {PROFILE_HTTPS_SPIFFE}\n{:<26}: {}\n",
                "Bundle endpoint profile", "Endpoint SPIFFE ID", p.endpoint_spiffe_id
            ));
        }
        None => {}
    }
    out
}

/// A `FederationRelationship` as SPIRE's `-output json` prints it.
fn relationship_json(rel: &FederationRelationship) -> Value {
    let mut fields = Map::new();
    fields.insert("trust_domain".into(), rel.trust_domain.as_str().into());
    fields.insert(
        "bundle_endpoint_url".into(),
        rel.bundle_endpoint_url.as_str().into(),
    );
    match &rel.bundle_endpoint_profile {
        Some(BundleEndpointProfile::HttpsWeb(_)) => {
            fields.insert("https_web".into(), Value::Object(Map::new()));
        }
        Some(BundleEndpointProfile::HttpsSpiffe(p)) => {
            let mut profile = Map::new();
            profile.insert(
                "endpoint_spiffe_id".into(),
                p.endpoint_spiffe_id.as_str().into(),
            );
            fields.insert("https_spiffe".into(), Value::Object(profile));
        }
        None => {}
    }
    if let Some(b) = &rel.trust_domain_bundle {
        fields.insert("trust_domain_bundle".into(), json::bundle(b));
    }
    Value::Object(fields)
}

fn read_input(path: &str) -> Result<Vec<u8>, CliError> {
    let mut data = Vec::new();
    let result = if path == "-" {
        std::io::stdin().read_to_end(&mut data).map(|_| ())
    } else {
        std::fs::read(path).map(|d| data = d)
    };
    result.map_err(|e| CliError::Invalid(format!("open {path}: {}", fmt::go_errno_text(&e))))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use sigil_proto::spire::api::server::trustdomain::v1::batch_delete_federation_relationship_response;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: FederationCommand,
    }

    fn parse(args: &[&str]) -> FederationCommand {
        let mut argv = vec!["federation"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(sigil_cli::normalize_go_flags(argv))
            .unwrap()
            .cmd
    }

    fn create(args: &[&str]) -> Result<Vec<FederationRelationship>, CliError> {
        let mut argv = vec!["create"];
        argv.extend_from_slice(args);
        match parse(&argv) {
            FederationCommand::Create(a) => relationships_from_args(&a),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn web(td: &str, url: &str) -> FederationRelationship {
        FederationRelationship {
            trust_domain: td.into(),
            bundle_endpoint_url: url.into(),
            bundle_endpoint_profile: Some(BundleEndpointProfile::HttpsWeb(HttpsWebProfile {})),
            trust_domain_bundle: None,
        }
    }

    fn spiffe(td: &str, url: &str, id: &str) -> FederationRelationship {
        FederationRelationship {
            bundle_endpoint_profile: Some(BundleEndpointProfile::HttpsSpiffe(HttpsspiffeProfile {
                endpoint_spiffe_id: id.into(),
            })),
            ..web(td, url)
        }
    }

    fn ca_pem(td: &str) -> (Vec<u8>, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, td);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.der().to_vec(), cert.pem())
    }

    fn ok(code: i32, message: &str) -> Option<Status> {
        Some(Status {
            code,
            message: message.into(),
        })
    }

    #[test]
    fn flags_build_a_web_or_spiffe_relationship() {
        assert_eq!(
            create(&[
                "-trustDomain",
                "other.org",
                "-bundleEndpointURL",
                "https://other.org/bundle",
                "-bundleEndpointProfile",
                "https_web",
            ])
            .unwrap(),
            vec![web("other.org", "https://other.org/bundle")]
        );
        assert_eq!(
            create(&[
                "-trustDomain=other.org",
                "-bundleEndpointURL=https://other.org:8443",
                "-bundleEndpointProfile=https_spiffe",
                "-endpointSpiffeID=spiffe://other.org/spire/server",
            ])
            .unwrap(),
            vec![spiffe(
                "other.org",
                "https://other.org:8443",
                "spiffe://other.org/spire/server"
            )]
        );
    }

    #[test]
    fn flag_errors_come_in_spire_order_with_spire_text() {
        let err = |args: &[&str]| create(args).unwrap_err().to_string();
        assert_eq!(err(&[]), "trust domain is required");
        assert_eq!(
            err(&["-trustDomain", "a.org"]),
            "bundle endpoint URL is required"
        );
        assert_eq!(
            err(&["-trustDomain", "a.org", "-bundleEndpointURL", "https://a"]),
            "unknown bundle endpoint profile type: \"\""
        );
        let spiffe_args = [
            "-trustDomain",
            "a.org",
            "-bundleEndpointURL",
            "https://a",
            "-bundleEndpointProfile",
            "https_spiffe",
        ];
        assert_eq!(
            err(&spiffe_args),
            "endpoint SPIFFE ID is required if 'https_spiffe' endpoint profile is set"
        );
        let mut bad_id = spiffe_args.to_vec();
        bad_id.extend(["-endpointSpiffeID", "a.org"]);
        assert!(
            err(&bad_id).starts_with("cannot parse bundle endpoint SPIFFE ID: "),
            "{}",
            err(&bad_id)
        );
        assert_eq!(
            err(&["-data", "x.json", "-trustDomain", "a.org"]),
            "cannot use other flags to specify relationship fields when 'data' flag is set"
        );
        assert_eq!(
            err(&["-data", "x.json", "-trustDomainBundleFormat", "spiffe"]),
            "cannot use other flags to specify relationship fields when 'data' flag is set"
        );
        assert_eq!(
            err(&["-data", "/nonexistent/rels.json"]),
            "open /nonexistent/rels.json: no such file or directory"
        );
    }

    #[test]
    fn bundle_path_is_read_as_pem_or_spiffe_for_the_right_trust_domain() {
        let dir = tempfile::tempdir().unwrap();
        let (der, pem) = ca_pem("other.org");
        let pem_path = dir.path().join("b.pem");
        std::fs::write(&pem_path, &pem).unwrap();
        let rels = create(&[
            "-trustDomain",
            "other.org",
            "-bundleEndpointURL",
            "https://x",
            "-bundleEndpointProfile",
            "https_spiffe",
            "-endpointSpiffeID",
            "spiffe://endpoint.org/server",
            "-trustDomainBundlePath",
            pem_path.to_str().unwrap(),
        ])
        .unwrap();
        let b = rels[0].trust_domain_bundle.clone().unwrap();
        // SPIRE reads the bundle as the endpoint ID's trust domain's.
        assert_eq!(b.trust_domain, "endpoint.org");
        assert_eq!(b.x509_authorities[0].asn1, der);

        let mut doc = sigil_spiffe::Bundle::new(TrustDomain::new("other.org").unwrap());
        doc.x509_authorities.push(der.clone());
        doc.refresh_hint_seconds = Some(30);
        doc.sequence_number = 4;
        let jwks_path = dir.path().join("b.json");
        std::fs::write(&jwks_path, doc.to_jwks()).unwrap();
        let rels = create(&[
            "-trustDomain",
            "other.org",
            "-bundleEndpointURL",
            "https://x",
            "-bundleEndpointProfile",
            "https_web",
            "-trustDomainBundlePath",
            jwks_path.to_str().unwrap(),
            "-trustDomainBundleFormat",
            "spiffe",
        ])
        .unwrap();
        let b = rels[0].trust_domain_bundle.clone().unwrap();
        assert_eq!(
            (b.trust_domain.as_str(), b.refresh_hint, b.sequence_number),
            ("other.org", 30, 4)
        );
        assert_eq!(b.x509_authorities[0].asn1, der);

        let err = create(&[
            "-trustDomain",
            "other.org",
            "-bundleEndpointURL",
            "https://x",
            "-bundleEndpointProfile",
            "https_web",
            "-trustDomainBundlePath",
            jwks_path.to_str().unwrap(),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot parse bundle file: unable to parse bundle data: no PEM blocks"
        );
        let missing = dir.path().join("missing.pem");
        let err = create(&[
            "-trustDomain",
            "other.org",
            "-bundleEndpointURL",
            "https://x",
            "-bundleEndpointProfile",
            "https_web",
            "-trustDomainBundlePath",
            missing.to_str().unwrap(),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read bundle file: open {}: no such file or directory",
                missing.display()
            )
        );
    }

    #[test]
    fn data_file_items_are_read_like_go_json() {
        let (der, pem) = ca_pem("a.org");
        let doc = serde_json::json!({
            "federationRelationships": [
                {
                    "trustDomain": "a.org",
                    "bundleEndpointURL": "https://a.org/bundle",
                    "bundleEndpointProfile": "https_web",
                    "trustDomainBundle": pem,
                    "trustDomainBundleFormat": "pem",
                },
                {
                    // Go matches keys ignoring case.
                    "TRUSTDOMAIN": "b.org",
                    "bundleendpointurl": "https://b.org",
                    "bundleEndpointProfile": "https_spiffe",
                    "endpointSPIFFEID": "spiffe://b.org/server",
                    "trustDomainBundle": {"keys": []},
                    "trustDomainBundleFormat": "spiffe",
                },
            ]
        });
        let rels = parse_relationships_json(doc.to_string().as_bytes()).unwrap();
        assert_eq!(rels.len(), 2);
        assert_eq!(
            rels[0]
                .trust_domain_bundle
                .as_ref()
                .unwrap()
                .x509_authorities[0]
                .asn1,
            der
        );
        assert_eq!(rels[1].trust_domain, "b.org");
        assert_eq!(
            rels[1].trust_domain_bundle.as_ref().unwrap().trust_domain,
            "b.org"
        );

        let err = |v: Value| {
            parse_relationships_json(v.to_string().as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(serde_json::json!({"federationRelationships": [
                {"trustDomain": "a.org", "bundleEndpointURL": "https://a", "bundleEndpointProfile": "https_web"},
                {"trustDomain": "b.org"},
            ]})),
            "could not parse item 1: bundle endpoint URL is required"
        );
        assert_eq!(
            err(serde_json::json!({"federationRelationships": [{
                "trustDomain": "a.org", "bundleEndpointURL": "https://a",
                "bundleEndpointProfile": "https_web", "trustDomainBundle": "x",
            }]})),
            "could not parse item 0: cannot parse bundle raw message: bundle format \"\" is \
             unsupported"
        );
        assert_eq!(
            err(serde_json::json!({"federationRelationships": [{"trustDomain": 5}]})),
            "failed to parse JSON: json: cannot unmarshal number into Go struct field \
             federationRelationshipConfig.federationRelationships.trustDomain of type string"
        );
        assert!(
            parse_relationships_json(b"{")
                .unwrap_err()
                .to_string()
                .starts_with("failed to parse JSON: ")
        );
        assert!(parse_relationships_json(b"{}").unwrap().is_empty());
    }

    #[test]
    fn other_subcommands_parse_their_flags() {
        match parse(&["show", "-trustDomain", "a.org", "-output", "json"]) {
            FederationCommand::Show(a) => {
                assert_eq!(a.trust_domain, "a.org");
                assert_eq!(a.output, OutputFormat::Json);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["delete", "-id", "a.org", "-socketPath", "/s.sock"]) {
            FederationCommand::Delete(a) => {
                assert_eq!(a.id, "a.org");
                assert_eq!(a.conn.socket_path, "/s.sock");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["refresh", "-id", "a.org"]),
            FederationCommand::Refresh(_)
        ));
        assert!(matches!(parse(&["list"]), FederationCommand::List(_)));
        match parse(&["update", "-data", "-"]) {
            FederationCommand::Update(a) => {
                assert_eq!(a.data, "-");
                assert_eq!(a.trust_domain_bundle_format, "pem");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_prints_spire_layout() {
        let resp = ListFederationRelationshipsResponse {
            federation_relationships: vec![
                web("a.org", "https://a.org/bundle"),
                spiffe("b.org", "https://b.org", "spiffe://b.org/server"),
            ],
            next_page_token: String::new(),
        };
        assert_eq!(
            render_list(&resp, OutputFormat::Pretty).stdout,
            "Found 2 federation relationships

Trust domain              : a.org
Bundle endpoint URL       : https://a.org/bundle
Bundle endpoint profile   : https_web

Trust domain              : b.org
Bundle endpoint URL       : https://b.org
Bundle endpoint profile   : https_spiffe
Endpoint SPIFFE ID        : spiffe://b.org/server
"
        );
        let one = ListFederationRelationshipsResponse {
            federation_relationships: vec![web("a.org", "https://a")],
            next_page_token: String::new(),
        };
        assert!(
            render_list(&one, OutputFormat::Pretty)
                .stdout
                .starts_with("Found 1 federation relationship\n\n")
        );
        assert_eq!(
            render_list(
                &ListFederationRelationshipsResponse::default(),
                OutputFormat::Pretty
            )
            .stdout,
            "Found 0 federation relationships\n"
        );
    }

    #[test]
    fn json_output_is_protojson_with_oneof_and_bundle() {
        let mut rel = spiffe("b.org", "https://b.org", "spiffe://b.org/server");
        rel.trust_domain_bundle = Some(Bundle {
            trust_domain: "b.org".into(),
            ..Bundle::default()
        });
        let resp = ListFederationRelationshipsResponse {
            federation_relationships: vec![web("a.org", "https://a"), rel],
            next_page_token: String::new(),
        };
        assert_eq!(
            render_list(&resp, OutputFormat::Json).stdout,
            "{\"federation_relationships\":[\
             {\"bundle_endpoint_url\":\"https://a\",\"https_web\":{},\"trust_domain\":\"a.org\"},\
             {\"bundle_endpoint_url\":\"https://b.org\",\
             \"https_spiffe\":{\"endpoint_spiffe_id\":\"spiffe://b.org/server\"},\
             \"trust_domain\":\"b.org\",\"trust_domain_bundle\":{\"jwt_authorities\":[],\
             \"refresh_hint\":\"0\",\"sequence_number\":\"0\",\"trust_domain\":\"b.org\",\
             \"wit_authorities\":[],\"x509_authorities\":[]}}],\"next_page_token\":\"\"}\n"
        );
    }

    #[test]
    fn show_introduces_the_relationship_with_the_asked_name() {
        let out = render_show(
            "a.org",
            &web("a.org", "https://a.org"),
            OutputFormat::Pretty,
        );
        assert_eq!(
            out.stdout,
            "Found a federation relationship with trust domain a.org:

Trust domain              : a.org
Bundle endpoint URL       : https://a.org
Bundle endpoint profile   : https_web
"
        );
    }

    #[test]
    fn batch_prints_successes_then_failures_as_requested() {
        let requested = vec![web("a.org", "https://a"), web("example.org", "https://e")];
        let out = render_batch(
            Verb::Create,
            vec![
                (ok(0, "OK"), Some(requested[0].clone())),
                (
                    ok(
                        3,
                        "unable to create federation relationship for server trust domain",
                    ),
                    None,
                ),
            ],
            &requested,
            OutputFormat::Pretty,
        );
        assert_eq!(
            out.stdout,
            "
Trust domain              : a.org
Bundle endpoint URL       : https://a
Bundle endpoint profile   : https_web

"
        );
        assert_eq!(
            out.stderr,
            "Failed to create the following federation relationship (code: InvalidArgument, \
             msg: \"unable to create federation relationship for server trust domain\"):
Trust domain              : example.org
Bundle endpoint URL       : https://e
Bundle endpoint profile   : https_web
"
        );
        assert_eq!(
            out.error.as_deref(),
            Some("failed to create one or more federation relationships")
        );
        let json = render_batch(
            Verb::Update,
            vec![(ok(5, "gone"), None)],
            &requested,
            OutputFormat::Json,
        );
        assert_eq!(
            json.stdout,
            "{\"results\":[{\"status\":{\"code\":5,\"message\":\"gone\"}}]}\n"
        );
        assert_eq!(json.error, None);
    }

    #[test]
    fn delete_and_refresh_report_like_spire() {
        let resp = |code: i32, msg: &str| BatchDeleteFederationRelationshipResponse {
            results: vec![batch_delete_federation_relationship_response::Result {
                status: ok(code, msg),
                trust_domain: "a.org".into(),
            }],
        };
        assert_eq!(
            render_delete(&resp(0, "OK"), OutputFormat::Pretty)
                .unwrap()
                .stdout,
            "federation relationship deleted.\n"
        );
        assert_eq!(
            render_delete(
                &resp(5, "federation relationship not found"),
                OutputFormat::Pretty
            )
            .unwrap_err()
            .to_string(),
            "failed to delete federation relationship \"a.org\": federation relationship not found"
        );
        assert_eq!(
            render_delete(&resp(5, "x"), OutputFormat::Json)
                .unwrap()
                .stdout,
            "{\"results\":[{\"status\":{\"code\":5,\"message\":\"x\"},\"trust_domain\":\"a.org\"}]}\n"
        );

        assert_eq!(
            render_refresh("a.org", Ok(()), OutputFormat::Pretty)
                .unwrap()
                .stdout,
            "Bundle refreshed\n"
        );
        assert_eq!(
            render_refresh("a.org", Ok(()), OutputFormat::Json)
                .unwrap()
                .stdout,
            "{\"code\":0,\"message\":\"OK\"}\n"
        );
        assert_eq!(
            render_refresh(
                "a.org",
                Err(tonic::Status::not_found("no relationship")),
                OutputFormat::Pretty
            )
            .unwrap_err()
            .to_string(),
            "there is no federation relationship with trust domain \"a.org\""
        );
        assert_eq!(
            render_refresh(
                "a.org",
                Err(tonic::Status::unimplemented("not yet")),
                OutputFormat::Pretty
            )
            .unwrap_err()
            .to_string(),
            "failed to refresh bundle: rpc error: code = Unimplemented desc = not yet"
        );
    }
}
