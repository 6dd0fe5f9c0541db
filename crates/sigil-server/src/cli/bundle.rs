//! `bundle show|count` (the server's own trust bundle) and `bundle
//! list|set|delete` (the bundles of federated trust domains).

use std::io::Read as _;

use sigil_proto::spire::api::server::bundle::v1::{
    BatchDeleteFederatedBundleRequest, BatchDeleteFederatedBundleResponse,
    BatchSetFederatedBundleRequest, BatchSetFederatedBundleResponse, CountBundlesRequest,
    GetBundleRequest, GetFederatedBundleRequest, ListFederatedBundlesRequest,
    ListFederatedBundlesResponse, batch_delete_federated_bundle_request::Mode,
    bundle_client::BundleClient,
};
use sigil_proto::spire::api::types::{Bundle, JwtKey, X509Certificate as ProtoCertificate};
use sigil_spiffe::{JwtAuthority, TrustDomain};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::rpc::{connect, status_in};
use super::{CliError, ConnArgs, Outcome, OutputFormat, fmt, json, parse_output_format};

/// `-format pem`: X.509 authorities as PEM certificates.
pub const FORMAT_PEM: &str = "pem";
/// `-format spiffe`: the SPIFFE bundle document (JWKS).
pub const FORMAT_SPIFFE: &str = "spiffe";

/// gRPC's OK code, as batch results carry it.
const CODE_OK: i32 = 0;

/// `bundle` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum BundleCommand {
    /// Prints server CA bundle to stdout
    Show(BundleShowArgs),
    /// Count bundles
    Count(BundleCountArgs),
    /// Lists federated bundle data
    List(BundleListArgs),
    /// Creates or updates federated bundle data
    Set(BundleSetArgs),
    /// Deletes federated bundle data
    Delete(BundleDeleteArgs),
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

