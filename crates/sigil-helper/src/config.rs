//! spiffe-helper's configuration file, read unchanged.
//!
//! The options, their defaults and their validation rules are
//! spiffe-helper's (`cmd/spiffe-helper/config`): the same names, the same
//! checks in the same order, the same defaults (`daemon_mode = true`, modes
//! `0644`/`0600`/`0600`/`0600`, health port 8081 on `/live` and `/ready`,
//! agent address from `SPIFFE_ENDPOINT_SOCKET` or
//! `/tmp/spire-agent/public/api.sock`). A few mistakes spiffe-helper only
//! finds when it first acts on them are refused at startup here, naming the
//! option: an unknown `renew_signal`, `cmd_args` that cannot be split, a
//! file mode with bits beyond `0777`, an agent address that is not a Unix
//! socket, and unknown keys inside `health_checks`.
//!
//! HCL 1, which spiffe-helper parses, reads an integer written with a
//! leading zero (`0644`) as octal; so does this module for the four file
//! modes, the only integers where it matters.
//!
//! This module turns text into a [`HelperConfig`]; it performs no I/O
//! beyond reading the file and never talks to the agent.

use std::path::{Path, PathBuf};

use sigil_cli::{ConfigError, Section};

use crate::cmd_args::{CmdArgsError, split_cmd_args};
use crate::signal::{RenewSignal, UnknownSignal};

/// Where spiffe-helper looks for the agent when neither `agent_address` nor
/// `SPIFFE_ENDPOINT_SOCKET` says.
pub const DEFAULT_AGENT_ADDRESS: &str = "/tmp/spire-agent/public/api.sock";
/// Default `cert_file_mode` (certificates and the bundle).
pub const DEFAULT_CERT_FILE_MODE: u32 = 0o644;
/// Default `key_file_mode`.
pub const DEFAULT_KEY_FILE_MODE: u32 = 0o600;
/// Default `jwt_bundle_file_mode`.
pub const DEFAULT_JWT_BUNDLE_FILE_MODE: u32 = 0o600;
/// Default `jwt_svid_file_mode`.
pub const DEFAULT_JWT_SVID_FILE_MODE: u32 = 0o600;
/// Default `health_checks.bind_port`.
pub const DEFAULT_BIND_PORT: u16 = 8081;
/// Default `health_checks.liveness_path`.
pub const DEFAULT_LIVENESS_PATH: &str = "/live";
/// Default `health_checks.readiness_path`.
pub const DEFAULT_READINESS_PATH: &str = "/ready";

/// The four mode options, which HCL 1 reads as octal when written `0NNN`.
const MODE_KEYS: [&str; 4] = [
    "cert_file_mode",
    "key_file_mode",
    "jwt_bundle_file_mode",
    "jwt_svid_file_mode",
];

