//! `agent.conf`, in SPIRE's HCL format, plus the `run` flags that override
//! it. Every option SPIRE documents is either read here or rejected at
//! startup with an error naming it; nothing is silently ignored.
//!
//! Checks that need the file system stay small: whether a join token file
//! can be read, and whether `data_dir` already holds a trust bundle from a
//! previous run (which, as in SPIRE, is trusted instead of the bootstrap
//! bundle).
//!
//! One sigil-only knob exists for tests: the environment variable
//! [`SYNC_INTERVAL_ENV`] (`SIGIL_AGENT_SYNC_INTERVAL`, a Go duration such as
//! `200ms`) overrides the sync interval when the configuration is read with
//! [`AgentConfig::load`] or [`AgentConfig::load_with_flags`]. SPIRE's own
//! spelling, `agent { experimental { sync_interval = "5s" } }`, is read too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sigil_cli::config::{ConfigError, PluginDecl, Section, parse_plugins};
use sigil_crypto::key::KeyType;
use sigil_spiffe::{SpiffeId, TrustDomain};

use sigil_plugin::catalog::CatalogError;

use crate::catalog::{AgentContext, Catalog};
use crate::sds::SdsConfig;
use crate::workload::WorkloadRateLimits;

/// Environment variable overriding the sync interval (a Go duration).
pub const SYNC_INTERVAL_ENV: &str = "SIGIL_AGENT_SYNC_INTERVAL";

/// Environment variable overriding how long the agent keeps retrying its
/// first contact with the server before giving up (a Go duration; default
/// [`DEFAULT_BOOTSTRAP_TIMEOUT`]).
pub const BOOTSTRAP_TIMEOUT_ENV: &str = "SIGIL_AGENT_BOOTSTRAP_TIMEOUT";

/// SPIRE's default sync interval.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// How long the first attestation is retried while the server is
/// unreachable (SPIRE: one minute).
pub const DEFAULT_BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(60);

/// SPIRE's default Workload API socket.
pub const DEFAULT_SOCKET_PATH: &str = "/tmp/spire-agent/public/api.sock";

/// File in `data_dir` holding the trust bundle (concatenated DER), as SPIRE
/// names it.
pub const BUNDLE_FILE: &str = "bundle.der";

/// SPIRE's default `x509_svid_cache_max_size` and `jwt_svid_cache_max_size`
/// (also what 0, the unset value, means).
pub const DEFAULT_SVID_CACHE_MAX_SIZE: usize = 1000;

/// SPIRE `agent` options sigil knows but does not implement yet.
const UNSUPPORTED_AGENT: &[&str] = &[
    "allow_unauthenticated_verifiers",
    "allowed_foreign_jwt_claims",
    "availability_target",
    "broker",
    "disable_workload_api",
    "log_file",
    "log_selectors",
    "log_source_location",
    "profiling_enabled",
    "profiling_freq",
    "profiling_names",
    "profiling_port",
    "rebootstrap_delay",
    "rebootstrap_mode",
    "retry_bootstrap",
    "trust_bundle_spiffe_workload_api",
    "trust_bundle_unix_socket",
    "trust_bundle_url",
];

/// SPIRE `agent.experimental` options sigil does not implement yet.
const UNSUPPORTED_EXPERIMENTAL: &[&str] = &[
    "named_pipe_name",
    "admin_named_pipe_name",
    "require_pq_kem",
    "jwt_svid_cache_hit_timeout",
];

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentConfigError {
    /// A syntax, type, unknown- or unsupported-option error.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A combination of options SPIRE also rejects; the message is SPIRE's.
    #[error("{0}")]
    Invalid(String),
    /// The plugin section is wrong (counts, names, options).
    #[error(transparent)]
    Plugin(#[from] CatalogError),
    /// A file named by the configuration could not be read.
    #[error("{what} {}: {source}", path.display())]
    Read {
        /// What the file is.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Format of the bootstrap trust bundle file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleFormat {
    /// PEM `CERTIFICATE` blocks.
    Pem,
    /// A SPIFFE bundle document (JWKS).
    Spiffe,
}

/// Where the agent gets the trust bundle it uses to authenticate the server
/// before it has one of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustBundleSource {
    /// `trust_bundle_path` (+ `trust_bundle_format`).
    Path {
        /// The file.
        path: PathBuf,
        /// Its format.
        format: BundleFormat,
    },
    /// `insecure_bootstrap = true`: the first connection does not verify
    /// the server's certificate (it only checks the server's SPIFFE ID).
    InsecureBootstrap,
    /// Neither was configured, but `data_dir` holds the bundle a previous
    /// run stored; it is used as is.
    Stored,
}

/// `sigil-agent run` flags that override the file, as in SPIRE (flags win).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFlags {
    /// `-dataDir`.
    pub data_dir: Option<String>,
    /// `-joinToken`.
    pub join_token: Option<String>,
    /// `-joinTokenFile`.
    pub join_token_file: Option<String>,
    /// `-logFormat`.
    pub log_format: Option<String>,
    /// `-logLevel`.
    pub log_level: Option<String>,
    /// `-serverAddress`.
    pub server_address: Option<String>,
    /// `-serverPort`.
    pub server_port: Option<u16>,
    /// `-socketPath`.
    pub socket_path: Option<String>,
    /// `-trustDomain`.
    pub trust_domain: Option<String>,
    /// `-trustBundle`.
    pub trust_bundle_path: Option<String>,
    /// `-trustBundleFormat`.
    pub trust_bundle_format: Option<String>,
    /// `-insecureBootstrap` (only ever turns it on, like a Go bool flag).
    pub insecure_bootstrap: bool,
}

