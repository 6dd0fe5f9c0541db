//! `x509 mint` and `jwt mint`: SVIDs for any SPIFFE ID in the trust
//! domain, signed by the server through `spire.api.server.svid.v1` (the
//! X.509 key is made here and never leaves this process except as output).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sigil_proto::spire::api::server::bundle::v1::{GetBundleRequest, bundle_client::BundleClient};
use sigil_proto::spire::api::server::svid::v1::{
    MintJwtsvidRequest, MintJwtsvidResponse, MintX509svidRequest, svid_client::SvidClient,
};

use super::rpc::{connect, status_in};
use super::{CliError, ConnArgs, Outcome, OutputFormat, fmt, json, parse_output_format};

/// `x509` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum X509Command {
    /// Mints an X509-SVID
    Mint(X509MintArgs),
}

/// `jwt` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum JwtCommand {
    /// Mints a JWT-SVID
    Mint(JwtMintArgs),
}

/// Flags of `x509 mint`.
#[derive(clap::Args, Debug, Clone)]
pub struct X509MintArgs {
    /// SPIFFE ID of the X509-SVID
    #[arg(long = "spiffeID", default_value = "", hide_default_value = true)]
    pub spiffe_id: String,
    /// TTL of the X509-SVID
    #[arg(long = "ttl", default_value = "0s", value_parser = sigil_cli::parse_duration)]
    pub ttl: Duration,
    /// DNS name that will be included in SVID. Can be used more than once.
    #[arg(long = "dns", action = clap::ArgAction::Append)]
    pub dns: Vec<String>,
    /// Directory to write output to instead of stdout
    #[arg(long = "write", default_value = "", hide_default_value = true)]
    pub write: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// Flags of `jwt mint`.
#[derive(clap::Args, Debug, Clone)]
pub struct JwtMintArgs {
    /// SPIFFE ID of the JWT-SVID
    #[arg(long = "spiffeID", default_value = "", hide_default_value = true)]
    pub spiffe_id: String,
    /// TTL of the JWT-SVID
    #[arg(long = "ttl", default_value = "0s", value_parser = sigil_cli::parse_duration)]
    pub ttl: Duration,
    /// Audience claim that will be included in the SVID. Can be used more
    /// than once.
    #[arg(long = "audience", action = clap::ArgAction::Append)]
    pub audience: Vec<String>,
    /// File to write token to instead of stdout
    #[arg(long = "write", default_value = "", hide_default_value = true)]
    pub write: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Desired output format (pretty, json)
    #[arg(long = "output", default_value = "pretty", value_parser = parse_output_format)]
    pub output: OutputFormat,
}

/// A minted X509-SVID with its key and the roots to verify it, all DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MintedX509 {
    /// Leaf first.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8.
    pub private_key: Vec<u8>,
    pub root_cas: Vec<Vec<u8>>,
}

pub(crate) async fn run_x509(cmd: X509Command) -> Result<Outcome, CliError> {
    let X509Command::Mint(args) = cmd;
    let (ttl, csr, private_key) = x509_request(&args)?;
    let context = "unable to mint SVID";
    let channel = connect(&args.conn, Some(context)).await?;
    let svid = SvidClient::new(channel.clone())
        .mint_x509svid(MintX509svidRequest { csr, ttl })
        .await
        .map_err(status_in(Some(context)))?
        .into_inner()
        .svid
        .unwrap_or_default();
    if svid.cert_chain.is_empty() {
        return Err(CliError::Output(
            "server response missing SVID chain".into(),
        ));
    }
    let bundle = BundleClient::new(channel)
        .get_bundle(GetBundleRequest { output_mask: None })
        .await
        .map_err(status_in(Some("unable to get bundle")))?
        .into_inner();
    if bundle.x509_authorities.is_empty() {
        return Err(CliError::Output(
            "server response missing X509 Authorities".into(),
        ));
    }
    let mut out = Outcome::default();
    if capped(svid.expires_at, args.ttl) {
        out.stderr = format!(
            "X509-SVID lifetime was capped shorter than specified ttl; expires {}\n",
            fmt::go_quote(&fmt::rfc3339_utc(svid.expires_at))
        );
    }
    let minted = MintedX509 {
        chain: svid.cert_chain,
        private_key,
        root_cas: bundle
            .x509_authorities
            .into_iter()
            .map(|a| a.asn1)
            .collect(),
    };
    let shown = if args.write.is_empty() {
        render_x509(&minted, args.output)
    } else {
        write_x509(&minted, Path::new(&args.write))
    };
    out.stdout = shown.stdout;
    out.error = shown.error;
    Ok(out)
}

