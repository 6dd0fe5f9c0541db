//! Which Host names the provider answers for (SPIRE's `domains` allow list).
//!
//! A domain is compared as written: both the configured names and the
//! request's Host must already be lower-case ASCII (punycode for
//! internationalised names), as SPIRE's IDNA lookup check demands. This
//! module never resolves names.

/// Why a domain name is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// Not a DNS name (empty label, bad character, hyphen at a label edge).
    #[error("domain {0:?} is not a valid domain name")]
    Invalid(String),
    /// Upper case or non-ASCII: it would change when converted to punycode.
    #[error("domain {0:?} must already be punycode encoded")]
    NotPunycode(String),
    /// A valid name that is not in the allow list.
    #[error("domain {0:?} is not allowed")]
    NotAllowed(String),
}

/// The allow list built from `domains`, deduplicated in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPolicy {
    domains: Vec<String>,
}

impl DomainPolicy {
    /// A policy allowing exactly these domains; each must be a valid,
    /// already punycode-encoded name.
    pub fn allow(domains: &[String]) -> Result<DomainPolicy, DomainError> {
        let mut out: Vec<String> = Vec::with_capacity(domains.len());
        for d in domains {
            check_name(d)?;
            if !out.contains(d) {
                out.push(d.clone());
            }
        }
        Ok(DomainPolicy { domains: out })
    }

    /// The allowed domains, in configuration order.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Checks a request's Host (`name` or `name:port`, as sent).
    pub fn check_host(&self, host: &str) -> Result<(), DomainError> {
        let name = strip_port(host);
        check_name(name)?;
        if self.domains.iter().any(|d| d == name) {
            Ok(())
        } else {
            Err(DomainError::NotAllowed(name.to_owned()))
        }
    }
}

/// `name:port` -> `name`; `[v6]:port` -> `v6`; anything else unchanged.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[')
        && let Some((inner, after)) = rest.split_once(']')
        && (after.is_empty() || after.starts_with(':'))
    {
        return inner;
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

fn check_name(name: &str) -> Result<(), DomainError> {
    if name
        .chars()
        .any(|c| !c.is_ascii() || c.is_ascii_uppercase())
    {
        return Err(DomainError::NotPunycode(name.to_owned()));
    }
    let labels = name.strip_suffix('.').unwrap_or(name);
    let ok = !labels.is_empty()
        && labels.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(DomainError::Invalid(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn policy(d: &[&str]) -> DomainPolicy {
        DomainPolicy::allow(&d.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn listed_hosts_pass_with_or_without_a_port() {
        let p = policy(&["localhost", "oidc.example.org"]);
        p.check_host("localhost").unwrap();
        p.check_host("localhost:8443").unwrap();
        p.check_host("oidc.example.org").unwrap();
    }

    #[test]
    fn unlisted_hosts_are_refused_with_spires_message() {
        let p = policy(&["oidc.example.org"]);
        assert_eq!(
            p.check_host("evil.example.org:443")
                .unwrap_err()
                .to_string(),
            "domain \"evil.example.org\" is not allowed"
        );
        assert_eq!(
            p.check_host("127.0.0.1").unwrap_err(),
            DomainError::NotAllowed("127.0.0.1".into())
        );
    }

    #[test]
    fn hosts_not_in_punycode_or_malformed_are_refused() {
        let p = policy(&["oidc.example.org"]);
        assert_eq!(
            p.check_host("OIDC.example.org").unwrap_err(),
            DomainError::NotPunycode("OIDC.example.org".into())
        );
        assert_eq!(
            p.check_host("ex_ample.org").unwrap_err(),
            DomainError::Invalid("ex_ample.org".into())
        );
        assert!(matches!(
            p.check_host("[::1]:80"),
            Err(DomainError::Invalid(_))
        ));
        assert!(matches!(p.check_host(""), Err(DomainError::Invalid(_))));
    }
}
