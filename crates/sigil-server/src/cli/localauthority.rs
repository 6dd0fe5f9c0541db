//! `localauthority x509|jwt show|prepare|activate|taint|revoke`: the
//! server's own signing authorities and their rotation, through
//! `spire.api.server.localauthority.v1`.

use sigil_proto::spire::api::server::localauthority::v1::{
    ActivateJwtAuthorityRequest, ActivateX509AuthorityRequest, AuthorityState,
    GetJwtAuthorityStateRequest, GetX509AuthorityStateRequest, PrepareJwtAuthorityRequest,
    PrepareX509AuthorityRequest, RevokeJwtAuthorityRequest, RevokeX509AuthorityRequest,
    TaintJwtAuthorityRequest, TaintX509AuthorityRequest,
    local_authority_client::LocalAuthorityClient,
};
use tonic::transport::Channel;

use super::rpc::{connect, status_in};
use super::{CliError, ConnArgs, Outcome, OutputFormat, fmt, json, parse_output_format};

/// `localauthority` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum LocalAuthorityCommand {
    /// Manage the local X.509 authorities
    #[command(subcommand)]
    X509(AuthorityCommand),
    /// Manage the local JWT authorities
    #[command(subcommand)]
    Jwt(AuthorityCommand),
}

/// What can be done to one kind of local authority.
#[derive(clap::Subcommand, Debug)]
pub enum AuthorityCommand {
    /// Shows the local authorities (active, prepared, old)
    Show(AuthorityArgs),
    /// Prepares a new authority for use by generating a new key and
    /// injecting it into the bundle
    Prepare(AuthorityArgs),
    /// Activates a prepared authority for use, which will cause it to be used
    /// for all signing operations serviced by this server going forward
    Activate(AuthorityIdArgs),
    /// Marks the previously active authority as being tainted
    Taint(AuthorityIdArgs),
    /// Revokes the previously active authority by removing it from the bundle
    /// and propagating this update throughout the cluster
    Revoke(AuthorityIdArgs),
}

/// Flags of `show` and `prepare`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuthorityArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Flags of the commands that name one authority.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuthorityIdArgs {
    /// The authority ID of the authority
    #[arg(long = "authorityID", default_value = "", hide_default_value = true)]
    pub authority_id: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Which authority a command manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    X509,
    Jwt,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::X509 => "X.509",
            Kind::Jwt => "JWT",
        }
    }
}

/// A change to one authority: its past tense in SPIRE's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Prepare,
    Activate,
    Taint,
    Revoke,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Prepare => "prepare",
            Action::Activate => "activate",
            Action::Taint => "taint",
            Action::Revoke => "revoke",
        }
    }

    fn past(self) -> &'static str {
        match self {
            Action::Prepare => "prepared",
            Action::Activate => "activated",
            Action::Taint => "tainted",
            Action::Revoke => "revoked",
        }
    }
}

/// The active, prepared and old authorities (`Get*AuthorityStateResponse`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct States {
    pub active: Option<AuthorityState>,
    pub prepared: Option<AuthorityState>,
    pub old: Option<AuthorityState>,
}

pub(crate) async fn run(cmd: LocalAuthorityCommand) -> Result<Outcome, CliError> {
    let (kind, cmd) = match cmd {
        LocalAuthorityCommand::X509(c) => (Kind::X509, c),
        LocalAuthorityCommand::Jwt(c) => (Kind::Jwt, c),
    };
    match cmd {
        AuthorityCommand::Show(args) => {
            // SPIRE says what failed for X.509 but not for JWT.
            let context = match kind {
                Kind::X509 => Some("could not get X.509 authorities"),
                Kind::Jwt => None,
            };
            let mut client = LocalAuthorityClient::new(connect(&args.conn, context).await?);
            let states = get_states(&mut client, kind)
                .await
                .map_err(status_in(context))?;
            Ok(render_show(kind, &states, args.output))
        }
        AuthorityCommand::Prepare(args) => {
            let context = action_context(kind, Action::Prepare);
            let mut client = LocalAuthorityClient::new(connect(&args.conn, Some(&context)).await?);
            let state = change(&mut client, kind, Action::Prepare, String::new())
                .await
                .map_err(status_in(Some(&context)))?;
            Ok(render_change(
                kind,
                Action::Prepare,
                state.as_ref(),
                args.output,
            ))
        }
        AuthorityCommand::Activate(args) => change_command(kind, Action::Activate, args).await,
        AuthorityCommand::Taint(args) => change_command(kind, Action::Taint, args).await,
        AuthorityCommand::Revoke(args) => change_command(kind, Action::Revoke, args).await,
    }
}

/// `-authorityID`, required for activate, taint and revoke.
pub(crate) fn authority_id(args: &AuthorityIdArgs) -> Result<String, CliError> {
    if args.authority_id.is_empty() {
        return Err(CliError::Invalid("an authority ID is required".into()));
    }
    Ok(args.authority_id.clone())
}