pub(crate) async fn run_jwt(cmd: JwtCommand) -> Result<Outcome, CliError> {
    let JwtCommand::Mint(args) = cmd;
    let req = jwt_request(&args)?;
    let context = "unable to mint SVID";
    let mut client = SvidClient::new(connect(&args.conn, Some(context)).await?);
    let resp = client
        .mint_jwtsvid(req)
        .await
        .map_err(status_in(Some(context)))?
        .into_inner();
    let token = resp
        .svid
        .as_ref()
        .map(|s| s.token.clone())
        .unwrap_or_default();
    if token.is_empty() {
        return Err(CliError::Output("server response missing token".into()));
    }
    let mut out = Outcome::default();
    match jwt_expiry(&token) {
        Ok(exp) if capped(exp, args.ttl) => {
            out.stderr = format!(
                "JWT-SVID lifetime was capped shorter than specified ttl; expires {}\n",
                fmt::go_quote(&fmt::rfc3339_utc(exp))
            );
        }
        Ok(_) => {}
        Err(e) => out.stderr = format!("Unable to determine JWT-SVID lifetime: {e}\n"),
    }
    if args.write.is_empty() {
        out.stdout = render_jwt(&resp, args.output).stdout;
        return Ok(out);
    }
    let path = PathBuf::from(&args.write);
    write_file(&path, token.as_bytes(), 0o600)
        .map_err(|e| CliError::Output(format!("unable to write token: {e}")))?;
    out.stdout = format!("JWT-SVID written to {}\n", path.display());
    Ok(out)
}

/// Checks `x509 mint`'s flags as SPIRE does and makes the key and CSR:
/// returns the TTL in seconds, the CSR and the PKCS#8 key.
pub(crate) fn x509_request(args: &X509MintArgs) -> Result<(i32, Vec<u8>, Vec<u8>), CliError> {
    if args.spiffe_id.is_empty() {
        return Err(CliError::Invalid("spiffeID must be specified".into()));
    }
    let id = sigil_spiffe::SpiffeId::parse(&args.spiffe_id)
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let ttl = ttl_seconds(args.ttl)?;
    let key = rcgen::KeyPair::generate()
        .map_err(|e| CliError::Output(format!("unable to generate key: {e}")))?;
    let csr = csr(&key, id.as_str(), &args.dns)
        .map_err(|e| CliError::Output(format!("unable to generate CSR: {e}")))?;
    Ok((ttl, csr, key.serialize_der()))
}

/// Checks `jwt mint`'s flags as SPIRE does, in its order.
pub(crate) fn jwt_request(args: &JwtMintArgs) -> Result<MintJwtsvidRequest, CliError> {
    if args.spiffe_id.is_empty() {
        return Err(CliError::Invalid("spiffeID must be specified".into()));
    }
    if args.audience.is_empty() {
        return Err(CliError::Invalid(
            "at least one audience must be specified".into(),
        ));
    }
    let id = fmt::id_to_proto(&args.spiffe_id).map_err(|e| CliError::Invalid(e.to_string()))?;
    Ok(MintJwtsvidRequest {
        id: Some(id),
        audience: args.audience.clone(),
        ttl: ttl_seconds(args.ttl)?,
    })
}

/// The TTL in whole seconds, rounded up; SPIRE's overflow message names
/// the second count as Go prints it (a `time.Duration` of that many
/// nanoseconds).
pub(crate) fn ttl_seconds(ttl: Duration) -> Result<i32, CliError> {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i32::try_from(secs).map_err(|_| {
        CliError::Invalid(format!(
            "invalid value for TTL: overflow converting time.Duration({}) to int32",
            go_duration_string(secs)
        ))
    })
}

/// `X509-SVID:`, `Private key:` and `Root CAs:`, each followed by its PEM
/// and a blank line; JSON is SPIRE's struct with base64 DER.
pub(crate) fn render_x509(m: &MintedX509, output: OutputFormat) -> Outcome {
    if output == OutputFormat::Json {
        let list = |v: &[Vec<u8>]| Value::Array(v.iter().map(|d| json::base64(d)).collect());
        return Outcome::stdout(json::encode_struct(&[
            ("x509_svid", list(&m.chain)),
            ("private_key", json::base64(&m.private_key)),
            ("root_cas", list(&m.root_cas)),
        ]));
    }
    let (svid, key, roots) = pems(m);
    Outcome::stdout(format!(
        "X509-SVID:\n{svid}\nPrivate key:\n{key}\nRoot CAs:\n{roots}\n"
    ))
}