/// The parsed agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Host name or IP of the server.
    pub server_address: String,
    /// Port of the server's agent endpoint.
    pub server_port: u16,
    /// The Workload API socket.
    pub socket_path: PathBuf,
    /// The trust domain the agent belongs to.
    pub trust_domain: TrustDomain,
    /// Where the agent keeps its SVID, bundle and SVID cache.
    pub data_dir: PathBuf,
    /// `DEBUG`, `INFO`, `WARN`, `ERROR` (case-insensitive).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
    /// How the server is authenticated before the agent has a bundle.
    pub trust_bundle: TrustBundleSource,
    /// The join token, if one was given.
    pub join_token: Option<String>,
    /// Key type of workload X509-SVIDs (`workload_x509_svid_key_type`).
    pub workload_key_type: KeyType,
    /// How often the agent syncs with the server.
    pub sync_interval: Duration,
    /// How long the first contact with the server is retried.
    pub bootstrap_timeout: Duration,
    /// Most X509-SVIDs the agent holds beyond those of the workloads it is
    /// serving (`x509_svid_cache_max_size`; 0 means the default 1000).
    pub x509_svid_cache_max_size: usize,
    /// Most JWT-SVIDs the agent holds (`jwt_svid_cache_max_size`; 0 means
    /// the default 1000).
    pub jwt_svid_cache_max_size: usize,
    /// Every declared (enabled) plugin, as written; [`AgentConfig::catalog`]
    /// builds them.
    pub plugins: Vec<PluginDecl>,
    /// The admin API socket (`admin_socket_path`), made absolute; `None`
    /// serves no admin API. Never inside the Workload API socket's
    /// directory, which workloads can reach.
    pub admin_socket_path: Option<PathBuf>,
    /// SPIFFE IDs of our trust domain allowed to use the Delegated Identity
    /// API (`authorized_delegates`).
    pub authorized_delegates: Vec<SpiffeId>,
    /// Per-caller Workload API rate limits (`experimental.ratelimit`).
    pub workload_rate_limits: WorkloadRateLimits,
    /// Top-level `telemetry { }` (see [`sigil_telemetry::config`]).
    pub telemetry: sigil_telemetry::TelemetryConfig,
    /// Top-level `health_checks { }`.
    pub health_checks: sigil_telemetry::HealthChecksConfig,
    /// Envoy SDS resource names and validation form (`sds { ... }`).
    pub sds: SdsConfig,
    /// Serve no SDS on the Workload API socket (`disable_sds_api`).
    pub disable_sds_api: bool,
}

impl AgentConfig {
    /// Parses the text of an `agent.conf`.
    pub fn parse(text: &str) -> Result<Self, AgentConfigError> {
        Self::parse_with_flags(text, &RunFlags::default())
    }

