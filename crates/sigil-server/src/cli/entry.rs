//! `entry create|update|show|delete|count`: registration entries.
//!
//! Flags, validation order, error texts and the printed entry layout are
//! SPIRE's, so `spire-server entry ...` scripts work unchanged.

use std::cmp::Ordering;
use std::io::Read as _;

use serde::Deserialize;
use sigil_proto::MAX_ENTRY_BATCH;
use sigil_proto::spire::api::server::entry::v1::{
    BatchCreateEntryRequest, BatchDeleteEntryRequest, BatchDeleteEntryResponse,
    BatchUpdateEntryRequest, CountEntriesRequest, GetEntryRequest, ListEntriesRequest,
    ListEntriesResponse, count_entries_request, entry_client::EntryClient, list_entries_request,
};
use sigil_proto::spire::api::types::{
    Entry, FederatesWithMatch, Selector, SelectorMatch, Spiffeid, Status, entry,
    federates_with_match, selector_match,
};
use sigil_spiffe::{IdError, TrustDomain};
use tonic::transport::Channel;

use super::{
    CliError, ConnArgs, Outcome, OutputFormat, fmt, json, parse_go_bool, parse_output_format,
};

/// How many entries `entry show` asks for per page (SPIRE's value).
pub const LIST_PAGE_SIZE: i32 = 500;

/// Path of the server's own SPIFFE ID, the parent of `-node` entries.
const SERVER_ID_PATH: &str = "/spire/server";

/// `entry` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum EntryCommand {
    /// Creates registration entries
    Create(EntryCreateArgs),
    /// Updates registration entries
    Update(EntryUpdateArgs),
    /// Displays configured registration entries
    Show(EntryShowArgs),
    /// Deletes registration entries
    Delete(EntryDeleteArgs),
    /// Count registration entries
    Count(EntryCountArgs),
}

/// Flags of `entry create`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EntryCreateArgs {
    /// A custom ID for this registration entry (optional). If not set, a new
    /// entry ID will be generated
    #[arg(long = "entryID", default_value = "", hide_default_value = true)]
    pub entry_id: String,
    /// The SPIFFE ID of this record's parent
    #[arg(long = "parentID", default_value = "", hide_default_value = true)]
    pub parent_id: String,
    /// The SPIFFE ID that this record represents
    #[arg(long = "spiffeID", default_value = "", hide_default_value = true)]
    pub spiffe_id: String,
    /// The lifetime, in seconds, for x509-SVIDs issued based on this
    /// registration entry.
    #[arg(
        long = "x509SVIDTTL",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub x509_svid_ttl: i64,
    /// The lifetime, in seconds, for JWT-SVIDs issued based on this
    /// registration entry.
    #[arg(
        long = "jwtSVIDTTL",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub jwt_svid_ttl: i64,
    /// Path to a file containing registration JSON (optional). If set to '-',
    /// read the JSON from stdin.
    #[arg(long = "data", default_value = "", hide_default_value = true)]
    pub data: String,
    /// A colon-delimited type:value selector. Can be used more than once
    #[arg(long = "selector", action = clap::ArgAction::Append)]
    pub selector: Vec<String>,
    /// SPIFFE ID of a trust domain to federate with. Can be used more than
    /// once
    #[arg(long = "federatesWith", action = clap::ArgAction::Append)]
    pub federates_with: Vec<String>,
    /// If set, this entry will be applied to matching nodes rather than
    /// workloads
    #[arg(long = "node", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub node: bool,
    /// If set, the SPIFFE ID in this entry will be granted access to the
    /// server's management APIs
    #[arg(long = "admin", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub admin: bool,
    /// The issued SVID must be stored through an SVIDStore plugin
    #[arg(long = "storeSVID", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub store_svid: bool,
    /// The entry describes a downstream SPIRE server
    #[arg(long = "downstream", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub downstream: bool,
    /// An expiry, from epoch in seconds, for the resulting registration entry
    /// to be pruned
    #[arg(
        long = "entryExpiry",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub entry_expiry: i64,
    /// A DNS name that will be included in SVIDs issued based on this entry,
    /// where appropriate. Can be used more than once
    #[arg(long = "dns", action = clap::ArgAction::Append)]
    pub dns: Vec<String>,
    /// The entry hint, used to disambiguate entries with the same SPIFFE ID
    #[arg(long = "hint", default_value = "", hide_default_value = true)]
    pub hint: String,
    /// Disables prefetching X509 SVID for this entry
    #[arg(long = "disableX509SVIDPrefetch", action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool)]
    pub disable_x509_svid_prefetch: bool,
    /// Includes a unique 'jti' claim in JWT-SVIDs issued for this entry
    #[arg(long = "jwtSVIDIncludeJTI", action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = parse_go_bool)]
    pub jwt_svid_include_jti: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Flags of `entry update`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EntryUpdateArgs {
    /// The Registration Entry ID of the record to update
    #[arg(long = "entryID", default_value = "", hide_default_value = true)]
    pub entry_id: String,
    /// The SPIFFE ID of this record's parent
    #[arg(long = "parentID", default_value = "", hide_default_value = true)]
    pub parent_id: String,
    /// The SPIFFE ID that this record represents
    #[arg(long = "spiffeID", default_value = "", hide_default_value = true)]
    pub spiffe_id: String,
    /// The lifetime, in seconds, for x509-SVIDs issued based on this
    /// registration entry.
    #[arg(
        long = "x509SVIDTTL",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub x509_svid_ttl: i64,
    /// The lifetime, in seconds, for JWT-SVIDs issued based on this
    /// registration entry.
    #[arg(
        long = "jwtSVIDTTL",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub jwt_svid_ttl: i64,
    /// Path to a file containing registration JSON (optional). If set to '-',
    /// read the JSON from stdin.
    #[arg(long = "data", default_value = "", hide_default_value = true)]
    pub data: String,
    /// A colon-delimited type:value selector. Can be used more than once
    #[arg(long = "selector", action = clap::ArgAction::Append)]
    pub selector: Vec<String>,
    /// SPIFFE ID of a trust domain to federate with. Can be used more than
    /// once
    #[arg(long = "federatesWith", action = clap::ArgAction::Append)]
    pub federates_with: Vec<String>,
    /// If set, the SPIFFE ID in this entry will be granted access to the
    /// server's management APIs
    #[arg(long = "admin", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub admin: bool,
    /// The entry describes a downstream SPIRE server
    #[arg(long = "downstream", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub downstream: bool,
    /// The issued SVID must be stored through an SVIDStore plugin
    #[arg(long = "storeSVID", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub store_svid: bool,
    /// An expiry, from epoch in seconds, for the resulting registration entry
    /// to be pruned
    #[arg(
        long = "entryExpiry",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub entry_expiry: i64,
    /// A DNS name that will be included in SVIDs issued based on this entry,
    /// where appropriate. Can be used more than once
    #[arg(long = "dns", action = clap::ArgAction::Append)]
    pub dns: Vec<String>,
    /// The entry hint, used to disambiguate entries with the same SPIFFE ID
    #[arg(long = "hint", default_value = "", hide_default_value = true)]
    pub hint: String,
    /// Disables prefetching X509 SVID for this entry (any value turns it on,
    /// as in SPIRE)
    #[arg(long = "disableX509SVIDPrefetch", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub disable_x509_svid_prefetch: Option<String>,
    /// Includes a unique 'jti' claim in JWT-SVIDs issued for this entry (any
    /// value turns it on, as in SPIRE)
    #[arg(long = "jwtSVIDIncludeJTI", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub jwt_svid_include_jti: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Filter flags shared by `entry show` and `entry count`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EntryFilterArgs {
    /// The Parent ID of the records to match
    #[arg(long = "parentID", default_value = "", hide_default_value = true)]
    pub parent_id: String,
    /// The SPIFFE ID of the records to match
    #[arg(long = "spiffeID", default_value = "", hide_default_value = true)]
    pub spiffe_id: String,
    /// Match entries that describe a downstream SPIRE server (when not set,
    /// only non-downstream entries match, as in SPIRE)
    #[arg(long = "downstream", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub downstream: bool,
    /// A colon-delimited type:value selector. Can be used more than once
    #[arg(long = "selector", action = clap::ArgAction::Append)]
    pub selector: Vec<String>,
    /// SPIFFE ID of a trust domain an entry is federate with. Can be used
    /// more than once
    #[arg(long = "federatesWith", action = clap::ArgAction::Append)]
    pub federates_with: Vec<String>,
    /// The match mode used when filtering by federates with. Options: exact,
    /// any, superset and subset
    #[arg(long = "matchFederatesWithOn", default_value = "superset")]
    pub match_federates_with_on: String,
    /// The match mode used when filtering by selectors. Options: exact, any,
    /// superset and subset
    #[arg(long = "matchSelectorsOn", default_value = "superset")]
    pub match_selectors_on: String,
    /// The Hint of the records to match (optional)
    #[arg(long = "hint", default_value = "", hide_default_value = true)]
    pub hint: String,
}