/// Flags of `bundle list`.
#[derive(clap::Args, Debug, Clone)]
pub struct BundleListArgs {
    /// SPIFFE ID of the trust domain
    #[arg(long = "id", default_value = "", hide_default_value = true)]
    pub id: String,
    /// The format to list federated bundles (only pretty output format
    /// supports this flag). Either "pem" or "spiffe".
    #[arg(long = "format", default_value = FORMAT_PEM)]
    pub format: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Flags of `bundle set`.
#[derive(clap::Args, Debug, Clone)]
pub struct BundleSetArgs {
    /// SPIFFE ID of the trust domain
    #[arg(long = "id", default_value = "", hide_default_value = true)]
    pub id: String,
    /// Path to the bundle data (stdin when absent)
    #[arg(long = "path", default_value = "", hide_default_value = true)]
    pub path: String,
    /// The format of the bundle data. Either "pem" or "spiffe".
    #[arg(long = "format", default_value = FORMAT_PEM)]
    pub format: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Flags of `bundle delete`.
#[derive(clap::Args, Debug, Clone)]
pub struct BundleDeleteArgs {
    /// SPIFFE ID of the trust domain
    #[arg(long = "id", default_value = "", hide_default_value = true)]
    pub id: String,
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
        BundleCommand::List(args) => {
            let mut client = BundleClient::new(connect(&args.conn, None).await?);
            if args.id.is_empty() {
                // SPIRE asks once, without paging.
                let resp = client
                    .list_federated_bundles(ListFederatedBundlesRequest::default())
                    .await
                    .map_err(status_in(None))?
                    .into_inner();
                Ok(render_list(&resp, &args.format, args.output))
            } else {
                let bundle = client
                    .get_federated_bundle(GetFederatedBundleRequest {
                        trust_domain: args.id.clone(),
                        output_mask: None,
                    })
                    .await
                    .map_err(status_in(None))?
                    .into_inner();
                render_show(&bundle, &args.format, args.output)
            }
        }
        BundleCommand::Set(args) => {
            let bundle = set_request(&args, || {
                let mut data = Vec::new();
                std::io::stdin().read_to_end(&mut data).map(|_| data)
            })?;
            let context = "failed to set federated bundle";
            let mut client = BundleClient::new(connect(&args.conn, Some(context)).await?);
            let resp = client
                .batch_set_federated_bundle(BatchSetFederatedBundleRequest {
                    bundle: vec![bundle],
                    output_mask: None,
                })
                .await
                .map_err(status_in(Some(context)))?
                .into_inner();
            Ok(render_set(&resp, args.output))
        }
        BundleCommand::Delete(args) => {
            let req = delete_request(&args)?;
            let context = "failed to delete federated bundle";
            let mut client = BundleClient::new(connect(&args.conn, Some(context)).await?);
            let resp = client
                .batch_delete_federated_bundle(req)
                .await
                .map_err(status_in(Some(context)))?
                .into_inner();
            Ok(render_delete(&resp, args.output))
        }
    }
}

/// The bundle `bundle set` sends: `-id` required, `-format` checked, the
/// data read from `-path` or (when empty) from `stdin`, then parsed.
pub(crate) fn set_request(
    args: &BundleSetArgs,
    stdin: impl FnOnce() -> std::io::Result<Vec<u8>>,
) -> Result<Bundle, CliError> {
    if args.id.is_empty() {
        return Err(CliError::Invalid("id flag is required".into()));
    }
    let format = validate_format(&args.format)?;
    let data = if args.path.is_empty() {
        stdin().map_err(|e| {
            CliError::Invalid(format!(
                "unable to load bundle data: read /dev/stdin: {}",
                fmt::go_errno_text(&e)
            ))
        })?
    } else {
        std::fs::read(&args.path).map_err(|e| {
            CliError::Invalid(format!(
                "unable to load bundle data: open {}: {}",
                args.path,
                fmt::go_errno_text(&e)
            ))
        })?
    };
    parse_bundle(&data, &format, &args.id)
}

/// SPIRE's `ParseBundle`: PEM certificates become the X.509 authorities of
/// a bundle for `id` (sent as given, for the server to check); a SPIFFE
/// bundle document is parsed for the trust domain `id` names.
pub(crate) fn parse_bundle(data: &[u8], format: &str, id: &str) -> Result<Bundle, CliError> {
    if format == FORMAT_PEM {
        let certs = pem_certificates(data)
            .map_err(|e| CliError::Invalid(format!("unable to parse bundle data: {e}")))?;
        return Ok(Bundle {
            trust_domain: id.to_owned(),
            x509_authorities: certs
                .into_iter()
                .map(|asn1| ProtoCertificate {
                    asn1,
                    tainted: false,
                })
                .collect(),
            ..Bundle::default()
        });
    }
    let td = TrustDomain::new(id).map_err(|e| CliError::Invalid(e.to_string()))?;
    let doc = sigil_spiffe::Bundle::parse_jwks(&td, data)
        .map_err(|e| CliError::Invalid(format!("unable to parse to spiffe bundle: {e}")))?;
    Ok(Bundle {
        trust_domain: td.name().to_owned(),
        x509_authorities: doc
            .x509_authorities
            .into_iter()
            .map(|asn1| ProtoCertificate {
                asn1,
                tainted: false,
            })
            .collect(),
        jwt_authorities: doc
            .jwt_authorities
            .into_iter()
            .map(|a| JwtKey {
                public_key: a.public_key_der,
                key_id: a.key_id,
                expires_at: a.expires_at.unwrap_or(0),
                tainted: false,
            })
            .collect(),
        refresh_hint: doc.refresh_hint_seconds.unwrap_or(0),
        sequence_number: doc.sequence_number,
        ..Bundle::default()
    })
}

/// The request `bundle delete` sends: `-id` required, `-mode` one of
/// SPIRE's three.
pub(crate) fn delete_request(
    args: &BundleDeleteArgs,
) -> Result<BatchDeleteFederatedBundleRequest, CliError> {
    if args.id.is_empty() {
        return Err(CliError::Invalid("id is required".into()));
    }
    let mode = match args.mode.as_str() {
        "" | "restrict" => Mode::Restrict,
        "dissociate" => Mode::Dissociate,
        "delete" => Mode::Delete,
        other => {
            return Err(CliError::Invalid(format!(
                "unsupported mode {}",
                fmt::go_quote(other)
            )));
        }
    };
    Ok(BatchDeleteFederatedBundleRequest {
        trust_domains: vec![args.id.clone()],
        mode: mode as i32,
    })
}

/// Every federated bundle under a banner naming its trust domain, blank
/// lines between; `-format` is checked per bundle, as SPIRE does (so an
/// empty list never fails on it).
pub(crate) fn render_list(
    resp: &ListFederatedBundlesResponse,
    format: &str,
    output: OutputFormat,
) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::list_federated_bundles_response(resp)));
    }
    let mut out = Outcome::default();
    for (i, bundle) in resp.bundles.iter().enumerate() {
        if i > 0 {
            out.stdout.push('\n');
        }
        if let Err(e) = validate_format(format) {
            out.error = Some(e.to_string());
            return out;
        }
        out.stdout.push_str(&format!(
            "****************************************\n* {}\n****************************************\n",
            bundle.trust_domain
        ));
        match render_show(bundle, format, OutputFormat::Pretty) {
            Ok(shown) => out.stdout.push_str(&shown.stdout),
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        }
    }
    out
}

