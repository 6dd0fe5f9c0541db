//! `server.conf`, in SPIRE's HCL format. Every option SPIRE documents is
//! either read here or rejected at startup with an error naming it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use sigil_cli::config::{ConfigError, PluginDecl, Section, parse_plugins};
use sigil_crypto::key::KeyType;
use sigil_crypto::x509::CaSubject;
use sigil_datastore::{BundleEndpointProfile, FederationRelationship};
use sigil_spiffe::{SpiffeId, TrustDomain};

use crate::api::limits::RateLimitConfig;
use crate::endpoints::ConnectionBounds;
use crate::index::{IndexConfig, IndexMode};
use crate::podcert::{self, PodCertificatesConfig, SignerName};
use crate::prune::PruneConfig;

/// SPIRE `server` options sigil knows but does not implement yet.
const UNSUPPORTED_SERVER: &[&str] = &[
    "ca_key_type_wit",
    "default_wit_svid_ttl",
    "agent_ttl",
    "log_file",
    "log_source_location",
    "profiling_enabled",
    "profiling_freq",
    "profiling_names",
    "profiling_port",
    "sql_transaction_timeout",
    "socket_permissions",
    "use_legacy_downstream_x509_ca_ttl",
    "jwt_issuer_signing",
    "admin_ids_exclude",
    "default_svid_ttl",
];

/// SPIRE `server.experimental` options sigil does not implement yet.
const UNSUPPORTED_EXPERIMENTAL: &[&str] = &[
    "agent_spiffe_id_as_selector",
    "auth_opa_policy_engine",
    "sql_transaction_timeout",
    "require_pq_kem",
    "wit_key_type",
    "wit_issuer",
    "feature_flags",
    "named_pipe_name",
];

/// The parsed server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the agent (mTLS) endpoint.
    pub bind_address: IpAddr,
    /// Port of the agent endpoint.
    pub bind_port: u16,
    /// The admin API Unix socket.
    pub socket_path: PathBuf,
    /// The trust domain this server is the root of.
    pub trust_domain: TrustDomain,
    /// Where the server keeps its CA journal and other state.
    pub data_dir: PathBuf,
    /// `DEBUG`, `INFO`, `WARN`, `ERROR`.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
    /// Lifetime of each CA certificate and JWT signing key.
    pub ca_ttl: Duration,
    /// Default X509-SVID lifetime.
    pub default_x509_svid_ttl: Duration,
    /// Default JWT-SVID lifetime.
    pub default_jwt_svid_ttl: Duration,
    /// X.509 CA key type.
    pub ca_key_type: KeyType,
    /// JWT signing key type.
    pub jwt_key_type: KeyType,
    /// Subject of CA certificates.
    pub ca_subject: CaSubject,
    /// `iss` claim of JWT-SVIDs, if set.
    pub jwt_issuer: Option<String>,
    /// SPIFFE IDs allowed to use the admin APIs over mTLS.
    pub admin_ids: Vec<SpiffeId>,
    /// Declared plugins.
    pub plugins: Vec<PluginDecl>,
    /// `federation { }`: our bundle endpoint and the static relationships.
    pub federation: FederationConfig,
    /// `pod_certificates { }` (a sigil extension): sign Kubernetes
    /// PodCertificateRequests for a signer name.
    pub pod_certificates: Option<PodCertificatesConfig>,
    /// `audit_log_enabled`: one audit record per API call (see
    /// [`crate::audit`]).
    pub audit_log_enabled: bool,
    /// `ratelimit { }`: per-IP attestation and signing limits.
    pub ratelimit: RateLimitConfig,
    /// What housekeeping prunes beyond expired entries and tokens:
    /// `prune_attested_nodes_expired_for`, `prune_tofu_nodes` and
    /// `experimental.prune_events_older_than`.
    pub prune: PruneConfig,
    /// The entry index: `cache_reload_interval`,
    /// `max_attested_node_info_staleness` and `experimental {
    /// events_based_cache, cache_reload_interval, full_cache_reload_interval,
    /// event_timeout }`.
    pub index: IndexConfig,
    /// Bounds of the agent (mTLS) endpoint. Not read from the file (SPIRE
    /// has no such options); tests shorten the connection age here.
    pub agent_endpoint_bounds: ConnectionBounds,
    /// Bounds of the admin socket. Not read from the file.
    pub admin_socket_bounds: ConnectionBounds,
    /// Top-level `telemetry { }` (see [`sigil_telemetry::config`]).
    pub telemetry: sigil_telemetry::TelemetryConfig,
    /// Top-level `health_checks { }`.
    pub health_checks: sigil_telemetry::HealthChecksConfig,
}

/// SPIRE's `server.federation` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FederationConfig {
    /// `bundle_endpoint { }`: serve our bundle, when set.
    pub bundle_endpoint: Option<BundleEndpointConfig>,
    /// `federates_with "<td>" { }`, in trust domain order. As in SPIRE these
    /// are not written to the datastore; they override a stored relationship
    /// with the same trust domain.
    pub federates_with: Vec<FederationRelationship>,
}

/// SPIRE's `server.federation.bundle_endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEndpointConfig {
    /// `address`; default `0.0.0.0`.
    pub address: IpAddr,
    /// `port`; default 8443 (SPIRE's documented port). 0 picks a free port.
    pub port: u16,
    /// `refresh_hint`, advertised as `spiffe_refresh_hint`; default 5m.
    pub refresh_hint: Duration,
    /// `profile`: how the endpoint authenticates; `https_spiffe` when unset.
    pub profile: EndpointServingProfile,
}

/// `server.federation.bundle_endpoint.profile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointServingProfile {
    /// `https_spiffe`: the server's own X509-SVID.
    HttpsSpiffe,
    /// `https_web { acme { } }` (or the deprecated `bundle_endpoint { acme
    /// { } }`): a certificate from an ACME CA.
    Acme(BundleEndpointAcme),
    /// `https_web { serving_cert_file { } }`: a certificate from files.
    ServingCertFile(ServingCertFile),
}

impl EndpointServingProfile {
    /// The profile's name as logged: `https_spiffe`, `https_web` (acme),
    /// `https_web` (serving_cert_file).
    pub fn name(&self) -> &'static str {
        match self {
            EndpointServingProfile::HttpsSpiffe => "https_spiffe",
            EndpointServingProfile::Acme(_) => "https_web (acme)",
            EndpointServingProfile::ServingCertFile(_) => "https_web (serving_cert_file)",
        }
    }
}