/// Flags of `entry show`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EntryShowArgs {
    /// The Entry ID of the records to show
    #[arg(long = "entryID", default_value = "", hide_default_value = true)]
    pub entry_id: String,
    #[command(flatten)]
    pub filter: EntryFilterArgs,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Flags of `entry count`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EntryCountArgs {
    #[command(flatten)]
    pub filter: EntryFilterArgs,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Flags of `entry delete`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EntryDeleteArgs {
    /// The Registration Entry ID of the record to delete.
    #[arg(long = "entryID", default_value = "", hide_default_value = true)]
    pub entry_id: String,
    /// Path to a file containing a JSON structure for batch deletion
    /// (optional). If set to '-', read from stdin.
    #[arg(long = "file", default_value = "", hide_default_value = true)]
    pub file: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// What `entry show` asks the server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ShowQuery {
    /// `GetEntry` of one ID.
    ById(String),
    /// Paged `ListEntries` with this filter.
    List(list_entries_request::Filter),
}

pub(crate) async fn run(cmd: EntryCommand) -> Result<Outcome, CliError> {
    match cmd {
        EntryCommand::Create(args) => {
            let entries = create_entries(&args)?;
            let mut client = EntryClient::new(super::connect(&args.conn).await?);
            // The server takes at most MAX_ENTRY_BATCH entries a call.
            let mut results = Vec::with_capacity(entries.len());
            for batch in entries.chunks(MAX_ENTRY_BATCH) {
                let resp = client
                    .batch_create_entry(BatchCreateEntryRequest {
                        entries: batch.to_vec(),
                        output_mask: None,
                    })
                    .await?
                    .into_inner();
                results.extend(resp.results.into_iter().map(|r| (r.status, r.entry)));
            }
            Ok(render_batch(Verb::Create, results, &entries, args.output))
        }
        EntryCommand::Update(args) => {
            let mut entries = update_entries(&args)?;
            let mut client = EntryClient::new(super::connect(&args.conn).await?);
            let disable_set = args.disable_x509_svid_prefetch.is_some();
            let jti_set = args.jwt_svid_include_jti.is_some();
            if args.data.is_empty() && (disable_set || jti_set) {
                // The attributes message has no field mask: fetch the stored
                // one so the attribute not named on the command line keeps
                // its value.
                let existing = client
                    .get_entry(GetEntryRequest {
                        id: args.entry_id.clone(),
                        output_mask: None,
                    })
                    .await
                    .map_err(|status| CliError::Rpc {
                        context: Some(
                            "failed to fetch existing entry to merge additional attributes".into(),
                        ),
                        status,
                    })?
                    .into_inner();
                if let Some(e) = entries.first_mut() {
                    merge_additional_attributes(e, &existing, disable_set, jti_set);
                }
            }
            let mut results = Vec::with_capacity(entries.len());
            for batch in entries.chunks(MAX_ENTRY_BATCH) {
                let resp = client
                    .batch_update_entry(BatchUpdateEntryRequest {
                        entries: batch.to_vec(),
                        input_mask: None,
                        output_mask: None,
                    })
                    .await?
                    .into_inner();
                results.extend(resp.results.into_iter().map(|r| (r.status, r.entry)));
            }
            Ok(render_batch(Verb::Update, results, &entries, args.output))
        }
        EntryCommand::Show(args) => {
            let query = show_query(&args)?;
            let client = EntryClient::new(super::connect(&args.conn).await?);
            let mut resp = fetch_entries(client, query).await?;
            sort_entries(&mut resp.entries);
            Ok(render_show(&resp, args.output))
        }
        EntryCommand::Count(args) => {
            let req = count_request(&args.filter)?;
            let mut client = EntryClient::new(super::connect(&args.conn).await?);
            let count = client.count_entries(req).await?.into_inner().count;
            Ok(render_count(count, args.output))
        }
        EntryCommand::Delete(args) => {
            let ids = delete_ids(&args)?;
            let mut client = EntryClient::new(super::connect(&args.conn).await?);
            let mut resp = BatchDeleteEntryResponse::default();
            for batch in ids.chunks(MAX_ENTRY_BATCH) {
                let part = client
                    .batch_delete_entry(BatchDeleteEntryRequest {
                        ids: batch.to_vec(),
                    })
                    .await?
                    .into_inner();
                resp.results.extend(part.results);
            }
            Ok(render_delete(&resp, args.output))
        }
    }
}

/// Validates `entry create` flags and builds the entries to create, from the
/// flags or from the `-data` file.
pub(crate) fn create_entries(args: &EntryCreateArgs) -> Result<Vec<Entry>, CliError> {
    if !args.data.is_empty() {
        return parse_entries_json(&read_input(&args.data)?)
            .map_err(|e| CliError::Invalid(e.to_string()));
    }
    let invalid = |m: &str| Err(CliError::Invalid(m.to_owned()));
    if args.selector.is_empty() {
        return invalid("at least one selector is required");
    }
    if args.node && !args.federates_with.is_empty() {
        return invalid("node entries can not federate");
    }
    if args.parent_id.is_empty() && !args.node {
        return invalid("a parent ID is required if the node flag is not set");
    }
    if args.spiffe_id.is_empty() {
        return invalid("a SPIFFE ID is required");
    }
    if args.x509_svid_ttl < 0 {
        return invalid("a positive x509-SVID TTL is required");
    }
    if args.jwt_svid_ttl < 0 {
        return invalid("a positive JWT-SVID TTL is required");
    }

    let spiffe_id =
        fmt::id_to_proto(&args.spiffe_id).map_err(|e| CliError::Invalid(e.to_string()))?;
    let parent_id = if args.node {
        Spiffeid {
            trust_domain: spiffe_id.trust_domain.clone(),
            path: SERVER_ID_PATH.to_owned(),
        }
    } else {
        fmt::id_to_proto(&args.parent_id).map_err(|e| CliError::Invalid(e.to_string()))?
    };
    let x509_svid_ttl = ttl_i32(args.x509_svid_ttl, "X509 SVID TTL")?;
    let jwt_svid_ttl = ttl_i32(args.jwt_svid_ttl, "JWT SVID TTL")?;
    let selectors = parse_selectors(&args.selector, None)?;
    let additional_attributes = (args.disable_x509_svid_prefetch || args.jwt_svid_include_jti)
        .then_some(entry::AdditionalAttributes {
            disable_x509_svid_prefetch: args.disable_x509_svid_prefetch,
            jwt_svid_include_jti: args.jwt_svid_include_jti,
        });
    Ok(vec![Entry {
        id: args.entry_id.clone(),
        spiffe_id: Some(spiffe_id),
        parent_id: Some(parent_id),
        selectors,
        x509_svid_ttl,
        federates_with: args.federates_with.clone(),
        admin: args.admin,
        downstream: args.downstream,
        expires_at: args.entry_expiry,
        dns_names: args.dns.clone(),
        store_svid: args.store_svid,
        jwt_svid_ttl,
        hint: args.hint.clone(),
        additional_attributes,
        ..Entry::default()
    }])
}

/// Validates `entry update` flags and builds the replacement entries.
pub(crate) fn update_entries(args: &EntryUpdateArgs) -> Result<Vec<Entry>, CliError> {
    if !args.data.is_empty() {
        return parse_entries_json(&read_input(&args.data)?)
            .map_err(|e| CliError::Invalid(e.to_string()));
    }
    let invalid = |m: &str| Err(CliError::Invalid(m.to_owned()));
    if args.entry_id.is_empty() {
        return invalid("entry ID is required");
    }
    if args.selector.is_empty() {
        return invalid("at least one selector is required");
    }
    if args.parent_id.is_empty() {
        return invalid("a parent ID is required");
    }
    if args.spiffe_id.is_empty() {
        return invalid("a SPIFFE ID is required");
    }
    if args.x509_svid_ttl < 0 {
        return invalid("a positive x509-SVID TTL is required");
    }
    if args.jwt_svid_ttl < 0 {
        return invalid("a positive JWT-SVID TTL is required");
    }

    let parent_id =
        fmt::id_to_proto(&args.parent_id).map_err(|e| CliError::Invalid(e.to_string()))?;
    let spiffe_id =
        fmt::id_to_proto(&args.spiffe_id).map_err(|e| CliError::Invalid(e.to_string()))?;
    let x509_svid_ttl = ttl_i32(args.x509_svid_ttl, "X509 SVID TTL")?;
    let jwt_svid_ttl = ttl_i32(args.jwt_svid_ttl, "JWT SVID TTL")?;
    let selectors = parse_selectors(&args.selector, None)?;
    let disable_set = args.disable_x509_svid_prefetch.is_some();
    let jti_set = args.jwt_svid_include_jti.is_some();
    let additional_attributes = (disable_set || jti_set).then_some(entry::AdditionalAttributes {
        disable_x509_svid_prefetch: disable_set,
        jwt_svid_include_jti: jti_set,
    });
    Ok(vec![Entry {
        id: args.entry_id.clone(),
        spiffe_id: Some(spiffe_id),
        parent_id: Some(parent_id),
        selectors,
        x509_svid_ttl,
        federates_with: args.federates_with.clone(),
        admin: args.admin,
        downstream: args.downstream,
        expires_at: args.entry_expiry,
        dns_names: args.dns.clone(),
        store_svid: args.store_svid,
        jwt_svid_ttl,
        hint: args.hint.clone(),
        additional_attributes,
        ..Entry::default()
    }])
}

/// Keeps the stored attributes and overrides only those named on the
/// command line.
pub(crate) fn merge_additional_attributes(
    e: &mut Entry,
    existing: &Entry,
    disable_set: bool,
    jti_set: bool,
) {
    let requested = e.additional_attributes.unwrap_or_default();
    let mut merged = existing.additional_attributes.unwrap_or_default();
    if disable_set {
        merged.disable_x509_svid_prefetch = requested.disable_x509_svid_prefetch;
    }
    if jti_set {
        merged.jwt_svid_include_jti = requested.jwt_svid_include_jti;
    }
    e.additional_attributes = Some(merged);
}

/// Validates `entry show` flags and decides what to ask.
pub(crate) fn show_query(args: &EntryShowArgs) -> Result<ShowQuery, CliError> {
    let f = &args.filter;
    if !args.entry_id.is_empty() {
        if !f.parent_id.is_empty() || !f.spiffe_id.is_empty() || !f.selector.is_empty() {
            return Err(CliError::Invalid(
                "the -entryID flag can't be combined with others".into(),
            ));
        }
        return Ok(ShowQuery::ById(args.entry_id.clone()));
    }
    let parts = filter_parts(f)?;
    Ok(ShowQuery::List(list_entries_request::Filter {
        by_spiffe_id: parts.spiffe_id,
        by_parent_id: parts.parent_id,
        by_selectors: parts.selectors,
        by_federates_with: parts.federates_with,
        by_hint: parts.hint,
        by_downstream: parts.downstream,
    }))
}

/// Validates `entry count` flags and builds the request.
pub(crate) fn count_request(f: &EntryFilterArgs) -> Result<CountEntriesRequest, CliError> {
    let parts = filter_parts(f)?;
    Ok(CountEntriesRequest {
        filter: Some(count_entries_request::Filter {
            by_spiffe_id: parts.spiffe_id,
            by_parent_id: parts.parent_id,
            by_selectors: parts.selectors,
            by_federates_with: parts.federates_with,
            by_hint: parts.hint,
            by_downstream: parts.downstream,
        }),
    })
}

/// The IDs `entry delete` deletes: `-entryID`, or the `ids` of a `-file`.
pub(crate) fn delete_ids(args: &EntryDeleteArgs) -> Result<Vec<String>, CliError> {
    if !args.file.is_empty() {
        #[derive(Deserialize)]
        struct DeleteFile {
            #[serde(default)]
            ids: Option<Vec<String>>,
        }
        let data = read_input(&args.file)?;
        let parsed: DeleteFile =
            serde_json::from_slice(&data).map_err(|e| CliError::Invalid(e.to_string()))?;
        return Ok(parsed.ids.unwrap_or_default());
    }
    if args.entry_id.is_empty() {
        return Err(CliError::Invalid("an entry ID is required".into()));
    }
    Ok(vec![args.entry_id.clone()])
}

/// Reads SPIRE's registration JSON (`{"entries": [{"spiffe_id": ...}]}`, the
/// `-data` format) into API entries, checking IDs as SPIRE does.
pub(crate) fn parse_entries_json(data: &[u8]) -> Result<Vec<Entry>, EntriesJsonError> {
    let file: EntriesFile = serde_json::from_slice(data).map_err(EntriesJsonError::Json)?;
    file.entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.ok_or(EntriesJsonError::MissingEntry)?.into_entry())
        .collect()
}