/// The three slots, each with its state or `No <slot> <kind> authority
/// found`, separated by blank lines.
pub(crate) fn render_show(kind: Kind, states: &States, output: OutputFormat) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::authority_states([
            ("active", states.active.as_ref()),
            ("prepared", states.prepared.as_ref()),
            ("old", states.old.as_ref()),
        ])));
    }
    let slots = [
        ("Active", "active", &states.active),
        ("Prepared", "prepared", &states.prepared),
        ("Old", "old", &states.old),
    ];
    let mut out = String::new();
    for (i, (title, lower, state)) in slots.into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{title} {} authority:\n", kind.name()));
        match state {
            Some(s) => out.push_str(&print_state(kind, s)),
            None => out.push_str(&format!("  No {lower} {} authority found\n", kind.name())),
        }
    }
    Outcome::stdout(out)
}

/// `<Action>ed <kind> authority:` and its state. The response field is
/// named for the action (`prepared_authority`, ...).
pub(crate) fn render_change(
    kind: Kind,
    action: Action,
    state: Option<&AuthorityState>,
    output: OutputFormat,
) -> Outcome {
    if output == OutputFormat::Json {
        let field = format!("{}_authority", action.past());
        return Outcome::stdout(json::encode(&json::authority_states([(
            field.as_str(),
            state,
        )])));
    }
    let past = action.past();
    let mut title = past.to_owned();
    if let Some(first) = title.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    let mut out = Outcome::stdout(format!("{title} {} authority:\n", kind.name()));
    match state {
        Some(s) => out.stdout.push_str(&print_state(kind, s)),
        None => {
            out.error = Some(format!(
                "internal error: expected to have {past} {} authority information",
                kind.name()
            ));
        }
    }
    out
}

/// One authority, indented; X.509 ones also name their upstream authority.
pub(crate) fn print_state(kind: Kind, s: &AuthorityState) -> String {
    let mut out = format!(
        "  Authority ID: {}\n  Expires at: {}\n",
        s.authority_id,
        fmt::go_time_utc(s.expires_at)
    );
    if kind == Kind::X509 {
        if s.upstream_authority_subject_key_id.is_empty() {
            out.push_str("  Upstream authority ID: No upstream authority\n");
        } else {
            out.push_str(&format!(
                "  Upstream authority Subject Key ID: {}\n",
                s.upstream_authority_subject_key_id
            ));
        }
    }
    out
}

async fn change_command(
    kind: Kind,
    action: Action,
    args: AuthorityIdArgs,
) -> Result<Outcome, CliError> {
    let id = authority_id(&args)?;
    let context = action_context(kind, action);
    let mut client = LocalAuthorityClient::new(connect(&args.conn, Some(&context)).await?);
    let state = change(&mut client, kind, action, id)
        .await
        .map_err(status_in(Some(&context)))?;
    Ok(render_change(kind, action, state.as_ref(), args.output))
}

fn action_context(kind: Kind, action: Action) -> String {
    format!("could not {} {} authority", action.verb(), kind.name())
}

async fn get_states(
    client: &mut LocalAuthorityClient<Channel>,
    kind: Kind,
) -> Result<States, tonic::Status> {
    Ok(match kind {
        Kind::X509 => {
            let r = client
                .get_x509_authority_state(GetX509AuthorityStateRequest {})
                .await?
                .into_inner();
            States {
                active: r.active,
                prepared: r.prepared,
                old: r.old,
            }
        }
        Kind::Jwt => {
            let r = client
                .get_jwt_authority_state(GetJwtAuthorityStateRequest {})
                .await?
                .into_inner();
            States {
                active: r.active,
                prepared: r.prepared,
                old: r.old,
            }
        }
    })
}

