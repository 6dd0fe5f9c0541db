//! `agent list|show|evict|ban|count|purge`: attested agents.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use sigil_proto::spire::api::server::agent::v1::{
    BanAgentRequest, CountAgentsRequest, DeleteAgentRequest, GetAgentRequest, ListAgentsRequest,
    ListAgentsResponse, agent_client::AgentClient, count_agents_request, list_agents_request,
};
use sigil_proto::spire::api::types::{Agent, AgentMask, SelectorMatch, Spiffeid, selector_match};

use super::rpc::{connect, status_in};
use super::{
    CliError, ConnArgs, Outcome, OutputFormat, fmt, json, parse_go_bool, parse_output_format,
};

/// How many agents `agent list` asks for per page (SPIRE's value).
pub const LIST_PAGE_SIZE: i32 = 1000;

/// The layout `-expiresBefore` must follow (Go reference time, as SPIRE
/// documents it).
pub const EXPIRES_BEFORE_LAYOUT: &str = "2006-01-02 15:04:05 -0700 -07";

/// `agent` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AgentCommand {
    /// Lists attested agents and their SPIFFE IDs
    List(AgentListArgs),
    /// Shows the details of an attested agent given its SPIFFE ID
    Show(AgentIdArgs),
    /// Evicts an attested agent given its SPIFFE ID
    Evict(AgentIdArgs),
    /// Ban an attested agent given its SPIFFE ID
    Ban(AgentIdArgs),
    /// Count attested agents
    Count(AgentListArgs),
    /// Purge expired agents that were attested using a non-TOFU security
    /// model based on a given time
    Purge(AgentPurgeArgs),
}

/// Filter flags of `agent list` and `agent count`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AgentListArgs {
    /// A colon-delimited type:value selector. Can be used more than once
    #[arg(long = "selector", action = clap::ArgAction::Append)]
    pub selector: Vec<String>,
    /// Filter by attestation type, like join_token or x509pop.
    #[arg(
        long = "attestationType",
        default_value = "",
        hide_default_value = true
    )]
    pub attestation_type: String,
    /// 'true': agents that can reattest, 'false': agents that can't
    /// reattest, other value will return all.
    #[arg(long = "canReattest", default_value = "", hide_default_value = true)]
    pub can_reattest: String,
    /// 'true': banned agents, 'false': not banned agents, other value will
    /// return all.
    #[arg(long = "banned", default_value = "", hide_default_value = true)]
    pub banned: String,
    /// Filter by expiration time (format: "2006-01-02 15:04:05 -0700 -07")
    #[arg(long = "expiresBefore", default_value = "", hide_default_value = true)]
    pub expires_before: String,
    /// The match mode used when filtering by selectors. Options: exact, any,
    /// superset and subset
    #[arg(long = "matchSelectorsOn", default_value = "superset")]
    pub match_selectors_on: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Flags of the commands that name one agent.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AgentIdArgs {
    /// The SPIFFE ID of the agent (agent identity)
    #[arg(long = "spiffeID", default_value = "", hide_default_value = true)]
    pub spiffe_id: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Flags of `agent purge`.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentPurgeArgs {
    /// Amount of time that has passed since the agent's SVID has expired. It
    /// is used to determine which agents to purge.
    #[arg(long = "expiredFor", default_value = "720h", value_parser = sigil_cli::parse_duration)]
    pub expired_for: Duration,
    /// Indicates that the command will not perform any action, but will
    /// print the agents that would be purged.
    #[arg(long = "dryRun", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub dry_run: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// One agent `agent purge` found expired, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpiredAgent {
    /// Its SPIFFE ID.
    pub agent_id: String,
    /// Whether it was evicted (never, on a dry run).
    pub deleted: bool,
    /// Why eviction failed; empty when it did not.
    pub error: String,
}

/// The parsed filter shared by `ListAgents` and `CountAgents`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct AgentFilter {
    pub by_attestation_type: String,
    pub by_selector_match: Option<SelectorMatch>,
    pub by_banned: Option<bool>,
    pub by_can_reattest: Option<bool>,
    pub by_expires_before: String,
}