/// Why a `-data` registration file cannot be used (SPIRE's texts).
#[derive(Debug, thiserror::Error)]
pub(crate) enum EntriesJsonError {
    /// Not JSON of the expected shape.
    #[error("{0}")]
    Json(serde_json::Error),
    /// A `null` in the entry list.
    #[error("missing registration entry")]
    MissingEntry,
    /// An entry's `spiffe_id` does not parse.
    #[error("invalid SPIFFE ID: {0}")]
    SpiffeId(IdError),
    /// An entry's `parent_id` does not parse.
    #[error("invalid parent ID: {0}")]
    ParentId(IdError),
    /// An entry's federated trust domain does not parse.
    #[error("invalid federated trust domain: {0}")]
    FederatesWith(IdError),
}

/// Which `Batch*EntryResponse` is being printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Create,
    Update,
}

/// Prints a batch create/update result as SPIRE does: succeeded entries on
/// stdout, failed ones (shown as requested) on stderr, and an error when any
/// failed. With `-output json` the whole response is printed and the exit
/// code is 0, as in SPIRE.
pub(crate) fn render_batch(
    verb: Verb,
    results: impl IntoIterator<Item = (Option<Status>, Option<Entry>)>,
    requested: &[Entry],
    output: OutputFormat,
) -> Outcome {
    // The API leaves failed results without an entry; show what was asked.
    let results: Vec<(Status, Option<Entry>)> = results
        .into_iter()
        .enumerate()
        .map(|(i, (status, entry))| {
            let status = status.unwrap_or_default();
            let entry = if status.code != 0 {
                requested.get(i).cloned().or(entry)
            } else {
                entry
            };
            (status, entry)
        })
        .collect();
    if output == OutputFormat::Json {
        let value = json::entry_results(results.iter().map(|(s, e)| (Some(s), e.as_ref())));
        return Outcome::stdout(json::encode(&value));
    }
    let (word, summary) = match verb {
        Verb::Create => ("create", "failed to create one or more entries"),
        Verb::Update => ("update", "failed to update one or more entries"),
    };
    let mut out = Outcome::default();
    let default_entry = Entry::default();
    for (status, e) in &results {
        if status.code == 0 {
            out.stdout
                .push_str(&print_entry(e.as_ref().unwrap_or(&default_entry)));
        }
    }
    let mut failed = false;
    for (status, e) in &results {
        if status.code != 0 {
            failed = true;
            out.stderr.push_str(&format!(
                "Failed to {word} the following entry (code: {}, msg: {}):\n",
                fmt::code_name(status.code),
                fmt::go_quote(&status.message)
            ));
            out.stderr
                .push_str(&print_entry(e.as_ref().unwrap_or(&default_entry)));
        }
    }
    if failed {
        out.error = Some(summary.to_owned());
    }
    out
}