/// Why the configuration cannot be used. Each names the option.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelperConfigError {
    /// The file cannot be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Syntax, an unknown option or a value of the wrong type.
    #[error(transparent)]
    Hcl(#[from] ConfigError),
    /// An entry of `jwt_svids` lacks a required key.
    #[error("'{key}' is required in 'jwt_svids' (entry {index})")]
    JwtSvidMissing {
        /// The entry (0-based, as spiffe-helper counts).
        index: usize,
        /// `jwt_svid_file_name` or `jwt_audience`.
        key: &'static str,
    },
    /// An entry of `jwt_svids` is not an object.
    #[error(
        "'jwt_svids' entry {index} must be an object {{ jwt_audience = ..., jwt_svid_file_name = ... }}"
    )]
    JwtSvidNotObject {
        /// The entry.
        index: usize,
    },
    /// `pid_file_name` in one-shot mode.
    #[error(
        "pid_file_name is set but daemon_mode is false. pid_file_name is only supported in daemon_mode"
    )]
    PidFileWithoutDaemon,
    /// `pid_file_name` without `renew_signal`.
    #[error("must specify renew_signal when using pid_file_name")]
    PidFileWithoutSignal,
    /// Some but not all of the three X.509 file names.
    #[error(
        "all or none of 'svid_file_name', 'svid_key_file_name', 'svid_bundle_file_name' must be specified"
    )]
    PartialX509,
    /// Nothing to write.
    #[error(
        "at least one of the sets ('svid_file_name', 'svid_key_file_name', 'svid_bundle_file_name'), 'jwt_svids', or 'jwt_bundle_file_name' must be fully specified"
    )]
    NothingToWrite,
    /// A negative file mode.
    #[error("{key} must be positive")]
    NegativeMode {
        /// The option.
        key: &'static str,
    },
    /// A file mode with bits beyond the permission bits.
    #[error("{key} = {mode:#o} has bits beyond 0777; only permission bits can be set")]
    ModeOutOfRange {
        /// The option.
        key: &'static str,
        /// The value.
        mode: i64,
    },
    /// A negative or too large health port.
    #[error("health_checks.bind_port must be positive and at most 65535, not {0}")]
    BindPort(i64),
    /// An unknown `renew_signal`.
    #[error("renew_signal: {0}")]
    Signal(#[from] UnknownSignal),
    /// `cmd_args` cannot be split.
    #[error("cmd_args: {0}")]
    CmdArgs(#[from] CmdArgsError),
    /// `agent_address` (or `SPIFFE_ENDPOINT_SOCKET`) is not a Unix socket
    /// path.
    #[error("agent_address: {0}")]
    AgentAddress(#[from] sigil_workload_client::AddressError),
}

/// The three X.509 file names (all or none are set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509FileNames {
    /// `svid_file_name`: the certificate chain.
    pub svid: String,
    /// `svid_key_file_name`: the private key.
    pub key: String,
    /// `svid_bundle_file_name`: the trust bundle.
    pub bundle: String,
}

/// One entry of `jwt_svids`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSvidConfig {
    /// `jwt_audience`.
    pub audience: String,
    /// `jwt_extra_audiences`.
    pub extra_audiences: Vec<String>,
    /// `jwt_svid_file_name`.
    pub file_name: String,
}

/// The file modes, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileModes {
    /// `cert_file_mode`: the certificate chain and the bundle.
    pub cert: u32,
    /// `key_file_mode`.
    pub key: u32,
    /// `jwt_bundle_file_mode`.
    pub jwt_bundle: u32,
    /// `jwt_svid_file_mode`.
    pub jwt_svid: u32,
}

/// `health_checks` with `listener_enabled = true`, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// `bind_port`.
    pub bind_port: u16,
    /// `liveness_path`.
    pub liveness_path: String,
    /// `readiness_path`.
    pub readiness_path: String,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperConfig {
    /// The agent's Workload API socket.
    pub agent_socket: PathBuf,
    /// `cmd`, when set (and daemon mode is on).
    pub cmd: Option<String>,
    /// `cmd_args`, split.
    pub cmd_args: Vec<String>,
    /// `pid_file_name`.
    pub pid_file_name: Option<PathBuf>,
    /// `cert_dir` (empty: the current directory).
    pub cert_dir: PathBuf,
    /// `daemon_mode`, after the `-daemon-mode` flag.
    pub daemon_mode: bool,
    /// `add_intermediates_to_bundle`.
    pub add_intermediates_to_bundle: bool,
    /// `include_federated_domains`.
    pub include_federated_domains: bool,
    /// `omit_expired`.
    pub omit_expired: bool,
    /// `renew_signal`.
    pub renew_signal: Option<RenewSignal>,
    /// The X.509 files, when all three names are set.
    pub x509: Option<X509FileNames>,
    /// `jwt_svids`.
    pub jwt_svids: Vec<JwtSvidConfig>,
    /// `jwt_bundle_file_name`.
    pub jwt_bundle_file_name: Option<String>,
    /// The file modes.
    pub modes: FileModes,
    /// `hint` (empty: the first SVID).
    pub hint: Option<String>,
    /// The health listener, when enabled.
    pub health: Option<HealthConfig>,
    /// Things spiffe-helper warns about and ignores (in one-shot mode).
    pub warnings: Vec<String>,
}