/// The token alone, or the `MintJWTSVIDResponse` in JSON.
pub(crate) fn render_jwt(resp: &MintJwtsvidResponse, output: OutputFormat) -> Outcome {
    if output == OutputFormat::Json {
        return Outcome::stdout(json::encode(&json::mint_jwt_svid_response(resp)));
    }
    let token = resp.svid.as_ref().map(|s| s.token.as_str()).unwrap_or("");
    Outcome::stdout(format!("{token}\n"))
}

/// The `exp` claim of a compact JWS, read without verifying it (only to
/// warn about a shortened lifetime).
pub(crate) fn jwt_expiry(token: &str) -> Result<i64, JwtExpiryError> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtExpiryError::NotCompact);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(JwtExpiryError::Base64)?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(JwtExpiryError::Json)?;
    match claims.get("exp") {
        None | Some(Value::Null) => Err(JwtExpiryError::NoExpiry),
        Some(v) => v
            .as_f64()
            .map(|f| f as i64)
            .ok_or(JwtExpiryError::ExpiryNotNumber),
    }
}

/// Why a minted token's `exp` could not be read (go-jose's texts).
#[derive(Debug, thiserror::Error)]
pub(crate) enum JwtExpiryError {
    /// Not three dot-separated parts.
    #[error("go-jose/go-jose: compact JWS format must have three parts")]
    NotCompact,
    /// The payload is not base64url.
    #[error("illegal base64 data: {0}")]
    Base64(base64::DecodeError),
    /// The payload is not JSON.
    #[error("{0}")]
    Json(serde_json::Error),
    /// No `exp` claim.
    #[error("no expiry claim")]
    NoExpiry,
    /// An `exp` claim that is not a number.
    #[error("go-jose/go-jose/jwt: expected number for exp")]
    ExpiryNotNumber,
}

/// Whether a lifetime ending at `expires_at` (Unix seconds) is shorter
/// from now than `ttl`.
fn capped(expires_at: i64, ttl: Duration) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128;
    let until = i128::from(expires_at) * 1_000_000_000 - now;
    until < ttl.as_nanos() as i128
}

/// A CSR as Go's `x509.CreateCertificateRequest` makes it for SPIRE: empty
/// subject, the DNS names, then the SPIFFE ID as URI SAN.
fn csr(key: &rcgen::KeyPair, spiffe_id: &str, dns: &[String]) -> Result<Vec<u8>, CsrError> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let mut sans = Vec::with_capacity(dns.len() + 1);
    for name in dns {
        let name = rcgen::string::Ia5String::try_from(name.as_str()).map_err(|source| {
            CsrError::DnsName {
                name: name.clone(),
                source,
            }
        })?;
        sans.push(rcgen::SanType::DnsName(name));
    }
    let uri = rcgen::string::Ia5String::try_from(spiffe_id)?;
    sans.push(rcgen::SanType::URI(uri));
    params.subject_alt_names = sans;
    let csr = params.serialize_request(key)?;
    Ok(csr.der().to_vec())
}

