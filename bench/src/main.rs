//! Workload API load generator: drives `FetchJWTSVID` and `FetchX509SVID`
//! against one agent's Unix socket for a bounded time and request count, and
//! prints throughput and latency percentiles per RPC, so `run.sh` can compare
//! sigil-agent and spire-agent under the same client.
//!
//! Usage:
//!   sigil-bench load -socket PATH [-duration SECS] [-concurrency N]
//!                    [-max-requests N] [-rpc jwt|jwt-unique|x509|both] [-audience AUD]
//!   sigil-bench wait -socket PATH [-timeout SECS] [-spiffe-id ID]
//!   sigil-bench fleet|sign|jwt|probe ...   (SPIRE agent API; see fleet.rs)
//!
//! `load` prints one line per RPC:
//!   `rpc=jwt conc=16 ok=1234 err=0 secs=10.00 rps=123.4 p50_us=.. p90_us=.. p99_us=..`
//! `wait` polls until the socket serves a first X509-SVID (with `-spiffe-id`,
//! one for that ID) and prints `first_svid_ms=<n>` (time since `wait`
//! started).
#![forbid(unsafe_code)]

mod api;
mod args;
mod fleet;
mod stats;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sigil_proto::workload::{JwtsvidRequest, X509svidRequest};
use tonic::transport::Channel;

/// Hard ceilings so a typo cannot turn the generator into a runaway.
const MAX_DURATION_SECS: u64 = 600;
const MAX_CONCURRENCY: usize = 1024;
const DEFAULT_MAX_REQUESTS: u64 = 10_000_000;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sigil-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why a benchmark run stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad command line.
    #[error("usage: {0}")]
    Usage(String),
    /// A connection could not be made.
    #[error("connect: {0}")]
    Connect(String),
    /// A wait ran out.
    #[error("timeout: {0}")]
    Timeout(String),
    /// An RPC failed or answered something unusable.
    #[error("{0}: {1}")]
    Rpc(&'static str, String),
    /// TLS configuration or key generation failed.
    #[error("tls: {0}")]
    Tls(String),
    /// A worker task failed.
    #[error("task: {0}")]
    Task(String),
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    /// `FetchJWTSVID` with the same audience every time (agent cache hits).
    Jwt,
    /// `FetchJWTSVID` with a fresh audience per request, so every call is a
    /// cache miss the agent must have the server sign.
    JwtUnique,
    /// First message of `FetchX509SVID`.
    X509,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::JwtUnique => "jwt-unique",
            Self::X509 => "x509",
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    socket: PathBuf,
    duration: Duration,
    concurrency: usize,
    max_requests: u64,
    rpcs: Vec<Rpc>,
    audience: String,
    timeout: Duration,
    spiffe_id: Option<String>,
}

fn parse(args: &[String]) -> Result<Opts, BenchError> {
    let mut o = Opts {
        socket: PathBuf::new(),
        duration: Duration::from_secs(10),
        concurrency: 1,
        max_requests: DEFAULT_MAX_REQUESTS,
        rpcs: vec![Rpc::Jwt, Rpc::X509],
        audience: "bench".into(),
        timeout: Duration::from_secs(60),
        spiffe_id: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let flag = flag.trim_start_matches('-');
        let val = it
            .next()
            .ok_or_else(|| BenchError::Usage(format!("-{flag} needs a value")))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| BenchError::Usage(format!("-{flag}: not a number: {v}")))
        };
        match flag {
            "socket" => o.socket = PathBuf::from(val),
            "duration" => o.duration = Duration::from_secs(num(val)?.min(MAX_DURATION_SECS)),
            "timeout" => o.timeout = Duration::from_secs(num(val)?.min(MAX_DURATION_SECS)),
            "concurrency" => {
                o.concurrency = usize::try_from(num(val)?)
                    .unwrap_or(MAX_CONCURRENCY)
                    .clamp(1, MAX_CONCURRENCY);
            }
            "max-requests" => o.max_requests = num(val)?.max(1),
            "audience" => o.audience = val.clone(),
            "spiffe-id" => o.spiffe_id = Some(val.clone()),
            "rpc" => {
                o.rpcs = match val.as_str() {
                    "jwt" => vec![Rpc::Jwt],
                    "jwt-unique" => vec![Rpc::JwtUnique],
                    "x509" => vec![Rpc::X509],
                    "both" => vec![Rpc::Jwt, Rpc::X509],
                    other => return Err(BenchError::Usage(format!("-rpc: unknown {other}"))),
                }
            }
            other => return Err(BenchError::Usage(format!("unknown flag -{other}"))),
        }
    }
    if o.socket.as_os_str().is_empty() {
        return Err(BenchError::Usage("-socket PATH is required".into()));
    }
    Ok(o)
}

async fn run(args: &[String]) -> Result<(), BenchError> {
    let (cmd, rest) = args
        .split_first()
        .ok_or_else(|| BenchError::Usage("sigil-bench load|wait -socket PATH ...".into()))?;
    match cmd.as_str() {
        "fleet" | "sign" | "jwt" | "probe" => return fleet::run(cmd, rest).await,
        _ => {}
    }
    let opts = parse(rest)?;
    match cmd.as_str() {
        "load" => {
            for rpc in opts.rpcs.clone() {
                let r = load(&opts, rpc).await?;
                println!("{r}");
            }
            Ok(())
        }
        "wait" => {
            let ms = wait_first_svid(&opts).await?;
            println!("first_svid_ms={ms}");
            Ok(())
        }
        other => Err(BenchError::Usage(format!("unknown command {other}"))),
    }
}