/// `profile "https_web" { acme { } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEndpointAcme {
    /// `domain_name` (required).
    pub domain_name: String,
    /// `directory_url`; default Let's Encrypt's.
    pub directory_url: String,
    /// `email`.
    pub email: String,
    /// `tos_accepted`; default false.
    pub tos_accepted: bool,
}

/// `profile "https_web" { serving_cert_file { } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingCertFile {
    /// `cert_file_path` (required): PEM chain, leaf first.
    pub cert_file_path: PathBuf,
    /// `key_file_path` (required): PEM private key.
    pub key_file_path: PathBuf,
    /// `file_sync_interval`; default 1h (SPIRE's).
    pub file_sync_interval: Duration,
}

/// The refresh hint the bundle endpoint advertises unless configured.
pub const DEFAULT_REFRESH_HINT: Duration = Duration::from_secs(300);

impl ServerConfig {
    /// Parses the text of a `server.conf`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut top = Section::parse(text)?;
        let mut s = top
            .take_block("server")?
            .ok_or_else(|| top.missing("server"))?
            .body;
        let plugins = match top.take_block("plugins")? {
            Some(b) => parse_plugins(b.body)?,
            None => Vec::new(),
        };
        let (telemetry, health_checks) = sigil_telemetry::config::take_blocks(&mut top)?;
        top.finish(&[])?;

        let trust_domain_s = s
            .take_string("trust_domain")?
            .ok_or_else(|| s.missing("trust_domain"))?;
        let trust_domain = TrustDomain::new(&trust_domain_s)
            .map_err(|e| s.invalid_value("trust_domain", e.to_string()))?;
        let data_dir = s
            .take_string("data_dir")?
            .ok_or_else(|| s.missing("data_dir"))?;
        let bind_address = match s.take_string("bind_address")? {
            Some(a) => a.parse().map_err(|_| {
                s.invalid_value("bind_address", format!("{a:?} is not an IP address"))
            })?,
            None => IpAddr::from([0, 0, 0, 0]),
        };
        let bind_port = s.take_port("bind_port")?.unwrap_or(8081);
        let socket_path = s
            .take_string("socket_path")?
            .unwrap_or_else(|| "/tmp/spire-server/private/api.sock".into());
        let log_level = s.take_string("log_level")?.unwrap_or_else(|| "INFO".into());
        if !["DEBUG", "INFO", "WARN", "ERROR", "TRACE"]
            .contains(&log_level.to_ascii_uppercase().as_str())
        {
            return Err(s.invalid_value(
                "log_level",
                format!("{log_level:?} is not one of DEBUG, INFO, WARN, ERROR"),
            ));
        }
        let log_format = s
            .take_string("log_format")?
            .unwrap_or_else(|| "text".into());
        if !["text", "json"].contains(&log_format.to_ascii_lowercase().as_str()) {
            return Err(s.invalid_value(
                "log_format",
                format!("{log_format:?} is not one of text, json"),
            ));
        }
        let ca_ttl = s
            .take_duration("ca_ttl")?
            .unwrap_or(Duration::from_secs(24 * 3600));
        let default_x509_svid_ttl = s
            .take_duration("default_x509_svid_ttl")?
            .unwrap_or(Duration::from_secs(3600));
        let default_jwt_svid_ttl = s
            .take_duration("default_jwt_svid_ttl")?
            .unwrap_or(Duration::from_secs(300));
        for (key, d) in [
            ("ca_ttl", ca_ttl),
            ("default_x509_svid_ttl", default_x509_svid_ttl),
            ("default_jwt_svid_ttl", default_jwt_svid_ttl),
        ] {
            if d < Duration::from_secs(1) {
                return Err(s.invalid_value(key, "must be at least 1s"));
            }
        }
        let ca_key_type = key_type(&mut s, "ca_key_type")?.unwrap_or(KeyType::EcP256);
        // As in SPIRE, the JWT key type follows ca_key_type unless set.
        let jwt_key_type = key_type(&mut s, "jwt_key_type")?.unwrap_or(ca_key_type);
        let ca_subject = match s.take_block("ca_subject")? {
            Some(b) => {
                let mut body = b.body;
                let subject = CaSubject {
                    country: body.take_string_list("country")?.unwrap_or_default(),
                    organization: body.take_string_list("organization")?.unwrap_or_default(),
                    common_name: body.take_string("common_name")?.unwrap_or_default(),
                };
                body.finish(&[])?;
                subject
            }
            None => CaSubject::default(),
        };
        let jwt_issuer = s.take_string("jwt_issuer")?;
        let mut admin_ids = Vec::new();
        for id in s.take_string_list("admin_ids")?.unwrap_or_default() {
            let parsed = SpiffeId::parse(&id)
                .map_err(|e| s.invalid_value("admin_ids", format!("{id:?}: {e}")))?;
            admin_ids.push(parsed);
        }
        let federation = match s.take_block("federation")? {
            Some(b) => parse_federation(b.body, &trust_domain)?,
            None => FederationConfig::default(),
        };
        let pod_certificates = match s.take_block("pod_certificates")? {
            Some(b) => Some(parse_pod_certificates(b.body, &trust_domain)?),
            None => None,
        };
        let audit_log_enabled = s.take_bool("audit_log_enabled")?.unwrap_or(false);
        let ratelimit = match s.take_block("ratelimit")? {
            Some(b) => {
                let mut body = b.body;
                let defaults = RateLimitConfig::default();
                let rl = RateLimitConfig {
                    attestation: body
                        .take_bool("attestation")?
                        .unwrap_or(defaults.attestation),
                    signing: body.take_bool("signing")?.unwrap_or(defaults.signing),
                };
                body.finish(&[])?;
                rl
            }
            None => RateLimitConfig::default(),
        };
        let (prune, index) = parse_prune_and_index(&mut s)?;
        s.finish(UNSUPPORTED_SERVER)?;

        if ca_ttl < default_x509_svid_ttl {
            tracing::warn!(
                "ca_ttl ({ca_ttl:?}) is shorter than default_x509_svid_ttl ({default_x509_svid_ttl:?}); SVIDs will be cut short by CA expiry"
            );
        }

