//! `bundle show|count` (the server's own trust bundle), and the federated
//! bundle commands `list|set|delete`, which say plainly that sigil does not
//! federate yet.

use sigil_proto::spire::api::server::bundle::v1::{
    CountBundlesRequest, GetBundleRequest, bundle_client::BundleClient,
};
use sigil_proto::spire::api::types::Bundle;
use sigil_spiffe::{JwtAuthority, TrustDomain};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CliError, ConnArgs, Outcome, OutputFormat, fmt, json, parse_output_format};

/// `-format pem`: X.509 authorities as PEM certificates.
pub const FORMAT_PEM: &str = "pem";
/// `-format spiffe`: the SPIFFE bundle document (JWKS).
pub const FORMAT_SPIFFE: &str = "spiffe";

const FEDERATION_UNSUPPORTED: &str = "federation is not supported by sigil yet";

/// `bundle` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum BundleCommand {
    /// Prints server CA bundle to stdout
    Show(BundleShowArgs),
    /// Count bundles
    Count(BundleCountArgs),
    /// Lists federated bundle data (not supported by sigil yet)
    List(BundleFederatedArgs),
    /// Creates or updates federated bundle data (not supported by sigil yet)
    Set(BundleFederatedArgs),
    /// Deletes federated bundle data (not supported by sigil yet)
    Delete(BundleFederatedArgs),
}

/// Flags of `bundle show`.
#[derive(clap::Args, Debug, Clone)]
pub struct BundleShowArgs {
    /// The format to show the bundle (only pretty output format supports
    /// this flag). Either "pem" or "spiffe".
    #[arg(long = "format", default_value = FORMAT_PEM)]
    pub format: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Flags of `bundle count`.
#[derive(clap::Args, Debug, Clone)]
pub struct BundleCountArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Flags SPIRE's federated bundle commands take, accepted so the user gets
/// the real reason these fail rather than a flag error.
#[derive(clap::Args, Debug, Clone)]
pub struct BundleFederatedArgs {
    /// SPIFFE ID of the trust domain
    #[arg(long = "id", default_value = "", hide_default_value = true)]
    pub id: String,
    /// The format of the bundle data. Either "pem" or "spiffe".
    #[arg(long = "format", default_value = FORMAT_PEM)]
    pub format: String,
    /// Path to the bundle data
    #[arg(long = "path", default_value = "", hide_default_value = true)]
    pub path: String,
    /// Deletion mode: one of restrict, delete, or dissociate
    #[arg(long = "mode", default_value = "restrict")]
    pub mode: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

pub(crate) async fn run(cmd: BundleCommand) -> Result<Outcome, CliError> {
    match cmd {
        BundleCommand::Show(args) => {
            if args.output == OutputFormat::Pretty {
                validate_format(&args.format)?;
            }
            let mut client = BundleClient::new(super::connect(&args.conn).await?);
            let bundle = client
                .get_bundle(GetBundleRequest { output_mask: None })
                .await?
                .into_inner();
            render_show(&bundle, &args.format, args.output)
        }
        BundleCommand::Count(args) => {
            let mut client = BundleClient::new(super::connect(&args.conn).await?);
            let count = client
                .count_bundles(CountBundlesRequest {})
                .await?
                .into_inner()
                .count;
            Ok(render_count(count, args.output))
        }
        BundleCommand::List(_) | BundleCommand::Set(_) | BundleCommand::Delete(_) => {
            Err(CliError::Invalid(FEDERATION_UNSUPPORTED.into()))
        }
    }
}

/// Checks `-format` (`pem` when empty, any case) as SPIRE does.
pub(crate) fn validate_format(format: &str) -> Result<String, CliError> {
    let f = if format.is_empty() {
        FORMAT_PEM.to_owned()
    } else {
        format.to_ascii_lowercase()
    };
    if f == FORMAT_PEM || f == FORMAT_SPIFFE {
        Ok(f)
    } else {
        Err(CliError::Invalid(format!(
            "invalid format: {}",
            fmt::go_quote(&f)
        )))
    }
}

/// The bundle as PEM certificates, as a SPIFFE bundle document (indented
/// with four spaces), or as the `Bundle` message in JSON.
pub(crate) fn render_show(
    bundle: &Bundle,
    format: &str,
    output: OutputFormat,
) -> Result<Outcome, CliError> {
    if output == OutputFormat::Json {
        return Ok(Outcome::stdout(json::encode(&json::bundle(bundle))));
    }
    if validate_format(format)? == FORMAT_PEM {
        let mut out = String::new();
        for authority in &bundle.x509_authorities {
            for der in split_certificates(&authority.asn1)? {
                out.push_str(&pem_certificate(der));
            }
        }
        return Ok(Outcome::stdout(out));
    }
    let doc = spiffe_bundle(bundle)?
        .try_to_jwks()
        .map_err(|e| CliError::Output(e.to_string()))?;
    let mut out = String::from_utf8(doc)
        .map_err(|_| CliError::Output("bundle document is not UTF-8".into()))?;
    out.push('\n');
    Ok(Outcome::stdout(out))
}

/// `N bundles` (the server's own plus federated ones).
pub(crate) fn render_count(count: i32, output: OutputFormat) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::count(count)));
    }
    let n = usize::try_from(count).unwrap_or(0);
    let mut out = fmt::pluralize(&format!("{count} "), "bundle", "bundles", n);
    out.push('\n');
    Outcome::stdout(out)
}