/// One Workload API connection over the Unix socket.
async fn connect(socket: &Path) -> Result<SpiffeWorkloadApiClient<Channel>, BenchError> {
    Ok(SpiffeWorkloadApiClient::new(
        api::uds_channel(socket).await?,
    ))
}

fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    req
}

/// One call; `Ok` only when the agent returned at least one SVID.
async fn call_once(
    client: &mut SpiffeWorkloadApiClient<Channel>,
    rpc: Rpc,
    audience: &str,
) -> Result<(), String> {
    call_once_for(client, rpc, audience, None).await
}

/// [`call_once`], requiring an X509-SVID for `want_id` when given.
async fn call_once_for(
    client: &mut SpiffeWorkloadApiClient<Channel>,
    rpc: Rpc,
    audience: &str,
    want_id: Option<&str>,
) -> Result<(), String> {
    match rpc {
        Rpc::Jwt | Rpc::JwtUnique => {
            let resp = client
                .fetch_jwtsvid(with_header(JwtsvidRequest {
                    audience: vec![audience.to_owned()],
                    spiffe_id: String::new(),
                }))
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
            if resp.get_ref().svids.is_empty() {
                return Err("empty JWT-SVID response".into());
            }
        }
        Rpc::X509 => {
            let mut stream = client
                .fetch_x509svid(with_header(X509svidRequest {}))
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                .into_inner();
            let first = stream
                .message()
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
            match first {
                Some(m) if want_id.is_some_and(|w| !m.svids.iter().any(|s| s.spiffe_id == w)) => {
                    return Err("wanted SPIFFE ID not served yet".into());
                }
                Some(m) if !m.svids.is_empty() => {}
                _ => return Err("stream ended without an X509-SVID".into()),
            }
        }
    }
    Ok(())
}

#[derive(Debug)]
struct Report {
    rpc: Rpc,
    concurrency: usize,
    ok: u64,
    err: u64,
    secs: f64,
    lat_us: Vec<u64>,
    first_error: Option<String>,
}

impl Report {
    fn pct(&self, p: f64) -> u64 {
        if self.lat_us.is_empty() {
            return 0;
        }
        // Nearest-rank percentile over the sorted samples.
        let rank = ((p / 100.0) * self.lat_us.len() as f64).ceil() as usize;
        self.lat_us[rank.clamp(1, self.lat_us.len()) - 1]
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rps = if self.secs > 0.0 {
            self.ok as f64 / self.secs
        } else {
            0.0
        };
        write!(
            f,
            "rpc={} conc={} ok={} err={} secs={:.2} rps={:.1} p50_us={} p90_us={} p99_us={}",
            self.rpc.name(),
            self.concurrency,
            self.ok,
            self.err,
            self.secs,
            rps,
            self.pct(50.0),
            self.pct(90.0),
            self.pct(99.0),
        )?;
        if let Some(e) = &self.first_error {
            write!(f, " first_error={e:?}")?;
        }
        Ok(())
    }
}

/// Runs `concurrency` workers, each on its own connection (as separate
/// workloads would be), until the duration or the request budget runs out.
async fn load(opts: &Opts, rpc: Rpc) -> Result<Report, BenchError> {
    let mut clients = Vec::with_capacity(opts.concurrency);
    for _ in 0..opts.concurrency {
        clients.push(connect(&opts.socket).await?);
    }
    let budget = Arc::new(AtomicU64::new(opts.max_requests));
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut tasks = Vec::with_capacity(opts.concurrency);
    for mut client in clients {
        let budget = Arc::clone(&budget);
        let seq = Arc::clone(&seq);
        let base_audience = opts.audience.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut err = 0u64;
            let mut first_error = None;
            while Instant::now() < deadline
                && budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                    .is_ok()
            {
                let audience = if rpc == Rpc::JwtUnique {
                    format!("{base_audience}-{}", seq.fetch_add(1, Ordering::Relaxed))
                } else {
                    base_audience.clone()
                };
                let t0 = Instant::now();
                let res = tokio::time::timeout_at(
                    deadline.into(),
                    call_once(&mut client, rpc, &audience),
                )
                .await;
                match res {
                    Ok(Ok(())) => {
                        lat.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX))
                    }
                    Ok(Err(e)) => {
                        err += 1;
                        first_error.get_or_insert(e);
                    }
                    // Cut off by the deadline: neither a success nor an error.
                    Err(_) => break,
                }
            }
            (lat, err, first_error)
        }));
    }
    let mut report = Report {
        rpc,
        concurrency: opts.concurrency,
        ok: 0,
        err: 0,
        secs: 0.0,
        lat_us: Vec::new(),
        first_error: None,
    };
    for t in tasks {
        if let Ok((lat, err, fe)) = t.await {
            report.lat_us.extend(lat);
            report.err += err;
            if report.first_error.is_none() {
                report.first_error = fe;
            }
        }
    }
    report.secs = start.elapsed().as_secs_f64();
    report.ok = report.lat_us.len() as u64;
    report.lat_us.sort_unstable();
    Ok(report)
}

/// Polls every 10 ms until the socket serves an X509-SVID.
async fn wait_first_svid(opts: &Opts) -> Result<u128, BenchError> {
    let start = Instant::now();
    let mut last = String::from("socket never appeared");
    while start.elapsed() < opts.timeout {
        match connect(&opts.socket).await {
            Ok(mut c) => {
                match call_once_for(&mut c, Rpc::X509, &opts.audience, opts.spiffe_id.as_deref())
                    .await
                {
                    Ok(()) => return Ok(start.elapsed().as_millis()),
                    Err(e) => last = e,
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(BenchError::Timeout(format!(
        "no X509-SVID from {} within {:?}: {last}",
        opts.socket.display(),
        opts.timeout
    )))
}