/// `Found N entries` and each entry, or the JSON `ListEntriesResponse`.
pub(crate) fn render_show(resp: &ListEntriesResponse, output: OutputFormat) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::list_entries_response(resp)));
    }
    let n = resp.entries.len();
    let mut out = fmt::pluralize(&format!("Found {n} "), "entry", "entries", n);
    out.push('\n');
    for e in &resp.entries {
        out.push_str(&print_entry(e));
    }
    Outcome::stdout(out)
}

/// `N registration entries`.
pub(crate) fn render_count(count: i32, output: OutputFormat) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::count(count)));
    }
    let n = usize::try_from(count).unwrap_or(0);
    let mut out = fmt::pluralize(&format!("{count} registration "), "entry", "entries", n);
    out.push('\n');
    Outcome::stdout(out)
}

/// `Deleted entry with ID: ...` lines and a summary, failures on stderr.
pub(crate) fn render_delete(resp: &BatchDeleteEntryResponse, output: OutputFormat) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::delete_entry_response(resp)));
    }
    let code = |r: &&_| {
        let r: &sigil_proto::spire::api::server::entry::v1::batch_delete_entry_response::Result = r;
        r.status.as_ref().map_or(0, |s| s.code)
    };
    let succeeded: Vec<_> = resp.results.iter().filter(|r| code(r) == 0).collect();
    let failed: Vec<_> = resp.results.iter().filter(|r| code(r) != 0).collect();
    let mut out = Outcome::default();
    for r in &succeeded {
        out.stdout
            .push_str(&format!("Deleted entry with ID: {}\n", r.id));
    }
    if !succeeded.is_empty() {
        out.stdout.push_str("\n\n");
    }
    for r in &failed {
        let status = r.status.clone().unwrap_or_default();
        out.stderr.push_str(&format!(
            "Failed to delete entry with ID {} (code: {}, msg: {})\n",
            r.id,
            fmt::code_name(status.code),
            fmt::go_quote(&status.message)
        ));
    }
    if failed.is_empty() {
        out.stdout.push_str(&format!(
            "Deleted {} entries successfully\n",
            succeeded.len()
        ));
    } else {
        out.stdout.push_str("\n\n");
        let summary = if succeeded.is_empty() {
            format!("Failed to delete {} entries", failed.len())
        } else {
            format!(
                "Deleted {} entries successfully, but failed to delete {} entries",
                succeeded.len(),
                failed.len()
            )
        };
        out.stdout.push_str(&summary);
        out.stdout.push('\n');
        out.error = Some("failed to delete one or more entries".into());
    }
    out
}