        Ok(ServerConfig {
            bind_address,
            bind_port,
            socket_path: PathBuf::from(socket_path),
            trust_domain,
            data_dir: PathBuf::from(data_dir),
            log_level,
            log_format,
            ca_ttl,
            default_x509_svid_ttl,
            default_jwt_svid_ttl,
            ca_key_type,
            jwt_key_type,
            ca_subject,
            jwt_issuer,
            admin_ids,
            plugins,
            federation,
            pod_certificates,
            audit_log_enabled,
            ratelimit,
            prune,
            index,
            agent_endpoint_bounds: ConnectionBounds::agent_endpoint(),
            admin_socket_bounds: ConnectionBounds::admin_socket(),
            telemetry,
            health_checks,
        })
    }

    /// Reads and parses a config file.
    pub fn load(path: &std::path::Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        ServerConfig::parse(&text).map_err(|source| LoadError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The declared plugins of one type.
    pub fn plugins_of(&self, kind: &str) -> Vec<&PluginDecl> {
        self.plugins.iter().filter(|p| p.kind == kind).collect()
    }

    /// The server's own SPIFFE ID, `spiffe://<td>/spire/server`.
    pub fn server_id(&self) -> SpiffeId {
        server_id(&self.trust_domain)
    }
}

/// Why a config file could not be loaded; the text names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("could not read config file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid server config.
    #[error("{}: {source}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        source: ConfigError,
    },
}

/// `spiffe://<td>/spire/server`.
pub fn server_id(td: &TrustDomain) -> SpiffeId {
    td.id_with_path("/spire/server")
        .expect("a fixed valid path under a valid trust domain is a valid SPIFFE ID")
}

fn parse_federation(mut f: Section, ours: &TrustDomain) -> Result<FederationConfig, ConfigError> {
    let bundle_endpoint = match f.take_block("bundle_endpoint")? {
        Some(b) => Some(parse_bundle_endpoint(b.body)?),
        None => None,
    };
    let mut federates_with: Vec<FederationRelationship> = Vec::new();
    for block in f.take_blocks("federates_with") {
        let [label] = block.labels.as_slice() else {
            return Err(f.invalid_value(
                "federates_with",
                "expected exactly one label, the trust domain: federates_with \"<trust domain>\" { }",
            ));
        };
        let trust_domain = TrustDomain::new(label)
            .map_err(|e| f.invalid_value("federates_with", format!("{label:?}: {e}")))?;
        if &trust_domain == ours {
            return Err(f.invalid_value(
                "federates_with",
                format!("{label:?} is this server's own trust domain"),
            ));
        }
        if federates_with
            .iter()
            .any(|r| r.trust_domain == trust_domain)
        {
            return Err(ConfigError::Duplicate {
                path: f.path().to_owned(),
                key: format!("federates_with {label:?}"),
            });
        }
        federates_with.push(parse_federates_with(block.body, trust_domain)?);
    }
    federates_with.sort_by(|a, b| a.trust_domain.name().cmp(b.trust_domain.name()));
    f.finish(&[])?;
    Ok(FederationConfig {
        bundle_endpoint,
        federates_with,
    })
}

/// sigil's `server.pod_certificates` block (see docs/compatibility.md,
/// "Pod Certificates signer").
fn parse_pod_certificates(
    mut p: Section,
    td: &TrustDomain,
) -> Result<PodCertificatesConfig, ConfigError> {
    let raw = p
        .take_string("signer_name")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| p.missing("signer_name"))?;
    let signer_name =
        SignerName::parse(&raw).map_err(|e| p.invalid_value("signer_name", e.to_string()))?;
    let suffix = p
        .take_string("trust_bundle_name")?
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| podcert::default_bundle_suffix(td));
    let trust_bundle_name = podcert::bundle_name(&signer_name, &suffix)
        .map_err(|e| p.invalid_value("trust_bundle_name", e.to_string()))?;
    let cfg = PodCertificatesConfig {
        signer_name,
        kube_config_file: p.take_string("kube_config_file")?.unwrap_or_default(),
        default_spiffe_id: p.take_bool("default_spiffe_id")?.unwrap_or(false),
        class_name: p.take_string("class_name")?.unwrap_or_default(),
        cluster_name: p.take_string("cluster_name")?.unwrap_or_default(),
        cluster_domain: p.take_string("cluster_domain")?.unwrap_or_default(),
        trust_bundle_name,
    };
    p.finish(&[])?;
    Ok(cfg)
}

fn parse_bundle_endpoint(mut b: Section) -> Result<BundleEndpointConfig, ConfigError> {
    let address = match b.take_string("address")? {
        Some(a) => a
            .parse()
            .map_err(|_| b.invalid_value("address", format!("{a:?} is not an IP address")))?,
        None => IpAddr::from([0, 0, 0, 0]),
    };
    let port = b.take_port("port")?.unwrap_or(8443);
    let refresh_hint = b.take_duration("refresh_hint")?;
    if let Some(h) = refresh_hint {
        if h.is_zero() {
            return Err(b.invalid_value("refresh_hint", "must be greater than zero"));
        }
        // SPIRE's warnings, word for word.
        if h >= Duration::from_secs(24 * 3600) {
            tracing::warn!(
                "Bundle endpoint refresh hint set to a high value. To cover the case of \
                 unscheduled trust bundle updates, it's recommended to have a smaller value, e.g. 5m"
            );
        }
        if h < crate::federation::MINIMUM_REFRESH_HINT {
            tracing::warn!(
                "Bundle endpoint refresh hint set too low. SPIRE will not refresh more often than 1 minute"
            );
        }
    }
    let deprecated_acme = b.take_block("acme")?;
    let mut profiles = b.take_blocks("profile");
    if profiles.len() > 1 {
        return Err(b.invalid_value("profile", "exactly one bundle endpoint profile is expected"));
    }
    let profile = match (profiles.pop(), deprecated_acme) {
        (Some(_), Some(_)) => {
            return Err(b.invalid_value(
                "acme",
                "either bundle endpoint 'acme' or 'profile' can be set, but not both",
            ));
        }
        (None, Some(acme)) => {
            tracing::warn!(
                "ACME configuration within the bundle_endpoint is deprecated. Please use ACME \
                 configuration as part of the https_web profile instead."
            );
            EndpointServingProfile::Acme(parse_endpoint_acme(acme.body, true)?)
        }
        (None, None) => {
            tracing::warn!(
                "Bundle endpoint is configured but has no profile set, using https_spiffe as default; \
                 please configure a profile explicitly"
            );
            EndpointServingProfile::HttpsSpiffe
        }
        (Some(p), None) => match p.labels.as_slice() {
            [name] if name == "https_spiffe" => {
                p.body.finish(&[])?;
                EndpointServingProfile::HttpsSpiffe
            }
            [name] if name == "https_web" => parse_https_web(p.body)?,
            _ => {
                return Err(b.invalid_value(
                    "profile",
                    "unknown bundle endpoint profile; supported profiles are \"https_spiffe\" and \"https_web\"",
                ));
            }
        },
    };
    b.finish(&[])?;
    Ok(BundleEndpointConfig {
        address,
        port,
        refresh_hint: refresh_hint.unwrap_or(DEFAULT_REFRESH_HINT),
        profile,
    })
}

