//! `token generate`: join tokens for agent node attestation.

use sigil_proto::spire::api::server::agent::v1::CreateJoinTokenRequest;
use sigil_proto::spire::api::server::agent::v1::agent_client::AgentClient;
use sigil_proto::spire::api::types::JoinToken;

use super::{CliError, ConnArgs, Outcome, OutputFormat, fmt, json, parse_output_format};

/// `token` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Generates a join token
    Generate(TokenGenerateArgs),
}

/// Flags of `token generate`.
#[derive(clap::Args, Debug, Clone)]
pub struct TokenGenerateArgs {
    /// Additional SPIFFE ID to assign the token owner (optional)
    #[arg(long = "spiffeID", default_value = "", hide_default_value = true)]
    pub spiffe_id: String,
    /// Token TTL in seconds
    #[arg(long = "ttl", default_value_t = 600, allow_negative_numbers = true)]
    pub ttl: i64,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

pub(crate) async fn run(cmd: TokenCommand) -> Result<Outcome, CliError> {
    match cmd {
        TokenCommand::Generate(args) => {
            let req = generate_request(&args)?;
            let channel = super::connect(&args.conn).await?;
            let token = AgentClient::new(channel)
                .create_join_token(req)
                .await?
                .into_inner();
            Ok(render_token(&args, &token))
        }
    }
}

/// The request `token generate` sends; the alias entry is created by the
/// server when `agent_id` is set.
pub(crate) fn generate_request(
    args: &TokenGenerateArgs,
) -> Result<CreateJoinTokenRequest, CliError> {
    let agent_id = if args.spiffe_id.is_empty() {
        None
    } else {
        Some(fmt::id_to_proto(&args.spiffe_id).map_err(|e| CliError::Invalid(e.to_string()))?)
    };
    let ttl = i32::try_from(args.ttl).map_err(|_| {
        CliError::Invalid(format!(
            "invalid value for TTL: value {} out of range of int32",
            args.ttl
        ))
    })?;
    Ok(CreateJoinTokenRequest {
        ttl,
        token: String::new(),
        agent_id,
    })
}

/// `Token: <value>`, and SPIRE's warning (on stdout, as SPIRE prints it) when
/// no SPIFFE ID was given.
pub(crate) fn render_token(args: &TokenGenerateArgs, token: &JoinToken) -> Outcome {
    match args.output {
        OutputFormat::Json => Outcome::stdout(json::encode(&json::join_token(token))),
        OutputFormat::Pretty => {
            let mut out = format!("Token: {}\n", token.value);
            if args.spiffe_id.is_empty() {
                out.push_str("Warning: Missing SPIFFE ID.\n");
            }
            Outcome::stdout(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: TokenCommand,
    }

    fn parse(args: &[&str]) -> TokenGenerateArgs {
        let mut argv = vec!["t"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().cmd {
            TokenCommand::Generate(a) => a,
        }
    }

    #[test]
    fn spiffe_id_becomes_agent_id_and_ttl_defaults_to_600() {
        let req = generate_request(&parse(&[
            "generate",
            "--spiffeID",
            "spiffe://example.org/host",
        ]))
        .unwrap();
        assert_eq!(req.ttl, 600);
        let id = req.agent_id.unwrap();
        assert_eq!(
            (id.trust_domain.as_str(), id.path.as_str()),
            ("example.org", "/host")
        );
    }

    #[test]
    fn invalid_spiffe_id_is_rejected_locally() {
        let err =
            generate_request(&parse(&["generate", "--spiffeID", "example.org/host"])).unwrap_err();
        assert!(matches!(err, CliError::Invalid(_)));
        assert!(err.to_string().starts_with("scheme is missing or invalid"));
    }

    #[test]
    fn pretty_output_warns_without_spiffe_id() {
        let token = JoinToken {
            value: "abc".into(),
            expires_at: 1,
        };
        let out = render_token(&parse(&["generate"]), &token);
        assert_eq!(out.stdout, "Token: abc\nWarning: Missing SPIFFE ID.\n");
        let out = render_token(
            &parse(&["generate", "--spiffeID", "spiffe://e.org/a"]),
            &token,
        );
        assert_eq!(out.stdout, "Token: abc\n");
        let out = render_token(&parse(&["generate", "--output", "json"]), &token);
        assert_eq!(out.stdout, "{\"expires_at\":\"1\",\"value\":\"abc\"}\n");
    }
}
