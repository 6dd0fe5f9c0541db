//! `api fetch x509` and `api watch`: X509-SVIDs from the Workload API,
//! printed (and, with `-write`, saved) as `spire-agent` does.

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sigil_proto::workload::{X509svidRequest, X509svidResponse};

use super::client::{CliError, connect, with_header, within};
use super::format::{go_duration, go_time, x509_response_json};
use super::{DEFAULT_SOCKET_PATH, OutputFormat};

/// `api fetch x509`.
#[derive(clap::Args, Debug, Clone)]
pub struct FetchX509Args {
    /// Path to the SPIRE Agent API Unix domain socket
    #[arg(long = "socketPath", default_value = DEFAULT_SOCKET_PATH)]
    pub socket_path: PathBuf,
    /// Write SVID data to the specified path (optional; only available for
    /// pretty output format)
    #[arg(long = "write")]
    pub write: Option<PathBuf>,
    /// Suppress stdout
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true")]
    pub silent: bool,
    /// Time to wait for a response
    #[arg(long, default_value = "5s", value_parser = sigil_cli::parse_duration)]
    pub timeout: Duration,
    /// Desired output format (pretty, json); default: pretty.
    #[arg(long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
}

/// `api watch`.
#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// Path to the SPIRE Agent API Unix domain socket
    #[arg(long = "socketPath", default_value = DEFAULT_SOCKET_PATH)]
    pub socket_path: PathBuf,
}

/// One certificate with the validity the output shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cert {
    pub(crate) der: Vec<u8>,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

/// An X509-SVID from a response, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SvidView {
    pub(crate) spiffe_id: String,
    pub(crate) hint: String,
    /// Leaf first, then intermediates.
    pub(crate) certificates: Vec<Cert>,
    pub(crate) key_pkcs8: Vec<u8>,
    pub(crate) bundle: Vec<Cert>,
    /// Federated bundles by the key the output shows (trust domain ID for
    /// `fetch`, trust domain name for `watch`, as in SPIRE).
    pub(crate) federated: BTreeMap<String, Vec<Cert>>,
}

pub(crate) async fn fetch(
    args: &FetchX509Args,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let start = Instant::now();
    let resp = within(&args.socket_path, args.timeout, async {
        let mut client = connect(&args.socket_path).await?;
        let mut stream = client
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await?
            .into_inner();
        stream.message().await?.ok_or_else(|| {
            CliError::BadResponse("the agent closed the stream without sending SVIDs".into())
        })
    })
    .await?;
    let elapsed = start.elapsed();

    if args.output == OutputFormat::Json {
        writeln!(out, "{}", x509_response_json(&resp))?;
        return Ok(());
    }
    let svids = parse_fetch_response(&resp)?;
    verify_svids(&svids)?;
    if !args.silent {
        out.write_all(format_svids(&svids, elapsed).as_bytes())?;
    }
    if let Some(dir) = &args.write {
        write_svids(&svids, dir, out)?;
    }
    Ok(())
}