impl HelperConfig {
    /// Reads and validates `path`. `daemon_mode_flag` is the `-daemon-mode`
    /// flag when given; `endpoint_env` is `SPIFFE_ENDPOINT_SOCKET`.
    pub fn load(
        path: &Path,
        daemon_mode_flag: Option<bool>,
        endpoint_env: Option<&str>,
    ) -> Result<Self, HelperConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| HelperConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, daemon_mode_flag, endpoint_env)
    }

    /// Validates configuration text (see [`HelperConfig::load`]).
    pub fn parse(
        text: &str,
        daemon_mode_flag: Option<bool>,
        endpoint_env: Option<&str>,
    ) -> Result<Self, HelperConfigError> {
        let octal = octal_modes(text);
        let mut top = Section::parse(text)?;

        let agent_address = top.take_string("agent_address")?.unwrap_or_default();
        let cmd = top.take_string("cmd")?.unwrap_or_default();
        let cmd_args = top.take_string("cmd_args")?.unwrap_or_default();
        let pid_file_name = top.take_string("pid_file_name")?.unwrap_or_default();
        let cert_dir = top.take_string("cert_dir")?.unwrap_or_default();
        let daemon_mode = top.take_bool("daemon_mode")?;
        let add_intermediates_to_bundle = top
            .take_bool("add_intermediates_to_bundle")?
            .unwrap_or(false);
        let include_federated_domains =
            top.take_bool("include_federated_domains")?.unwrap_or(false);
        let omit_expired = top.take_bool("omit_expired")?.unwrap_or(false);
        let renew_signal = top.take_string("renew_signal")?.unwrap_or_default();
        let hint = top.take_string("hint")?.unwrap_or_default();
        let svid = top.take_string("svid_file_name")?.unwrap_or_default();
        let key = top.take_string("svid_key_file_name")?.unwrap_or_default();
        let bundle = top
            .take_string("svid_bundle_file_name")?
            .unwrap_or_default();
        let jwt_bundle = top.take_string("jwt_bundle_file_name")?.unwrap_or_default();
        let mut raw_modes = [0i64; 4];
        for (slot, key) in raw_modes.iter_mut().zip(MODE_KEYS) {
            let value = top.take_i64(key)?;
            *slot = octal
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .or(value)
                .unwrap_or(0);
        }
        let jwt_svids = take_jwt_svids(&mut top)?;
        let health = take_health(&mut top)?;
        top.finish(&[])?;

        // From here on, spiffe-helper's ValidateConfig, in its order.
        for (index, j) in jwt_svids.iter().enumerate() {
            if j.file_name.is_empty() {
                return Err(HelperConfigError::JwtSvidMissing {
                    index,
                    key: "jwt_svid_file_name",
                });
            }
            if j.audience.is_empty() {
                return Err(HelperConfigError::JwtSvidMissing {
                    index,
                    key: "jwt_audience",
                });
            }
        }

        let agent_address = if !agent_address.is_empty() {
            agent_address
        } else {
            match endpoint_env {
                Some(env) if !env.is_empty() => env.to_owned(),
                _ => DEFAULT_AGENT_ADDRESS.to_owned(),
            }
        };
        let agent_socket = sigil_workload_client::parse_address(&agent_address)?;

        let daemon_mode = daemon_mode_flag.or(daemon_mode).unwrap_or(true);
        let mut warnings = Vec::new();
        if !daemon_mode {
            if !cmd.is_empty() {
                warnings
                    .push("cmd is set but daemon_mode is false. cmd will be ignored.".to_owned());
            }
            if !renew_signal.is_empty() {
                warnings.push(
                    "renew_signal is set but daemon_mode is false. renew_signal will be ignored."
                        .to_owned(),
                );
            }
            if !pid_file_name.is_empty() {
                return Err(HelperConfigError::PidFileWithoutDaemon);
            }
        }
        if !pid_file_name.is_empty() && renew_signal.is_empty() {
            return Err(HelperConfigError::PidFileWithoutSignal);
        }

        let set = [&svid, &key, &bundle]
            .iter()
            .filter(|s| !s.is_empty())
            .count();
        let x509 = match set {
            0 => None,
            3 => Some(X509FileNames { svid, key, bundle }),
            _ => return Err(HelperConfigError::PartialX509),
        };
        if x509.is_none() && jwt_bundle.is_empty() && jwt_svids.is_empty() {
            return Err(HelperConfigError::NothingToWrite);
        }

        let defaults = [
            DEFAULT_CERT_FILE_MODE,
            DEFAULT_KEY_FILE_MODE,
            DEFAULT_JWT_BUNDLE_FILE_MODE,
            DEFAULT_JWT_SVID_FILE_MODE,
        ];
        let mut modes = [0u32; 4];
        for (((slot, key), raw), default) in
            modes.iter_mut().zip(MODE_KEYS).zip(raw_modes).zip(defaults)
        {
            *slot = file_mode(key, raw, default)?;
        }

        // Checked at startup rather than at the first renewal.
        let renew_signal = if renew_signal.is_empty() {
            None
        } else {
            Some(RenewSignal::from_name(&renew_signal)?)
        };
        let cmd = (!cmd.is_empty() && daemon_mode).then_some(cmd);
        let cmd_args = if cmd.is_some() {
            split_cmd_args(&cmd_args)?
        } else {
            Vec::new()
        };

        Ok(HelperConfig {
            agent_socket,
            cmd,
            cmd_args,
            pid_file_name: (!pid_file_name.is_empty()).then(|| PathBuf::from(pid_file_name)),
            cert_dir: PathBuf::from(cert_dir),
            daemon_mode,
            add_intermediates_to_bundle,
            include_federated_domains,
            omit_expired,
            renew_signal,
            x509,
            jwt_svids,
            jwt_bundle_file_name: (!jwt_bundle.is_empty()).then_some(jwt_bundle),
            modes: FileModes {
                cert: modes[0],
                key: modes[1],
                jwt_bundle: modes[2],
                jwt_svid: modes[3],
            },
            hint: (!hint.is_empty()).then_some(hint),
            health: health.filter(|_| daemon_mode),
            warnings,
        })
    }

    /// Where a file named `name` in `cert_dir` goes (spiffe-helper joins
    /// them: an absolute `name` still lands under a non-empty `cert_dir`).
    pub fn file_path(&self, name: &str) -> PathBuf {
        if self.cert_dir.as_os_str().is_empty() {
            PathBuf::from(name)
        } else {
            self.cert_dir.join(name.trim_start_matches('/'))
        }
    }
}