/// An `asn1` field may hold several concatenated DER certificates.
fn split_certificates(mut der: &[u8]) -> Result<Vec<&[u8]>, CliError> {
    let mut certs = Vec::new();
    while !der.is_empty() {
        let (rest, _) = X509Certificate::from_der(der).map_err(|e| {
            CliError::Output(format!("unable to parse certificates ASN.1 DER data: {e}"))
        })?;
        certs.push(&der[..der.len() - rest.len()]);
        der = rest;
    }
    Ok(certs)
}

/// One `CERTIFICATE` block the way Go's `pem.Encode` writes it (LF line
/// endings, 64-column base64).
fn pem_certificate(der: &[u8]) -> String {
    let block = pem::Pem::new("CERTIFICATE", der.to_vec());
    pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn spiffe_bundle(b: &Bundle) -> Result<sigil_spiffe::Bundle, CliError> {
    let trust_domain =
        TrustDomain::new(&b.trust_domain).map_err(|e| CliError::Output(e.to_string()))?;
    let mut bundle = sigil_spiffe::Bundle::new(trust_domain);
    bundle.x509_authorities = b.x509_authorities.iter().map(|a| a.asn1.clone()).collect();
    bundle.jwt_authorities = b
        .jwt_authorities
        .iter()
        .map(|k| JwtAuthority {
            key_id: k.key_id.clone(),
            public_key_der: k.public_key.clone(),
            expires_at: (k.expires_at != 0).then_some(k.expires_at),
        })
        .collect();
    bundle.refresh_hint_seconds = (b.refresh_hint > 0).then_some(b.refresh_hint);
    bundle.sequence_number = b.sequence_number;
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use sigil_proto::spire::api::types::X509Certificate as ProtoCert;

    use super::*;

    fn test_cert(cn: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn bundle_with(certs: Vec<Vec<u8>>) -> Bundle {
        Bundle {
            trust_domain: "example.org".into(),
            x509_authorities: certs
                .into_iter()
                .map(|asn1| ProtoCert {
                    asn1,
                    tainted: false,
                })
                .collect(),
            ..Bundle::default()
        }
    }

    #[test]
    fn pem_output_is_one_lf_block_per_certificate() {
        let (a, b) = (test_cert("a"), test_cert("b"));
        // Two authorities, the second holding two concatenated certificates.
        let mut joined = b.clone();
        joined.extend_from_slice(&a);
        let out = render_show(
            &bundle_with(vec![a.clone(), joined]),
            "pem",
            OutputFormat::Pretty,
        )
        .unwrap()
        .stdout;
        assert!(!out.contains('\r'));
        let blocks = pem::parse_many(&out).unwrap();
        let ders: Vec<&[u8]> = blocks.iter().map(|p| p.contents()).collect();
        assert_eq!(ders, vec![&a[..], &b[..], &a[..]]);
        assert!(out.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(out.ends_with("-----END CERTIFICATE-----\n"));
    }

    #[test]
    fn spiffe_output_is_an_indented_jwks_document() {
        let a = test_cert("a");
        let out = render_show(&bundle_with(vec![a]), "SPIFFE", OutputFormat::Pretty)
            .unwrap()
            .stdout;
        assert!(out.ends_with("}\n"));
        assert!(out.contains("\n    \"keys\": ["), "{out}");
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["keys"][0]["use"], "x509-svid");
    }

    #[test]
    fn unknown_format_is_rejected_like_spire() {
        assert_eq!(
            validate_format("der").unwrap_err().to_string(),
            "invalid format: \"der\""
        );
        assert_eq!(validate_format("").unwrap(), "pem");
    }

    #[test]
    fn garbage_authority_is_an_error_not_a_panic() {
        let err = render_show(
            &bundle_with(vec![vec![1, 2, 3]]),
            "pem",
            OutputFormat::Pretty,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unable to parse certificates ASN.1 DER data")
        );
    }

    #[test]
    fn count_output_pluralizes() {
        assert_eq!(render_count(1, OutputFormat::Pretty).stdout, "1 bundle\n");
        assert_eq!(render_count(2, OutputFormat::Pretty).stdout, "2 bundles\n");
        assert_eq!(
            render_count(2, OutputFormat::Json).stdout,
            "{\"count\":2}\n"
        );
    }
}
