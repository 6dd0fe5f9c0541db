//! `upstreamauthority taint|revoke`: X.509 authorities signed by an upstream
//! CA, named by subject key ID. The commands are wired to the API even
//! where the server has no upstream authority to act on, so the user sees
//! the server's own answer.

use sigil_proto::spire::api::server::localauthority::v1::{
    RevokeX509UpstreamAuthorityRequest, TaintX509UpstreamAuthorityRequest,
    local_authority_client::LocalAuthorityClient,
};

use super::rpc::{connect, status_in};
use super::{CliError, ConnArgs, Outcome, OutputFormat, json, parse_output_format};

/// `upstreamauthority` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum UpstreamAuthorityCommand {
    /// Marks the provided X.509 upstream authority as being tainted
    Taint(UpstreamAuthorityArgs),
    /// Revokes the previously active X.509 upstream authority by removing it
    /// from the bundle and propagating this update throughout the cluster
    Revoke(UpstreamAuthorityArgs),
}

/// Flags of `taint` and `revoke`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct UpstreamAuthorityArgs {
    /// The X.509 Subject Key Identifier (or SKID) of the authority's CA
    /// certificate of the upstream X.509 authority
    #[arg(long = "subjectKeyID", default_value = "", hide_default_value = true)]
    pub subject_key_id: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

pub(crate) async fn run(cmd: UpstreamAuthorityCommand) -> Result<Outcome, CliError> {
    let (revoke, args) = match cmd {
        UpstreamAuthorityCommand::Taint(a) => (false, a),
        UpstreamAuthorityCommand::Revoke(a) => (true, a),
    };
    let subject_key_id = subject_key_id(&args)?;
    let context = if revoke {
        "could not revoke X.509 upstream authority"
    } else {
        "could not taint X.509 upstream authority"
    };
    let mut client = LocalAuthorityClient::new(connect(&args.conn, Some(context)).await?);
    let skid = if revoke {
        client
            .revoke_x509_upstream_authority(RevokeX509UpstreamAuthorityRequest { subject_key_id })
            .await
            .map_err(status_in(Some(context)))?
            .into_inner()
            .upstream_authority_subject_key_id
    } else {
        client
            .taint_x509_upstream_authority(TaintX509UpstreamAuthorityRequest { subject_key_id })
            .await
            .map_err(status_in(Some(context)))?
            .into_inner()
            .upstream_authority_subject_key_id
    };
    Ok(render(revoke, &skid, args.output))
}

/// `-subjectKeyID`, required.
pub(crate) fn subject_key_id(args: &UpstreamAuthorityArgs) -> Result<String, CliError> {
    if args.subject_key_id.is_empty() {
        return Err(CliError::Invalid(
            "the Subject Key ID of the X.509 upstream authority is required".into(),
        ));
    }
    Ok(args.subject_key_id.clone())
}

/// `Tainted X.509 upstream authority:` (or `Revoked`) and the key ID.
pub(crate) fn render(revoke: bool, skid: &str, output: OutputFormat) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::string_field(
            "upstream_authority_subject_key_id",
            skid,
        )));
    }
    let title = if revoke { "Revoked" } else { "Tainted" };
    Outcome::stdout(format!(
        "{title} X.509 upstream authority:\n  Subject Key ID: {skid}\n"
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: UpstreamAuthorityCommand,
    }

    fn parse(args: &[&str]) -> UpstreamAuthorityCommand {
        let argv = std::iter::once("upstreamauthority").chain(args.iter().copied());
        Cli::try_parse_from(sigil_cli::normalize_go_flags(argv))
            .unwrap()
            .cmd
    }

    #[test]
    fn subject_key_id_is_required() {
        let UpstreamAuthorityCommand::Taint(a) = parse(&["taint"]) else {
            panic!("not taint");
        };
        assert_eq!(
            subject_key_id(&a).unwrap_err().to_string(),
            "the Subject Key ID of the X.509 upstream authority is required"
        );
        let UpstreamAuthorityCommand::Revoke(a) = parse(&["revoke", "-subjectKeyID", "ab12"])
        else {
            panic!("not revoke");
        };
        assert_eq!(subject_key_id(&a).unwrap(), "ab12");
    }

    #[test]
    fn output_matches_spire() {
        assert_eq!(
            render(false, "ab12", OutputFormat::Pretty).stdout,
            "Tainted X.509 upstream authority:\n  Subject Key ID: ab12\n"
        );
        assert_eq!(
            render(true, "ab12", OutputFormat::Pretty).stdout,
            "Revoked X.509 upstream authority:\n  Subject Key ID: ab12\n"
        );
        assert_eq!(
            render(true, "ab12", OutputFormat::Json).stdout,
            "{\"upstream_authority_subject_key_id\":\"ab12\"}\n"
        );
    }
}