/// `bundle set.`, or the result's failure.
pub(crate) fn render_set(resp: &BatchSetFederatedBundleResponse, output: OutputFormat) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::set_federated_bundle_response(resp)));
    }
    match resp
        .results
        .first()
        .map(|r| r.status.clone().unwrap_or_default())
    {
        Some(s) if s.code == CODE_OK => Outcome::stdout("bundle set.\n".into()),
        Some(s) => Outcome {
            error: Some(format!("failed to set federated bundle: {}", s.message)),
            ..Outcome::default()
        },
        None => missing_result(),
    }
}

/// `bundle deleted.`, or the result's failure naming the trust domain.
pub(crate) fn render_delete(
    resp: &BatchDeleteFederatedBundleResponse,
    output: OutputFormat,
) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::delete_federated_bundle_response(resp)));
    }
    match resp.results.first() {
        Some(r) => {
            let s = r.status.clone().unwrap_or_default();
            if s.code == CODE_OK {
                Outcome::stdout("bundle deleted.\n".into())
            } else {
                Outcome {
                    error: Some(format!(
                        "failed to delete federated bundle {}: {}",
                        fmt::go_quote(&r.trust_domain),
                        s.message
                    )),
                    ..Outcome::default()
                }
            }
        }
        None => missing_result(),
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

/// A batch response without the one result asked for (SPIRE would crash;
/// we say so).
fn missing_result() -> Outcome {
    Outcome {
        error: Some("server response has no result".into()),
        ..Outcome::default()
    }
}

/// Every `CERTIFICATE` block's DER, in order, as SPIRE's `pemutil` reads
/// them: at least one block, no other block types, each a certificate.
fn pem_certificates(data: &[u8]) -> Result<Vec<Vec<u8>>, PemCertificatesError> {
    let blocks = pem::parse_many(data).map_err(PemCertificatesError::Pem)?;
    if blocks.is_empty() {
        return Err(PemCertificatesError::NoBlocks);
    }
    blocks
        .into_iter()
        .map(|b| {
            if b.tag() != "CERTIFICATE" {
                return Err(PemCertificatesError::NotCertificate(b.tag().to_owned()));
            }
            X509Certificate::from_der(b.contents())
                .map_err(|e| PemCertificatesError::MalformedCertificate(e.to_string()))?;
            Ok(b.into_contents())
        })
        .collect()
}

/// Why PEM bundle data is not a list of certificates (SPIRE's `pemutil`
/// texts).
#[derive(Debug, thiserror::Error)]
enum PemCertificatesError {
    /// The PEM framing is broken.
    #[error("{0}")]
    Pem(pem::PemError),
    /// No PEM block at all.
    #[error("no PEM blocks")]
    NoBlocks,
    /// A block of another type.
    #[error("expected block type \"CERTIFICATE\"; got {}", fmt::go_quote(.0))]
    NotCertificate(String),
    /// A block that is not a DER certificate.
    #[error("x509: malformed certificate: {0}")]
    MalformedCertificate(String),
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

    fn set_args(args: &[&str]) -> BundleSetArgs {
        use clap::Parser as _;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(subcommand)]
            cmd: BundleCommand,
        }
        let argv = ["bundle", "set"].into_iter().chain(args.iter().copied());
        match Cli::try_parse_from(sigil_cli::normalize_go_flags(argv))
            .unwrap()
            .cmd
        {
            BundleCommand::Set(a) => a,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn no_stdin() -> std::io::Result<Vec<u8>> {
        panic!("stdin must not be read")
    }

    #[test]
    fn set_checks_flags_in_spires_order() {
        let err = set_request(&set_args(&["-format", "der"]), no_stdin).unwrap_err();
        assert_eq!(err.to_string(), "id flag is required");
        let err = set_request(
            &set_args(&["-id", "spiffe://o.org", "-format", "der"]),
            no_stdin,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "invalid format: \"der\"");
        let err = set_request(
            &set_args(&["-id", "spiffe://o.org", "-path", "/nonexistent/b.pem"]),
            no_stdin,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to load bundle data: open /nonexistent/b.pem: no such file or directory"
        );
    }

    #[test]
    fn set_reads_pem_from_stdin_and_keeps_the_id_as_given() {
        let (a, b) = (test_cert("a"), test_cert("b"));
        let text = format!(
            "junk before\n{}{}",
            pem_certificate(&a),
            pem_certificate(&b)
        );
        let bundle = set_request(&set_args(&["-id", "spiffe://other.org"]), || {
            Ok(text.into_bytes())
        })
        .unwrap();
        assert_eq!(bundle.trust_domain, "spiffe://other.org");
        let ders: Vec<&[u8]> = bundle
            .x509_authorities
            .iter()
            .map(|c| &c.asn1[..])
            .collect();
        assert_eq!(ders, vec![&a[..], &b[..]]);
        let err = parse_bundle(b"nothing here", FORMAT_PEM, "o.org").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to parse bundle data: no PEM blocks"
        );
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = parse_bundle(key.as_bytes(), FORMAT_PEM, "o.org").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to parse bundle data: expected block type \"CERTIFICATE\"; got \"PRIVATE KEY\""
        );
    }

    #[test]
    fn set_parses_spiffe_documents_for_the_ids_trust_domain() {
        let a = test_cert("a");
        let mut doc = sigil_spiffe::Bundle::new(TrustDomain::new("other.org").unwrap());
        doc.x509_authorities.push(a.clone());
        doc.sequence_number = 4;
        doc.refresh_hint_seconds = Some(300);
        let bundle = parse_bundle(&doc.to_jwks(), FORMAT_SPIFFE, "spiffe://other.org").unwrap();
        assert_eq!(bundle.trust_domain, "other.org");
        assert_eq!(bundle.x509_authorities[0].asn1, a);
        assert_eq!((bundle.sequence_number, bundle.refresh_hint), (4, 300));
        let err = parse_bundle(b"{}", FORMAT_SPIFFE, "other.org").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unable to parse to spiffe bundle: "),
            "{err}"
        );
        assert!(parse_bundle(b"{}", FORMAT_SPIFFE, "Bad Domain").is_err());
    }

    #[test]
    fn delete_takes_spires_modes() {
        let args = |id: &str, mode: &str| BundleDeleteArgs {
            id: id.into(),
            mode: mode.into(),
            conn: ConnArgs::default(),
            output: OutputFormat::Pretty,
        };
        assert_eq!(
            delete_request(&args("", "delete")).unwrap_err().to_string(),
            "id is required"
        );
        for (flag, mode) in [
            ("", Mode::Restrict),
            ("restrict", Mode::Restrict),
            ("delete", Mode::Delete),
            ("dissociate", Mode::Dissociate),
        ] {
            let req = delete_request(&args("o.org", flag)).unwrap();
            assert_eq!(req.mode, mode as i32);
            assert_eq!(req.trust_domains, ["o.org"]);
        }
        assert_eq!(
            delete_request(&args("o.org", "Delete"))
                .unwrap_err()
                .to_string(),
            "unsupported mode \"Delete\""
        );
    }

    #[test]
    fn list_prints_a_banner_per_bundle() {
        let a = test_cert("a");
        let mut other = bundle_with(vec![a.clone()]);
        other.trust_domain = "other.org".into();
        let resp = ListFederatedBundlesResponse {
            bundles: vec![bundle_with(vec![a.clone()]), other],
            next_page_token: String::new(),
        };
        let out = render_list(&resp, "pem", OutputFormat::Pretty);
        assert_eq!(out.error, None);
        let block = pem_certificate(&a);
        assert_eq!(
            out.stdout,
            format!(
                "****************************************\n* example.org\n\
                 ****************************************\n{block}\n\
                 ****************************************\n* other.org\n\
                 ****************************************\n{block}"
            )
        );
        let out = render_list(&resp, "der", OutputFormat::Pretty);
        assert_eq!(
            (out.stdout.as_str(), out.error.as_deref()),
            ("", Some("invalid format: \"der\""))
        );
        let empty = ListFederatedBundlesResponse::default();
        assert_eq!(
            render_list(&empty, "der", OutputFormat::Pretty),
            Outcome::default()
        );
        assert_eq!(
            render_list(&empty, "pem", OutputFormat::Json).stdout,
            "{\"bundles\":[],\"next_page_token\":\"\"}\n"
        );
    }

    #[test]
    fn set_and_delete_results_print_like_spire() {
        use sigil_proto::spire::api::server::bundle::v1::{
            batch_delete_federated_bundle_response as del,
            batch_set_federated_bundle_response as set,
        };
        use sigil_proto::spire::api::types::Status;
        let status = |code: i32, message: &str| {
            Some(Status {
                code,
                message: message.into(),
            })
        };
        let ok = BatchSetFederatedBundleResponse {
            results: vec![set::Result {
                status: status(0, "OK"),
                bundle: Some(Bundle {
                    trust_domain: "o.org".into(),
                    ..Bundle::default()
                }),
            }],
        };
        assert_eq!(
            render_set(&ok, OutputFormat::Pretty).stdout,
            "bundle set.\n"
        );
        assert_eq!(
            render_set(&ok, OutputFormat::Json).stdout,
            "{\"results\":[{\"bundle\":{\"jwt_authorities\":[],\"refresh_hint\":\"0\",\
             \"sequence_number\":\"0\",\"trust_domain\":\"o.org\",\"wit_authorities\":[],\
             \"x509_authorities\":[]},\"status\":{\"code\":0,\"message\":\"OK\"}}]}\n"
        );
        let failed = BatchSetFederatedBundleResponse {
            results: vec![set::Result {
                status: status(3, "bad bundle"),
                bundle: None,
            }],
        };
        assert_eq!(
            render_set(&failed, OutputFormat::Pretty).error.as_deref(),
            Some("failed to set federated bundle: bad bundle")
        );
        let deleted = BatchDeleteFederatedBundleResponse {
            results: vec![del::Result {
                status: status(0, "OK"),
                trust_domain: "o.org".into(),
            }],
        };
        assert_eq!(
            render_delete(&deleted, OutputFormat::Pretty).stdout,
            "bundle deleted.\n"
        );
        assert_eq!(
            render_delete(&deleted, OutputFormat::Json).stdout,
            "{\"results\":[{\"status\":{\"code\":0,\"message\":\"OK\"},\"trust_domain\":\"o.org\"}]}\n"
        );
        let refused = BatchDeleteFederatedBundleResponse {
            results: vec![del::Result {
                status: status(
                    9,
                    "cannot delete bundle; federated with 1 registration entries",
                ),
                trust_domain: "o.org".into(),
            }],
        };
        assert_eq!(
            render_delete(&refused, OutputFormat::Pretty)
                .error
                .as_deref(),
            Some(
                "failed to delete federated bundle \"o.org\": cannot delete bundle; federated with 1 registration entries"
            )
        );
    }
}
