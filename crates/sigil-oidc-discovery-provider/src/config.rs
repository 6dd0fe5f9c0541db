//! The provider's HCL configuration file, read as SPIRE's
//! oidc-discovery-provider reads it: the same option names, defaults,
//! validation order and error messages, into typed values (one [`Listener`],
//! one [`KeySource`]) so the rest of the crate never re-checks strings.
//!
//! SPIRE options sigil does not implement (`file`, `log_path`,
//! `server_path_prefix`, `experimental`) are refused by name; unknown options
//! are refused too (SPIRE's HCL decoder ignores them).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sigil_cli::Section;
use sigil_spiffe::TrustDomain;

use crate::domain::{DomainError, DomainPolicy};

/// How often the key source is polled unless `poll_interval` says otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// How often `serving_cert_file` files are re-read unless configured.
pub const DEFAULT_FILE_SYNC_INTERVAL: Duration = Duration::from_secs(60);
/// `acme.cache_dir` when not set.
pub const DEFAULT_ACME_CACHE_DIR: &str = "./.acme-cache";
/// `health_checks.bind_port` when not set.
pub const DEFAULT_HEALTH_PORT: u16 = 8008;
/// `serving_cert_file.addr` when not set.
pub const DEFAULT_SERVING_ADDR: &str = ":443";

/// SPIRE options sigil does not implement yet: a startup error naming them.
const UNSUPPORTED: &[&str] = &["file", "log_path", "server_path_prefix", "experimental"];

/// Why the configuration was refused. Messages are SPIRE's where SPIRE has
/// the same check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("unable to load configuration: {0}")]
    Read(#[from] std::io::Error),
    /// Not HCL, a value of the wrong type, or an unknown or unsupported option.
    #[error("unable to decode configuration: {0}")]
    Decode(#[from] sigil_cli::ConfigError),
    /// `domains` is empty.
    #[error("at least one domain must be configured")]
    NoDomain,
    /// A `domains` entry is not a punycode DNS name.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// No way to serve was configured.
    #[error(
        "either acme, serving_cert_file, insecure_addr or listen_socket_path must be configured"
    )]
    NoListener,
    /// Two ways to serve were configured.
    #[error("{0} and {1} are mutually exclusive")]
    ListenerConflict(&'static str, &'static str),
    /// `acme.tos_accepted` is not true.
    #[error("tos_accepted must be set to true in the acme configuration section")]
    TosNotAccepted,
    /// A required option of a section is missing.
    #[error("{key} must be configured in the {section} configuration section")]
    Missing {
        /// The option.
        key: &'static str,
        /// The section.
        section: &'static str,
    },
    /// An option of a section has an invalid value.
    #[error("invalid {key} in the {section} configuration section: {reason}")]
    Invalid {
        /// The option.
        key: &'static str,
        /// The section.
        section: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `insecure_addr` is not a `host:port` address.
    #[error("invalid insecure_addr: {0}")]
    InsecureAddr(#[source] AddrError),
    /// `server_api.address` is not a `unix:` target.
    #[error("address must use the unix name system in the server_api configuration section")]
    NotUnix,
    /// No key source section.
    #[error("exactly one of the server_api, workload_api, or file sections must be configured")]
    NoSource,
    /// More than one key source section.
    #[error("the server_api, workload_api, and file sections are mutually exclusive")]
    SourceConflict,
    /// `jwt_issuer` is not a URL.
    #[error("the jwt_issuer url could not be parsed: {0}")]
    IssuerUnparsable(String),
    /// `jwt_issuer` has no scheme.
    #[error("the jwt_issuer url must contain a scheme")]
    IssuerNoScheme,
    /// `jwt_issuer` has no host.
    #[error("the jwt_issuer url must contain a host")]
    IssuerNoHost,
    /// `jwks_uri` is not an absolute URL with a host.
    #[error("the jwks_uri setting could not be parsed: {0}")]
    JwksUri(String),
    /// A health check path is not an absolute path, or both are the same.
    #[error(
        "invalid {0} in the health_checks configuration section: paths must start with \"/\" and differ"
    )]
    HealthPath(&'static str),
    /// `log_level` is not a level name.
    #[error("invalid log_level {0:?} (one of \"debug\", \"info\", \"warn\", \"error\")")]
    LogLevel(String),
    /// `log_format` is neither text nor JSON.
    #[error("invalid log_format {0:?} (either \"TEXT\" or \"JSON\")")]
    LogFormat(String),
}

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `log_level` (default `info`).
    pub log_level: String,
    /// `log_format` (`text` or `json`).
    pub log_format: String,
    /// `log_requests`: log every request at debug level.
    pub log_requests: bool,
    /// `domains`, deduplicated in order, as a policy.
    pub domains: DomainPolicy,
    /// `set_key_use`: add `"use": "sig"` to every JWK.
    pub set_key_use: bool,
    /// `allow_insecure_scheme`: `http` URLs in the discovery document for
    /// plain-HTTP requests.
    pub allow_insecure_scheme: bool,
    /// Where and how requests are served.
    pub listener: Listener,
    /// Where the keys come from.
    pub source: KeySource,
    /// `health_checks`, when the block is present.
    pub health_checks: Option<HealthChecks>,
    /// `jwt_issuer`.
    pub jwt_issuer: Option<HttpUrl>,
    /// `jwks_uri`.
    pub jwks_uri: Option<String>,
}