    /// Parses the text of an `agent.conf`, letting `flags` override it.
    pub fn parse_with_flags(text: &str, flags: &RunFlags) -> Result<Self, AgentConfigError> {
        let mut top = Section::parse(text)?;
        let Some(agent) = top.take_block("agent")? else {
            return Err(AgentConfigError::Invalid(
                "agent section must be configured".into(),
            ));
        };
        let Some(plugins) = top.take_block("plugins")? else {
            return Err(AgentConfigError::Invalid(
                "plugins section must be configured".into(),
            ));
        };
        let plugins = parse_plugins(plugins.body)?;
        let (telemetry, health_checks) = sigil_telemetry::config::take_blocks(&mut top)?;
        top.finish(&[])?;

        let mut s = agent.body;
        let data_dir =
            pick(flags.data_dir.clone(), s.take_string("data_dir")?).unwrap_or_else(|| ".".into());
        let join_token_file = pick(
            flags.join_token_file.clone(),
            s.take_string("join_token_file")?,
        );
        let join_token = pick(flags.join_token.clone(), s.take_string("join_token")?);
        let server_address = pick(
            flags.server_address.clone(),
            s.take_string("server_address")?,
        );
        let server_port = pick(flags.server_port, s.take_port("server_port")?);
        let socket_path = pick(flags.socket_path.clone(), s.take_string("socket_path")?)
            .unwrap_or_else(|| DEFAULT_SOCKET_PATH.into());
        let trust_domain = pick(flags.trust_domain.clone(), s.take_string("trust_domain")?);
        let log_level = pick(flags.log_level.clone(), s.take_string("log_level")?)
            .unwrap_or_else(|| "INFO".into());
        let log_format = pick(flags.log_format.clone(), s.take_string("log_format")?)
            .unwrap_or_else(|| "text".into());
        let trust_bundle_path = pick(
            flags.trust_bundle_path.clone(),
            s.take_string("trust_bundle_path")?,
        );
        let trust_bundle_format = pick(
            flags.trust_bundle_format.clone(),
            s.take_string("trust_bundle_format")?,
        );
        let insecure_bootstrap =
            flags.insecure_bootstrap || s.take_bool("insecure_bootstrap")?.unwrap_or(false);
        let admin_socket_path = s.take_string("admin_socket_path")?;
        let authorized_delegates = s
            .take_string_list("authorized_delegates")?
            .unwrap_or_default();
        let workload_key_type = match s.take_string("workload_x509_svid_key_type")? {
            None => KeyType::EcP256,
            Some(v) => match v.as_str() {
                "ec-p256" => KeyType::EcP256,
                "ec-p384" => KeyType::EcP384,
                "rsa-2048" => KeyType::Rsa2048,
                _ => {
                    return Err(s
                        .invalid_value(
                            "workload_x509_svid_key_type",
                            format!("key type {v:?} is unknown; must be one of [rsa-2048, ec-p256, ec-p384]"),
                        )
                        .into());
                }
            },
        };
        let sds = s
            .take_block("sds")?
            .map(|b| parse_sds(b.body))
            .transpose()?;
        let disable_sds_api = s.take_bool("disable_sds_api")?.unwrap_or(false);
        let x509_svid_cache_max_size = cache_size(&mut s, "x509_svid_cache_max_size")?;
        let jwt_svid_cache_max_size = cache_size(&mut s, "jwt_svid_cache_max_size")?;
        let mut sync_interval = DEFAULT_SYNC_INTERVAL;
        let mut workload_rate_limits = WorkloadRateLimits::default();
        if let Some(block) = s.take_block("experimental")? {
            let mut exp = block.body;
            if let Some(d) = exp.take_duration("sync_interval")? {
                if d.is_zero() {
                    return Err(exp
                        .invalid_value("sync_interval", "must be greater than 0")
                        .into());
                }
                sync_interval = d;
            }
            // SPIRE's default; the agent has no other way to fetch entries.
            if exp.take_bool("use_sync_authorized_entries")? == Some(false) {
                return Err(exp
                    .invalid_value(
                        "use_sync_authorized_entries",
                        "false is not supported: sigil-agent always syncs entries with SyncAuthorizedEntries",
                    )
                    .into());
            }
            if let Some(rl) = exp.take_block("ratelimit")? {
                workload_rate_limits = parse_workload_rate_limits(rl.body)?;
            }
            exp.finish(UNSUPPORTED_EXPERIMENTAL)?;
        }
        s.finish(UNSUPPORTED_AGENT)?;

        check_log_options(&log_level, &log_format)?;

        // SPIRE's validation order and messages.
        let invalid = |m: &str| AgentConfigError::Invalid(m.to_owned());
        if join_token.is_some() && join_token_file.is_some() {
            return Err(invalid(
                "only one of join_token or join_token_file can be specified, not both",
            ));
        }
        let server_address = server_address
            .filter(|a| !a.is_empty())
            .ok_or_else(|| invalid("server_address must be configured"))?;
        let server_port = server_port
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid("server_port must be configured"))?;
        let trust_domain = trust_domain
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("trust_domain must be configured"))?;
        let trust_domain = TrustDomain::new(&trust_domain).map_err(|e| {
            AgentConfigError::Invalid(format!(
                "could not parse trust_domain {trust_domain:?}: {e}"
            ))
        })?;
        let admin_socket_path = admin_socket_path
            .filter(|p| !p.is_empty())
            .map(|admin| admin_socket_addr(&admin, &socket_path))
            .transpose()?;
        let data_dir = PathBuf::from(data_dir);
        let trust_bundle_path = trust_bundle_path.filter(|p| !p.is_empty());
        let format = match trust_bundle_format.as_deref() {
            None | Some("") | Some("pem") => BundleFormat::Pem,
            Some("spiffe") => BundleFormat::Spiffe,
            Some(_) => {
                return Err(invalid(
                    "invalid value for trust_bundle_format, expected \"pem\" or \"spiffe\"",
                ));
            }
        };
        let trust_bundle = match (insecure_bootstrap, trust_bundle_path) {
            (true, Some(_)) => {
                return Err(invalid(
                    "only one of insecure_bootstrap or trust_bundle_path can be specified, not both",
                ));
            }
            (true, None) => TrustBundleSource::InsecureBootstrap,
            (false, Some(path)) => TrustBundleSource::Path {
                path: PathBuf::from(path),
                format,
            },
            (false, None) if data_dir.join(BUNDLE_FILE).is_file() => TrustBundleSource::Stored,
            (false, None) => {
                return Err(invalid(
                    "trust_bundle_path must be configured unless insecure_bootstrap is set",
                ));
            }
        };

        let join_token = match join_token_file {
            Some(path) => {
                let path = PathBuf::from(path);
                let text =
                    std::fs::read_to_string(&path).map_err(|source| AgentConfigError::Read {
                        what: "unable to read join token file",
                        path: path.clone(),
                        source,
                    })?;
                let token = text.trim().to_owned();
                if token.is_empty() {
                    return Err(invalid("join token file is empty"));
                }
                Some(token)
            }
            None => join_token.filter(|t| !t.is_empty()),
        };

        let authorized_delegates = authorized_delegates
            .iter()
            .map(|d| member_of(&trust_domain, d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                AgentConfigError::Invalid(format!("error validating authorized delegate: {e}"))
            })?;

        Ok(AgentConfig {
            server_address,
            server_port,
            socket_path: PathBuf::from(socket_path),
            trust_domain,
            data_dir,
            log_level,
            log_format,
            trust_bundle,
            join_token,
            workload_key_type,
            sync_interval,
            bootstrap_timeout: DEFAULT_BOOTSTRAP_TIMEOUT,
            x509_svid_cache_max_size,
            jwt_svid_cache_max_size,
            plugins,
            admin_socket_path,
            authorized_delegates,
            workload_rate_limits,
            telemetry,
            health_checks,
            sds: sds.unwrap_or_default(),
            disable_sds_api,
        })
    }

    /// Reads and parses a config file, then applies the environment
    /// overrides ([`SYNC_INTERVAL_ENV`], [`BOOTSTRAP_TIMEOUT_ENV`]).
    pub fn load(path: &Path) -> Result<Self, AgentConfigError> {
        Self::load_with_flags(path, &RunFlags::default(), false)
    }

    /// Like [`AgentConfig::load`], with `run` flags and SPIRE's
    /// `-expandEnv` (substitute `$VAR` / `${VAR}` before parsing).
    pub fn load_with_flags(
        path: &Path,
        flags: &RunFlags,
        expand_env: bool,
    ) -> Result<Self, AgentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentConfigError::Read {
            what: "could not read config file",
            path: path.to_owned(),
            source,
        })?;
        let text = if expand_env {
            sigil_cli::config::expand_env(&text)
        } else {
            text
        };
        let mut cfg = Self::parse_with_flags(&text, flags)?;
        cfg.apply_env_overrides(
            std::env::var(SYNC_INTERVAL_ENV).ok().as_deref(),
            std::env::var(BOOTSTRAP_TIMEOUT_ENV).ok().as_deref(),
        )?;
        Ok(cfg)
    }

    /// Applies the values of [`SYNC_INTERVAL_ENV`] and
    /// [`BOOTSTRAP_TIMEOUT_ENV`] (passed in, so tests need not touch the
    /// process environment).
    pub fn apply_env_overrides(
        &mut self,
        sync_interval: Option<&str>,
        bootstrap_timeout: Option<&str>,
    ) -> Result<(), AgentConfigError> {
        if let Some(v) = sync_interval.filter(|v| !v.is_empty()) {
            self.sync_interval = env_duration(SYNC_INTERVAL_ENV, v)?;
        }
        if let Some(v) = bootstrap_timeout.filter(|v| !v.is_empty()) {
            self.bootstrap_timeout = env_duration(BOOTSTRAP_TIMEOUT_ENV, v)?;
        }
        Ok(())
    }

    /// Builds the declared plugins: the one path from `plugins { }` to
    /// running plugins, shared by `validate` and `run`.
    pub fn catalog(&self) -> Result<Catalog, CatalogError> {
        Catalog::load(
            &self.plugins,
            &AgentContext {
                trust_domain: self.trust_domain.clone(),
                data_dir: self.data_dir.clone(),
                join_token: self.join_token.clone(),
            },
        )
    }

    /// The server's SPIFFE ID, `spiffe://<td>/spire/server`.
    pub fn server_id(&self) -> sigil_spiffe::SpiffeId {
        server_id(&self.trust_domain)
    }
}