/// Streams X509-SVID updates until `interrupted` completes, printing each
/// with the time since the previous one. Errors are printed and the stream
/// re-opened with backoff, except `InvalidArgument`, which ends the command.
pub(crate) async fn watch(
    args: &WatchArgs,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
    interrupted: impl Future<Output = ()>,
) -> Result<(), CliError> {
    const MAX_BACKOFF: Duration = Duration::from_secs(30);
    tokio::pin!(interrupted);
    let mut last_update = Instant::now();
    let mut backoff = Duration::from_secs(1);
    loop {
        let attempt = watch_once(&args.socket_path, out, &mut last_update, &mut backoff);
        let outcome = tokio::select! {
            () = &mut interrupted => return Ok(()),
            outcome = attempt => outcome,
        };
        match outcome {
            Err(CliError::Rpc(status)) if status.code() == tonic::Code::InvalidArgument => {
                return Err(CliError::Rpc(status));
            }
            Err(e) => writeln!(err, "{e}")?,
            Ok(()) => writeln!(err, "the agent closed the stream; reconnecting")?,
        }
        tokio::select! {
            () = &mut interrupted => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn watch_once(
    socket_path: &Path,
    out: &mut (dyn Write + Send),
    last_update: &mut Instant,
    backoff: &mut Duration,
) -> Result<(), CliError> {
    let mut client = connect(socket_path).await?;
    let mut stream = client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await?
        .into_inner();
    while let Some(resp) = stream.message().await? {
        *backoff = Duration::from_secs(1);
        let svids = parse_watch_response(&resp)?;
        out.write_all(format_svids(&svids, last_update.elapsed()).as_bytes())?;
        out.flush()?;
        *last_update = Instant::now();
    }
    Ok(())
}

/// SPIRE's X509 listing: `Received N svid(s) after D`, then per SVID its ID,
/// hint, validity of leaf, intermediates, CAs and federated CAs, each block
/// preceded by an empty line, and a final empty line.
pub(crate) fn format_svids(svids: &[SvidView], elapsed: Duration) -> String {
    let mut s = format!(
        "Received {} svid{} after {}\n",
        svids.len(),
        if svids.len() == 1 { "" } else { "s" },
        go_duration(elapsed)
    );
    for svid in svids {
        s.push('\n');
        s.push_str(&format!("SPIFFE ID:\t\t{}\n", svid.spiffe_id));
        if !svid.hint.is_empty() {
            s.push_str(&format!("Hint:\t\t\t{}\n", svid.hint));
        }
        if let Some((leaf, intermediates)) = svid.certificates.split_first() {
            s.push_str(&format!(
                "SVID Valid After:\t{}\n",
                go_time(leaf.not_before)
            ));
            s.push_str(&format!("SVID Valid Until:\t{}\n", go_time(leaf.not_after)));
            for (i, c) in intermediates.iter().enumerate() {
                let n = i + 1;
                s.push_str(&format!(
                    "Intermediate #{n} Valid After:\t{}\n",
                    go_time(c.not_before)
                ));
                s.push_str(&format!(
                    "Intermediate #{n} Valid Until:\t{}\n",
                    go_time(c.not_after)
                ));
            }
        }
        for (i, c) in svid.bundle.iter().enumerate() {
            let n = i + 1;
            s.push_str(&format!(
                "CA #{n} Valid After:\t{}\n",
                go_time(c.not_before)
            ));
            s.push_str(&format!("CA #{n} Valid Until:\t{}\n", go_time(c.not_after)));
        }
        for (td, bundle) in &svid.federated {
            for (i, c) in bundle.iter().enumerate() {
                let n = i + 1;
                s.push_str(&format!(
                    "[{td}] CA #{n} Valid After:\t{}\n",
                    go_time(c.not_before)
                ));
                s.push_str(&format!(
                    "[{td}] CA #{n} Valid Until:\t{}\n",
                    go_time(c.not_after)
                ));
            }
        }
    }
    s.push('\n');
    s
}

/// Writes `svid.N.pem` (leaf and intermediates), `svid.N.key` (PKCS#8,
/// mode 0600), `bundle.N.pem` and `federated_bundle.N.M.pem` (federated
/// trust domains in sorted order) into `dir`, reporting each file as SPIRE
/// does.
pub(crate) fn write_svids(
    svids: &[SvidView],
    dir: &Path,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    for (i, svid) in svids.iter().enumerate() {
        let svid_path = dir.join(format!("svid.{i}.pem"));
        let key_path = dir.join(format!("svid.{i}.key"));
        let bundle_path = dir.join(format!("bundle.{i}.pem"));

        writeln!(out, "Writing SVID #{i} to file {}.", svid_path.display())?;
        write_file(&svid_path, certs_pem(&svid.certificates).as_bytes(), 0o644)?;

        writeln!(out, "Writing key #{i} to file {}.", key_path.display())?;
        let key_pem = pem::encode_config(
            &pem::Pem::new("PRIVATE KEY", svid.key_pkcs8.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        write_file(&key_path, key_pem.as_bytes(), 0o600)?;

        writeln!(
            out,
            "Writing bundle #{i} to file {}.",
            bundle_path.display()
        )?;
        write_file(&bundle_path, certs_pem(&svid.bundle).as_bytes(), 0o644)?;

        for (j, (td, bundle)) in svid.federated.iter().enumerate() {
            let path = dir.join(format!("federated_bundle.{i}.{j}.pem"));
            writeln!(
                out,
                "Writing federated bundle #{j} for trust domain {td} to file {}.",
                path.display()
            )?;
            write_file(&path, certs_pem(bundle).as_bytes(), 0o644)?;
        }
    }
    Ok(())
}

/// Parses a `fetch` response as SPIRE does: at least one SVID, each with a
/// chain, a PKCS#8 key and a non-empty bundle; federated bundles keyed by
/// trust domain ID.
pub(crate) fn parse_fetch_response(resp: &X509svidResponse) -> Result<Vec<SvidView>, CliError> {
    if resp.svids.is_empty() {
        return Err(CliError::BadResponse(
            "workload response contains no svids".into(),
        ));
    }
    let mut federated = BTreeMap::new();
    for (td, der) in &resp.federated_bundles {
        let certs = parse_certs(der).map_err(|e| {
            CliError::BadResponse(format!(
                "failed to parse bundle for federated domain {td:?}: {e}"
            ))
        })?;
        if certs.is_empty() {
            return Err(CliError::BadResponse(format!(
                "no certificates in bundle for federated domain {td:?}"
            )));
        }
        federated.insert(td.clone(), certs);
    }
    resp.svids
        .iter()
        .enumerate()
        .map(|(i, svid)| {
            parse_svid(svid, federated.clone()).map_err(|e| {
                CliError::BadResponse(format!(
                    "failed to parse svid entry {i} for spiffe id {:?}: {e}",
                    svid.spiffe_id
                ))
            })
        })
        .collect()
}

/// Checks each SVID's chain against its own bundle, as SPIRE's CLI does
/// before printing anything.
pub(crate) fn verify_svids(svids: &[SvidView]) -> Result<(), CliError> {
    let now = SystemTime::now();
    for svid in svids {
        let chain: Vec<Vec<u8>> = svid.certificates.iter().map(|c| c.der.clone()).collect();
        let roots: Vec<Vec<u8>> = svid.bundle.iter().map(|c| c.der.clone()).collect();
        let failed = |reason: String| {
            CliError::BadResponse(format!(
                "{:?} SVID failed verification against bundle: {reason}",
                svid.spiffe_id
            ))
        };
        let id =
            sigil_crypto::verify_chain(&chain, &roots, now).map_err(|e| failed(e.to_string()))?;
        if id.as_str() != svid.spiffe_id {
            return Err(failed(format!("certificate is for {id}")));
        }
    }
    Ok(())
}

/// What `watch` shows: each SVID with its own trust domain's bundle, and
/// every other trust domain's bundle as federated, keyed by name (go-spiffe's
/// X509Context view, which SPIRE's watcher prints).
fn parse_watch_response(resp: &X509svidResponse) -> Result<Vec<SvidView>, CliError> {
    let mut federated = BTreeMap::new();
    for (td_id, der) in &resp.federated_bundles {
        let name = td_id.strip_prefix("spiffe://").unwrap_or(td_id).to_owned();
        let certs = parse_certs(der).map_err(|e| {
            CliError::BadResponse(format!("failed to parse bundle for {td_id:?}: {e}"))
        })?;
        federated.insert(name, certs);
    }
    resp.svids
        .iter()
        .map(|svid| {
            let own = sigil_spiffe::SpiffeId::parse(&svid.spiffe_id)
                .map(|id| id.trust_domain_name().to_owned())
                .map_err(|e| {
                    CliError::BadResponse(format!("SVID has an invalid SPIFFE ID: {e}"))
                })?;
            let mut others = federated.clone();
            others.remove(&own);
            let mut view = parse_svid(svid, others).map_err(|e| {
                CliError::BadResponse(format!("failed to parse SVID {:?}: {e}", svid.spiffe_id))
            })?;
            view.hint.clear();
            Ok(view)
        })
        .collect()
}

fn parse_svid(
    svid: &sigil_proto::workload::X509svid,
    federated: BTreeMap<String, Vec<Cert>>,
) -> Result<SvidView, String> {
    let certificates = parse_certs(&svid.x509_svid)?;
    if certificates.is_empty() {
        return Err("no certificates found".into());
    }
    sigil_crypto::SoftwareKey::from_pkcs8_der(&svid.x509_svid_key)
        .map_err(|e| format!("failed to parse private key: {e}"))?;
    let bundle =
        parse_certs(&svid.bundle).map_err(|e| format!("failed to parse trust bundle: {e}"))?;
    if bundle.is_empty() {
        return Err("no certificates in trust bundle".into());
    }
    Ok(SvidView {
        spiffe_id: svid.spiffe_id.clone(),
        hint: svid.hint.clone(),
        certificates,
        key_pkcs8: svid.x509_svid_key.clone(),
        bundle,
        federated,
    })
}

/// Splits concatenated DER certificates.
fn parse_certs(mut der: &[u8]) -> Result<Vec<Cert>, String> {
    let mut certs = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("certificate {}: {e}", certs.len()))?;
        let one = &der[..der.len() - rest.len()];
        let info = sigil_crypto::cert_info(one)
            .map_err(|e| format!("certificate {}: {e}", certs.len()))?;
        certs.push(Cert {
            der: one.to_vec(),
            not_before: info.not_before,
            not_after: info.not_after,
        });
        der = rest;
    }
    Ok(certs)
}

fn certs_pem(certs: &[Cert]) -> String {
    let ders: Vec<Vec<u8>> = certs.iter().map(|c| c.der.clone()).collect();
    sigil_spiffe::bundle::certificates_to_pem(&ders)
}

/// Creates or truncates `path` with `mode`, and enforces `mode` on a file
/// that already existed (a key must never stay world-readable).
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CliError> {
    let wrap = |source| CliError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(wrap)?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(wrap)?;
    file.write_all(data).map_err(wrap)?;
    Ok(())
}