/// Where the provider serves: exactly one of SPIRE's four ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listener {
    /// `insecure_addr`: plain HTTP on TCP.
    Insecure(SocketAddr),
    /// `listen_socket_path`: plain HTTP on a Unix socket.
    UnixSocket(PathBuf),
    /// `serving_cert_file`: HTTPS with a certificate and key from files.
    ServingCertFile(ServingCertFile),
    /// `acme`: HTTPS with certificates from an ACME CA.
    Acme(Acme),
}

/// The `serving_cert_file` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingCertFile {
    /// `cert_file_path` (PEM chain).
    pub cert_file_path: PathBuf,
    /// `key_file_path` (PEM private key).
    pub key_file_path: PathBuf,
    /// `file_sync_interval` (default one minute).
    pub file_sync_interval: Duration,
    /// `addr` (default `:443`).
    pub addr: SocketAddr,
}

/// The `acme` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    /// `cache_dir` (default `./.acme-cache`; `""` disables the cache).
    pub cache_dir: Option<PathBuf>,
    /// `directory_url` (Let's Encrypt when unset).
    pub directory_url: Option<String>,
    /// `email`.
    pub email: String,
    /// `tos_accepted` (always true once validated).
    pub tos_accepted: bool,
}

/// Where the JWT signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `server_api`: `Bundle.GetBundle` on the server's admin socket.
    ServerApi {
        /// The socket path from `address` (`unix:///path` or `unix:path`).
        socket_path: PathBuf,
        /// `poll_interval`.
        poll_interval: Duration,
    },
    /// `workload_api`: the Workload API's `FetchJWTBundles`.
    WorkloadApi {
        /// `socket_path`, made absolute.
        socket_path: PathBuf,
        /// `trust_domain`: whose bundle to publish.
        trust_domain: TrustDomain,
        /// `poll_interval`.
        poll_interval: Duration,
    },
}

impl KeySource {
    /// The configured poll interval.
    pub fn poll_interval(&self) -> Duration {
        match self {
            KeySource::ServerApi { poll_interval, .. }
            | KeySource::WorkloadApi { poll_interval, .. } => *poll_interval,
        }
    }
}

/// The `health_checks` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChecks {
    /// `bind_port` (default 8008).
    pub bind_port: u16,
    /// `ready_path` (default `/ready`).
    pub ready_path: String,
    /// `live_path` (default `/live`).
    pub live_path: String,
}

/// An absolute `scheme://authority/path` URL, split as Go's `net/url` splits
/// it (only what the discovery document needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// The whole URL as configured.
    pub raw: String,
    /// `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub host: String,
    /// The path (may be empty).
    pub path: String,
}

impl HttpUrl {
    /// Parses an absolute URL. The error says which part is wrong.
    pub fn parse(raw: &str) -> Result<HttpUrl, UrlError> {
        let scheme_end = raw.find(':').ok_or(UrlError::NoScheme)?;
        let scheme = &raw[..scheme_end];
        let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if scheme.is_empty() || scheme.contains('/') {
            return Err(UrlError::NoScheme);
        }
        if !valid_scheme {
            return Err(UrlError::Malformed(
                "first path segment in URL cannot contain colon".into(),
            ));
        }
        let rest = &raw[scheme_end + 1..];
        let Some(rest) = rest.strip_prefix("//") else {
            return Ok(HttpUrl {
                raw: raw.to_owned(),
                scheme: scheme.to_ascii_lowercase(),
                host: String::new(),
                path: String::new(),
            });
        };
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..auth_end];
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        // A port, when present, is digits (Go: `invalid port ":x" after host`).
        let host_part_end = if host.starts_with('[') {
            host.find(']').map_or(host.len(), |i| i + 1)
        } else {
            host.find(':').unwrap_or(host.len())
        };
        if let Some(port) = host[host_part_end..].strip_prefix(':')
            && !port.chars().all(|c| c.is_ascii_digit())
        {
            return Err(UrlError::Malformed(format!(
                "invalid port \":{port}\" after host"
            )));
        }
        let after = &rest[auth_end..];
        let path_end = after.find(['?', '#']).unwrap_or(after.len());
        Ok(HttpUrl {
            raw: raw.to_owned(),
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_owned(),
            path: after[..path_end].to_owned(),
        })
    }
}

/// Why a URL option is not an absolute URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// No `scheme:` prefix.
    #[error("missing scheme")]
    NoScheme,
    /// Something Go's URL parser refuses.
    #[error("{0}")]
    Malformed(String),
}

impl Config {
    /// Reads and validates the file at `path`, expanding `$VAR` and
    /// `${VAR}` first when `expand_env` is set (SPIRE's `-expandEnv`).
    pub fn load(path: &Path, expand_env: bool) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)?;
        let text = if expand_env {
            sigil_cli::config::expand_env(&text)
        } else {
            text
        };
        Config::parse(&text)
    }

    /// Parses and validates configuration text, in SPIRE's order of checks.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw = RawConfig::take(Section::parse(text)?)?;
        raw.validate()
    }
}