/// `spiffe://<td>/spire/server`.
pub fn server_id(td: &TrustDomain) -> sigil_spiffe::SpiffeId {
    td.id_with_path("/spire/server")
        .expect("a fixed valid path under a valid trust domain is a valid SPIFFE ID")
}

/// SPIRE's check on `admin_socket_path`: made absolute, and refused when
/// it lies in the directory of the Workload API socket or below, where
/// every workload could reach it.
fn admin_socket_addr(admin: &str, socket_path: &str) -> Result<PathBuf, AgentConfigError> {
    let cwd = || {
        std::env::current_dir().map_err(|e| {
            AgentConfigError::Invalid(format!(
                "failed to get absolute path for admin_socket_path: {e}"
            ))
        })
    };
    let admin = absolute(Path::new(admin), cwd)?;
    let socket = absolute(Path::new(socket_path), cwd)?;
    let socket_dir = socket.parent().unwrap_or(Path::new("/"));
    // String prefix with a trailing slash, as SPIRE compares.
    let prefix = format!("{}/", socket_dir.display());
    if admin.to_string_lossy().starts_with(&prefix) {
        return Err(AgentConfigError::Invalid(
            "admin socket cannot be in the same directory or a subdirectory as that containing the Workload API socket".into(),
        ));
    }
    Ok(admin)
}

