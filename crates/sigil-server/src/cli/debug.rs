//! `debug getinfo`: the server's health summary (uptime, counts, its own
//! SVID chain) from `spire.api.server.debug.v1`.

use std::time::Duration;

use sigil_proto::spire::api::server::debug::v1::{
    GetInfoRequest, GetInfoResponse, debug_client::DebugClient,
};

use super::rpc::{connect, status_in};
use super::{CliError, ConnArgs, Outcome, OutputFormat, fmt, json, parse_output_format};

/// `debug` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum DebugCommand {
    /// Prints debug information about the server
    #[command(name = "getinfo")]
    GetInfo(DebugArgs),
}

/// Flags of `debug getinfo`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DebugArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

pub(crate) async fn run(cmd: DebugCommand) -> Result<Outcome, CliError> {
    let DebugCommand::GetInfo(args) = cmd;
    let mut client = DebugClient::new(connect(&args.conn, None).await?);
    let info = client
        .get_info(GetInfoRequest {})
        .await
        .map_err(status_in(None))?
        .into_inner();
    Ok(render(&info, args.output))
}

/// SPIRE's `Server Debug Info:` block; the chain is leaf first.
pub(crate) fn render(info: &GetInfoResponse, output: OutputFormat) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::debug_info(info)));
    }
    let uptime = Duration::from_secs(u64::try_from(info.uptime).unwrap_or(0));
    let mut out = format!(
        "Server Debug Info:
  Uptime:                  {}
  Registered Agents:       {}
  Registration Entries:    {}
  Federated Bundles:       {}
",
        sigil_cli::format_duration(uptime),
        info.agents_count,
        info.entries_count,
        info.federated_bundles_count
    );
    if !info.svid_chain.is_empty() {
        out.push_str("  SVID Chain:\n");
        for (i, cert) in info.svid_chain.iter().enumerate() {
            let id = match &cert.id {
                Some(_) => fmt::proto_to_id(cert.id.as_ref()),
                None => "(none)".to_owned(),
            };
            out.push_str(&format!("    [{i}] SPIFFE ID:  {id}\n"));
            out.push_str(&format!("        Subject:    {}\n", cert.subject));
            out.push_str(&format!(
                "        Expires At: {}\n",
                fmt::rfc3339_utc(cert.expires_at)
            ));
        }
    }
    Outcome::stdout(out)
}

#[cfg(test)]
mod tests {
    use sigil_proto::spire::api::server::debug::v1::get_info_response::Cert;
    use sigil_proto::spire::api::types::Spiffeid;

    use super::*;

    fn info() -> GetInfoResponse {
        GetInfoResponse {
            svid_chain: vec![
                Cert {
                    id: Some(Spiffeid {
                        trust_domain: "example.org".into(),
                        path: "/spire/server".into(),
                    }),
                    expires_at: 1552410266,
                    subject: "O=SPIRE,C=US".into(),
                },
                Cert {
                    id: None,
                    expires_at: 0,
                    subject: "CN=root".into(),
                },
            ],
            uptime: 3725,
            agents_count: 2,
            federated_bundles_count: 1,
            entries_count: 5,
        }
    }

    #[test]
    fn pretty_output_matches_spire() {
        assert_eq!(
            render(&info(), OutputFormat::Pretty).stdout,
            "Server Debug Info:
  Uptime:                  1h2m5s
  Registered Agents:       2
  Registration Entries:    5
  Federated Bundles:       1
  SVID Chain:
    [0] SPIFFE ID:  spiffe://example.org/spire/server
        Subject:    O=SPIRE,C=US
        Expires At: 2019-03-12T17:04:26Z
    [1] SPIFFE ID:  (none)
        Subject:    CN=root
        Expires At: 1970-01-01T00:00:00Z
"
        );
    }

    #[test]
    fn json_output_drops_absent_ids() {
        assert_eq!(
            render(&info(), OutputFormat::Json).stdout,
            "{\"agents_count\":2,\"entries_count\":5,\"federated_bundles_count\":1,\
             \"svid_chain\":[{\"expires_at\":\"1552410266\",\"id\":{\"path\":\"/spire/server\",\
             \"trust_domain\":\"example.org\"},\"subject\":\"O=SPIRE,C=US\"},\
             {\"expires_at\":\"0\",\"subject\":\"CN=root\"}],\"uptime\":3725}\n"
        );
    }
}