/// `profile "https_web" { }`: exactly one of `acme` and `serving_cert_file`.
fn parse_https_web(mut w: Section) -> Result<EndpointServingProfile, ConfigError> {
    let acme = w.take_block("acme")?;
    let files = w.take_block("serving_cert_file")?;
    let profile = match (acme, files) {
        (Some(_), Some(_)) => {
            return Err(w.invalid_value(
                "acme",
                "'acme' and 'serving_cert_file' are mutually exclusive; set one of them",
            ));
        }
        (None, None) => {
            return Err(w.invalid_value(
                "https_web",
                "malformed https_web profile configuration: 'acme' or 'serving_cert_file' is required",
            ));
        }
        (Some(a), None) => EndpointServingProfile::Acme(parse_endpoint_acme(a.body, false)?),
        (None, Some(mut f)) => {
            let mut path = |key: &str| {
                f.body
                    .take_string(key)?
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .ok_or_else(|| f.body.missing(key))
            };
            let cert_file_path = path("cert_file_path")?;
            let key_file_path = path("key_file_path")?;
            // SPIRE turns 0 into its 1h default too.
            let file_sync_interval = f
                .body
                .take_duration("file_sync_interval")?
                .filter(|d| !d.is_zero())
                .unwrap_or(sigil_acme::DEFAULT_FILE_SYNC_INTERVAL);
            f.body.finish(&[])?;
            EndpointServingProfile::ServingCertFile(ServingCertFile {
                cert_file_path,
                key_file_path,
                file_sync_interval,
            })
        }
    };
    w.finish(&[])?;
    Ok(profile)
}

/// An `acme { }` block. SPIRE requires `email` only in the deprecated
/// `bundle_endpoint { acme { } }` form.
fn parse_endpoint_acme(
    mut a: Section,
    email_required: bool,
) -> Result<BundleEndpointAcme, ConfigError> {
    let domain_name = a
        .take_string("domain_name")?
        .filter(|d| !d.is_empty())
        .ok_or_else(|| a.missing("domain_name"))?;
    let email = a.take_string("email")?.unwrap_or_default();
    if email_required && email.is_empty() {
        return Err(a.missing("email"));
    }
    let directory_url = a
        .take_string("directory_url")?
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| sigil_acme::LETS_ENCRYPT_DIRECTORY.to_owned());
    if !directory_url.to_ascii_lowercase().starts_with("https://") {
        return Err(a.invalid_value(
            "directory_url",
            format!("{directory_url:?} must be an https:// URL"),
        ));
    }
    let tos_accepted = a.take_bool("tos_accepted")?.unwrap_or(false);
    a.finish(&[])?;
    Ok(BundleEndpointAcme {
        domain_name,
        directory_url,
        email,
        tos_accepted,
    })
}

fn parse_federates_with(
    mut w: Section,
    trust_domain: TrustDomain,
) -> Result<FederationRelationship, ConfigError> {
    let url = w
        .take_string("bundle_endpoint_url")?
        .filter(|u| !u.is_empty())
        .ok_or_else(|| w.missing("bundle_endpoint_url"))?;
    let bundle_endpoint_url = crate::api::trustdomain::check_bundle_endpoint_url(&url)
        .map_err(|e| w.invalid_value("bundle_endpoint_url", format!("{url:?}: {e}")))?;
    let mut profiles = w.take_blocks("bundle_endpoint_profile");
    if profiles.len() > 1 {
        return Err(w.invalid_value(
            "bundle_endpoint_profile",
            "exactly one bundle endpoint profile is expected",
        ));
    }
    let Some(p) = profiles.pop() else {
        return Err(w.missing("bundle_endpoint_profile"));
    };
    let profile = match p.labels.as_slice() {
        [name] if name == "https_web" => {
            p.body.finish(&[])?;
            BundleEndpointProfile::HttpsWeb
        }
        [name] if name == "https_spiffe" => {
            let mut body = p.body;
            let raw = body
                .take_string("endpoint_spiffe_id")?
                .ok_or_else(|| body.missing("endpoint_spiffe_id"))?;
            let endpoint_spiffe_id = SpiffeId::parse(&raw)
                .map_err(|e| body.invalid_value("endpoint_spiffe_id", format!("{raw:?}: {e}")))?;
            body.finish(&[])?;
            BundleEndpointProfile::HttpsSpiffe { endpoint_spiffe_id }
        }
        _ => {
            return Err(w.invalid_value(
                "bundle_endpoint_profile",
                "no bundle endpoint profile defined; supported profiles are \"https_spiffe\" and \"https_web\"",
            ));
        }
    };
    w.finish(&[])?;
    Ok(FederationRelationship {
        trust_domain,
        bundle_endpoint_url,
        profile,
    })
}