/// Go's `filepath.Abs`: joined to the working directory when relative, then
/// cleaned lexically (`.` and `..` resolved, no symlinks followed).
fn absolute(
    path: &Path,
    cwd: impl Fn() -> Result<PathBuf, AgentConfigError>,
) -> Result<PathBuf, AgentConfigError> {
    use std::path::Component;
    let joined = if path.is_absolute() {
        path.to_owned()
    } else {
        cwd()?.join(path)
    };
    let mut clean = PathBuf::from("/");
    for part in joined.components() {
        match part {
            Component::ParentDir => {
                clean.pop();
            }
            Component::Normal(name) => clean.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(clean)
}

/// SPIRE's `idutil.MemberFromString`.
fn member_of(td: &TrustDomain, id: &str) -> Result<SpiffeId, String> {
    let id = SpiffeId::parse(id).map_err(|e| e.to_string())?;
    if !id.is_member_of(td) {
        return Err(format!(
            "SPIFFE ID {:?} is not a member of trust domain {:?}",
            id.as_str(),
            td.name()
        ));
    }
    Ok(id)
}

fn pick<T>(flag: Option<T>, file: Option<T>) -> Option<T> {
    flag.or(file)
}

fn env_duration(var: &str, v: &str) -> Result<Duration, AgentConfigError> {
    let d = sigil_cli::parse_duration(v)
        .map_err(|e| AgentConfigError::Invalid(format!("{var}={v:?}: {e}")))?;
    if d.is_zero() {
        return Err(AgentConfigError::Invalid(format!(
            "{var}={v:?}: must be greater than 0"
        )));
    }
    Ok(d)
}

fn check_log_options(level: &str, format: &str) -> Result<(), AgentConfigError> {
    if !["DEBUG", "INFO", "WARN", "WARNING", "ERROR", "TRACE"]
        .contains(&level.to_ascii_uppercase().as_str())
    {
        return Err(AgentConfigError::Invalid(format!(
            "invalid value for log_level: {level:?} is not one of DEBUG, INFO, WARN, ERROR"
        )));
    }
    if !["text", "json"].contains(&format.to_ascii_lowercase().as_str()) {
        return Err(AgentConfigError::Invalid(format!(
            "invalid value for log_format: {format:?} is not one of text, json"
        )));
    }
    Ok(())
}

/// `agent.sds`: SPIRE's four options; an empty name keeps SPIRE's default.
/// An SVID cache size as SPIRE reads it: negative is an error, 0 (or
/// unset) the default.
fn cache_size(s: &mut Section, key: &str) -> Result<usize, AgentConfigError> {
    match s.take_i64(key)? {
        None | Some(0) => Ok(DEFAULT_SVID_CACHE_MAX_SIZE),
        Some(n) if n < 0 => Err(AgentConfigError::Invalid(format!(
            "{key} should not be negative"
        ))),
        Some(n) => usize::try_from(n).map_err(|_| s.invalid_value(key, "too large").into()),
    }
}

fn parse_sds(mut block: Section) -> Result<SdsConfig, AgentConfigError> {
    let mut sds = SdsConfig::default();
    for (key, field) in [
        ("default_svid_name", &mut sds.default_svid_name),
        ("default_bundle_name", &mut sds.default_bundle_name),
        (
            "default_all_bundles_name",
            &mut sds.default_all_bundles_name,
        ),
    ] {
        if let Some(name) = block.take_string(key)?.filter(|n| !n.is_empty()) {
            *field = name;
        }
    }
    if let Some(disable) = block.take_bool("disable_spiffe_cert_validation")? {
        sds.disable_spiffe_cert_validation = disable;
    }
    block.finish(&[])?;
    Ok(sds)
}

/// `agent.experimental.ratelimit` (SPIRE 1.15): calls (or stream opens) a
/// second per caller, for the Workload API and SDS methods.
fn parse_workload_rate_limits(mut rl: Section) -> Result<WorkloadRateLimits, AgentConfigError> {
    let mut take = |key: &str| -> Result<u32, AgentConfigError> {
        match rl.take_i64(key)? {
            None => Ok(0),
            Some(n) if n < 0 => Err(AgentConfigError::Invalid(format!(
                "experimental.ratelimit.{key} must not be negative"
            ))),
            Some(n) => u32::try_from(n).map_err(|_| {
                rl.invalid_value(key, format!("{n} is more than {}", u32::MAX))
                    .into()
            }),
        }
    };
    let limits = WorkloadRateLimits {
        fetch_x509_svid: take("fetch_x509_svid")?,
        fetch_jwt_svid: take("fetch_jwt_svid")?,
        fetch_x509_bundles: take("fetch_x509_bundles")?,
        fetch_jwt_bundles: take("fetch_jwt_bundles")?,
        stream_secrets: take("stream_secrets")?,
        fetch_secrets: take("fetch_secrets")?,
    };
    rl.finish(&[])?;
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPIRE's `conf/agent/agent.conf`, as shipped.
    const SPIRE_EXAMPLE: &str = r#"
agent {
    data_dir = "./.data"
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "8081"
    socket_path ="/tmp/spire-agent/public/api.sock"
    trust_bundle_path = "./conf/agent/dummy_root_ca.crt"
    trust_domain = "example.org"
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {
        }
    }
    KeyManager "disk" {
        plugin_data {
            directory = "./.data"
        }
    }
    WorkloadAttestor "unix" {
        plugin_data {
        }
    }
}
"#;

    /// The error from parsing `text` and loading its catalog, as
    /// `validate` and `run` do.
    fn err(text: &str) -> String {
        match AgentConfig::parse(text) {
            Err(e) => e.to_string(),
            Ok(c) => c.catalog().unwrap_err().to_string(),
        }
    }

    #[test]
    fn spire_example_agent_conf_loads() {
        let c = AgentConfig::parse(SPIRE_EXAMPLE).unwrap();
        assert_eq!(c.server_address, "127.0.0.1");
        assert_eq!(c.server_port, 8081);
        assert_eq!(c.socket_path, PathBuf::from(DEFAULT_SOCKET_PATH));
        assert_eq!(c.trust_domain.name(), "example.org");
        assert_eq!(c.data_dir, PathBuf::from("./.data"));
        assert_eq!(c.log_level, "DEBUG");
        assert_eq!(c.log_format, "text");
        assert_eq!(
            c.trust_bundle,
            TrustBundleSource::Path {
                path: PathBuf::from("./conf/agent/dummy_root_ca.crt"),
                format: BundleFormat::Pem
            }
        );
        assert_eq!(c.join_token, None);
        let catalog = c.catalog().unwrap();
        assert_eq!(catalog.node_attestor.name(), "join_token");
        assert_eq!(catalog.key_manager.name(), "disk");
        assert_eq!(catalog.workload_attestors.len(), 1);
        assert_eq!(catalog.workload_attestors[0].name(), "unix");
        assert_eq!(c.sync_interval, DEFAULT_SYNC_INTERVAL);
        assert_eq!(c.workload_key_type, KeyType::EcP256);
        assert_eq!(c.server_id().as_str(), "spiffe://example.org/spire/server");
    }

    #[test]
    fn unknown_options_are_named() {
        let bad = SPIRE_EXAMPLE.replace("log_level = \"DEBUG\"", "log_levle = \"DEBUG\"");
        assert_eq!(err(&bad), "unknown option \"log_levle\" in agent");
        let bad = SPIRE_EXAMPLE.replace("directory = \"./.data\"", "dir = \"./.data\"");
        let e = err(&bad);
        assert!(
            e.contains("\"dir\"") && e.contains("KeyManager \"disk\""),
            "{e}"
        );
        let bad = SPIRE_EXAMPLE.replace(
            "WorkloadAttestor \"unix\" {\n        plugin_data {\n",
            "WorkloadAttestor \"unix\" {\n        plugin_data {\n discover_workload_paht = true\n",
        );
        let e = err(&bad);
        assert!(e.contains("discover_workload_paht"), "{e}");
    }

    #[test]
    fn telemetry_and_health_checks_blocks_load_and_unsupported_sinks_are_named() {
        let c = AgentConfig::parse(&format!(
            "{SPIRE_EXAMPLE}\ntelemetry {{\n Prometheus {{\n host = \"0.0.0.0\"\n port = 9989\n }}\n}}\nhealth_checks {{\n listener_enabled = true\n}}\n"
        ))
        .unwrap();
        let p = c.telemetry.prometheus.unwrap();
        assert_eq!((p.host.as_str(), p.port), ("0.0.0.0", 9989));
        assert!(c.health_checks.listener_enabled);
        assert_eq!(c.health_checks.bind_address, "localhost");
        assert_eq!(c.health_checks.bind_port, 80);
        assert_eq!(c.health_checks.live_path, "/live");
        let e = AgentConfig::parse(&format!("{SPIRE_EXAMPLE}\ntelemetry {{\n InMem {{}}\n}}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("option \"InMem\" in telemetry is not supported by sigil yet"),
            "{e}"
        );
    }

    #[test]
    fn sds_block_and_disable_sds_api_read_spire_options_with_spire_defaults() {
        let c = AgentConfig::parse(SPIRE_EXAMPLE).unwrap();
        assert_eq!(c.sds, SdsConfig::default());
        assert_eq!(c.sds.default_svid_name, "default");
        assert_eq!(c.sds.default_bundle_name, "ROOTCA");
        assert_eq!(c.sds.default_all_bundles_name, "ALL");
        assert!(!c.sds.disable_spiffe_cert_validation);
        assert!(!c.disable_sds_api);

        let text = SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            "sds {\n default_svid_name = \"svid\"\n default_bundle_name = \"\"\n default_all_bundles_name = \"every\"\n disable_spiffe_cert_validation = true\n}\ndisable_sds_api = true",
        );
        let c = AgentConfig::parse(&text).unwrap();
        assert_eq!(
            c.sds,
            SdsConfig {
                default_svid_name: "svid".into(),
                default_bundle_name: "ROOTCA".into(),
                default_all_bundles_name: "every".into(),
                disable_spiffe_cert_validation: true,
            }
        );
        assert!(c.disable_sds_api);

        let text = SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            "sds {\n default_svid_nam = \"x\"\n}",
        );
        assert_eq!(
            err(&text),
            "unknown option \"default_svid_nam\" in agent.sds"
        );
    }

    #[test]
    fn unsupported_spire_options_say_so() {
        for (key, line) in [
            ("log_file", "log_file = \"/tmp/agent.log\""),
            ("trust_bundle_url", "trust_bundle_url = \"https://x\""),
        ] {
            let bad = SPIRE_EXAMPLE.replace("log_level = \"DEBUG\"", line);
            assert_eq!(
                err(&bad),
                format!("option {key:?} in agent is not supported by sigil yet")
            );
        }
        let bad = format!("{SPIRE_EXAMPLE}\ntelemetry {{\n DogStatsd = []\n}}\n");
        assert!(err(&bad).contains("\"DogStatsd\""), "{}", err(&bad));
        let bad = SPIRE_EXAMPLE.replace("NodeAttestor \"join_token\"", "NodeAttestor \"aws_iid\"");
        assert_eq!(
            err(&bad),
            "NodeAttestor \"aws_iid\": is not supported by sigil yet (supported: join_token, x509pop, k8s_psat)"
        );
        let bad = SPIRE_EXAMPLE.replace("WorkloadAttestor \"unix\"", "WorkloadAttestor \"docker\"");
        assert!(
            err(&bad).contains("\"docker\": is not supported"),
            "{}",
            err(&bad)
        );
    }

    #[test]
    fn missing_trust_bundle_is_spires_error() {
        let dir = tempfile::tempdir().unwrap();
        let text = SPIRE_EXAMPLE
            .replace(
                "    trust_bundle_path = \"./conf/agent/dummy_root_ca.crt\"\n",
                "",
            )
            .replace("./.data", dir.path().to_str().unwrap());
        assert_eq!(
            err(&text),
            "trust_bundle_path must be configured unless insecure_bootstrap is set"
        );
        // A bundle stored by a previous run is enough.
        std::fs::write(dir.path().join(BUNDLE_FILE), b"x").unwrap();
        let c = AgentConfig::parse(&text).unwrap();
        assert_eq!(c.trust_bundle, TrustBundleSource::Stored);
    }

    #[test]
    fn insecure_bootstrap_excludes_trust_bundle_path() {
        let both = SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            "log_level = \"DEBUG\"\n insecure_bootstrap = true",
        );
        assert_eq!(
            err(&both),
            "only one of insecure_bootstrap or trust_bundle_path can be specified, not both"
        );
        let insecure = both.replace(
            "    trust_bundle_path = \"./conf/agent/dummy_root_ca.crt\"\n",
            "",
        );
        let c = AgentConfig::parse(&insecure).unwrap();
        assert_eq!(c.trust_bundle, TrustBundleSource::InsecureBootstrap);
    }

    #[test]
    fn required_options_use_spires_messages() {
        let no_addr = SPIRE_EXAMPLE.replace("server_address = \"127.0.0.1\"", "");
        assert_eq!(err(&no_addr), "server_address must be configured");
        let no_port = SPIRE_EXAMPLE.replace("server_port = \"8081\"", "");
        assert_eq!(err(&no_port), "server_port must be configured");
        let no_td = SPIRE_EXAMPLE.replace("trust_domain = \"example.org\"", "");
        assert_eq!(err(&no_td), "trust_domain must be configured");
        let no_plugins = &SPIRE_EXAMPLE[..SPIRE_EXAMPLE.find("plugins").unwrap()];
        assert_eq!(err(no_plugins), "plugins section must be configured");
        let bad_format =
            SPIRE_EXAMPLE.replace("log_level = \"DEBUG\"", "trust_bundle_format = \"der\"");
        assert_eq!(
            err(&bad_format),
            "invalid value for trust_bundle_format, expected \"pem\" or \"spiffe\""
        );
    }

    #[test]
    fn plugin_counts_are_checked() {
        let two_km = SPIRE_EXAMPLE.replace(
            "WorkloadAttestor \"unix\"",
            "KeyManager \"memory\" {}\n WorkloadAttestor \"unix\"",
        );
        assert!(
            err(&two_km).contains("at most 1 KeyManager"),
            "{}",
            err(&two_km)
        );
        let no_wa = SPIRE_EXAMPLE.replace("WorkloadAttestor \"unix\"", "Unused \"x\"");
        assert!(
            err(&no_wa).contains("unknown plugin type \"Unused\""),
            "{}",
            err(&no_wa)
        );
        let svid_store = SPIRE_EXAMPLE.replace(
            "WorkloadAttestor \"unix\"",
            "SVIDStore \"aws\" {}\n WorkloadAttestor \"unix\"",
        );
        assert!(err(&svid_store).contains("not supported by sigil yet"));
    }

    #[test]
    fn svid_cache_sizes_default_to_1000_and_refuse_negatives_as_spire_does() {
        let c = AgentConfig::parse(SPIRE_EXAMPLE).unwrap();
        assert_eq!(c.x509_svid_cache_max_size, DEFAULT_SVID_CACHE_MAX_SIZE);
        assert_eq!(c.jwt_svid_cache_max_size, DEFAULT_SVID_CACHE_MAX_SIZE);
        let with = |line: &str| {
            SPIRE_EXAMPLE.replace(
                "log_level = \"DEBUG\"",
                &format!("log_level = \"DEBUG\"\n {line}"),
            )
        };
        let c = AgentConfig::parse(&with(
            "x509_svid_cache_max_size = 100\n jwt_svid_cache_max_size = 7",
        ))
        .unwrap();
        assert_eq!(
            (c.x509_svid_cache_max_size, c.jwt_svid_cache_max_size),
            (100, 7)
        );
        let c = AgentConfig::parse(&with(
            "x509_svid_cache_max_size = 0\n jwt_svid_cache_max_size = 0",
        ))
        .unwrap();
        assert_eq!(c.x509_svid_cache_max_size, DEFAULT_SVID_CACHE_MAX_SIZE);
        assert_eq!(c.jwt_svid_cache_max_size, DEFAULT_SVID_CACHE_MAX_SIZE);
        assert_eq!(
            err(&with("x509_svid_cache_max_size = -1")),
            "x509_svid_cache_max_size should not be negative"
        );
        assert_eq!(
            err(&with("jwt_svid_cache_max_size = -5")),
            "jwt_svid_cache_max_size should not be negative"
        );
    }

    #[test]
    fn flags_override_the_file_and_join_token_is_read() {
        let flags = RunFlags {
            join_token: Some("tok".into()),
            server_port: Some(9999),
            data_dir: Some("/var/lib/sigil".into()),
            ..RunFlags::default()
        };
        let c = AgentConfig::parse_with_flags(SPIRE_EXAMPLE, &flags).unwrap();
        assert_eq!(c.join_token.as_deref(), Some("tok"));
        assert_eq!(c.server_port, 9999);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/sigil"));

        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "  abc-123\n").unwrap();
        let text = SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            &format!("join_token_file = {:?}", token_file.to_str().unwrap()),
        );
        let c = AgentConfig::parse(&text).unwrap();
        assert_eq!(c.join_token.as_deref(), Some("abc-123"));
        let both = text.replace("data_dir", "join_token = \"x\"\n data_dir");
        assert_eq!(
            err(&both),
            "only one of join_token or join_token_file can be specified, not both"
        );
    }

    #[test]
    fn sync_interval_comes_from_experimental_block_or_env() {
        let text = SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            "experimental {\n sync_interval = \"250ms\"\n}",
        );
        let mut c = AgentConfig::parse(&text).unwrap();
        assert_eq!(c.sync_interval, Duration::from_millis(250));
        c.apply_env_overrides(Some("100ms"), Some("2s")).unwrap();
        assert_eq!(c.sync_interval, Duration::from_millis(100));
        assert_eq!(c.bootstrap_timeout, Duration::from_secs(2));
        let e = c.apply_env_overrides(Some("fast"), None).unwrap_err();
        assert!(e.to_string().contains(SYNC_INTERVAL_ENV), "{e}");
        let text = SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            "experimental {\n use_sync_authorized_entries = true\n}",
        );
        AgentConfig::parse(&text).unwrap();
        let text = text.replace("= true", "= false");
        assert!(
            err(&text).contains("use_sync_authorized_entries"),
            "{}",
            err(&text)
        );
    }

    #[test]
    fn experimental_ratelimit_reads_spire_options_and_refuses_negatives_and_unknown_keys() {
        assert_eq!(
            AgentConfig::parse(SPIRE_EXAMPLE)
                .unwrap()
                .workload_rate_limits,
            WorkloadRateLimits::default()
        );
        let with = |body: &str| {
            SPIRE_EXAMPLE.replace(
                "log_level = \"DEBUG\"",
                &format!("experimental {{\n ratelimit {{\n{body}\n }}\n}}"),
            )
        };
        let c = AgentConfig::parse(&with(
            "fetch_x509_svid = 100\n fetch_jwt_svid = 500\n fetch_x509_bundles = 20\n fetch_jwt_bundles = 0\n stream_secrets = 50\n fetch_secrets = 7",
        ))
        .unwrap();
        assert_eq!(
            c.workload_rate_limits,
            WorkloadRateLimits {
                fetch_x509_svid: 100,
                fetch_jwt_svid: 500,
                fetch_x509_bundles: 20,
                fetch_jwt_bundles: 0,
                stream_secrets: 50,
                fetch_secrets: 7,
            }
        );
        assert_eq!(
            err(&with("fetch_jwt_svid = -1")),
            "experimental.ratelimit.fetch_jwt_svid must not be negative"
        );
        assert_eq!(
            err(&with("fetch_jwt_svids = 1")),
            "unknown option \"fetch_jwt_svids\" in agent.experimental.ratelimit"
        );
        assert_eq!(
            err(&with("stream_secrets = -5")),
            "experimental.ratelimit.stream_secrets must not be negative"
        );
    }

    #[test]
    fn admin_socket_path_is_absolute_and_off_by_default() {
        assert_eq!(
            AgentConfig::parse(SPIRE_EXAMPLE).unwrap().admin_socket_path,
            None
        );
        let text = SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            "admin_socket_path = \"/tmp/spire-agent/private/admin.sock\"",
        );
        assert_eq!(
            AgentConfig::parse(&text).unwrap().admin_socket_path,
            Some(PathBuf::from("/tmp/spire-agent/private/admin.sock"))
        );
        let text = SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            "admin_socket_path = \"./run/../admin/admin.sock\"",
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            AgentConfig::parse(&text).unwrap().admin_socket_path,
            Some(cwd.join("admin/admin.sock"))
        );
    }

    #[test]
    fn admin_socket_in_the_workload_socket_directory_is_spires_error() {
        let same_dir = "admin socket cannot be in the same directory or a subdirectory as that containing the Workload API socket";
        for admin in [
            "/tmp/spire-agent/public/admin.sock",
            "/tmp/spire-agent/public/nested/admin.sock",
            "/tmp/spire-agent/private/../public/admin.sock",
        ] {
            let text = SPIRE_EXAMPLE.replace(
                "log_level = \"DEBUG\"",
                &format!("admin_socket_path = {admin:?}"),
            );
            assert_eq!(err(&text), same_dir, "{admin}");
        }
        // A sibling directory whose name merely starts the same is fine.
        let text = SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            "admin_socket_path = \"/tmp/spire-agent/public-admin/admin.sock\"",
        );
        assert!(AgentConfig::parse(&text).is_ok());
        // The -socketPath flag moves the Workload API socket, and the check
        // follows it.
        let text = SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            "admin_socket_path = \"/run/sigil/admin.sock\"",
        );
        let flags = RunFlags {
            socket_path: Some("/run/sigil/api.sock".into()),
            ..RunFlags::default()
        };
        assert_eq!(
            AgentConfig::parse_with_flags(&text, &flags)
                .unwrap_err()
                .to_string(),
            same_dir
        );
    }

    #[test]
    fn authorized_delegates_are_spiffe_ids_of_our_trust_domain() {
        let text = SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            "authorized_delegates = [\n \"spiffe://example.org/cilium\",\n \"spiffe://example.org/ns/proxy\",\n]",
        );
        let c = AgentConfig::parse(&text).unwrap();
        assert_eq!(
            c.authorized_delegates
                .iter()
                .map(SpiffeId::as_str)
                .collect::<Vec<_>>(),
            [
                "spiffe://example.org/cilium",
                "spiffe://example.org/ns/proxy"
            ]
        );
        assert!(
            AgentConfig::parse(SPIRE_EXAMPLE)
                .unwrap()
                .authorized_delegates
                .is_empty()
        );

        let foreign = text.replace("spiffe://example.org/cilium", "spiffe://other.org/cilium");
        assert_eq!(
            err(&foreign),
            "error validating authorized delegate: SPIFFE ID \"spiffe://other.org/cilium\" is not a member of trust domain \"example.org\""
        );
        let malformed = text.replace("spiffe://example.org/cilium", "spiffe:///cilium");
        assert_eq!(
            err(&malformed),
            "error validating authorized delegate: trust domain is missing"
        );
        let not_a_list = SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            "authorized_delegates = \"spiffe://example.org/cilium\"",
        );
        assert!(err(&not_a_list).contains("authorized_delegates"));
    }

    #[test]
    fn workload_key_type_accepts_spires_names() {
        let text = SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            "workload_x509_svid_key_type = \"rsa-2048\"",
        );
        assert_eq!(
            AgentConfig::parse(&text).unwrap().workload_key_type,
            KeyType::Rsa2048
        );
        let bad = text.replace("rsa-2048", "ed25519");
        assert!(err(&bad).contains("must be one of [rsa-2048, ec-p256, ec-p384]"));
    }
}