/// The options as written, before validation.
#[derive(Debug, Default)]
struct RawConfig {
    log_level: Option<String>,
    log_format: Option<String>,
    log_requests: bool,
    domains: Vec<String>,
    set_key_use: bool,
    allow_insecure_scheme: bool,
    insecure_addr: Option<String>,
    listen_socket_path: Option<String>,
    acme: Option<RawAcme>,
    serving_cert_file: Option<RawServingCert>,
    server_api: Option<RawServerApi>,
    workload_api: Option<RawWorkloadApi>,
    health_checks: Option<RawHealth>,
    jwt_issuer: Option<String>,
    jwks_uri: Option<String>,
}

#[derive(Debug, Default)]
struct RawAcme {
    cache_dir: Option<String>,
    directory_url: Option<String>,
    email: Option<String>,
    tos_accepted: bool,
}

#[derive(Debug, Default)]
struct RawServingCert {
    cert_file_path: Option<String>,
    key_file_path: Option<String>,
    file_sync_interval: Option<Result<Duration, BadDuration>>,
    addr: Option<String>,
}

/// A duration option that is set but unusable; reported when its section
/// is checked, in SPIRE's order.
#[derive(Debug, Clone, thiserror::Error)]
enum BadDuration {
    /// Not a Go duration.
    #[error(transparent)]
    Parse(#[from] sigil_cli::DurationError),
    /// Not a string at all.
    #[error("expected a duration string, found {0}")]
    NotAString(hcl::Value),
}

#[derive(Debug, Default)]
struct RawServerApi {
    address: Option<String>,
    poll_interval: Option<Result<Duration, BadDuration>>,
}

#[derive(Debug, Default)]
struct RawWorkloadApi {
    socket_path: Option<String>,
    trust_domain: Option<String>,
    poll_interval: Option<Result<Duration, BadDuration>>,
}

#[derive(Debug, Default)]
struct RawHealth {
    bind_port: Option<i64>,
    ready_path: Option<String>,
    live_path: Option<String>,
}

/// A duration option: its parse error is reported later, in SPIRE's order.
fn take_duration(
    s: &mut Section,
    key: &str,
) -> Result<Option<Result<Duration, BadDuration>>, ConfigError> {
    Ok(match s.take_value(key) {
        None => None,
        Some(hcl::Value::String(v)) if v.is_empty() => None,
        Some(hcl::Value::String(v)) => {
            Some(sigil_cli::parse_duration(&v).map_err(BadDuration::from))
        }
        Some(other) => Some(Err(BadDuration::NotAString(other))),
    })
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

impl RawConfig {
    fn take(mut top: Section) -> Result<RawConfig, ConfigError> {
        let mut raw = RawConfig {
            log_level: non_empty(top.take_string("log_level")?),
            log_format: non_empty(top.take_string("log_format")?),
            log_requests: top.take_bool("log_requests")?.unwrap_or(false),
            domains: top.take_string_list("domains")?.unwrap_or_default(),
            set_key_use: top.take_bool("set_key_use")?.unwrap_or(false),
            allow_insecure_scheme: top.take_bool("allow_insecure_scheme")?.unwrap_or(false),
            insecure_addr: non_empty(top.take_string("insecure_addr")?),
            listen_socket_path: non_empty(top.take_string("listen_socket_path")?),
            jwt_issuer: non_empty(top.take_string("jwt_issuer")?),
            jwks_uri: non_empty(top.take_string("jwks_uri")?),
            ..RawConfig::default()
        };
        if let Some(b) = top.take_block("acme")? {
            let mut s = b.body;
            raw.acme = Some(RawAcme {
                cache_dir: s.take_string("cache_dir")?,
                directory_url: non_empty(s.take_string("directory_url")?),
                email: non_empty(s.take_string("email")?),
                tos_accepted: s.take_bool("tos_accepted")?.unwrap_or(false),
            });
            s.finish(&[])?;
        }
        if let Some(b) = top.take_block("serving_cert_file")? {
            let mut s = b.body;
            raw.serving_cert_file = Some(RawServingCert {
                cert_file_path: non_empty(s.take_string("cert_file_path")?),
                key_file_path: non_empty(s.take_string("key_file_path")?),
                file_sync_interval: take_duration(&mut s, "file_sync_interval")?,
                addr: non_empty(s.take_string("addr")?),
            });
            s.finish(&[])?;
        }
        if let Some(b) = top.take_block("server_api")? {
            let mut s = b.body;
            raw.server_api = Some(RawServerApi {
                address: non_empty(s.take_string("address")?),
                poll_interval: take_duration(&mut s, "poll_interval")?,
            });
            s.finish(&["experimental"])?;
        }
        if let Some(b) = top.take_block("workload_api")? {
            let mut s = b.body;
            raw.workload_api = Some(RawWorkloadApi {
                socket_path: non_empty(s.take_string("socket_path")?),
                trust_domain: non_empty(s.take_string("trust_domain")?),
                poll_interval: take_duration(&mut s, "poll_interval")?,
            });
            s.finish(&["experimental"])?;
        }
        if let Some(b) = top.take_block("health_checks")? {
            let mut s = b.body;
            raw.health_checks = Some(RawHealth {
                bind_port: s.take_i64("bind_port")?,
                ready_path: non_empty(s.take_string("ready_path")?),
                live_path: non_empty(s.take_string("live_path")?),
            });
            s.finish(&[])?;
        }
        top.finish(UNSUPPORTED)?;
        Ok(raw)
    }

    fn validate(self) -> Result<Config, ConfigError> {
        let log_level = self.log_level.unwrap_or_else(|| "info".to_owned());
        if sigil_cli::logging::level_name(&log_level).is_none() {
            return Err(ConfigError::LogLevel(log_level));
        }
        let log_format = match self.log_format.as_deref().map(str::to_ascii_lowercase) {
            None => "text".to_owned(),
            Some(f) if f == "text" || f == "json" => f,
            Some(_) => return Err(ConfigError::LogFormat(self.log_format.unwrap_or_default())),
        };
        if self.domains.is_empty() {
            return Err(ConfigError::NoDomain);
        }
        let domains = DomainPolicy::allow(&self.domains)?;

        let acme = match self.acme {
            None => None,
            Some(a) => {
                if self.insecure_addr.is_some() {
                    return Err(ConfigError::ListenerConflict(
                        "insecure_addr",
                        "the acme section",
                    ));
                }
                if !a.tos_accepted {
                    return Err(ConfigError::TosNotAccepted);
                }
                let email = a.email.ok_or(ConfigError::Missing {
                    key: "email",
                    section: "acme",
                })?;
                Some(Acme {
                    cache_dir: match a.cache_dir {
                        None => Some(PathBuf::from(DEFAULT_ACME_CACHE_DIR)),
                        Some(d) if d.is_empty() => None,
                        Some(d) => Some(PathBuf::from(d)),
                    },
                    directory_url: a.directory_url,
                    email,
                    tos_accepted: true,
                })
            }
        };

        let serving = match self.serving_cert_file {
            None => None,
            Some(s) => {
                const SECTION: &str = "serving_cert_file";
                let cert = s.cert_file_path.ok_or(ConfigError::Missing {
                    key: "cert_file_path",
                    section: SECTION,
                })?;
                let key = s.key_file_path.ok_or(ConfigError::Missing {
                    key: "key_file_path",
                    section: SECTION,
                })?;
                let addr_text = s.addr.unwrap_or_else(|| DEFAULT_SERVING_ADDR.to_owned());
                let addr = resolve_addr(&addr_text).map_err(|e| ConfigError::Invalid {
                    key: "addr",
                    section: SECTION,
                    reason: e.to_string(),
                })?;
                let file_sync_interval = duration_or(
                    s.file_sync_interval,
                    DEFAULT_FILE_SYNC_INTERVAL,
                    "file_sync_interval",
                    SECTION,
                )?;
                Some(ServingCertFile {
                    cert_file_path: cert.into(),
                    key_file_path: key.into(),
                    file_sync_interval,
                    addr,
                })
            }
        };

        let mut sources = 0;
        let server_poll = match &self.server_api {
            None => None,
            Some(s) => {
                sources += 1;
                Some(duration_or(
                    s.poll_interval.clone(),
                    DEFAULT_POLL_INTERVAL,
                    "poll_interval",
                    "server_api",
                )?)
            }
        };
        let workload = match &self.workload_api {
            None => None,
            Some(w) => {
                sources += 1;
                let td = w.trust_domain.as_deref().ok_or(ConfigError::Missing {
                    key: "trust_domain",
                    section: "workload_api",
                })?;
                let td = TrustDomain::new(td).map_err(|e| ConfigError::Invalid {
                    key: "trust_domain",
                    section: "workload_api",
                    reason: e.to_string(),
                })?;
                let poll = duration_or(
                    w.poll_interval.clone(),
                    DEFAULT_POLL_INTERVAL,
                    "poll_interval",
                    "workload_api",
                )?;
                Some((td, poll))
            }
        };

        let health_checks = self.health_checks.map(|h| -> Result<_, ConfigError> {
            let bind_port = match h.bind_port {
                None => DEFAULT_HEALTH_PORT,
                Some(p) if p <= 0 => DEFAULT_HEALTH_PORT,
                Some(p) => u16::try_from(p).map_err(|_| ConfigError::Invalid {
                    key: "bind_port",
                    section: "health_checks",
                    reason: format!("{p} is not a port number"),
                })?,
            };
            let ready_path = h.ready_path.unwrap_or_else(|| "/ready".to_owned());
            let live_path = h.live_path.unwrap_or_else(|| "/live".to_owned());
            if !ready_path.starts_with('/') {
                return Err(ConfigError::HealthPath("ready_path"));
            }
            if !live_path.starts_with('/') || live_path == ready_path {
                return Err(ConfigError::HealthPath("live_path"));
            }
            Ok(HealthChecks {
                bind_port,
                ready_path,
                live_path,
            })
        });
        let health_checks = health_checks.transpose()?;

        // SPIRE's validateOS: exactly one listener, in this order of checks.
        let listener = match (
            acme,
            serving,
            self.insecure_addr.as_deref(),
            self.listen_socket_path.as_deref(),
        ) {
            (None, None, None, None) => return Err(ConfigError::NoListener),
            (Some(_), Some(_), _, _) => {
                return Err(ConfigError::ListenerConflict("acme", "serving_cert_file"));
            }
            (Some(_), _, _, Some(_)) => {
                return Err(ConfigError::ListenerConflict(
                    "listen_socket_path",
                    "the acme section",
                ));
            }
            (_, Some(_), Some(_), _) => {
                return Err(ConfigError::ListenerConflict(
                    "serving_cert_file",
                    "insecure_addr",
                ));
            }
            (_, Some(_), _, Some(_)) => {
                return Err(ConfigError::ListenerConflict(
                    "serving_cert_file",
                    "listen_socket_path",
                ));
            }
            (Some(_), _, Some(_), _) => {
                return Err(ConfigError::ListenerConflict("acme", "insecure_addr"));
            }
            (_, _, Some(_), Some(_)) => {
                return Err(ConfigError::ListenerConflict(
                    "insecure_addr",
                    "listen_socket_path",
                ));
            }
            (Some(a), None, None, None) => Listener::Acme(a),
            (None, Some(s), None, None) => Listener::ServingCertFile(s),
            (None, None, Some(addr), None) => {
                Listener::Insecure(resolve_addr(addr).map_err(ConfigError::InsecureAddr)?)
            }
            (None, None, None, Some(path)) => Listener::UnixSocket(PathBuf::from(path)),
        };
        let server_socket = match &self.server_api {
            None => None,
            Some(s) => {
                let address = s.address.as_deref().ok_or(ConfigError::Missing {
                    key: "address",
                    section: "server_api",
                })?;
                Some(unix_target_path(address).ok_or(ConfigError::NotUnix)?)
            }
        };
        let workload_socket = match &self.workload_api {
            None => None,
            Some(w) => Some(absolute(w.socket_path.as_deref().ok_or(
                ConfigError::Missing {
                    key: "socket_path",
                    section: "workload_api",
                },
            )?)),
        };

        let source = match (server_socket, server_poll, workload, workload_socket) {
            _ if sources > 1 => return Err(ConfigError::SourceConflict),
            (Some(socket_path), Some(poll_interval), _, _) => KeySource::ServerApi {
                socket_path,
                poll_interval,
            },
            (_, _, Some((trust_domain, poll_interval)), Some(socket_path)) => {
                KeySource::WorkloadApi {
                    socket_path,
                    trust_domain,
                    poll_interval,
                }
            }
            _ => return Err(ConfigError::NoSource),
        };

        let jwt_issuer = match self.jwt_issuer {
            None => None,
            Some(raw) => {
                let url = HttpUrl::parse(&raw).map_err(|e| match e {
                    UrlError::NoScheme => ConfigError::IssuerNoScheme,
                    UrlError::Malformed(m) => ConfigError::IssuerUnparsable(m),
                })?;
                if url.host.is_empty() {
                    return Err(ConfigError::IssuerNoHost);
                }
                Some(url)
            }
        };
        if let Some(raw) = &self.jwks_uri {
            match HttpUrl::parse(raw) {
                Ok(u) if !u.host.is_empty() => {}
                Ok(_) => return Err(ConfigError::JwksUri("no host".into())),
                Err(e) => return Err(ConfigError::JwksUri(e.to_string())),
            }
        }

        Ok(Config {
            log_level,
            log_format,
            log_requests: self.log_requests,
            domains,
            set_key_use: self.set_key_use,
            allow_insecure_scheme: self.allow_insecure_scheme,
            listener,
            source,
            health_checks,
            jwt_issuer,
            jwks_uri: self.jwks_uri,
        })
    }
}

/// A configured duration, or the default when unset or not positive.
fn duration_or(
    v: Option<Result<Duration, BadDuration>>,
    default: Duration,
    key: &'static str,
    section: &'static str,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(Ok(d)) if d.is_zero() => Ok(default),
        Some(Ok(d)) => Ok(d),
        Some(Err(reason)) => Err(ConfigError::Invalid {
            key,
            section,
            reason: reason.to_string(),
        }),
    }
}

/// Why a listen address does not resolve; the texts are Go's (`net.Listen`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// No `:port` part.
    #[error("address {0}: missing port in address")]
    MissingPort(String),
    /// The port is not a number in 0..=65535.
    #[error("address {0}: invalid port")]
    InvalidPort(String),
    /// The host name lookup failed.
    #[error("lookup {host}: {source}")]
    Lookup {
        /// The host looked up.
        host: String,
        /// What the resolver reported.
        source: std::io::Error,
    },
    /// The lookup returned no address.
    #[error("lookup {0}: no such host")]
    NoSuchHost(String),
}