/// Why `x509 mint` could not build its CSR.
#[derive(Debug, thiserror::Error)]
enum CsrError {
    /// A `-dns` name that is not IA5 (ASCII) text.
    #[error("DNS name {}: {source}", fmt::go_quote(.name))]
    DnsName {
        /// The name.
        name: String,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// The SPIFFE ID is not IA5 text, or rcgen could not sign the request.
    #[error(transparent)]
    Rcgen(#[from] rcgen::Error),
}

/// The chain, key and roots as PEM text.
fn pems(m: &MintedX509) -> (String, String, String) {
    let certs = |ders: &[Vec<u8>]| -> String {
        ders.iter()
            .map(|d| pem_block("CERTIFICATE", d))
            .collect::<String>()
    };
    (
        certs(&m.chain),
        pem_block("PRIVATE KEY", &m.private_key),
        certs(&m.root_cas),
    )
}

fn pem_block(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// `-write <dir>`: `svid.pem` and `bundle.pem` readable by all, `key.pem`
/// by the owner only; a line on stdout for each.
fn write_x509(m: &MintedX509, dir: &Path) -> Outcome {
    let (svid, key, roots) = pems(m);
    let mut out = Outcome::default();
    let files = [
        ("svid.pem", svid, 0o644, "X509-SVID", "SVID"),
        ("key.pem", key, 0o600, "Private key", "key"),
        ("bundle.pem", roots, 0o644, "Root CAs", "bundle"),
    ];
    for (name, text, mode, what, noun) in files {
        let path = dir.join(name);
        if let Err(e) = write_file(&path, text.as_bytes(), mode) {
            out.error = Some(format!("unable to write {noun}: {e}"));
            return out;
        }
        out.stdout
            .push_str(&format!("{what} written to {}\n", path.display()));
    }
    out
}

/// Writes `data` to `path` with exactly `mode`, replacing what was there;
/// the error reads like Go's (`open <path>: <reason>`).
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), WriteFileError> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let fail = |source: std::io::Error| WriteFileError {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(fail)?;
    file.write_all(data).map_err(fail)
}

/// A file `-write` could not write; the text reads like Go's
/// (`open <path>: <errno text>`).
#[derive(Debug, thiserror::Error)]
#[error("open {}: {}", .path.display(), fmt::go_errno_text(.source))]
struct WriteFileError {
    /// The file.
    path: PathBuf,
    /// The I/O error.
    source: std::io::Error,
}

/// Go's `time.Duration(n).String()` for `n` nanoseconds.
fn go_duration_string(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1, "ns"), (1_000, "µs"), (1_000_000, "ms")];
    if n == 0 {
        return "0s".into();
    }
    let frac = |value: u64, scale: u64| -> String {
        let whole = value / scale;
        let rest = value % scale;
        if rest == 0 {
            return whole.to_string();
        }
        let digits = scale.ilog10() as usize;
        let text = format!("{whole}.{rest:0digits$}");
        text.trim_end_matches('0').to_owned()
    };
    if n < 1_000_000_000 {
        let (scale, unit) = UNITS
            .iter()
            .rev()
            .find(|(scale, _)| n >= *scale)
            .copied()
            .unwrap_or((1, "ns"));
        return format!("{}{unit}", frac(n, scale));
    }
    let total_secs = n / 1_000_000_000;
    let (h, m) = (total_secs / 3600, (total_secs % 3600) / 60);
    let secs = frac(n % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use sigil_crypto::Signer as _;
    use sigil_proto::spire::api::types::{Jwtsvid, Spiffeid};

    use super::*;

    #[derive(clap::Parser, Debug)]
    enum Cli {
        #[command(subcommand)]
        X509(X509Command),
        #[command(subcommand)]
        Jwt(JwtCommand),
    }

    fn parse(args: &[&str]) -> Cli {
        let argv = std::iter::once("mint").chain(args.iter().copied());
        Cli::try_parse_from(sigil_cli::normalize_go_flags(argv)).unwrap()
    }

    fn x509_args(args: &[&str]) -> X509MintArgs {
        let mut argv = vec!["x509", "mint"];
        argv.extend_from_slice(args);
        match parse(&argv) {
            Cli::X509(X509Command::Mint(a)) => a,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn jwt_args(args: &[&str]) -> JwtMintArgs {
        let mut argv = vec!["jwt", "mint"];
        argv.extend_from_slice(args);
        match parse(&argv) {
            Cli::Jwt(JwtCommand::Mint(a)) => a,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn x509_request_carries_id_dns_and_rounded_up_ttl() {
        let (ttl, der, key) = x509_request(&x509_args(&[
            "-spiffeID",
            "spiffe://example.org/w",
            "-dns",
            "a.example.org",
            "-dns",
            "b.example.org",
            "-ttl",
            "1500ms",
        ]))
        .unwrap();
        assert_eq!(ttl, 2);
        let csr = sigil_crypto::csr::parse_and_verify_csr(&der).unwrap();
        assert_eq!(csr.uri_sans, ["spiffe://example.org/w"]);
        assert_eq!(csr.dns_names, ["a.example.org", "b.example.org"]);
        // The key printed is the key the CSR was made with.
        let reloaded = sigil_crypto::SoftwareKey::from_pkcs8_der(&key).unwrap();
        assert_eq!(reloaded.public_key_der(), csr.public_key_der);
    }

    #[test]
    fn x509_flags_are_checked_like_spire() {
        assert_eq!(
            x509_request(&x509_args(&[])).unwrap_err().to_string(),
            "spiffeID must be specified"
        );
        let err = x509_request(&x509_args(&["-spiffeID", "example.org/w"])).unwrap_err();
        assert!(
            err.to_string().starts_with("scheme is missing or invalid"),
            "{err}"
        );
        assert_eq!(
            ttl_seconds(Duration::from_secs(3_000_000_000))
                .unwrap_err()
                .to_string(),
            "invalid value for TTL: overflow converting time.Duration(3s) to int32"
        );
    }

    #[test]
    fn jwt_flags_are_checked_like_spire() {
        assert_eq!(
            jwt_request(&jwt_args(&["-audience", "a"]))
                .unwrap_err()
                .to_string(),
            "spiffeID must be specified"
        );
        assert_eq!(
            jwt_request(&jwt_args(&["-spiffeID", "spiffe://e.org/w"]))
                .unwrap_err()
                .to_string(),
            "at least one audience must be specified"
        );
        let req = jwt_request(&jwt_args(&[
            "-spiffeID",
            "spiffe://e.org/w",
            "-audience",
            "a,b",
            "-audience",
            "c",
            "-ttl",
            "1m",
        ]))
        .unwrap();
        assert_eq!(req.audience, ["a,b", "c"]);
        assert_eq!(req.ttl, 60);
        assert_eq!(req.id.unwrap().path, "/w");
    }

    #[test]
    fn x509_output_matches_spire() {
        let m = MintedX509 {
            chain: vec![vec![1, 2, 3]],
            private_key: vec![4, 5],
            root_cas: vec![vec![6], vec![7]],
        };
        assert_eq!(
            render_x509(&m, OutputFormat::Json).stdout,
            "{\"x509_svid\":[\"AQID\"],\"private_key\":\"BAU=\",\"root_cas\":[\"Bg==\",\"Bw==\"]}\n"
        );
        assert_eq!(
            render_x509(&m, OutputFormat::Pretty).stdout,
            "X509-SVID:\n-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n\n\
             Private key:\n-----BEGIN PRIVATE KEY-----\nBAU=\n-----END PRIVATE KEY-----\n\n\
             Root CAs:\n-----BEGIN CERTIFICATE-----\nBg==\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\nBw==\n-----END CERTIFICATE-----\n\n"
        );
    }

    #[test]
    fn x509_write_puts_three_files_with_spires_modes() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let m = MintedX509 {
            chain: vec![vec![1]],
            private_key: vec![2],
            root_cas: vec![vec![3]],
        };
        let out = write_x509(&m, dir.path());
        assert_eq!(out.error, None);
        let d = dir.path().display();
        assert_eq!(
            out.stdout,
            format!(
                "X509-SVID written to {d}/svid.pem\nPrivate key written to {d}/key.pem\n\
                 Root CAs written to {d}/bundle.pem\n"
            )
        );
        let mode = |n: &str| {
            std::fs::metadata(dir.path().join(n))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(
            (mode("svid.pem"), mode("key.pem"), mode("bundle.pem")),
            (0o644, 0o600, 0o644)
        );
        let out = write_x509(&m, &dir.path().join("missing"));
        assert!(
            out.error
                .unwrap()
                .starts_with("unable to write SVID: open ")
        );
    }

    #[test]
    fn jwt_output_and_expiry() {
        let resp = MintJwtsvidResponse {
            svid: Some(Jwtsvid {
                token: "a.b.c".into(),
                id: Some(Spiffeid {
                    trust_domain: "e.org".into(),
                    path: "/w".into(),
                }),
                expires_at: 20,
                issued_at: 10,
                hint: String::new(),
            }),
        };
        assert_eq!(render_jwt(&resp, OutputFormat::Pretty).stdout, "a.b.c\n");
        assert_eq!(
            render_jwt(&resp, OutputFormat::Json).stdout,
            "{\"svid\":{\"expires_at\":\"20\",\"hint\":\"\",\"id\":{\"path\":\"/w\",\
             \"trust_domain\":\"e.org\"},\"issued_at\":\"10\",\"token\":\"a.b.c\"}}\n"
        );
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"x","exp":1552410266}"#);
        assert_eq!(jwt_expiry(&format!("h.{payload}.s")).unwrap(), 1552410266);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        assert_eq!(
            jwt_expiry(&format!("h.{payload}.s"))
                .unwrap_err()
                .to_string(),
            "no expiry claim"
        );
        assert!(jwt_expiry("not-a-jwt").is_err());
        assert!(capped(0, Duration::from_secs(1)));
        assert!(!capped(i64::from(i32::MAX), Duration::ZERO));
    }

    #[test]
    fn go_duration_strings() {
        assert_eq!(go_duration_string(3_000_000_000), "3s");
        assert_eq!(go_duration_string(2_147_483_648), "2.147483648s");
        assert_eq!(go_duration_string(3_723_500_000_000), "1h2m3.5s");
        assert_eq!(go_duration_string(1_500), "1.5µs");
        assert_eq!(go_duration_string(0), "0s");
    }
}