pub(crate) async fn run(cmd: AgentCommand) -> Result<Outcome, CliError> {
    match cmd {
        AgentCommand::List(args) => {
            let f = agent_filter(&args)?;
            let mut client = AgentClient::new(super::connect(&args.conn).await?);
            let mut all = ListAgentsResponse::default();
            let mut page_token = String::new();
            loop {
                let resp = client
                    .list_agents(ListAgentsRequest {
                        filter: Some(list_agents_request::Filter {
                            by_attestation_type: f.by_attestation_type.clone(),
                            by_selector_match: f.by_selector_match.clone(),
                            by_banned: f.by_banned,
                            by_can_reattest: f.by_can_reattest,
                            by_expires_before: f.by_expires_before.clone(),
                        }),
                        output_mask: None,
                        page_size: LIST_PAGE_SIZE,
                        page_token: page_token.clone(),
                    })
                    .await?
                    .into_inner();
                all.agents.extend(resp.agents);
                if resp.next_page_token.is_empty() || resp.next_page_token == page_token {
                    break;
                }
                page_token = resp.next_page_token;
            }
            Ok(render_list(&all, args.output))
        }
        AgentCommand::Count(args) => {
            let f = agent_filter(&args)?;
            let mut client = AgentClient::new(super::connect(&args.conn).await?);
            let count = client
                .count_agents(CountAgentsRequest {
                    filter: Some(count_agents_request::Filter {
                        by_attestation_type: f.by_attestation_type,
                        by_selector_match: f.by_selector_match,
                        by_banned: f.by_banned,
                        by_can_reattest: f.by_can_reattest,
                        by_expires_before: f.by_expires_before,
                    }),
                })
                .await?
                .into_inner()
                .count;
            Ok(render_count(count, args.output))
        }
        AgentCommand::Purge(args) => {
            let context = Some("failed to list agents");
            let mut client = AgentClient::new(connect(&args.conn, context).await?);
            // One page, as SPIRE asks: only agents that can re-attest are
            // safe to evict.
            let agents = client
                .list_agents(ListAgentsRequest {
                    filter: Some(list_agents_request::Filter {
                        by_can_reattest: Some(true),
                        ..Default::default()
                    }),
                    output_mask: Some(AgentMask {
                        x509svid_expires_at: true,
                        ..Default::default()
                    }),
                    page_size: 0,
                    page_token: String::new(),
                })
                .await
                .map_err(status_in(context))?
                .into_inner()
                .agents;
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let mut expired = Vec::new();
            for agent in expired_agents(&agents, now, args.expired_for)? {
                let mut result = ExpiredAgent {
                    agent_id: fmt::proto_to_id(Some(&agent)),
                    deleted: false,
                    error: String::new(),
                };
                if !args.dry_run {
                    match client
                        .delete_agent(DeleteAgentRequest { id: Some(agent) })
                        .await
                    {
                        Ok(_) => result.deleted = true,
                        Err(status) => result.error = fmt::rpc_error(&status),
                    }
                }
                expired.push(result);
            }
            Ok(render_purge(&expired, args.dry_run, args.output))
        }
        AgentCommand::Show(args) => {
            let id = agent_id(&args)?;
            let mut client = AgentClient::new(super::connect(&args.conn).await?);
            let agent = client
                .get_agent(GetAgentRequest {
                    id: Some(id),
                    output_mask: None,
                })
                .await?
                .into_inner();
            Ok(render_show(&agent, args.output))
        }
        AgentCommand::Evict(args) => {
            let id = agent_id(&args)?;
            let mut client = AgentClient::new(super::connect(&args.conn).await?);
            client
                .delete_agent(DeleteAgentRequest { id: Some(id) })
                .await?;
            Ok(render_done("Agent evicted successfully", args.output))
        }
        AgentCommand::Ban(args) => {
            let id = agent_id(&args)?;
            let mut client = AgentClient::new(super::connect(&args.conn).await?);
            client.ban_agent(BanAgentRequest { id: Some(id) }).await?;
            Ok(render_done("Agent banned successfully", args.output))
        }
    }
}