fn file_mode(key: &'static str, raw: i64, default: u32) -> Result<u32, HelperConfigError> {
    if raw < 0 {
        return Err(HelperConfigError::NegativeMode { key });
    }
    if raw == 0 {
        return Ok(default);
    }
    if raw > 0o777 {
        return Err(HelperConfigError::ModeOutOfRange { key, mode: raw });
    }
    // In range: 1..=0o777 fits u32.
    Ok(u32::try_from(raw).unwrap_or(default))
}

/// The mode options written with a leading zero, read as octal (HCL 1's
/// rule). `None` for any option HCL 2 already reads right.
fn octal_modes(text: &str) -> Vec<(&'static str, i64)> {
    let Ok(body) = hcl::edit::parser::parse_body(text) else {
        // The syntax error is reported by the main parse.
        return Vec::new();
    };
    let mut out = Vec::new();
    for key in MODE_KEYS {
        let Some(attr) = body.get_attribute(key) else {
            continue;
        };
        let hcl::edit::expr::Expression::Number(n) = &attr.value else {
            continue;
        };
        let Some(repr) = n.as_repr() else { continue };
        let repr: &str = repr;
        let digits = repr.trim();
        if digits.len() > 1
            && digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(v) = i64::from_str_radix(&digits[1..], 8)
        {
            out.push((key, v));
        }
    }
    out
}