/// Pruning (`prune_attested_nodes_expired_for`, `prune_tofu_nodes`,
/// `prune_attested_nodes_batch_size`, `experimental.prune_events_older_than`)
/// and the entry index (`cache_reload_interval`,
/// `max_attested_node_info_staleness`, `experimental { events_based_cache,
/// cache_reload_interval, full_cache_reload_interval, event_timeout }`). The
/// rest of `experimental` is named as unsupported.
fn parse_prune_and_index(s: &mut Section) -> Result<(PruneConfig, IndexConfig), ConfigError> {
    let mut config = PruneConfig::default();
    let mut index = IndexConfig::default();
    let at_least = |sec: &Section, key: &str, d: Duration, min: Duration| {
        if d < min {
            Err(sec.invalid_value(key, format!("must be at least {min:?}")))
        } else {
            Ok(d)
        }
    };
    let ms = Duration::from_millis;
    if let Some(d) = s.take_duration("cache_reload_interval")? {
        index.poll_interval = at_least(s, "cache_reload_interval", d, ms(10))?;
    }
    if let Some(d) = s.take_duration("max_attested_node_info_staleness")? {
        index.node_staleness = d;
    }
    if let Some(block) = s.take_block("experimental")? {
        let mut exp = block.body;
        if let Some(d) = exp.take_duration("prune_events_older_than")? {
            if d < Duration::from_secs(1) {
                return Err(exp.invalid_value("prune_events_older_than", "must be at least 1s"));
            }
            config.events_older_than = d;
        }
        if let Some(events) = exp.take_bool("events_based_cache")? {
            index.mode = if events {
                IndexMode::Events
            } else {
                IndexMode::FullReload
            };
        }
        if let Some(d) = exp.take_duration("cache_reload_interval")? {
            index.poll_interval = at_least(&exp, "cache_reload_interval", d, ms(10))?;
        }
        if let Some(d) = exp.take_duration("full_cache_reload_interval")? {
            index.full_reload_interval = at_least(
                &exp,
                "full_cache_reload_interval",
                d,
                Duration::from_secs(1),
            )?;
        }
        if let Some(d) = exp.take_duration("event_timeout")? {
            index.event_timeout = at_least(&exp, "event_timeout", d, Duration::from_secs(1))?;
        }
        exp.finish(UNSUPPORTED_EXPERIMENTAL)?;
    }
    if let Some(d) = s.take_duration("prune_attested_nodes_expired_for")? {
        if d < Duration::from_secs(1) {
            return Err(s.invalid_value("prune_attested_nodes_expired_for", "must be at least 1s"));
        }
        config.attested_nodes_expired_for = Some(d);
    }
    config.tofu_nodes = s.take_bool("prune_tofu_nodes")?.unwrap_or(false);
    if let Some(n) = s.take_i64("prune_attested_nodes_batch_size")? {
        config.attested_nodes_batch_size =
            u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
                s.invalid_value(
                    "prune_attested_nodes_batch_size",
                    "must be a positive number",
                )
            })?;
    }
    if config.tofu_nodes && config.attested_nodes_expired_for.is_none() {
        return Err(s.invalid_value(
            "prune_tofu_nodes",
            "has no effect without prune_attested_nodes_expired_for",
        ));
    }
    Ok((config, index))
}