/// Validates `agent list|count` flags into a filter, as SPIRE does.
pub(crate) fn agent_filter(args: &AgentListArgs) -> Result<AgentFilter, CliError> {
    let by_selector_match = if args.selector.is_empty() {
        None
    } else {
        let behavior = match args.match_selectors_on.as_str() {
            "exact" => selector_match::MatchBehavior::MatchExact,
            "any" => selector_match::MatchBehavior::MatchAny,
            "superset" => selector_match::MatchBehavior::MatchSuperset,
            "subset" => selector_match::MatchBehavior::MatchSubset,
            _ => return Err(CliError::Invalid("unsupported match behavior".into())),
        };
        let selectors = args
            .selector
            .iter()
            .map(|s| {
                fmt::parse_selector(s).map_err(|e| {
                    CliError::Invalid(format!("error parsing selector {}: {e}", fmt::go_quote(s)))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Some(SelectorMatch {
            selectors,
            r#match: behavior as i32,
        })
    };
    if !args.expires_before.is_empty() {
        check_expires_before(&args.expires_before).map_err(|reason| {
            CliError::Invalid(format!(
                "date is not valid: parsing time {} as {}: {reason}",
                fmt::go_quote(&args.expires_before),
                fmt::go_quote(EXPIRES_BEFORE_LAYOUT)
            ))
        })?;
    }
    Ok(AgentFilter {
        by_attestation_type: args.attestation_type.clone(),
        by_selector_match,
        by_banned: tri_state(&args.banned),
        by_can_reattest: tri_state(&args.can_reattest),
        by_expires_before: args.expires_before.clone(),
    })
}

/// The IDs of the agents whose SVID expired more than `expired_for`
/// before `now` (time since the Unix epoch).
pub(crate) fn expired_agents(
    agents: &[Agent],
    now: Duration,
    expired_for: Duration,
) -> Result<Vec<Spiffeid>, CliError> {
    let mut expired = Vec::new();
    for agent in agents {
        let id = agent
            .id
            .clone()
            .ok_or_else(|| CliError::Output("request must specify SPIFFE ID".into()))?;
        let expires_at = Duration::from_secs(u64::try_from(agent.x509svid_expires_at).unwrap_or(0));
        if now
            .checked_sub(expires_at)
            .is_some_and(|since| since > expired_for)
        {
            expired.push(id);
        }
    }
    Ok(expired)
}

/// What `agent purge` found and did. JSON is the Go struct SPIRE prints
/// (fields in declaration order, `error` only when set).
pub(crate) fn render_purge(
    expired: &[ExpiredAgent],
    dry_run: bool,
    output: OutputFormat,
) -> Outcome {
    if output == OutputFormat::Json {
        let agents = expired
            .iter()
            .map(|a| {
                let mut fields = vec![
                    ("agent_id".to_owned(), Value::from(a.agent_id.as_str())),
                    ("deleted".to_owned(), Value::from(a.deleted)),
                ];
                if !a.error.is_empty() {
                    fields.push(("error".to_owned(), Value::from(a.error.as_str())));
                }
                Value::Object(fields.into_iter().collect())
            })
            .collect();
        return Outcome::stdout(json::encode_struct(&[(
            "expired_agents",
            Value::Array(agents),
        )]));
    }
    if expired.is_empty() {
        return Outcome::stdout("No agents to purge.\n".into());
    }
    let n = expired.len();
    let mut out = fmt::pluralize(&format!("Found {n} expired "), "agent", "agents", n);
    out.push_str("\n\n");
    if dry_run {
        out.push_str("\nAgents that can be purged:\n");
        for a in expired {
            out.push_str(&format!("SPIFFE ID         : {}\n", a.agent_id));
        }
        return Outcome::stdout(out);
    }
    let (purged, kept): (Vec<_>, Vec<_>) = expired.iter().partition(|a| a.deleted);
    if !purged.is_empty() {
        out.push_str("Agents purged:\n");
        for a in purged {
            out.push_str(&format!("SPIFFE ID         : {}\n", a.agent_id));
        }
    }
    if !kept.is_empty() {
        out.push_str("Agents not purged:\n");
        for a in kept {
            out.push_str(&format!("SPIFFE ID         : {}\n", a.agent_id));
            out.push_str(&format!("Error             : {}\n", a.error));
        }
    }
    Outcome::stdout(out)
}

/// The agent named by `-spiffeID`, required and valid.
pub(crate) fn agent_id(args: &AgentIdArgs) -> Result<Spiffeid, CliError> {
    if args.spiffe_id.is_empty() {
        return Err(CliError::Invalid("a SPIFFE ID is required".into()));
    }
    fmt::id_to_proto(&args.spiffe_id).map_err(|e| CliError::Invalid(e.to_string()))
}

/// `Found N attested agents:` and each agent, or `No attested agents found`.
pub(crate) fn render_list(resp: &ListAgentsResponse, output: OutputFormat) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::list_agents_response(resp)));
    }
    let n = resp.agents.len();
    if n == 0 {
        return Outcome::stdout("No attested agents found\n".into());
    }
    let mut out = fmt::pluralize(&format!("Found {n} attested "), "agent", "agents", n);
    out.push_str(":\n\n");
    for a in &resp.agents {
        out.push_str(&print_agent(a));
    }
    Outcome::stdout(out)
}