/// Makes the change and returns the authority the response names.
async fn change(
    client: &mut LocalAuthorityClient<Channel>,
    kind: Kind,
    action: Action,
    authority_id: String,
) -> Result<Option<AuthorityState>, tonic::Status> {
    Ok(match (kind, action) {
        (Kind::X509, Action::Prepare) => {
            client
                .prepare_x509_authority(PrepareX509AuthorityRequest {})
                .await?
                .into_inner()
                .prepared_authority
        }
        (Kind::X509, Action::Activate) => {
            client
                .activate_x509_authority(ActivateX509AuthorityRequest { authority_id })
                .await?
                .into_inner()
                .activated_authority
        }
        (Kind::X509, Action::Taint) => {
            client
                .taint_x509_authority(TaintX509AuthorityRequest { authority_id })
                .await?
                .into_inner()
                .tainted_authority
        }
        (Kind::X509, Action::Revoke) => {
            client
                .revoke_x509_authority(RevokeX509AuthorityRequest { authority_id })
                .await?
                .into_inner()
                .revoked_authority
        }
        (Kind::Jwt, Action::Prepare) => {
            client
                .prepare_jwt_authority(PrepareJwtAuthorityRequest {})
                .await?
                .into_inner()
                .prepared_authority
        }
        (Kind::Jwt, Action::Activate) => {
            client
                .activate_jwt_authority(ActivateJwtAuthorityRequest { authority_id })
                .await?
                .into_inner()
                .activated_authority
        }
        (Kind::Jwt, Action::Taint) => {
            client
                .taint_jwt_authority(TaintJwtAuthorityRequest { authority_id })
                .await?
                .into_inner()
                .tainted_authority
        }
        (Kind::Jwt, Action::Revoke) => {
            client
                .revoke_jwt_authority(RevokeJwtAuthorityRequest { authority_id })
                .await?
                .into_inner()
                .revoked_authority
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: LocalAuthorityCommand,
    }

    fn parse(args: &[&str]) -> LocalAuthorityCommand {
        let argv = std::iter::once("localauthority").chain(args.iter().copied());
        Cli::try_parse_from(sigil_cli::normalize_go_flags(argv))
            .unwrap()
            .cmd
    }

    fn state(id: &str, expires_at: i64, skid: &str) -> AuthorityState {
        AuthorityState {
            authority_id: id.into(),
            expires_at,
            upstream_authority_subject_key_id: skid.into(),
        }
    }

    #[test]
    fn flags_parse_for_both_kinds() {
        let LocalAuthorityCommand::X509(AuthorityCommand::Taint(a)) =
            parse(&["x509", "taint", "-authorityID", "abc", "-output", "json"])
        else {
            panic!("not x509 taint");
        };
        assert_eq!(authority_id(&a).unwrap(), "abc");
        assert_eq!(a.output, OutputFormat::Json);
        let LocalAuthorityCommand::Jwt(AuthorityCommand::Revoke(a)) = parse(&["jwt", "revoke"])
        else {
            panic!("not jwt revoke");
        };
        assert_eq!(
            authority_id(&a).unwrap_err().to_string(),
            "an authority ID is required"
        );
        assert!(matches!(
            parse(&["jwt", "show", "-socketPath", "/s"]),
            LocalAuthorityCommand::Jwt(AuthorityCommand::Show(_))
        ));
    }

    #[test]
    fn x509_show_matches_spire() {
        let states = States {
            active: Some(state("active-id", 1001, "some-subject-key-id")),
            prepared: None,
            old: Some(state("old-id", 1003, "")),
        };
        assert_eq!(
            render_show(Kind::X509, &states, OutputFormat::Pretty).stdout,
            "Active X.509 authority:
  Authority ID: active-id
  Expires at: 1970-01-01 00:16:41 +0000 UTC
  Upstream authority Subject Key ID: some-subject-key-id

Prepared X.509 authority:
  No prepared X.509 authority found

Old X.509 authority:
  Authority ID: old-id
  Expires at: 1970-01-01 00:16:43 +0000 UTC
  Upstream authority ID: No upstream authority
"
        );
        assert_eq!(
            render_show(Kind::X509, &states, OutputFormat::Json).stdout,
            "{\"active\":{\"authority_id\":\"active-id\",\"expires_at\":\"1001\",\
             \"upstream_authority_subject_key_id\":\"some-subject-key-id\"},\
             \"old\":{\"authority_id\":\"old-id\",\"expires_at\":\"1003\",\
             \"upstream_authority_subject_key_id\":\"\"}}\n"
        );
    }

    #[test]
    fn jwt_show_omits_upstream_authority() {
        let states = States {
            active: Some(state("a", 0, "ignored")),
            ..States::default()
        };
        assert_eq!(
            render_show(Kind::Jwt, &states, OutputFormat::Pretty).stdout,
            "Active JWT authority:
  Authority ID: a
  Expires at: 1970-01-01 00:00:00 +0000 UTC

Prepared JWT authority:
  No prepared JWT authority found

Old JWT authority:
  No old JWT authority found
"
        );
        assert_eq!(
            render_show(Kind::Jwt, &States::default(), OutputFormat::Json).stdout,
            "{}\n"
        );
    }

    #[test]
    fn changes_print_title_and_state_or_spires_internal_error() {
        let s = state("tainted-id", 1001, "skid");
        assert_eq!(
            render_change(Kind::X509, Action::Taint, Some(&s), OutputFormat::Pretty).stdout,
            "Tainted X.509 authority:
  Authority ID: tainted-id
  Expires at: 1970-01-01 00:16:41 +0000 UTC
  Upstream authority Subject Key ID: skid
"
        );
        assert_eq!(
            render_change(Kind::Jwt, Action::Activate, Some(&s), OutputFormat::Json).stdout,
            "{\"activated_authority\":{\"authority_id\":\"tainted-id\",\"expires_at\":\"1001\",\
             \"upstream_authority_subject_key_id\":\"skid\"}}\n"
        );
        let out = render_change(Kind::Jwt, Action::Prepare, None, OutputFormat::Pretty);
        assert_eq!(out.stdout, "Prepared JWT authority:\n");
        assert_eq!(
            out.error.as_deref(),
            Some("internal error: expected to have prepared JWT authority information")
        );
        assert_eq!(
            action_context(Kind::X509, Action::Revoke),
            "could not revoke X.509 authority"
        );
    }
}