fn take_jwt_svids(top: &mut Section) -> Result<Vec<JwtSvidConfig>, HelperConfigError> {
    let mut sections = Vec::new();
    match top.take_value("jwt_svids") {
        None => {}
        Some(hcl::Value::Array(items)) => {
            for (index, item) in items.into_iter().enumerate() {
                match item {
                    hcl::Value::Object(map) => {
                        sections.push(Section::from_object(format!("jwt_svids[{index}]"), map))
                    }
                    _ => return Err(HelperConfigError::JwtSvidNotObject { index }),
                }
            }
        }
        Some(hcl::Value::Object(map)) => {
            sections.push(Section::from_object("jwt_svids[0]", map));
        }
        Some(_) => return Err(HelperConfigError::JwtSvidNotObject { index: 0 }),
    }
    // HCL 1 also reads repeated `jwt_svids { ... }` blocks as the list.
    for block in top.take_blocks("jwt_svids") {
        sections.push(block.body);
    }
    let mut out = Vec::new();
    for mut s in sections {
        let audience = s.take_string("jwt_audience")?.unwrap_or_default();
        let extra_audiences = s
            .take_string_list("jwt_extra_audiences")?
            .unwrap_or_default();
        let file_name = s.take_string("jwt_svid_file_name")?.unwrap_or_default();
        s.finish(&[])?;
        out.push(JwtSvidConfig {
            audience,
            extra_audiences,
            file_name,
        });
    }
    Ok(out)
}