/// One agent with its selectors (`agent show`).
pub(crate) fn render_show(agent: &Agent, output: OutputFormat) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::agent(agent)));
    }
    let mut out = String::from("Found an attested agent given its SPIFFE ID\n\n");
    out.push_str(&print_agent(agent));
    for s in &agent.selectors {
        out.push_str(&format!("Selectors         : {}:{}\n", s.r#type, s.value));
    }
    Outcome::stdout(out)
}

/// `N attested agents`.
pub(crate) fn render_count(count: i32, output: OutputFormat) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::count(count)));
    }
    let n = usize::try_from(count).unwrap_or(0);
    let mut out = fmt::pluralize(&format!("{count} attested "), "agent", "agents", n);
    out.push('\n');
    Outcome::stdout(out)
}

/// The one-line confirmation of evict/ban (`{}` for JSON: the API returns
/// `Empty`).
pub(crate) fn render_done(message: &str, output: OutputFormat) -> Outcome {
    match output {
        OutputFormat::Json => Outcome::stdout(json::encode(&json::empty())),
        OutputFormat::Pretty => Outcome::stdout(format!("{message}\n")),
    }
}

/// One agent in SPIRE's layout, ending with a blank line. A banned agent
/// shows `Banned` instead of its serial number.
pub(crate) fn print_agent(a: &Agent) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: &dyn std::fmt::Display| {
        out.push_str(&format!("{label:<18}: {value}\n"));
    };
    line("SPIFFE ID", &fmt::proto_to_id(a.id.as_ref()));
    line("Attestation type", &a.attestation_type);
    line("Expiration time", &fmt::go_time_utc(a.x509svid_expires_at));
    if a.banned {
        line("Banned", &true);
    } else {
        line("Serial number", &a.x509svid_serial_number);
    }
    line("Can re-attest", &a.can_reattest);
    if !a.agent_version.is_empty() {
        line("Agent version", &a.agent_version);
    }
    out.push('\n');
    out
}