fn key_type(s: &mut Section, key: &str) -> Result<Option<KeyType>, ConfigError> {
    match s.take_string(key)? {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e: sigil_crypto::CryptoError| s.invalid_value(key, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPIRE_EXAMPLE: &str = r#"
server {
    bind_address = "127.0.0.1"
    bind_port = "8081"
    socket_path = "/tmp/spire-server/private/api.sock"
    trust_domain = "example.org"
    data_dir = "./data/server"
    log_level = "DEBUG"
    ca_ttl = "168h"
    default_x509_svid_ttl = "48h"
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "./data/server/datastore.sqlite3"
        }
    }

    NodeAttestor "join_token" {
        plugin_data {
        }
    }

    KeyManager "memory" {
        plugin_data = {}
    }
}
"#;

    #[test]
    fn spire_example_server_conf_loads() {
        let c = ServerConfig::parse(SPIRE_EXAMPLE).unwrap();
        assert_eq!(c.trust_domain.name(), "example.org");
        assert_eq!(c.bind_port, 8081);
        assert_eq!(c.ca_ttl, Duration::from_secs(168 * 3600));
        assert_eq!(c.default_x509_svid_ttl, Duration::from_secs(48 * 3600));
        assert_eq!(c.default_jwt_svid_ttl, Duration::from_secs(300));
        assert_eq!(c.ca_key_type, KeyType::EcP256);
        assert_eq!(c.plugins.len(), 3);
        assert_eq!(
            c.plugins_of("DataStore")[0].data["database_type"],
            "sqlite3"
        );
        assert_eq!(c.server_id().as_str(), "spiffe://example.org/spire/server");
    }

    #[test]
    fn jwt_key_type_follows_ca_key_type_unless_set() {
        let c = ServerConfig::parse(
            &SPIRE_EXAMPLE.replace("ca_ttl", "ca_key_type = \"ec-p384\"\n    ca_ttl"),
        )
        .unwrap();
        assert_eq!(c.ca_key_type, KeyType::EcP384);
        assert_eq!(c.jwt_key_type, KeyType::EcP384);
        let c = ServerConfig::parse(&SPIRE_EXAMPLE.replace(
            "ca_ttl",
            "ca_key_type = \"ec-p384\"\n    jwt_key_type = \"rsa-2048\"\n    ca_ttl",
        ))
        .unwrap();
        assert_eq!(c.jwt_key_type, KeyType::Rsa2048);
    }

    #[test]
    fn unknown_and_unsupported_options_are_startup_errors_naming_them() {
        let bad = SPIRE_EXAMPLE.replace("log_level = \"DEBUG\"", "log_levle = \"DEBUG\"");
        let e = ServerConfig::parse(&bad).unwrap_err().to_string();
        assert_eq!(e, "unknown option \"log_levle\" in server");
        let bad = SPIRE_EXAMPLE.replace("log_level = \"DEBUG\"", "ca_key_type_wit = \"ec-p256\"");
        let e = ServerConfig::parse(&bad).unwrap_err().to_string();
        assert_eq!(
            e,
            "option \"ca_key_type_wit\" in server is not supported by sigil yet"
        );
    }

    #[test]
    fn telemetry_and_health_checks_blocks_load_and_unsupported_sinks_are_named() {
        let c = ServerConfig::parse(&format!(
            "{SPIRE_EXAMPLE}\ntelemetry {{\n Prometheus {{\n port = 9988\n }}\n}}\nhealth_checks {{\n listener_enabled = true\n bind_port = \"8080\"\n}}\n"
        ))
        .unwrap();
        assert_eq!(c.telemetry.prometheus.unwrap().port, 9988);
        assert!(c.health_checks.listener_enabled);
        assert_eq!(c.health_checks.bind_port, 8080);
        assert_eq!(c.health_checks.ready_path, "/ready");
        let c = ServerConfig::parse(SPIRE_EXAMPLE).unwrap();
        assert!(c.telemetry.prometheus.is_none());
        assert!(!c.health_checks.listener_enabled);
        let e = ServerConfig::parse(&format!(
            "{SPIRE_EXAMPLE}\ntelemetry {{\n DogStatsd = [{{ address = \"localhost:8125\" }}]\n}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "option \"DogStatsd\" in telemetry is not supported by sigil yet"
        );
    }

    #[test]
    fn pruning_options_are_read_with_spire_defaults() {
        let c = ServerConfig::parse(SPIRE_EXAMPLE).unwrap();
        assert_eq!(c.prune, PruneConfig::default());
        assert_eq!(c.prune.events_older_than, Duration::from_secs(12 * 3600));
        assert_eq!(c.prune.attested_nodes_expired_for, None);

        let c = ServerConfig::parse(&SPIRE_EXAMPLE.replace(
            "ca_ttl",
            "prune_attested_nodes_expired_for = \"24h\"\n    prune_tofu_nodes = true\n    prune_attested_nodes_batch_size = 50\n    experimental {\n        prune_events_older_than = \"2h\"\n    }\n    ca_ttl",
        ))
        .unwrap();
        assert_eq!(
            c.prune,
            PruneConfig {
                events_older_than: Duration::from_secs(7200),
                attested_nodes_expired_for: Some(Duration::from_secs(24 * 3600)),
                tofu_nodes: true,
                attested_nodes_batch_size: 50,
            }
        );
    }

    #[test]
    fn pruning_options_that_cannot_work_are_startup_errors_naming_them() {
        let with = |extra: &str| {
            ServerConfig::parse(&SPIRE_EXAMPLE.replace("ca_ttl", &format!("{extra}\n    ca_ttl")))
                .unwrap_err()
                .to_string()
        };
        assert!(with("prune_tofu_nodes = true").contains("prune_tofu_nodes"));
        assert!(
            with("prune_attested_nodes_batch_size = 0").contains("prune_attested_nodes_batch_size")
        );
        assert!(
            with("prune_attested_nodes_expired_for = \"0s\"")
                .contains("prune_attested_nodes_expired_for")
        );
        assert!(
            with("experimental {\n prune_events_older_than = \"0s\"\n }")
                .contains("prune_events_older_than")
        );
        assert_eq!(
            with("experimental {\n auth_opa_policy_engine {}\n }"),
            "option \"auth_opa_policy_engine\" in server.experimental is not supported by sigil yet"
        );
        assert!(
            with("experimental {\n cache_reload_interval = \"1ms\"\n }")
                .contains("cache_reload_interval")
        );
        assert!(with("experimental {\n event_timeout = \"0s\"\n }").contains("event_timeout"));
    }

    #[test]
    fn entry_index_options_are_read_where_spire_puts_them() {
        let c = ServerConfig::parse(SPIRE_EXAMPLE).unwrap();
        assert_eq!(c.index, IndexConfig::default());
        let c = ServerConfig::parse(&SPIRE_EXAMPLE.replace(
            "ca_ttl",
            "cache_reload_interval = \"3s\"\n    max_attested_node_info_staleness = \"30s\"\n    ca_ttl",
        ))
        .unwrap();
        assert_eq!(c.index.poll_interval, Duration::from_secs(3));
        assert_eq!(c.index.node_staleness, Duration::from_secs(30));
        let c = ServerConfig::parse(&SPIRE_EXAMPLE.replace(
            "ca_ttl",
            "experimental {\n events_based_cache = false\n cache_reload_interval = \"7s\"\n full_cache_reload_interval = \"1h\"\n event_timeout = \"2m\"\n }\n    ca_ttl",
        ))
        .unwrap();
        assert_eq!(
            c.index,
            IndexConfig {
                mode: IndexMode::FullReload,
                poll_interval: Duration::from_secs(7),
                full_reload_interval: Duration::from_secs(3600),
                event_timeout: Duration::from_secs(120),
                node_staleness: Duration::ZERO,
            }
        );
    }

    #[test]
    fn ratelimit_is_on_by_default_each_switch_turns_off_and_unknown_keys_error() {
        let c = ServerConfig::parse(SPIRE_EXAMPLE).unwrap();
        assert_eq!(
            c.ratelimit,
            RateLimitConfig {
                attestation: true,
                signing: true
            }
        );
        let with = |block: &str| {
            ServerConfig::parse(&SPIRE_EXAMPLE.replace("log_level = \"DEBUG\"", block))
        };
        let c = with("ratelimit {\n attestation = false\n}").unwrap();
        assert_eq!(
            c.ratelimit,
            RateLimitConfig {
                attestation: false,
                signing: true
            }
        );
        let c = with("ratelimit {\n signing = false\n}").unwrap();
        assert_eq!(
            c.ratelimit,
            RateLimitConfig {
                attestation: true,
                signing: false
            }
        );
        let c = with("ratelimit {}").unwrap();
        assert_eq!(c.ratelimit, RateLimitConfig::default());
        let e = with("ratelimit {\n attestaton = false\n}")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown option \"attestaton\" in server.ratelimit");
        let e = with("ratelimit {\n signing = \"no\"\n}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("signing"), "{e}");
    }

    #[test]
    fn bad_values_name_the_option() {
        let bad = SPIRE_EXAMPLE.replace("\"example.org\"", "\"Example.org\"");
        let e = ServerConfig::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("trust_domain"), "{e}");
        let bad = SPIRE_EXAMPLE.replace("ca_ttl = \"168h\"", "ca_key_type = \"ec-p521\"");
        let e = ServerConfig::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("ca_key_type") && e.contains("ec-p521"), "{e}");
        let bad = SPIRE_EXAMPLE.replace("data_dir = \"./data/server\"", "");
        let e = ServerConfig::parse(&bad).unwrap_err().to_string();
        assert_eq!(e, "\"data_dir\" must be set in server");
    }

    fn with_federation(federation: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::parse(&SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            &format!("log_level = \"DEBUG\"\n    federation {{\n{federation}\n    }}"),
        ))
    }

    #[test]
    fn spire_federation_example_loads_with_https_spiffe_endpoint() {
        let c = with_federation(
            r#"
        bundle_endpoint {
            address = "127.0.0.1"
            port = 8443
            refresh_hint = "10m"
            profile "https_spiffe" {}
        }
        federates_with "domain2.test" {
            bundle_endpoint_url = "https://5.6.7.8:8443"
            bundle_endpoint_profile "https_spiffe" {
                endpoint_spiffe_id = "spiffe://domain2.test/beserver"
            }
        }
        federates_with "domain1.test" {
            bundle_endpoint_url = "https://1.2.3.4:8443"
            bundle_endpoint_profile "https_web" {}
        }"#,
        )
        .unwrap();
        let be = c.federation.bundle_endpoint.unwrap();
        assert_eq!(be.address, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(be.port, 8443);
        assert_eq!(be.refresh_hint, Duration::from_secs(600));
        let rels = &c.federation.federates_with;
        assert_eq!(rels.len(), 2);
        assert_eq!(rels[0].trust_domain.name(), "domain1.test");
        assert_eq!(rels[0].bundle_endpoint_url, "https://1.2.3.4:8443");
        assert_eq!(rels[0].profile, BundleEndpointProfile::HttpsWeb);
        assert_eq!(rels[1].trust_domain.name(), "domain2.test");
        assert_eq!(
            rels[1].profile,
            BundleEndpointProfile::HttpsSpiffe {
                endpoint_spiffe_id: SpiffeId::parse("spiffe://domain2.test/beserver").unwrap()
            }
        );
    }

    #[test]
    fn bundle_endpoint_defaults_to_all_addresses_port_8443_and_a_5m_hint() {
        let c = with_federation("bundle_endpoint {}").unwrap();
        let be = c.federation.bundle_endpoint.unwrap();
        assert_eq!(be.address, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(be.port, 8443);
        assert_eq!(be.refresh_hint, DEFAULT_REFRESH_HINT);
        let c = with_federation("").unwrap();
        assert_eq!(c.federation, FederationConfig::default());
        assert_eq!(
            ServerConfig::parse(SPIRE_EXAMPLE).unwrap().federation,
            FederationConfig::default()
        );
    }

    #[test]
    fn https_web_acme_profile_loads_with_spire_defaults() {
        let c = with_federation(
            r#"bundle_endpoint {
                profile "https_web" {
                    acme {
                        domain_name = "example.org"
                        email = "some@mail.com"
                    }
                }
            }"#,
        )
        .unwrap();
        let be = c.federation.bundle_endpoint.unwrap();
        assert_eq!(
            be.profile,
            EndpointServingProfile::Acme(BundleEndpointAcme {
                domain_name: "example.org".into(),
                directory_url: "https://acme-v02.api.letsencrypt.org/directory".into(),
                email: "some@mail.com".into(),
                tos_accepted: false,
            })
        );
        let c = with_federation(
            r#"bundle_endpoint {
                profile "https_web" {
                    acme {
                        domain_name = "example.org"
                        directory_url = "https://127.0.0.1:14000/dir"
                        tos_accepted = true
                    }
                }
            }"#,
        )
        .unwrap();
        let EndpointServingProfile::Acme(acme) = c.federation.bundle_endpoint.unwrap().profile
        else {
            panic!("acme profile expected");
        };
        assert_eq!(acme.directory_url, "https://127.0.0.1:14000/dir");
        assert!(acme.tos_accepted);
        assert_eq!(acme.email, "");
    }

    #[test]
    fn deprecated_bundle_endpoint_acme_still_loads_and_needs_an_email() {
        let c = with_federation(
            r#"bundle_endpoint {
                acme {
                    domain_name = "example.org"
                    email = "some@mail.com"
                    tos_accepted = true
                }
            }"#,
        )
        .unwrap();
        assert!(matches!(
            c.federation.bundle_endpoint.unwrap().profile,
            EndpointServingProfile::Acme(BundleEndpointAcme {
                tos_accepted: true,
                ..
            })
        ));
        let e =
            with_federation("bundle_endpoint {\n acme {\n domain_name = \"example.org\"\n }\n }")
                .unwrap_err()
                .to_string();
        assert_eq!(
            e,
            "\"email\" must be set in server.federation.bundle_endpoint.acme"
        );
        let e = with_federation(
            r#"bundle_endpoint {
                acme {
                    domain_name = "example.org"
                    email = "a@b.c"
                }
                profile "https_spiffe" {}
            }"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("either bundle endpoint 'acme' or 'profile' can be set, but not both"),
            "{e}"
        );
    }

    #[test]
    fn https_web_serving_cert_file_loads_with_a_1h_default_sync_interval() {
        let c = with_federation(
            r#"bundle_endpoint {
                profile "https_web" {
                    serving_cert_file {
                        cert_file_path = "/certs/cert.pem"
                        key_file_path = "/certs/key.pem"
                    }
                }
            }"#,
        )
        .unwrap();
        assert_eq!(
            c.federation.bundle_endpoint.unwrap().profile,
            EndpointServingProfile::ServingCertFile(ServingCertFile {
                cert_file_path: "/certs/cert.pem".into(),
                key_file_path: "/certs/key.pem".into(),
                file_sync_interval: Duration::from_secs(3600),
            })
        );
        let c = with_federation(
            r#"bundle_endpoint {
                profile "https_web" {
                    serving_cert_file {
                        cert_file_path = "/c.pem"
                        key_file_path = "/k.pem"
                        file_sync_interval = "1m"
                    }
                }
            }"#,
        )
        .unwrap();
        let EndpointServingProfile::ServingCertFile(f) =
            c.federation.bundle_endpoint.unwrap().profile
        else {
            panic!("serving_cert_file expected");
        };
        assert_eq!(f.file_sync_interval, Duration::from_secs(60));
    }

    #[test]
    fn https_web_errors_name_the_missing_or_conflicting_option() {
        let web = |body: &str| {
            with_federation(&format!(
                "bundle_endpoint {{\n profile \"https_web\" {{\n{body}\n}}\n}}"
            ))
            .unwrap_err()
            .to_string()
        };
        let e = web("");
        assert!(
            e.contains("'acme' or 'serving_cert_file' is required"),
            "{e}"
        );
        let e = web(
            "acme {\n domain_name = \"a.org\"\n }\n serving_cert_file {\n cert_file_path = \"/c\"\n key_file_path = \"/k\"\n }",
        );
        assert!(e.contains("mutually exclusive"), "{e}");
        let e = web("acme {\n email = \"a@b.c\"\n }");
        assert!(e.starts_with("\"domain_name\" must be set in "), "{e}");
        let e = web("acme {\n domain_name = \"a.org\"\n directory_url = \"http://ca/dir\"\n }");
        assert!(
            e.contains("\"directory_url\"") && e.contains("https://"),
            "{e}"
        );
        let e = web("acme {\n domain_name = \"a.org\"\n colour = \"blue\"\n }");
        assert!(e.contains("unknown option \"colour\""), "{e}");
        let e = web("serving_cert_file {\n key_file_path = \"/k\"\n }");
        assert!(e.starts_with("\"cert_file_path\" must be set in "), "{e}");
        let e = web("serving_cert_file {\n cert_file_path = \"/c\"\n }");
        assert!(e.starts_with("\"key_file_path\" must be set in "), "{e}");
        let e = web(
            "serving_cert_file {\n cert_file_path = \"/c\"\n key_file_path = \"/k\"\n file_sync_interval = \"often\"\n }",
        );
        assert!(e.contains("\"file_sync_interval\""), "{e}");
    }

    #[test]
    fn federates_with_errors_name_the_trust_domain_and_option() {
        let cases = [
            (
                r#"federates_with "b.org" {
                    bundle_endpoint_profile "https_web" {}
                }"#,
                "\"bundle_endpoint_url\" must be set in server.federation.federates_with \"b.org\"",
            ),
            (
                r#"federates_with "b.org" {
                    bundle_endpoint_url = "http://b.org"
                    bundle_endpoint_profile "https_web" {}
                }"#,
                "invalid value for \"bundle_endpoint_url\" in server.federation.federates_with \"b.org\": \"http://b.org\": bundle endpoint URL must use the https scheme",
            ),
            (
                r#"federates_with "b.org" { bundle_endpoint_url = "https://b.org" }"#,
                "\"bundle_endpoint_profile\" must be set in server.federation.federates_with \"b.org\"",
            ),
            (
                r#"federates_with "b.org" {
                    bundle_endpoint_url = "https://b.org"
                    bundle_endpoint_profile "https_spiffe" {}
                }"#,
                "\"endpoint_spiffe_id\" must be set in server.federation.federates_with \"b.org\".bundle_endpoint_profile \"https_spiffe\"",
            ),
            (
                r#"federates_with "b.org" {
                    bundle_endpoint_url = "https://b.org"
                    bundle_endpoint_profile "https_spiffe" {
                        endpoint_spiffe_id = "b.org/server"
                    }
                }"#,
                "endpoint_spiffe_id",
            ),
            (
                r#"federates_with "b.org" {
                    bundle_endpoint_url = "https://b.org"
                    bundle_endpoint_profile "https_web" {
                        endpoint_spiffe_id = "spiffe://b.org/x"
                    }
                }"#,
                "unknown option \"endpoint_spiffe_id\" in server.federation.federates_with \"b.org\".bundle_endpoint_profile \"https_web\"",
            ),
            (
                r#"federates_with "b.org" {
                    bundle_endpoint_url = "https://b.org"
                    bundle_endpoint_profile "https_other" {}
                }"#,
                "no bundle endpoint profile defined",
            ),
            (
                r#"federates_with "B.org" {
                    bundle_endpoint_url = "https://b.org"
                    bundle_endpoint_profile "https_web" {}
                }"#,
                "invalid value for \"federates_with\" in server.federation: \"B.org\"",
            ),
            (
                r#"federates_with "example.org" {
                    bundle_endpoint_url = "https://b.org"
                    bundle_endpoint_profile "https_web" {}
                }"#,
                "\"example.org\" is this server's own trust domain",
            ),
            (
                r#"federates_with "b.org" {
                    bundle_endpoint_url = "https://b.org"
                    bundle_endpoint_profile "https_web" {}
                }
                federates_with "b.org" {
                    bundle_endpoint_url = "https://b.org"
                    bundle_endpoint_profile "https_web" {}
                }"#,
                "block \"federates_with \\\"b.org\\\"\" appears more than once in server.federation",
            ),
            (
                "bundle_endpont {}",
                "unknown option \"bundle_endpont\" in server.federation",
            ),
        ];
        for (text, want) in cases {
            let e = with_federation(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}\n  got:  {e}\n  want: {want}");
        }
    }

    fn with_pod_certificates(body: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::parse(&SPIRE_EXAMPLE.replace(
            "log_level = \"DEBUG\"",
            &format!("log_level = \"DEBUG\"\n    pod_certificates {{\n{body}\n    }}"),
        ))
    }

    #[test]
    fn pod_certificates_block_loads_with_defaults() {
        let c = with_pod_certificates(r#"signer_name = "spiffe.io/x509-svid""#).unwrap();
        let p = c.pod_certificates.unwrap();
        assert_eq!(p.signer_name.as_str(), "spiffe.io/x509-svid");
        assert_eq!(p.kube_config_file, "");
        assert!(!p.default_spiffe_id);
        assert_eq!(p.class_name, "");
        assert_eq!(p.trust_bundle_name, "spiffe.io:x509-svid:example.org");
        assert!(
            ServerConfig::parse(SPIRE_EXAMPLE)
                .unwrap()
                .pod_certificates
                .is_none()
        );
        let c = with_pod_certificates(
            r#"signer_name = "sigil.example.com/svid"
            kube_config_file = "/etc/kubeconfig"
            default_spiffe_id = true
            class_name = "sigil"
            cluster_name = "prod"
            cluster_domain = "cluster.local"
            trust_bundle_name = "prod""#,
        )
        .unwrap();
        let p = c.pod_certificates.unwrap();
        assert_eq!(p.kube_config_file, "/etc/kubeconfig");
        assert!(p.default_spiffe_id);
        assert_eq!(p.class_name, "sigil");
        assert_eq!(p.cluster_name, "prod");
        assert_eq!(p.cluster_domain, "cluster.local");
        assert_eq!(p.trust_bundle_name, "sigil.example.com:svid:prod");
    }

    #[test]
    fn pod_certificates_errors_name_the_option() {
        let cases = [
            ("", "\"signer_name\" must be set in server.pod_certificates"),
            (
                r#"signer_name = "kubernetes.io/x509""#,
                "invalid value for \"signer_name\" in server.pod_certificates: \"kubernetes.io/x509\" is reserved",
            ),
            (
                r#"signer_name = "x509-svid""#,
                "invalid value for \"signer_name\" in server.pod_certificates",
            ),
            (
                r#"signer_name = "spiffe.io/x509-svid"
                trust_bundle_name = "Bad_Name""#,
                "invalid value for \"trust_bundle_name\" in server.pod_certificates",
            ),
            (
                r#"signer_name = "spiffe.io/x509-svid"
                default_spiffe_id = "yes""#,
                "default_spiffe_id",
            ),
            (
                r#"signer_name = "spiffe.io/x509-svid"
                signer = "x""#,
                "unknown option \"signer\" in server.pod_certificates",
            ),
        ];
        for (body, want) in cases {
            let e = with_pod_certificates(body).unwrap_err().to_string();
            assert!(e.contains(want), "{body}\n  got:  {e}\n  want: {want}");
        }
    }
}