fn take_health(top: &mut Section) -> Result<Option<HealthConfig>, HelperConfigError> {
    let mut section = match (
        top.take_block("health_checks")?,
        top.take_value("health_checks"),
    ) {
        (Some(block), None) => block.body,
        (None, Some(hcl::Value::Object(map))) => Section::from_object("health_checks", map),
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(ConfigError::Duplicate {
                path: top.path().to_owned(),
                key: "health_checks".to_owned(),
            }
            .into());
        }
        (None, Some(other)) => {
            return Err(top
                .invalid_value(
                    "health_checks",
                    format!("expected a block or an object, found {other}"),
                )
                .into());
        }
    };
    let enabled = section.take_bool("listener_enabled")?.unwrap_or(false);
    let bind_port = section.take_i64("bind_port")?.unwrap_or(0);
    let liveness_path = section.take_string("liveness_path")?.unwrap_or_default();
    let readiness_path = section.take_string("readiness_path")?.unwrap_or_default();
    section.finish(&[])?;
    if !enabled {
        return Ok(None);
    }
    let bind_port = match bind_port {
        0 => DEFAULT_BIND_PORT,
        n => u16::try_from(n).map_err(|_| HelperConfigError::BindPort(n))?,
    };
    Ok(Some(HealthConfig {
        bind_port,
        liveness_path: if liveness_path.is_empty() {
            DEFAULT_LIVENESS_PATH.to_owned()
        } else {
            liveness_path
        },
        readiness_path: if readiness_path.is_empty() {
            DEFAULT_READINESS_PATH.to_owned()
        } else {
            readiness_path
        },
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const X509: &str = r#"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
"#;

    fn parse(text: &str) -> Result<HelperConfig, HelperConfigError> {
        HelperConfig::parse(text, None, None)
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("must be refused").to_string()
    }

    #[test]
    fn defaults_are_spiffe_helpers() {
        let c = parse(X509).unwrap();
        assert_eq!(c.agent_socket, PathBuf::from(DEFAULT_AGENT_ADDRESS));
        assert!(c.daemon_mode);
        assert_eq!(
            c.modes,
            FileModes {
                cert: 0o644,
                key: 0o600,
                jwt_bundle: 0o600,
                jwt_svid: 0o600
            }
        );
        assert_eq!(c.cmd, None);
        assert!(c.cmd_args.is_empty());
        assert_eq!(c.renew_signal, None);
        assert_eq!(c.health, None);
        assert_eq!(c.hint, None);
        assert!(!c.add_intermediates_to_bundle && !c.include_federated_domains && !c.omit_expired);
        assert_eq!(c.file_path("svid.pem"), PathBuf::from("svid.pem"));
    }

    #[test]
    fn spiffe_endpoint_socket_is_used_when_agent_address_is_unset() {
        let c = HelperConfig::parse(X509, None, Some("unix:///run/agent.sock")).unwrap();
        assert_eq!(c.agent_socket, PathBuf::from("/run/agent.sock"));
        let text = format!("agent_address = \"/tmp/a.sock\"\n{X509}");
        let c = HelperConfig::parse(&text, None, Some("unix:///run/agent.sock")).unwrap();
        assert_eq!(c.agent_socket, PathBuf::from("/tmp/a.sock"));
        assert!(err(&format!("agent_address = \"rel/a.sock\"\n{X509}")).contains("agent_address"));
    }

    #[test]
    fn readme_example_parses_with_octal_modes_and_split_args() {
        let text = r#"
agent_address = "/tmp/spire-agent/public/api.sock"
cmd = "ghostunnel"
cmd_args = "server --listen localhost:8002 --target localhost:8001 --keystore certs/svid_key.pem --cacert certs/svid_bundle.pem --allow-uri-san spiffe://example.org/Database"
cert_dir = "certs"
renew_signal = "SIGUSR1"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
jwt_svids = [{jwt_audience="your-audience",jwt_extra_audiences=["your-extra-audience-1", "your-extra-audience-2"], jwt_svid_file_name="jwt_svid.token"}]
jwt_bundle_file_name = "bundle.json"
cert_file_mode = 0444
key_file_mode = 0444
jwt_bundle_file_mode = 0444
jwt_svid_file_mode = 0444
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.cmd.as_deref(), Some("ghostunnel"));
        assert_eq!(c.cmd_args.len(), 11);
        assert_eq!(c.cmd_args[0], "server");
        assert_eq!(c.renew_signal.map(|s| s.name()), Some("SIGUSR1"));
        assert_eq!(
            c.modes,
            FileModes {
                cert: 0o444,
                key: 0o444,
                jwt_bundle: 0o444,
                jwt_svid: 0o444
            }
        );
        assert_eq!(
            c.jwt_svids,
            [JwtSvidConfig {
                audience: "your-audience".into(),
                extra_audiences: vec![
                    "your-extra-audience-1".into(),
                    "your-extra-audience-2".into()
                ],
                file_name: "jwt_svid.token".into(),
            }]
        );
        assert_eq!(c.jwt_bundle_file_name.as_deref(), Some("bundle.json"));
        assert_eq!(c.file_path("svid.pem"), PathBuf::from("certs/svid.pem"));
    }

    #[test]
    fn a_mode_without_a_leading_zero_is_decimal_as_in_hcl1() {
        let c = parse(&format!("cert_file_mode = 420\n{X509}")).unwrap();
        assert_eq!(c.modes.cert, 0o644);
    }

    #[test]
    fn each_validation_rule_is_an_error_naming_what_is_wrong() {
        assert!(err("").contains("at least one of the sets"));
        assert!(err("svid_file_name = \"a\"").contains("all or none"));
        assert!(
            err(&format!("jwt_svids = [{{jwt_audience = \"a\"}}]\n{X509}"))
                .contains("'jwt_svid_file_name' is required")
        );
        assert!(
            err(&format!(
                "jwt_svids = [{{jwt_svid_file_name = \"t\"}}]\n{X509}"
            ))
            .contains("'jwt_audience' is required")
        );
        assert!(
            err(&format!(
                "pid_file_name = \"p\"\nrenew_signal = \"SIGHUP\"\ndaemon_mode = false\n{X509}"
            ))
            .contains("pid_file_name is only supported in daemon_mode")
        );
        assert!(
            err(&format!("pid_file_name = \"p\"\n{X509}"))
                .contains("must specify renew_signal when using pid_file_name")
        );
        assert!(
            err(&format!("cert_file_mode = -1\n{X509}"))
                .contains("cert_file_mode must be positive")
        );
        assert!(
            err(&format!("key_file_mode = -1\n{X509}")).contains("key_file_mode must be positive")
        );
        assert!(err(&format!("key_file_mode = 04755\n{X509}")).contains("beyond 0777"));
        assert!(err(&format!("renew_signal = \"USR1\"\n{X509}")).contains("renew_signal"));
        assert!(
            err(&format!(
                "cmd = \"sh\"\ncmd_args = \"-c \\\"unterminated\"\n{X509}"
            ))
            .contains("cmd_args")
        );
        assert!(
            err(&format!(
                "health_checks {{\nlistener_enabled = true\nbind_port = -1\n}}\n{X509}"
            ))
            .contains("bind_port")
        );
        assert!(err(&format!("daemon_mode = \"maybe\"\n{X509}")).contains("daemon_mode"));
    }

    #[test]
    fn unknown_options_are_refused_by_name_at_every_level() {
        assert!(err(&format!("svid_filename = \"x\"\n{X509}")).contains("svid_filename"));
        assert!(
            err(&format!("jwt_svids = [{{jwt_audience = \"a\", jwt_svid_file_name = \"t\", jwt_file_name = \"x\"}}]\n{X509}"))
                .contains("jwt_file_name")
        );
        assert!(
            err(&format!("health_checks {{\nlistener_port = 1\n}}\n{X509}"))
                .contains("listener_port")
        );
    }

    #[test]
    fn one_shot_mode_ignores_cmd_and_signal_with_warnings_and_flag_overrides_file() {
        let text = format!("daemon_mode = false\ncmd = \"x\"\nrenew_signal = \"SIGHUP\"\n{X509}");
        let c = parse(&text).unwrap();
        assert!(!c.daemon_mode);
        assert_eq!(c.cmd, None);
        assert_eq!(c.warnings.len(), 2);
        let c = HelperConfig::parse(&text, Some(true), None).unwrap();
        assert!(c.daemon_mode);
        assert_eq!(c.cmd.as_deref(), Some("x"));
        let c = HelperConfig::parse(X509, Some(false), None).unwrap();
        assert!(!c.daemon_mode);
    }

    #[test]
    fn health_checks_defaults_apply_only_when_enabled_in_either_spelling() {
        let c = parse(&format!(
            "health_checks {{\nlistener_enabled = true\n}}\n{X509}"
        ))
        .unwrap();
        assert_eq!(
            c.health,
            Some(HealthConfig {
                bind_port: 8081,
                liveness_path: "/live".into(),
                readiness_path: "/ready".into()
            })
        );
        let c = parse(&format!(
            "health_checks = {{ listener_enabled = true, bind_port = 9000, liveness_path = \"/l\" }}\n{X509}"
        ))
        .unwrap();
        assert_eq!(c.health.as_ref().map(|h| h.bind_port), Some(9000));
        assert_eq!(
            c.health.as_ref().map(|h| h.liveness_path.as_str()),
            Some("/l")
        );
        let c = parse(&format!("health_checks {{\nbind_port = 9000\n}}\n{X509}")).unwrap();
        assert_eq!(c.health, None);
    }

    #[test]
    fn jwt_svids_may_be_written_as_repeated_blocks() {
        let c = parse(
            "jwt_svids {\njwt_audience = \"a\"\njwt_svid_file_name = \"a.token\"\n}\njwt_svids {\njwt_audience = \"b\"\njwt_svid_file_name = \"b.token\"\n}\n",
        )
        .unwrap();
        assert_eq!(c.jwt_svids.len(), 2);
        assert_eq!(c.jwt_svids[1].audience, "b");
        assert!(c.x509.is_none());
    }
}