/// One entry in SPIRE's `entry show` layout, ending with a blank line.
pub(crate) fn print_entry(e: &Entry) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: &dyn std::fmt::Display| {
        out.push_str(&format!("{label:<24}: {value}\n"));
    };
    let id = if e.id.is_empty() { "(none)" } else { &e.id };
    line("Entry ID", &id);
    line("SPIFFE ID", &fmt::proto_to_id(e.spiffe_id.as_ref()));
    line("Parent ID", &fmt::proto_to_id(e.parent_id.as_ref()));
    line("Revision", &e.revision_number);
    if e.downstream {
        line("Downstream", &true);
    }
    match e.x509_svid_ttl {
        0 => line("X509-SVID TTL", &"default"),
        ttl => line("X509-SVID TTL", &ttl),
    }
    match e.jwt_svid_ttl {
        0 => line("JWT-SVID TTL", &"default"),
        ttl => line("JWT-SVID TTL", &ttl),
    }
    if e.expires_at != 0 {
        line("Expiration time", &fmt::go_time_utc(e.expires_at));
    }
    for s in &e.selectors {
        line("Selector", &format_args!("{}:{}", s.r#type, s.value));
    }
    for td in &e.federates_with {
        line("FederatesWith", td);
    }
    for dns in &e.dns_names {
        line("DNS name", dns);
    }
    // Rare flags are shown only when set, to keep the common case short.
    if e.admin {
        line("Admin", &true);
    }
    if e.store_svid {
        line("StoreSvid", &true);
    }
    if !e.hint.is_empty() {
        line("Hint", &e.hint);
    }
    if let Some(a) = &e.additional_attributes {
        if a.disable_x509_svid_prefetch {
            line("DisableX509SvidPrefetch", &true);
        }
        if a.jwt_svid_include_jti {
            line("JwtSvidIncludeJti", &true);
        }
    }
    out.push('\n');
    out
}

/// SPIRE's display order: by SPIFFE ID, parent ID, TTLs, then selectors
/// (each entry's selectors sorted first).
pub(crate) fn sort_entries(entries: &mut [Entry]) {
    for e in entries.iter_mut() {
        e.selectors.sort_by(compare_selector);
    }
    entries.sort_by(compare_entries);
}

fn compare_entries(a: &Entry, b: &Entry) -> Ordering {
    let id = |x: &Option<Spiffeid>| {
        x.as_ref()
            .map(|i| (i.trust_domain.clone(), i.path.clone()))
            .unwrap_or_default()
    };
    id(&a.spiffe_id)
        .cmp(&id(&b.spiffe_id))
        .then_with(|| id(&a.parent_id).cmp(&id(&b.parent_id)))
        .then(a.x509_svid_ttl.cmp(&b.x509_svid_ttl))
        .then(a.jwt_svid_ttl.cmp(&b.jwt_svid_ttl))
        .then(a.selectors.len().cmp(&b.selectors.len()))
        .then_with(|| {
            a.selectors
                .iter()
                .zip(&b.selectors)
                .map(|(x, y)| compare_selector(x, y))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        })
}

fn compare_selector(a: &Selector, b: &Selector) -> Ordering {
    a.r#type.cmp(&b.r#type).then_with(|| a.value.cmp(&b.value))
}

async fn fetch_entries(
    mut client: EntryClient<Channel>,
    query: ShowQuery,
) -> Result<ListEntriesResponse, CliError> {
    match query {
        ShowQuery::ById(id) => {
            let entry = client
                .get_entry(GetEntryRequest {
                    id: id.clone(),
                    output_mask: None,
                })
                .await
                .map_err(|status| CliError::Rpc {
                    context: Some(format!("error fetching entry ID {id}")),
                    status,
                })?
                .into_inner();
            Ok(ListEntriesResponse {
                entries: vec![entry],
                next_page_token: String::new(),
            })
        }
        ShowQuery::List(filter) => {
            let mut all = ListEntriesResponse::default();
            let mut page_token = String::new();
            loop {
                let resp = client
                    .list_entries(ListEntriesRequest {
                        filter: Some(filter.clone()),
                        output_mask: None,
                        page_size: LIST_PAGE_SIZE,
                        page_token: page_token.clone(),
                    })
                    .await
                    .map_err(|status| CliError::Rpc {
                        context: Some("error fetching entries".into()),
                        status,
                    })?
                    .into_inner();
                all.entries.extend(resp.entries);
                if resp.next_page_token.is_empty() || resp.next_page_token == page_token {
                    break;
                }
                page_token = resp.next_page_token;
            }
            Ok(all)
        }
    }
}

/// The filter fields `entry show` and `entry count` share, parsed.
struct FilterParts {
    spiffe_id: Option<Spiffeid>,
    parent_id: Option<Spiffeid>,
    selectors: Option<SelectorMatch>,
    federates_with: Option<FederatesWithMatch>,
    hint: Option<String>,
    downstream: Option<bool>,
}

fn filter_parts(f: &EntryFilterArgs) -> Result<FilterParts, CliError> {
    let parent_id = if f.parent_id.is_empty() {
        None
    } else {
        Some(fmt::id_to_proto(&f.parent_id).map_err(|e| {
            CliError::Invalid(format!(
                "error parsing parent ID {}: {e}",
                fmt::go_quote(&f.parent_id)
            ))
        })?)
    };
    let spiffe_id = if f.spiffe_id.is_empty() {
        None
    } else {
        Some(fmt::id_to_proto(&f.spiffe_id).map_err(|e| {
            CliError::Invalid(format!(
                "error parsing SPIFFE ID {}: {e}",
                fmt::go_quote(&f.spiffe_id)
            ))
        })?)
    };
    let selectors = if f.selector.is_empty() {
        None
    } else {
        let match_ = selector_match_behavior(&f.match_selectors_on)?;
        Some(SelectorMatch {
            selectors: parse_selectors(&f.selector, Some("error parsing selectors"))?,
            r#match: match_ as i32,
        })
    };
    let federates_with = if f.federates_with.is_empty() {
        None
    } else {
        let match_ = federates_with_match_behavior(&f.match_federates_with_on)?;
        Some(FederatesWithMatch {
            trust_domains: f.federates_with.clone(),
            r#match: match_ as i32,
        })
    };
    Ok(FilterParts {
        spiffe_id,
        parent_id,
        selectors,
        federates_with,
        hint: (!f.hint.is_empty()).then(|| f.hint.clone()),
        // SPIRE always sends this, so a plain `entry show` lists only
        // non-downstream entries.
        downstream: Some(f.downstream),
    })
}

fn selector_match_behavior(s: &str) -> Result<selector_match::MatchBehavior, CliError> {
    use selector_match::MatchBehavior as M;
    match s {
        "exact" => Ok(M::MatchExact),
        "any" => Ok(M::MatchAny),
        "superset" => Ok(M::MatchSuperset),
        "subset" => Ok(M::MatchSubset),
        _ => Err(CliError::Invalid(format!(
            "match behavior {} unknown",
            fmt::go_quote(s)
        ))),
    }
}

fn federates_with_match_behavior(s: &str) -> Result<federates_with_match::MatchBehavior, CliError> {
    use federates_with_match::MatchBehavior as M;
    match s {
        "exact" => Ok(M::MatchExact),
        "any" => Ok(M::MatchAny),
        "superset" => Ok(M::MatchSuperset),
        "subset" => Ok(M::MatchSubset),
        _ => Err(CliError::Invalid(format!(
            "match behavior {} unknown",
            fmt::go_quote(s)
        ))),
    }
}

fn parse_selectors(raw: &[String], context: Option<&str>) -> Result<Vec<Selector>, CliError> {
    raw.iter()
        .map(|s| {
            fmt::parse_selector(s).map_err(|e| {
                CliError::Invalid(match context {
                    Some(c) => format!("{c}: {e}"),
                    None => e.to_string(),
                })
            })
        })
        .collect()
}

fn ttl_i32(v: i64, what: &str) -> Result<i32, CliError> {
    i32::try_from(v).map_err(|_| {
        CliError::Invalid(format!(
            "invalid value for {what}: value {v} out of range of int32"
        ))
    })
}

/// Reads a file, or stdin for `-`.
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

/// SPIRE's `common.RegistrationEntries` as Go's `encoding/json` reads it.
#[derive(Deserialize)]
struct EntriesFile {
    #[serde(default)]
    entries: Option<Vec<Option<EntryJson>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EntryJson {
    selectors: Option<Vec<SelectorJson>>,
    parent_id: String,
    spiffe_id: String,
    x509_svid_ttl: i32,
    federates_with: Option<Vec<String>>,
    entry_id: String,
    admin: bool,
    downstream: bool,
    #[serde(rename = "entryExpiry")]
    entry_expiry: i64,
    dns_names: Option<Vec<String>>,
    revision_number: i64,
    store_svid: bool,
    jwt_svid_ttl: i32,
    hint: String,
    created_at: i64,
    additional_attributes: Option<AdditionalAttributesJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SelectorJson {
    r#type: String,
    value: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AdditionalAttributesJson {
    disable_x509_svid_prefetch: bool,
    jwt_svid_include_jti: bool,
}

impl EntryJson {
    fn into_entry(self) -> Result<Entry, EntriesJsonError> {
        let spiffe_id = fmt::id_to_proto(&self.spiffe_id).map_err(EntriesJsonError::SpiffeId)?;
        let parent_id = fmt::id_to_proto(&self.parent_id).map_err(EntriesJsonError::ParentId)?;
        let federates_with = self
            .federates_with
            .unwrap_or_default()
            .iter()
            .map(|td| {
                TrustDomain::new(td)
                    .map(|td| td.name().to_owned())
                    .map_err(EntriesJsonError::FederatesWith)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Entry {
            id: self.entry_id,
            spiffe_id: Some(spiffe_id),
            parent_id: Some(parent_id),
            selectors: self
                .selectors
                .unwrap_or_default()
                .into_iter()
                .map(|s| Selector {
                    r#type: s.r#type,
                    value: s.value,
                })
                .collect(),
            x509_svid_ttl: self.x509_svid_ttl,
            federates_with,
            admin: self.admin,
            downstream: self.downstream,
            expires_at: self.entry_expiry,
            dns_names: self.dns_names.unwrap_or_default(),
            revision_number: self.revision_number,
            store_svid: self.store_svid,
            jwt_svid_ttl: self.jwt_svid_ttl,
            hint: self.hint,
            created_at: self.created_at,
            additional_attributes: self.additional_attributes.map(|a| {
                entry::AdditionalAttributes {
                    disable_x509_svid_prefetch: a.disable_x509_svid_prefetch,
                    jwt_svid_include_jti: a.jwt_svid_include_jti,
                }
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: EntryCommand,
    }

    fn parse(args: &[&str]) -> EntryCommand {
        let mut argv = vec!["entry"];
        argv.extend_from_slice(args);
        let argv = sigil_cli::normalize_go_flags(argv);
        Cli::try_parse_from(argv).unwrap().cmd
    }

    fn create(args: &[&str]) -> Result<Vec<Entry>, CliError> {
        let mut argv = vec!["create"];
        argv.extend_from_slice(args);
        match parse(&argv) {
            EntryCommand::Create(a) => create_entries(&a),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn id(td: &str, path: &str) -> Option<Spiffeid> {
        Some(Spiffeid {
            trust_domain: td.into(),
            path: path.into(),
        })
    }

    fn sel(t: &str, v: &str) -> Selector {
        Selector {
            r#type: t.into(),
            value: v.into(),
        }
    }

    fn sample_entry() -> Entry {
        Entry {
            id: "entry-id".into(),
            spiffe_id: id("example.org", "/workload"),
            parent_id: id("example.org", "/parent"),
            selectors: vec![sel("zebra", "zebra:2000"), sel("alpha", "alpha:2000")],
            x509_svid_ttl: 60,
            jwt_svid_ttl: 30,
            federates_with: vec![
                "spiffe://domaina.test".into(),
                "spiffe://domainb.test".into(),
            ],
            admin: true,
            expires_at: 1552410266,
            dns_names: vec!["unu1000".into(), "ung1000".into()],
            downstream: true,
            store_svid: true,
            created_at: 1547583197,
            additional_attributes: Some(entry::AdditionalAttributes {
                disable_x509_svid_prefetch: true,
                jwt_svid_include_jti: false,
            }),
            ..Entry::default()
        }
    }

    #[test]
    fn create_flags_build_spire_request() {
        let entries = create(&[
            "-spiffeID",
            "spiffe://example.org/workload",
            "-parentID",
            "spiffe://example.org/parent",
            "-selector",
            "zebra:zebra:2000",
            "-selector",
            "alpha:alpha:2000",
            "-x509SVIDTTL",
            "60",
            "-jwtSVIDTTL",
            "30",
            "-federatesWith",
            "spiffe://domaina.test",
            "-federatesWith",
            "spiffe://domainb.test",
            "-admin",
            "-entryExpiry",
            "1552410266",
            "-dns",
            "unu1000",
            "-dns",
            "ung1000",
            "-downstream",
            "-storeSVID",
            "-hint",
            "internal",
            "-disableX509SVIDPrefetch",
        ])
        .unwrap();
        let mut want = sample_entry();
        want.id = String::new();
        want.created_at = 0;
        want.hint = "internal".into();
        assert_eq!(entries, vec![want]);
    }

    #[test]
    fn node_flag_parents_the_entry_to_the_server() {
        let entries = create(&[
            "-spiffeID",
            "spiffe://example.org/node",
            "-node",
            "-selector",
            "unix:uid:1",
        ])
        .unwrap();
        assert_eq!(entries[0].parent_id, id("example.org", "/spire/server"));
        assert_eq!(entries[0].selectors, vec![sel("unix", "uid:1")]);
    }

    #[test]
    fn go_style_bool_values_are_accepted() {
        let entries = create(&[
            "-spiffeID",
            "spiffe://e.org/w",
            "-parentID",
            "spiffe://e.org/p",
            "-selector",
            "a:b",
            "-admin=false",
            "-downstream=true",
        ])
        .unwrap();
        assert!(!entries[0].admin);
        assert!(entries[0].downstream);
    }

    #[test]
    fn create_validation_errors_match_spire() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "at least one selector is required"),
            (
                &["-selector", "unix:uid:1"],
                "a parent ID is required if the node flag is not set",
            ),
            (
                &[
                    "-selector",
                    "unix:uid:1",
                    "-parentID",
                    "spiffe://example.org/parent",
                ],
                "a SPIFFE ID is required",
            ),
            (
                &[
                    "-selector",
                    "unix",
                    "-parentID",
                    "spiffe://example.org/parent",
                    "-spiffeID",
                    "spiffe://example.org/workload",
                ],
                "selector \"unix\" must be formatted as type:value",
            ),
            (
                &[
                    "-selector",
                    "foo",
                    "-parentID",
                    "spiffe://example.org/parent",
                    "-spiffeID",
                    "spiffe://example.org/workload",
                ],
                "selector \"foo\" must be formatted as type:value",
            ),
            (
                &[
                    "-selector",
                    "unix:uid:1",
                    "-parentID",
                    "spiffe://example.org/parent",
                    "-spiffeID",
                    "spiffe://example.org/workload",
                    "-x509SVIDTTL",
                    "-10",
                ],
                "a positive x509-SVID TTL is required",
            ),
            (
                &[
                    "-selector",
                    "unix:uid:1",
                    "-parentID",
                    "spiffe://example.org/parent",
                    "-spiffeID",
                    "spiffe://example.org/workload",
                    "-jwtSVIDTTL",
                    "-10",
                ],
                "a positive JWT-SVID TTL is required",
            ),
            (
                &[
                    "-selector",
                    "unix:uid:1",
                    "-spiffeID",
                    "spiffe://example.org/workload",
                    "-node",
                    "-federatesWith",
                    "spiffe://domain.test",
                ],
                "node entries can not federate",
            ),
        ];
        for (args, want) in cases {
            let err = create(args).unwrap_err();
            assert!(matches!(err, CliError::Invalid(_)), "{args:?}");
            assert_eq!(err.to_string(), *want, "{args:?}");
        }
    }

    #[test]
    fn invalid_spiffe_id_is_rejected_locally() {
        let err = create(&[
            "-selector",
            "unix:uid:1",
            "-parentID",
            "spiffe://example.org/parent",
            "-spiffeID",
            "example.org/workload",
        ])
        .unwrap_err();
        assert!(matches!(err, CliError::Invalid(_)));
        assert!(
            err.to_string().starts_with("scheme is missing or invalid"),
            "{err}"
        );
    }

    #[test]
    fn update_requires_entry_id_and_parent() {
        let run = |args: &[&str]| {
            let mut argv = vec!["update"];
            argv.extend_from_slice(args);
            match parse(&argv) {
                EntryCommand::Update(a) => update_entries(&a).map_err(|e| e.to_string()),
                other => panic!("parsed as {other:?}"),
            }
        };
        assert_eq!(run(&[]).unwrap_err(), "entry ID is required");
        assert_eq!(
            run(&["-entryID", "x", "-selector", "a:b"]).unwrap_err(),
            "a parent ID is required"
        );
        let entries = run(&[
            "-entryID",
            "x",
            "-selector",
            "a:b",
            "-parentID",
            "spiffe://e.org/p",
            "-spiffeID",
            "spiffe://e.org/w",
            "-jwtSVIDIncludeJTI",
        ])
        .unwrap();
        assert_eq!(
            entries[0].additional_attributes,
            Some(entry::AdditionalAttributes {
                disable_x509_svid_prefetch: false,
                jwt_svid_include_jti: true,
            })
        );
    }

    #[test]
    fn update_merge_keeps_attributes_not_named() {
        let mut e = Entry {
            additional_attributes: Some(entry::AdditionalAttributes {
                disable_x509_svid_prefetch: false,
                jwt_svid_include_jti: true,
            }),
            ..Entry::default()
        };
        let existing = Entry {
            additional_attributes: Some(entry::AdditionalAttributes {
                disable_x509_svid_prefetch: true,
                jwt_svid_include_jti: false,
            }),
            ..Entry::default()
        };
        merge_additional_attributes(&mut e, &existing, false, true);
        assert_eq!(
            e.additional_attributes,
            Some(entry::AdditionalAttributes {
                disable_x509_svid_prefetch: true,
                jwt_svid_include_jti: true,
            })
        );
    }

    #[test]
    fn printed_entry_matches_spire_layout() {
        let mut e = sample_entry();
        e.hint = "internal".into();
        assert_eq!(
            print_entry(&e),
            "Entry ID                : entry-id
SPIFFE ID               : spiffe://example.org/workload
Parent ID               : spiffe://example.org/parent
Revision                : 0
Downstream              : true
X509-SVID TTL           : 60
JWT-SVID TTL            : 30
Expiration time         : 2019-03-12 17:04:26 +0000 UTC
Selector                : zebra:zebra:2000
Selector                : alpha:alpha:2000
FederatesWith           : spiffe://domaina.test
FederatesWith           : spiffe://domainb.test
DNS name                : unu1000
DNS name                : ung1000
Admin                   : true
StoreSvid               : true
Hint                    : internal
DisableX509SvidPrefetch : true

"
        );
        let minimal = Entry {
            spiffe_id: id("example.org", "/w"),
            parent_id: id("example.org", "/p"),
            selectors: vec![sel("unix", "uid:1000")],
            ..Entry::default()
        };
        assert_eq!(
            print_entry(&minimal),
            "Entry ID                : (none)
SPIFFE ID               : spiffe://example.org/w
Parent ID               : spiffe://example.org/p
Revision                : 0
X509-SVID TTL           : default
JWT-SVID TTL            : default
Selector                : unix:uid:1000

"
        );
    }

    #[test]
    fn failed_create_prints_requested_entry_on_stderr_and_fails() {
        let requested = vec![Entry {
            spiffe_id: id("example.org", "/w"),
            parent_id: id("example.org", "/p"),
            selectors: vec![sel("unix", "uid:1")],
            ..Entry::default()
        }];
        let status = Status {
            code: 6,
            message: "similar entry already exists".into(),
        };
        let out = render_batch(
            Verb::Create,
            [(Some(status.clone()), None)],
            &requested,
            OutputFormat::Pretty,
        );
        assert_eq!(out.stdout, "");
        assert_eq!(
            out.stderr,
            "Failed to create the following entry (code: AlreadyExists, msg: \"similar entry already exists\"):
Entry ID                : (none)
SPIFFE ID               : spiffe://example.org/w
Parent ID               : spiffe://example.org/p
Revision                : 0
X509-SVID TTL           : default
JWT-SVID TTL            : default
Selector                : unix:uid:1

"
        );
        assert_eq!(
            out.error.as_deref(),
            Some("failed to create one or more entries")
        );

        let out = render_batch(
            Verb::Create,
            [(Some(status), None)],
            &requested,
            OutputFormat::Json,
        );
        assert_eq!(out.error, None);
        assert_eq!(
            out.stdout,
            "{\"results\":[{\"entry\":{\"admin\":false,\"created_at\":\"0\",\"dns_names\":[],\
             \"downstream\":false,\"expires_at\":\"0\",\"federates_with\":[],\"hint\":\"\",\"id\":\"\",\
             \"jwt_svid_ttl\":0,\"parent_id\":{\"path\":\"/p\",\"trust_domain\":\"example.org\"},\
             \"revision_number\":\"0\",\"selectors\":[{\"type\":\"unix\",\"value\":\"uid:1\"}],\
             \"spiffe_id\":{\"path\":\"/w\",\"trust_domain\":\"example.org\"},\"store_svid\":false,\
             \"x509_svid_ttl\":0},\"status\":{\"code\":6,\"message\":\"similar entry already exists\"}}]}\n"
        );
    }

    #[test]
    fn created_entry_json_matches_protojson_shape() {
        let e = sample_entry();
        let ok = Status {
            code: 0,
            message: "OK".into(),
        };
        let out = render_batch(
            Verb::Create,
            [(Some(ok), Some(e.clone()))],
            &[e],
            OutputFormat::Json,
        );
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let want = serde_json::json!({"results": [{
            "status": {"code": 0, "message": "OK"},
            "entry": {
                "id": "entry-id",
                "spiffe_id": {"trust_domain": "example.org", "path": "/workload"},
                "parent_id": {"trust_domain": "example.org", "path": "/parent"},
                "selectors": [{"type": "zebra", "value": "zebra:2000"}, {"type": "alpha", "value": "alpha:2000"}],
                "x509_svid_ttl": 60,
                "federates_with": ["spiffe://domaina.test", "spiffe://domainb.test"],
                "hint": "",
                "admin": true,
                "created_at": "1547583197",
                "downstream": true,
                "expires_at": "1552410266",
                "dns_names": ["unu1000", "ung1000"],
                "revision_number": "0",
                "store_svid": true,
                "jwt_svid_ttl": 30,
                "additional_attributes": {"disable_x509_svid_prefetch": true, "jwt_svid_include_jti": false}
            }
        }]});
        assert_eq!(v, want);
    }

    #[test]
    fn show_rejects_entry_id_with_other_filters() {
        let EntryCommand::Show(args) =
            parse(&["show", "-entryID", "x", "-spiffeID", "spiffe://e.org/a"])
        else {
            panic!("not show");
        };
        assert_eq!(
            show_query(&args).unwrap_err().to_string(),
            "the -entryID flag can't be combined with others"
        );
    }

    #[test]
    fn show_filter_is_built_like_spire() {
        let EntryCommand::Show(args) = parse(&[
            "show",
            "-spiffeID",
            "spiffe://e.org/a",
            "-selector",
            "unix:uid:1",
            "-matchSelectorsOn",
            "exact",
            "-hint",
            "h",
        ]) else {
            panic!("not show");
        };
        let ShowQuery::List(f) = show_query(&args).unwrap() else {
            panic!("not list");
        };
        assert_eq!(f.by_spiffe_id, id("e.org", "/a"));
        assert_eq!(f.by_parent_id, None);
        let s = f.by_selectors.unwrap();
        assert_eq!(s.selectors, vec![sel("unix", "uid:1")]);
        assert_eq!(s.r#match, selector_match::MatchBehavior::MatchExact as i32);
        assert_eq!(f.by_hint.as_deref(), Some("h"));
        assert_eq!(f.by_downstream, Some(false));

        let EntryCommand::Show(args) = parse(&[
            "show",
            "-selector",
            "unix:uid:1",
            "-matchSelectorsOn",
            "most",
        ]) else {
            panic!("not show");
        };
        assert_eq!(
            show_query(&args).unwrap_err().to_string(),
            "match behavior \"most\" unknown"
        );
        let EntryCommand::Show(args) = parse(&["show", "-parentID", "nope"]) else {
            panic!("not show");
        };
        assert!(
            show_query(&args)
                .unwrap_err()
                .to_string()
                .starts_with("error parsing parent ID \"nope\": scheme is missing or invalid")
        );
    }

    #[test]
    fn show_output_counts_and_sorts_like_spire() {
        let mut entries = vec![
            Entry {
                id: "b".into(),
                spiffe_id: id("e.org", "/b"),
                parent_id: id("e.org", "/p"),
                selectors: vec![sel("z", "1"), sel("a", "1")],
                ..Entry::default()
            },
            Entry {
                id: "a".into(),
                spiffe_id: id("e.org", "/a"),
                parent_id: id("e.org", "/p"),
                ..Entry::default()
            },
        ];
        sort_entries(&mut entries);
        assert_eq!(entries[0].id, "a");
        assert_eq!(entries[1].selectors, vec![sel("a", "1"), sel("z", "1")]);
        let resp = ListEntriesResponse {
            entries: entries[..1].to_vec(),
            next_page_token: String::new(),
        };
        let out = render_show(&resp, OutputFormat::Pretty);
        assert!(
            out.stdout
                .starts_with("Found 1 entry\nEntry ID                : a\n")
        );
        let out = render_show(&ListEntriesResponse::default(), OutputFormat::Pretty);
        assert_eq!(out.stdout, "Found 0 entries\n");
        let out = render_show(&ListEntriesResponse::default(), OutputFormat::Json);
        assert_eq!(out.stdout, "{\"entries\":[],\"next_page_token\":\"\"}\n");
    }

    #[test]
    fn count_output_pluralizes() {
        assert_eq!(
            render_count(1, OutputFormat::Pretty).stdout,
            "1 registration entry\n"
        );
        assert_eq!(
            render_count(3, OutputFormat::Pretty).stdout,
            "3 registration entries\n"
        );
        assert_eq!(
            render_count(3, OutputFormat::Json).stdout,
            "{\"count\":3}\n"
        );
    }

    #[test]
    fn delete_reports_each_result() {
        use sigil_proto::spire::api::server::entry::v1::batch_delete_entry_response::Result as R;
        let resp = BatchDeleteEntryResponse {
            results: vec![
                R {
                    status: Some(Status {
                        code: 5,
                        message: "entry not found".into(),
                    }),
                    id: "entry-0".into(),
                },
                R {
                    status: Some(Status {
                        code: 0,
                        message: "OK".into(),
                    }),
                    id: "entry-1".into(),
                },
            ],
        };
        let out = render_delete(&resp, OutputFormat::Pretty);
        assert!(out.stdout.starts_with("Deleted entry with ID: entry-1\n"));
        assert_eq!(
            out.stderr,
            "Failed to delete entry with ID entry-0 (code: NotFound, msg: \"entry not found\")\n"
        );
        assert_eq!(
            out.error.as_deref(),
            Some("failed to delete one or more entries")
        );
        let out = render_delete(&resp, OutputFormat::Json);
        assert_eq!(
            out.stdout,
            "{\"results\":[{\"id\":\"entry-0\",\"status\":{\"code\":5,\"message\":\"entry not found\"}},\
             {\"id\":\"entry-1\",\"status\":{\"code\":0,\"message\":\"OK\"}}]}\n"
        );
        let EntryCommand::Delete(args) = parse(&["delete"]) else {
            panic!("not delete");
        };
        assert_eq!(
            delete_ids(&args).unwrap_err().to_string(),
            "an entry ID is required"
        );
    }

    #[test]
    fn data_file_in_spire_format_is_read() {
        let data = br#"{"entries": [
            {"selectors": [{"type": "unix", "value": "uid:1111"}],
             "spiffe_id": "spiffe://example.org/Blog",
             "parent_id": "spiffe://example.org/spire/agent/join_token/TokenBlog",
             "x509_svid_ttl": 200, "jwt_svid_ttl": 30, "admin": true,
             "additional_attributes": {"disable_x509_svid_prefetch": true}},
            {"selectors": [{"type": "unix", "value": "uid:1111"}],
             "spiffe_id": "spiffe://example.org/Database",
             "parent_id": "spiffe://example.org/spire/agent/join_token/TokenDatabase",
             "hint": "internal", "entryExpiry": 5, "federates_with": ["spiffe://fed.test"]}
        ]}"#;
        let entries = parse_entries_json(data).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].spiffe_id, id("example.org", "/Blog"));
        assert_eq!(entries[0].x509_svid_ttl, 200);
        assert!(
            entries[0]
                .additional_attributes
                .unwrap()
                .disable_x509_svid_prefetch
        );
        assert_eq!(entries[1].expires_at, 5);
        assert_eq!(entries[1].federates_with, vec!["fed.test".to_owned()]);
        let err = parse_entries_json(
            br#"{"entries":[{"spiffe_id":"x","parent_id":"spiffe://e.org/p"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("invalid SPIFFE ID: "), "{err}");
    }

    #[test]
    fn data_flag_reads_the_file_and_skips_flag_validation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.json");
        std::fs::write(
            &path,
            r#"{"entries":[{"spiffe_id":"spiffe://e.org/w","parent_id":"spiffe://e.org/p","selectors":[{"type":"a","value":"b"}]}]}"#,
        )
        .unwrap();
        let entries = create(&["-data", path.to_str().unwrap()]).unwrap();
        assert_eq!(entries[0].selectors, vec![sel("a", "b")]);
        let missing = dir.path().join("missing.json");
        let err = create(&["-data", missing.to_str().unwrap()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("open {}: no such file or directory", missing.display())
        );
    }
}