/// SPIRE's three-state flag: `true`, `false`, anything else means "all".
fn tri_state(s: &str) -> Option<bool> {
    match s {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Checks `2006-01-02 15:04:05 -0700 -07`: a date, a time, a numeric zone
/// offset and the offset's hours again.
fn check_expires_before(s: &str) -> Result<(), LayoutMismatch> {
    let mismatch = |text: &str, layout: &'static str| LayoutMismatch {
        text: text.to_owned(),
        layout,
    };
    let parts: Vec<&str> = s.split(' ').collect();
    let [date, clock, offset, offset_hours] = parts.as_slice() else {
        return Err(mismatch(s, "the layout"));
    };
    check_date(date).ok_or_else(|| mismatch(date, "\"2006-01-02\""))?;
    check_clock(clock).ok_or_else(|| mismatch(clock, "\"15:04:05\""))?;
    let signed_digits = |v: &str, n: usize| {
        v.len() == n + 1
            && (v.starts_with('+') || v.starts_with('-'))
            && v[1..].bytes().all(|b| b.is_ascii_digit())
    };
    if !signed_digits(offset, 4) {
        return Err(mismatch(offset, "\"-0700\""));
    }
    if !signed_digits(offset_hours, 2) {
        return Err(mismatch(offset_hours, "\"-07\""));
    }
    Ok(())
}

/// Part of an `-expiresBefore` value that does not match its piece of the
/// layout (Go's `time.Parse` wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse {} as {layout}", fmt::go_quote(.text))]
struct LayoutMismatch {
    /// The text that failed.
    text: String,
    /// The layout piece, quoted as Go quotes it (or `the layout`).
    layout: &'static str,
}

/// `YYYY-MM-DD`, a real calendar date.
fn check_date(s: &str) -> Option<()> {
    let mut it = s.split('-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || !digits(y, 4) || !digits(m, 2) || !digits(d, 2) {
        return None;
    }
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()?;
    Some(())
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

/// `HH:MM:SS`, a real time of day.
fn check_clock(s: &str) -> Option<()> {
    let mut it = s.split(':');
    let (h, m, sec) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || ![h, m, sec].iter().all(|p| digits(p, 2)) {
        return None;
    }
    time::Time::from_hms(h.parse().ok()?, m.parse().ok()?, sec.parse().ok()?).ok()?;
    Some(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use sigil_proto::spire::api::types::Selector;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: AgentCommand,
    }

    fn parse(args: &[&str]) -> AgentCommand {
        let mut argv = vec!["agent"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(sigil_cli::normalize_go_flags(argv))
            .unwrap()
            .cmd
    }

    fn list_args(args: &[&str]) -> AgentListArgs {
        let mut argv = vec!["list"];
        argv.extend_from_slice(args);
        match parse(&argv) {
            AgentCommand::List(a) => a,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn agent() -> Agent {
        Agent {
            id: Some(Spiffeid {
                trust_domain: "example.org".into(),
                path: "/spire/agent/join_token/abc".into(),
            }),
            attestation_type: "join_token".into(),
            x509svid_serial_number: "123".into(),
            x509svid_expires_at: 1552410266,
            selectors: vec![Selector {
                r#type: "k8s_psat".into(),
                value: "cluster:demo".into(),
            }],
            banned: false,
            can_reattest: false,
            agent_version: String::new(),
        }
    }

    #[test]
    fn list_output_matches_spire() {
        let resp = ListAgentsResponse {
            agents: vec![agent()],
            next_page_token: String::new(),
        };
        assert_eq!(
            render_list(&resp, OutputFormat::Pretty).stdout,
            "Found 1 attested agent:

SPIFFE ID         : spiffe://example.org/spire/agent/join_token/abc
Attestation type  : join_token
Expiration time   : 2019-03-12 17:04:26 +0000 UTC
Serial number     : 123
Can re-attest     : false

"
        );
        assert_eq!(
            render_list(&ListAgentsResponse::default(), OutputFormat::Pretty).stdout,
            "No attested agents found\n"
        );
    }

    #[test]
    fn show_output_lists_selectors_and_banned_hides_serial() {
        let mut a = agent();
        a.banned = true;
        a.agent_version = "1.9.0".into();
        assert_eq!(
            render_show(&a, OutputFormat::Pretty).stdout,
            "Found an attested agent given its SPIFFE ID

SPIFFE ID         : spiffe://example.org/spire/agent/join_token/abc
Attestation type  : join_token
Expiration time   : 2019-03-12 17:04:26 +0000 UTC
Banned            : true
Can re-attest     : false
Agent version     : 1.9.0

Selectors         : k8s_psat:cluster:demo
"
        );
    }

    #[test]
    fn agent_json_matches_protojson_shape() {
        let out = render_show(&agent(), OutputFormat::Json).stdout;
        assert_eq!(
            out,
            "{\"agent_version\":\"\",\"attestation_type\":\"join_token\",\"banned\":false,\
             \"can_reattest\":false,\"id\":{\"path\":\"/spire/agent/join_token/abc\",\
             \"trust_domain\":\"example.org\"},\"selectors\":[{\"type\":\"k8s_psat\",\
             \"value\":\"cluster:demo\"}],\"x509svid_expires_at\":\"1552410266\",\
             \"x509svid_serial_number\":\"123\"}\n"
        );
        assert_eq!(render_done("x", OutputFormat::Json).stdout, "{}\n");
        assert_eq!(
            render_done("Agent evicted successfully", OutputFormat::Pretty).stdout,
            "Agent evicted successfully\n"
        );
    }

    #[test]
    fn count_output_pluralizes() {
        assert_eq!(
            render_count(1, OutputFormat::Pretty).stdout,
            "1 attested agent\n"
        );
        assert_eq!(
            render_count(0, OutputFormat::Pretty).stdout,
            "0 attested agents\n"
        );
    }

    #[test]
    fn filter_flags_parse_like_spire() {
        let f = agent_filter(&list_args(&[
            "-selector",
            "a:b",
            "-matchSelectorsOn",
            "any",
            "-banned",
            "true",
            "-canReattest",
            "maybe",
            "-attestationType",
            "join_token",
            "-expiresBefore",
            "2030-01-02 15:04:05 +0000 +00",
        ]))
        .unwrap();
        assert_eq!(f.by_banned, Some(true));
        assert_eq!(f.by_can_reattest, None);
        assert_eq!(f.by_attestation_type, "join_token");
        assert_eq!(f.by_expires_before, "2030-01-02 15:04:05 +0000 +00");
        let m = f.by_selector_match.unwrap();
        assert_eq!(m.r#match, selector_match::MatchBehavior::MatchAny as i32);

        let err = agent_filter(&list_args(&["-selector", "foo"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "error parsing selector \"foo\": selector \"foo\" must be formatted as type:value"
        );
        let err =
            agent_filter(&list_args(&["-selector", "a:b", "-matchSelectorsOn", "x"])).unwrap_err();
        assert_eq!(err.to_string(), "unsupported match behavior");
        let err = agent_filter(&list_args(&["-expiresBefore", "tomorrow"])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("date is not valid: parsing time \"tomorrow\"")
        );
    }

    #[test]
    fn agent_id_is_required_and_validated() {
        let AgentCommand::Evict(args) = parse(&["evict"]) else {
            panic!("not evict");
        };
        assert_eq!(
            agent_id(&args).unwrap_err().to_string(),
            "a SPIFFE ID is required"
        );
        let AgentCommand::Ban(args) = parse(&["ban", "-spiffeID", "spiffe://e.org/a/"]) else {
            panic!("not ban");
        };
        assert_eq!(
            agent_id(&args).unwrap_err().to_string(),
            "path cannot have a trailing slash"
        );
    }

    #[test]
    fn purge_flags_default_to_thirty_days_and_no_dry_run() {
        let AgentCommand::Purge(a) = parse(&["purge"]) else {
            panic!("not purge");
        };
        assert_eq!(a.expired_for, Duration::from_secs(30 * 24 * 3600));
        assert!(!a.dry_run);
        let AgentCommand::Purge(a) = parse(&["purge", "-expiredFor", "1h30m", "-dryRun"]) else {
            panic!("not purge");
        };
        assert_eq!(a.expired_for, Duration::from_secs(5400));
        assert!(a.dry_run);
    }

    #[test]
    fn purge_picks_agents_expired_longer_than_the_grace() {
        let with_expiry = |path: &str, expires_at: i64| Agent {
            id: Some(Spiffeid {
                trust_domain: "example.org".into(),
                path: path.into(),
            }),
            x509svid_expires_at: expires_at,
            ..Agent::default()
        };
        let agents = [
            with_expiry("/old", 1_000),
            with_expiry("/recent", 9_500),
            with_expiry("/valid", 20_000),
        ];
        let ids = expired_agents(
            &agents,
            Duration::from_secs(10_000),
            Duration::from_secs(1_000),
        )
        .unwrap();
        assert_eq!(
            ids.iter().map(|i| i.path.as_str()).collect::<Vec<_>>(),
            ["/old"]
        );
    }

    #[test]
    fn purge_output_matches_spire() {
        let found = |id: &str, deleted: bool, error: &str| ExpiredAgent {
            agent_id: id.into(),
            deleted,
            error: error.into(),
        };
        assert_eq!(
            render_purge(&[], false, OutputFormat::Pretty).stdout,
            "No agents to purge.\n"
        );
        assert_eq!(
            render_purge(&[], false, OutputFormat::Json).stdout,
            "{\"expired_agents\":[]}\n"
        );
        let dry = [found("spiffe://e.org/a", false, "")];
        assert_eq!(
            render_purge(&dry, true, OutputFormat::Pretty).stdout,
            "Found 1 expired agent\n\n\nAgents that can be purged:\nSPIFFE ID         : spiffe://e.org/a\n"
        );
        let done = [
            found("spiffe://e.org/a", true, ""),
            found(
                "spiffe://e.org/b",
                false,
                "rpc error: code = Internal desc = x",
            ),
        ];
        assert_eq!(
            render_purge(&done, false, OutputFormat::Pretty).stdout,
            "Found 2 expired agents\n\nAgents purged:\nSPIFFE ID         : spiffe://e.org/a\n\
             Agents not purged:\nSPIFFE ID         : spiffe://e.org/b\n\
             Error             : rpc error: code = Internal desc = x\n"
        );
        assert_eq!(
            render_purge(&done, false, OutputFormat::Json).stdout,
            "{\"expired_agents\":[{\"agent_id\":\"spiffe://e.org/a\",\"deleted\":true},\
             {\"agent_id\":\"spiffe://e.org/b\",\"deleted\":false,\
             \"error\":\"rpc error: code = Internal desc = x\"}]}\n"
        );
    }
}