/// A Go listen address (`host:port`, `:port`, `[v6]:port`) resolved to one
/// socket address; an empty host means every interface.
fn resolve_addr(addr: &str) -> Result<SocketAddr, AddrError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| AddrError::MissingPort(addr.to_owned()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| AddrError::InvalidPort(addr.to_owned()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|source| AddrError::Lookup {
            host: host.to_owned(),
            source,
        })?
        .next()
        .ok_or_else(|| AddrError::NoSuchHost(host.to_owned()))
}

/// The socket path of a gRPC `unix:` target (`unix:///abs` or `unix:path`).
fn unix_target_path(address: &str) -> Option<PathBuf> {
    let rest = address.strip_prefix("unix:")?;
    let path = rest.strip_prefix("//").unwrap_or(rest);
    (!path.is_empty()).then(|| PathBuf::from(path))
}

fn absolute(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        return p;
    }
    std::env::current_dir().map_or(p.clone(), |d| d.join(p))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const SERVER_API: &str = "server_api {\n address = \"unix:///some/socket/path\"\n}\n";
    const ACME: &str = "acme {\n email = \"admin@domain.test\"\n tos_accepted = true\n}\n";

    fn err(text: &str) -> String {
        Config::parse(text)
            .expect_err("config must be refused")
            .to_string()
    }

    #[test]
    fn minimal_server_api_config_takes_spire_defaults() {
        let c = Config::parse(&format!("domains = [\"domain.test\"]\n{ACME}{SERVER_API}")).unwrap();
        assert_eq!(c.log_level, "info");
        assert_eq!(
            c.source,
            KeySource::ServerApi {
                socket_path: "/some/socket/path".into(),
                poll_interval: Duration::from_secs(10),
            }
        );
        assert_eq!(
            c.listener,
            Listener::Acme(Acme {
                cache_dir: Some("./.acme-cache".into()),
                directory_url: None,
                email: "admin@domain.test".into(),
                tos_accepted: true,
            })
        );
        assert!(c.health_checks.is_none());
        assert!(!c.set_key_use && !c.allow_insecure_scheme && !c.log_requests);
    }

    #[test]
    fn acme_cache_dir_set_to_empty_disables_the_cache() {
        let c = Config::parse(&format!(
            "domains = [\"d.test\"]\nacme {{\n cache_dir = \"\"\n email = \"a@d.test\"\n tos_accepted = true\n}}\n{SERVER_API}"
        ))
        .unwrap();
        let Listener::Acme(a) = c.listener else {
            panic!("acme")
        };
        assert_eq!(a.cache_dir, None);
    }

    #[test]
    fn no_domain_is_refused() {
        assert_eq!(
            err(&format!("{ACME}{SERVER_API}")),
            "at least one domain must be configured"
        );
        assert_eq!(
            err(&format!("domains = []\n{ACME}{SERVER_API}")),
            "at least one domain must be configured"
        );
    }

    #[test]
    fn domain_not_in_punycode_is_refused() {
        let e = err(&format!("domains = [\"Domain.test\"]\n{ACME}{SERVER_API}"));
        assert!(e.contains("must already be punycode encoded"), "{e}");
        let e = err(&format!(
            "domains = [\"bad_domain.test\"]\n{ACME}{SERVER_API}"
        ));
        assert!(e.contains("is not a valid domain name"), "{e}");
    }

    #[test]
    fn no_listener_is_refused() {
        assert_eq!(
            err(&format!("domains = [\"d.test\"]\n{SERVER_API}")),
            "either acme, serving_cert_file, insecure_addr or listen_socket_path must be configured"
        );
    }

    #[test]
    fn acme_tos_not_accepted_is_refused() {
        assert_eq!(
            err(&format!(
                "domains = [\"d.test\"]\nacme {{\n email = \"a@d.test\"\n}}\n{SERVER_API}"
            )),
            "tos_accepted must be set to true in the acme configuration section"
        );
    }

    #[test]
    fn acme_without_email_is_refused() {
        assert_eq!(
            err(&format!(
                "domains = [\"d.test\"]\nacme {{\n tos_accepted = true\n}}\n{SERVER_API}"
            )),
            "email must be configured in the acme configuration section"
        );
    }

    #[test]
    fn conflicting_listeners_are_refused_with_spire_messages() {
        let serving = "serving_cert_file {\n cert_file_path = \"c\"\n key_file_path = \"k\"\n}\n";
        let cases = [
            (
                format!("insecure_addr = \":8080\"\n{ACME}"),
                "insecure_addr and the acme section are mutually exclusive",
            ),
            (
                format!("listen_socket_path = \"/s\"\n{ACME}"),
                "listen_socket_path and the acme section are mutually exclusive",
            ),
            (
                format!("{ACME}{serving}"),
                "acme and serving_cert_file are mutually exclusive",
            ),
            (
                "insecure_addr = \":8080\"\nlisten_socket_path = \"/s\"\n".to_owned(),
                "insecure_addr and listen_socket_path are mutually exclusive",
            ),
            (
                format!("insecure_addr = \":8080\"\n{serving}"),
                "serving_cert_file and insecure_addr are mutually exclusive",
            ),
            (
                format!("listen_socket_path = \"/s\"\n{serving}"),
                "serving_cert_file and listen_socket_path are mutually exclusive",
            ),
        ];
        for (listeners, want) in cases {
            assert_eq!(
                err(&format!("domains = [\"d.test\"]\n{listeners}{SERVER_API}")),
                want
            );
        }
    }

    #[test]
    fn serving_cert_file_needs_both_files_and_a_valid_addr() {
        let base = "domains = [\"d.test\"]\n";
        assert_eq!(
            err(&format!(
                "{base}serving_cert_file {{\n key_file_path = \"k\"\n}}\n{SERVER_API}"
            )),
            "cert_file_path must be configured in the serving_cert_file configuration section"
        );
        assert_eq!(
            err(&format!(
                "{base}serving_cert_file {{\n cert_file_path = \"c\"\n}}\n{SERVER_API}"
            )),
            "key_file_path must be configured in the serving_cert_file configuration section"
        );
        let e = err(&format!(
            "{base}serving_cert_file {{\n cert_file_path = \"c\"\n key_file_path = \"k\"\n addr = \"127.0.0.1\"\n}}\n{SERVER_API}"
        ));
        assert!(
            e.starts_with("invalid addr in the serving_cert_file configuration section"),
            "{e}"
        );
        let e = err(&format!(
            "{base}serving_cert_file {{\n cert_file_path = \"c\"\n key_file_path = \"k\"\n file_sync_interval = \"huh\"\n}}\n{SERVER_API}"
        ));
        assert!(
            e.starts_with(
                "invalid file_sync_interval in the serving_cert_file configuration section"
            ),
            "{e}"
        );
    }

    #[test]
    fn serving_cert_file_defaults_to_port_443_and_one_minute_sync() {
        let c = Config::parse(&format!(
            "domains = [\"d.test\"]\nserving_cert_file {{\n cert_file_path = \"c\"\n key_file_path = \"k\"\n}}\n{SERVER_API}"
        ))
        .unwrap();
        assert_eq!(
            c.listener,
            Listener::ServingCertFile(ServingCertFile {
                cert_file_path: "c".into(),
                key_file_path: "k".into(),
                file_sync_interval: Duration::from_secs(60),
                addr: "0.0.0.0:443".parse().unwrap(),
            })
        );
    }

    #[test]
    fn key_source_must_be_exactly_one() {
        let base = format!("domains = [\"d.test\"]\n{ACME}");
        assert_eq!(
            err(&base),
            "exactly one of the server_api, workload_api, or file sections must be configured"
        );
        assert_eq!(
            err(&format!(
                "{base}{SERVER_API}workload_api {{\n socket_path = \"/w\"\n trust_domain = \"d.test\"\n}}\n"
            )),
            "the server_api, workload_api, and file sections are mutually exclusive"
        );
    }

    #[test]
    fn server_api_address_is_required_and_must_be_unix() {
        let base = format!("domains = [\"d.test\"]\n{ACME}");
        assert_eq!(
            err(&format!("{base}server_api {{}}\n")),
            "address must be configured in the server_api configuration section"
        );
        assert_eq!(
            err(&format!(
                "{base}server_api {{\n address = \"localhost:8081\"\n}}\n"
            )),
            "address must use the unix name system in the server_api configuration section"
        );
        let c = Config::parse(&format!(
            "{base}server_api {{\n address = \"unix:rel/api.sock\"\n}}\n"
        ))
        .unwrap();
        assert!(
            matches!(c.source, KeySource::ServerApi { socket_path, .. } if socket_path == Path::new("rel/api.sock"))
        );
    }

    #[test]
    fn bad_poll_intervals_are_refused_and_zero_means_default() {
        let base = format!("domains = [\"d.test\"]\n{ACME}");
        let e = err(&format!(
            "{base}server_api {{\n address = \"unix:///s\"\n poll_interval = \"huh\"\n}}\n"
        ));
        assert!(
            e.starts_with("invalid poll_interval in the server_api configuration section: "),
            "{e}"
        );
        let e = err(&format!(
            "{base}workload_api {{\n socket_path = \"/w\"\n trust_domain = \"d.test\"\n poll_interval = \"huh\"\n}}\n"
        ));
        assert!(
            e.starts_with("invalid poll_interval in the workload_api configuration section: "),
            "{e}"
        );
        let c = Config::parse(&format!(
            "{base}server_api {{\n address = \"unix:///s\"\n poll_interval = \"0s\"\n}}\n"
        ))
        .unwrap();
        assert_eq!(c.source.poll_interval(), DEFAULT_POLL_INTERVAL);
        let c = Config::parse(&format!(
            "{base}server_api {{\n address = \"unix:///s\"\n poll_interval = \"1s\"\n}}\n"
        ))
        .unwrap();
        assert_eq!(c.source.poll_interval(), Duration::from_secs(1));
    }

    #[test]
    fn workload_api_needs_socket_path_and_trust_domain() {
        let base = format!("domains = [\"d.test\"]\n{ACME}");
        assert_eq!(
            err(&format!(
                "{base}workload_api {{\n socket_path = \"/w\"\n}}\n"
            )),
            "trust_domain must be configured in the workload_api configuration section"
        );
        assert_eq!(
            err(&format!(
                "{base}workload_api {{\n trust_domain = \"d.test\"\n}}\n"
            )),
            "socket_path must be configured in the workload_api configuration section"
        );
        let c = Config::parse(&format!(
            "{base}workload_api {{\n socket_path = \"/w\"\n trust_domain = \"d.test\"\n}}\n"
        ))
        .unwrap();
        assert_eq!(
            c.source,
            KeySource::WorkloadApi {
                socket_path: "/w".into(),
                trust_domain: TrustDomain::new("d.test").unwrap(),
                poll_interval: DEFAULT_POLL_INTERVAL,
            }
        );
    }

    #[test]
    fn health_checks_take_defaults_and_overrides() {
        let base = format!("domains = [\"d.test\"]\n{ACME}{SERVER_API}");
        let c = Config::parse(&format!("{base}health_checks {{}}\n")).unwrap();
        assert_eq!(
            c.health_checks,
            Some(HealthChecks {
                bind_port: 8008,
                ready_path: "/ready".into(),
                live_path: "/live".into(),
            })
        );
        let c = Config::parse(&format!(
            "{base}health_checks {{\n bind_port = \"8888\"\n live_path = \"/l\"\n ready_path = \"/r\"\n}}\n"
        ))
        .unwrap();
        assert_eq!(
            c.health_checks,
            Some(HealthChecks {
                bind_port: 8888,
                ready_path: "/r".into(),
                live_path: "/l".into(),
            })
        );
        assert!(
            err(&format!(
                "{base}health_checks {{\n live_path = \"/ready\"\n}}\n"
            ))
            .starts_with("invalid live_path")
        );
        assert!(
            err(&format!(
                "{base}health_checks {{\n ready_path = \"ready\"\n}}\n"
            ))
            .starts_with("invalid ready_path")
        );
    }

    #[test]
    fn jwt_issuer_must_be_an_absolute_url_with_a_host() {
        let base = format!("domains = [\"d.test\"]\n{ACME}{SERVER_API}");
        assert_eq!(
            err(&format!(
                "{base}jwt_issuer = \"domain.test/some/issuer/path/issuer1/\"\n"
            )),
            "the jwt_issuer url must contain a scheme"
        );
        assert_eq!(
            err(&format!("{base}jwt_issuer = \"https:///path\"\n")),
            "the jwt_issuer url must contain a host"
        );
        let e = err(&format!(
            "{base}jwt_issuer = \"http://domain.test:someportnumber/some/path\"\n"
        ));
        assert!(
            e.starts_with("the jwt_issuer url could not be parsed"),
            "{e}"
        );
        let c = Config::parse(&format!(
            "{base}jwt_issuer = \"https://domain.test/some/issuer/path/issuer1/\"\n"
        ))
        .unwrap();
        let iss = c.jwt_issuer.unwrap();
        assert_eq!(
            (iss.scheme.as_str(), iss.host.as_str(), iss.path.as_str()),
            ("https", "domain.test", "/some/issuer/path/issuer1/")
        );
        let c = Config::parse(&format!("{base}jwt_issuer = \"\"\n")).unwrap();
        assert!(c.jwt_issuer.is_none());
    }

    #[test]
    fn jwks_uri_must_be_an_absolute_url() {
        let base = format!("domains = [\"d.test\"]\n{ACME}{SERVER_API}");
        let e = err(&format!("{base}jwks_uri = \"/keys\"\n"));
        assert!(
            e.starts_with("the jwks_uri setting could not be parsed"),
            "{e}"
        );
        let c = Config::parse(&format!("{base}jwks_uri = \"https://lb.test/keys\"\n")).unwrap();
        assert_eq!(c.jwks_uri.as_deref(), Some("https://lb.test/keys"));
    }

    #[test]
    fn unsupported_spire_options_are_refused_by_name() {
        let base = format!("domains = [\"d.test\"]\n{ACME}{SERVER_API}");
        for opt in [
            "log_path = \"/x\"\n",
            "server_path_prefix = \"/p\"\n",
            "file {\n path = \"/b\"\n}\n",
            "experimental {\n listen_named_pipe_name = \"p\"\n}\n",
        ] {
            let e = err(&format!("{base}{opt}"));
            assert!(e.contains("is not supported by sigil yet"), "{opt}: {e}");
        }
        let e = err(&format!("{base}domain = \"old.test\"\n"));
        assert!(e.contains("unknown option \"domain\""), "{e}");
    }

    #[test]
    fn log_options_are_checked() {
        let base = format!("domains = [\"d.test\"]\n{ACME}{SERVER_API}");
        assert!(err(&format!("{base}log_level = \"loud\"\n")).starts_with("invalid log_level"));
        assert!(err(&format!("{base}log_format = \"xml\"\n")).starts_with("invalid log_format"));
        let c = Config::parse(&format!(
            "{base}log_format = \"JSON\"\nlog_level = \"DEBUG\"\n"
        ))
        .unwrap();
        assert_eq!(
            (c.log_format.as_str(), c.log_level.as_str()),
            ("json", "DEBUG")
        );
    }

    #[test]
    fn duplicate_domains_are_collapsed() {
        let c = Config::parse(&format!(
            "domains = [\"a.test\", \"b.test\", \"a.test\"]\n{ACME}{SERVER_API}"
        ))
        .unwrap();
        assert_eq!(c.domains.domains(), ["a.test", "b.test"]);
    }
}
