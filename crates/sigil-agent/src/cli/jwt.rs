//! `api fetch jwt` and `api validate jwt`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use sigil_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse,
};

use super::client::{CliError, connect, with_header, within};
use super::format::{jwt_responses_json, struct_json, validate_response_json};
use super::{DEFAULT_SOCKET_PATH, OutputFormat};

/// `api fetch jwt`.
#[derive(clap::Args, Debug, Clone)]
pub struct FetchJwtArgs {
    /// Audience values (comma separated, or repeat the flag)
    #[arg(long = "audience", value_delimiter = ',')]
    pub audience: Vec<String>,
    /// SPIFFE ID subject (optional)
    #[arg(long = "spiffeID", default_value = "")]
    pub spiffe_id: String,
    /// Path to the SPIRE Agent API Unix domain socket
    #[arg(long = "socketPath", default_value = DEFAULT_SOCKET_PATH)]
    pub socket_path: PathBuf,
    /// Time to wait for a response
    #[arg(long, default_value = "5s", value_parser = sigil_cli::parse_duration)]
    pub timeout: Duration,
    /// Desired output format (pretty, json); default: pretty. `-format` is
    /// the deprecated spelling.
    #[arg(long = "output", alias = "format", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
}

/// `api validate jwt`.
#[derive(clap::Args, Debug, Clone)]
pub struct ValidateJwtArgs {
    /// Expected audience value
    #[arg(long = "audience", default_value = "")]
    pub audience: String,
    /// JWT SVID
    #[arg(long = "svid", default_value = "")]
    pub svid: String,
    /// Path to the SPIRE Agent API Unix domain socket
    #[arg(long = "socketPath", default_value = DEFAULT_SOCKET_PATH)]
    pub socket_path: PathBuf,
    /// Time to wait for a response
    #[arg(long, default_value = "5s", value_parser = sigil_cli::parse_duration)]
    pub timeout: Duration,
    /// Desired output format (pretty, json); default: pretty.
    #[arg(long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
}

pub(crate) async fn fetch(
    args: &FetchJwtArgs,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let audience: Vec<String> = args
        .audience
        .iter()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect();
    if audience.is_empty() {
        return Err(CliError::Usage("audience must be specified"));
    }
    // Bundles first, as SPIRE does, so a caller without identity learns it
    // from the bundle call too.
    let (svids, bundles) = within(&args.socket_path, args.timeout, async {
        let mut client = connect(&args.socket_path).await?;
        let bundles = client
            .fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
            .await?
            .into_inner()
            .message()
            .await?
            .ok_or_else(|| {
                CliError::BadResponse(
                    "the agent closed the stream without sending JWT bundles".into(),
                )
            })?;
        let svids = client
            .fetch_jwtsvid(with_header(JwtsvidRequest {
                audience,
                spiffe_id: args.spiffe_id.clone(),
            }))
            .await?
            .into_inner();
        Ok((svids, bundles))
    })
    .await?;
    match args.output {
        OutputFormat::Json => writeln!(out, "{}", jwt_responses_json(&svids, &bundles))?,
        OutputFormat::Pretty => out.write_all(format_fetch_jwt(&svids, &bundles).as_bytes())?,
    }
    Ok(())
}

pub(crate) async fn validate(
    args: &ValidateJwtArgs,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    if args.audience.is_empty() {
        return Err(CliError::Usage("audience must be specified"));
    }
    if args.svid.is_empty() {
        return Err(CliError::Usage("svid must be specified"));
    }
    let resp = within(&args.socket_path, args.timeout, async {
        let mut client = connect(&args.socket_path).await?;
        client
            .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
                audience: args.audience.clone(),
                svid: args.svid.clone(),
            }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| match status.code() {
                tonic::Code::InvalidArgument => CliError::InvalidSvid(status.message().to_owned()),
                _ => CliError::ValidateFailed(Box::new(CliError::Rpc(status))),
            })
    })
    .await?;
    match args.output {
        OutputFormat::Json => writeln!(out, "{}", validate_response_json(&resp))?,
        OutputFormat::Pretty => out.write_all(format_validate(&resp).as_bytes())?,
    }
    Ok(())
}

/// `token(<id>):\n\t<token>` per SVID (and `hint(<id>):\n\t<hint>` when
/// set), then `bundle(<trust domain ID>):\n\t<JWKS>` per trust domain,
/// sorted by trust domain.
pub(crate) fn format_fetch_jwt(svids: &JwtsvidResponse, bundles: &JwtBundlesResponse) -> String {
    let mut s = String::new();
    for svid in &svids.svids {
        s.push_str(&format!("token({}):\n\t{}\n", svid.spiffe_id, svid.svid));
        if !svid.hint.is_empty() {
            s.push_str(&format!("hint({}):\n\t{}\n", svid.spiffe_id, svid.hint));
        }
    }
    let mut tds: Vec<&String> = bundles.bundles.keys().collect();
    tds.sort();
    for td in tds {
        let jwks = String::from_utf8_lossy(&bundles.bundles[td]);
        s.push_str(&format!("bundle({td}):\n\t{jwks}\n"));
    }
    s
}

/// `SVID is valid.`, `SPIFFE ID : <id>`, `Claims    : <compact JSON>`.
pub(crate) fn format_validate(resp: &ValidateJwtsvidResponse) -> String {
    let claims = resp
        .claims
        .as_ref()
        .map_or_else(|| serde_json::json!({}), struct_json);
    format!(
        "SVID is valid.\nSPIFFE ID : {}\nClaims    : {claims}\n",
        resp.spiffe_id
    )
}
