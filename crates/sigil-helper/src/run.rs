//! The two modes.
//!
//! **Daemon mode** runs until SIGINT or SIGTERM: one task follows the
//! `FetchX509SVID` stream and rewrites the three X.509 files on every
//! message, then starts or signals the program ([`crate::process`]); one
//! follows `FetchJWTBundles` and rewrites the JWT bundle file; one per
//! `jwt_svids` entry fetches its JWT-SVID, writes it, and fetches again at
//! half its remaining life plus a second (retrying from 1 s, doubling to
//! 60 s, on failure). A broken stream is reopened from 1 s doubling to 30 s;
//! the files on disk stay as they were meanwhile.
//!
//! **One-shot mode** fetches each configured set once, writes it, and
//! returns. It waits for the agent and for an identity (an unreachable
//! socket, `Unavailable`, `PermissionDenied`) up to a deadline, then fails
//! naming the socket and the last error.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use sigil_proto::workload::{JwtBundlesResponse, X509svidResponse};

use crate::agent::{AgentError, WorkloadApi};
use crate::config::{HelperConfig, JwtSvidConfig};
use crate::files::{self, FilesError, X509Options};
use crate::health::{Health, WriteStatus};
use crate::process::Notifier;

/// Why the helper stopped with a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// One-shot mode: the agent gave nothing usable before the deadline.
    #[error(
        "no {what} from the agent at {} within {timeout:?}: {source}",
        socket.display()
    )]
    Timeout {
        /// What was asked for.
        what: String,
        /// The agent's socket.
        socket: PathBuf,
        /// The deadline.
        timeout: Duration,
        /// The last error.
        #[source]
        source: AgentError,
    },
    /// One-shot mode: the agent refused in a way waiting cannot fix.
    #[error("fetching {what} from the agent at {}: {source}", socket.display())]
    Agent {
        /// What was asked for.
        what: String,
        /// The agent's socket.
        socket: PathBuf,
        /// The error.
        #[source]
        source: AgentError,
    },
    /// A file could not be produced or written.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The JWT-SVID has no readable expiry.
    #[error("the JWT-SVID for audience {0:?} has no readable exp claim")]
    JwtExpiry(String),
    /// The health listener could not start.
    #[error("health_checks: cannot listen on port {port}: {source}")]
    Health {
        /// The port.
        port: u16,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Everything the tasks share.
struct Ctx {
    config: HelperConfig,
    api: Arc<dyn WorkloadApi>,
    health: Health,
    notifier: Notifier,
}

impl Ctx {
    fn x509_options(&self) -> X509Options {
        X509Options {
            hint: self.config.hint.clone(),
            add_intermediates_to_bundle: self.config.add_intermediates_to_bundle,
            include_federated_domains: self.config.include_federated_domains,
            omit_expired: self.config.omit_expired,
        }
    }

    fn write_x509(&self, response: &X509svidResponse) -> Result<String, FilesError> {
        let Some(names) = &self.config.x509 else {
            return Ok(String::new());
        };
        let contents = files::x509_contents(response, &self.x509_options(), SystemTime::now())?;
        let modes = self.config.modes;
        files::write(
            &self.config.file_path(&names.svid),
            contents.svid_pem.as_bytes(),
            modes.cert,
        )?;
        files::write(
            &self.config.file_path(&names.key),
            contents.key_pem.as_bytes(),
            modes.key,
        )?;
        files::write(
            &self.config.file_path(&names.bundle),
            contents.bundle_pem.as_bytes(),
            modes.cert,
        )?;
        Ok(contents.spiffe_id)
    }

    fn jwt_bundle_path(&self) -> Option<PathBuf> {
        self.config
            .jwt_bundle_file_name
            .as_deref()
            .map(|n| self.config.file_path(n))
    }

    fn write_jwt_bundle(&self, response: &JwtBundlesResponse) -> Result<(), FilesError> {
        let Some(path) = self.jwt_bundle_path() else {
            return Ok(());
        };
        files::write(
            &path,
            &files::jwt_bundle_json(&response.bundles),
            self.config.modes.jwt_bundle,
        )
    }

    /// Fetches and writes one JWT-SVID; returns its expiry.
    async fn fetch_write_jwt(&self, entry: &JwtSvidConfig) -> Result<SystemTime, JwtError> {
        let mut audiences = vec![entry.audience.clone()];
        audiences.extend(entry.extra_audiences.iter().cloned());
        let svids = self
            .api
            .fetch_jwt_svids(audiences)
            .await
            .map_err(JwtError::Agent)?;
        let svid = files::pick_jwt(&svids, self.config.hint.as_deref()).map_err(JwtError::Files)?;
        let expiry = jwt_expiry(&svid.svid)
            .ok_or_else(|| JwtError::Expiry(RunError::JwtExpiry(entry.audience.clone())))?;
        files::write(
            &self.config.file_path(&entry.file_name),
            svid.svid.as_bytes(),
            self.config.modes.jwt_svid,
        )
        .map_err(JwtError::Files)?;
        Ok(expiry)
    }
}

#[derive(Debug)]
enum JwtError {
    Agent(AgentError),
    Files(FilesError),
    Expiry(RunError),
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtError::Agent(e) => e.fmt(f),
            JwtError::Files(e) => e.fmt(f),
            JwtError::Expiry(e) => e.fmt(f),
        }
    }
}

/// Runs in daemon mode until `shutdown` completes.
pub async fn run_daemon(
    config: HelperConfig,
    api: Arc<dyn WorkloadApi>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let jwt_paths = config
        .jwt_bundle_file_name
        .iter()
        .chain(config.jwt_svids.iter().map(|j| &j.file_name))
        .map(|n| config.file_path(n).display().to_string())
        .collect::<Vec<_>>();
    let health = Health::new(config.x509.is_some(), jwt_paths);
    let notifier = Notifier::new(
        config.cmd.clone().map(|c| (c, config.cmd_args.clone())),
        config.pid_file_name.clone(),
        config.renew_signal,
    );
    let ctx = Arc::new(Ctx {
        config,
        api,
        health,
        notifier,
    });
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(h) = ctx.config.health.clone() {
        let port = h.bind_port;
        // Bound now so a taken port is a startup error.
        let listener = crate::health::bind(port)
            .await
            .map_err(|source| RunError::Health { port, source })?;
        let listener_health = ctx.health.clone();
        tasks.spawn(crate::health::serve(listener, h, listener_health));
    }
    if ctx.config.x509.is_some() {
        tracing::info!("Watching for X509 Context");
        tasks.spawn(watch_x509(Arc::clone(&ctx)));
    }
    if ctx.config.jwt_bundle_file_name.is_some() {
        tracing::info!("Watching for JWT Bundles");
        tasks.spawn(watch_jwt_bundles(Arc::clone(&ctx)));
    }
    for entry in ctx.config.jwt_svids.clone() {
        tasks.spawn(refresh_jwt_svid(Arc::clone(&ctx), entry));
    }
    shutdown.await;
    tasks.abort_all();
    Ok(())
}

/// A delay that doubles from `first` up to `max`.
struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.next = self.first;
    }
}

async fn watch_x509(ctx: Arc<Ctx>) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let error = match ctx.api.watch_x509().await {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Some(Ok(response)) => {
                        backoff.reset();
                        x509_update(&ctx, &response).await;
                    }
                    Some(Err(e)) => break e,
                    None => break AgentError::StreamEnded,
                }
            },
            Err(e) => e,
        };
        tracing::error!(error = %error, "Error while watching x509 context");
        tokio::time::sleep(backoff.next()).await;
    }
}

async fn x509_update(ctx: &Ctx, response: &X509svidResponse) {
    match ctx.write_x509(response) {
        Ok(spiffe_id) => {
            ctx.health.set_x509(WriteStatus::Written);
            tracing::info!(spiffe_id = %spiffe_id, "X.509 certificates updated");
            ctx.notifier.files_updated().await;
        }
        Err(e) => {
            ctx.health.set_x509(WriteStatus::Failed);
            tracing::error!(error = %e, "Unable to dump bundle");
        }
    }
}

async fn watch_jwt_bundles(ctx: Arc<Ctx>) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let path = ctx
        .jwt_bundle_path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    loop {
        let error = match ctx.api.watch_jwt_bundles().await {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Some(Ok(response)) => {
                        backoff.reset();
                        match ctx.write_jwt_bundle(&response) {
                            Ok(()) => {
                                ctx.health.set_jwt(&path, WriteStatus::Written);
                                tracing::info!("JWT bundle updated");
                            }
                            Err(e) => {
                                ctx.health.set_jwt(&path, WriteStatus::Failed);
                                tracing::error!(error = %e, "Error writing JWT Bundle to disk");
                            }
                        }
                    }
                    Some(Err(e)) => break e,
                    None => break AgentError::StreamEnded,
                }
            },
            Err(e) => e,
        };
        tracing::error!(error = %error, "Error while watching JWT bundles");
        tokio::time::sleep(backoff.next()).await;
    }
}

async fn refresh_jwt_svid(ctx: Arc<Ctx>, entry: JwtSvidConfig) {
    let path = ctx.config.file_path(&entry.file_name).display().to_string();
    let mut retry = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let wait = match ctx.fetch_write_jwt(&entry).await {
            Ok(expiry) => {
                retry.reset();
                ctx.health.set_jwt(&path, WriteStatus::Written);
                tracing::info!(audience = %entry.audience, "JWT SVID updated");
                refresh_interval(expiry, SystemTime::now())
            }
            Err(e) => {
                if matches!(e, JwtError::Files(_)) {
                    ctx.health.set_jwt(&path, WriteStatus::Failed);
                }
                tracing::error!(audience = %entry.audience, error = %e, "Unable to update JWT SVID");
                retry.next()
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// When to fetch a JWT-SVID expiring at `expiry` again: half its remaining
/// life plus one second (spiffe-helper's rule).
pub fn refresh_interval(expiry: SystemTime, now: SystemTime) -> Duration {
    expiry.duration_since(now).unwrap_or_default() / 2 + Duration::from_secs(1)
}

/// The `exp` claim of a compact JWS, unverified (the agent just issued it).
pub fn jwt_expiry(token: &str) -> Option<SystemTime> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    (exp >= 0.0).then(|| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(exp))
}

/// Runs in one-shot mode: fetches and writes each configured set once,
/// waiting for the agent up to `timeout`.
pub async fn run_once(
    config: HelperConfig,
    api: Arc<dyn WorkloadApi>,
    timeout: Duration,
) -> Result<(), RunError> {
    let deadline = Instant::now() + timeout;
    let socket = config.agent_socket.clone();
    let ctx = Ctx {
        config,
        api,
        health: Health::default(),
        notifier: Notifier::new(None, None, None),
    };
    let fail = |what: &str, source: AgentError, timed_out: bool| {
        if timed_out {
            RunError::Timeout {
                what: what.to_owned(),
                socket: socket.clone(),
                timeout,
                source,
            }
        } else {
            RunError::Agent {
                what: what.to_owned(),
                socket: socket.clone(),
                source,
            }
        }
    };
    if ctx.config.x509.is_some() {
        let response = retry_until(deadline, || async {
            let mut stream = ctx.api.watch_x509().await?;
            stream.next().await.unwrap_or(Err(AgentError::StreamEnded))
        })
        .await
        .map_err(|(e, timed_out)| fail("X.509-SVID", e, timed_out))?;
        let id = ctx.write_x509(&response)?;
        tracing::info!(spiffe_id = %id, "Successfully fetched x509 certificates");
    }
    if ctx.config.jwt_bundle_file_name.is_some() {
        let response = retry_until(deadline, || async {
            let mut stream = ctx.api.watch_jwt_bundles().await?;
            stream.next().await.unwrap_or(Err(AgentError::StreamEnded))
        })
        .await
        .map_err(|(e, timed_out)| fail("JWT bundle", e, timed_out))?;
        ctx.write_jwt_bundle(&response)?;
        tracing::info!("Successfully fetched JWT bundle");
    }
    for entry in &ctx.config.jwt_svids {
        let what = format!("JWT-SVID for audience {:?}", entry.audience);
        let svids = retry_until(deadline, || {
            let mut audiences = vec![entry.audience.clone()];
            audiences.extend(entry.extra_audiences.iter().cloned());
            ctx.api.fetch_jwt_svids(audiences)
        })
        .await
        .map_err(|(e, timed_out)| fail(&what, e, timed_out))?;
        let svid = files::pick_jwt(&svids, ctx.config.hint.as_deref())?;
        files::write(
            &ctx.config.file_path(&entry.file_name),
            svid.svid.as_bytes(),
            ctx.config.modes.jwt_svid,
        )?;
    }
    if !ctx.config.jwt_svids.is_empty() {
        tracing::info!("Successfully fetched JWT SVIDs");
    }
    Ok(())
}

/// Calls `f` until it succeeds, fails for good, or `deadline` passes; the
/// error says whether the deadline passed.
async fn retry_until<T, F, Fut>(deadline: Instant, mut f: F) -> Result<T, (AgentError, bool)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AgentError>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut last = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(remaining, f()).await;
        let error = match attempt {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if !e.is_transient() => return Err((e, false)),
            Ok(Err(e)) => e,
            // A hung call: report why the earlier ones failed, if any did.
            Err(_) => return Err((last.unwrap_or(AgentError::NoAnswer), true)),
        };
        tracing::debug!(error = %error, "Workload API call failed; retrying");
        let pause = backoff.next();
        if Instant::now() + pause >= deadline {
            return Err((error, true));
        }
        last = Some(error);
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn jwt_is_refreshed_at_half_its_remaining_life_plus_a_second() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let exp = now + Duration::from_secs(300);
        assert_eq!(refresh_interval(exp, now), Duration::from_secs(151));
        assert_eq!(
            refresh_interval(now - Duration::from_secs(5), now),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn jwt_expiry_is_read_from_the_payload() {
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!(
            "{}.{}.sig",
            enc("{}"),
            enc("{\"exp\":1700000000,\"sub\":\"x\"}")
        );
        assert_eq!(
            jwt_expiry(&token),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(jwt_expiry("garbage"), None);
        assert_eq!(jwt_expiry(&format!("a.{}.c", enc("{}"))), None);
    }

    /// A Workload API that answers `FetchJWTSVID` with `PermissionDenied`
    /// `denials` times, then with a token.
    struct Fake {
        denials: std::sync::atomic::AtomicUsize,
    }

    impl WorkloadApi for Fake {
        fn watch_x509(
            &self,
        ) -> futures::future::BoxFuture<'_, Result<crate::agent::X509Stream, AgentError>> {
            Box::pin(async { Err(AgentError::Status(tonic::Status::unimplemented("x509"))) })
        }
        fn watch_jwt_bundles(
            &self,
        ) -> futures::future::BoxFuture<'_, Result<crate::agent::JwtBundleStream, AgentError>>
        {
            Box::pin(async { Err(AgentError::Status(tonic::Status::unimplemented("jwt"))) })
        }
        fn fetch_jwt_svids(
            &self,
            audiences: Vec<String>,
        ) -> futures::future::BoxFuture<'_, Result<Vec<sigil_proto::workload::Jwtsvid>, AgentError>>
        {
            use std::sync::atomic::Ordering;
            Box::pin(async move {
                let left = self.denials.load(Ordering::SeqCst);
                if left > 0 {
                    self.denials.store(left - 1, Ordering::SeqCst);
                    return Err(AgentError::Status(tonic::Status::permission_denied(
                        "no identity issued",
                    )));
                }
                Ok(vec![sigil_proto::workload::Jwtsvid {
                    spiffe_id: "spiffe://example.org/app".into(),
                    svid: format!("h.{}.s", audiences.join("+")),
                    hint: String::new(),
                }])
            })
        }
    }

    fn jwt_only_config(dir: &std::path::Path) -> HelperConfig {
        let text = format!(
            "daemon_mode = false\ncert_dir = {:?}\njwt_svids = [{{jwt_audience = \"db\", jwt_extra_audiences = [\"x\"], jwt_svid_file_name = \"t.token\"}}]",
            dir.display().to_string()
        );
        HelperConfig::parse(&text, None, Some("/nonexistent/api.sock")).unwrap()
    }

    #[tokio::test]
    async fn one_shot_waits_through_permission_denied_then_writes_with_extra_audiences() {
        let dir = tempfile::tempdir().unwrap();
        let api = Arc::new(Fake { denials: 2.into() });
        run_once(jwt_only_config(dir.path()), api, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("t.token")).unwrap(),
            "h.db+x.s"
        );
    }

    #[tokio::test]
    async fn one_shot_gives_up_at_the_deadline_naming_the_socket_and_last_error() {
        let dir = tempfile::tempdir().unwrap();
        let api = Arc::new(Fake {
            denials: usize::MAX.into(),
        });
        let err = run_once(jwt_only_config(dir.path()), api, Duration::from_millis(500))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RunError::Timeout { .. }), "{text}");
        assert!(text.contains("/nonexistent/api.sock"), "{text}");
        assert!(
            std::error::Error::source(&err)
                .is_some_and(|s| s.to_string().contains("PermissionDenied")
                    || s.to_string().contains("permission")),
            "{text}"
        );
        assert!(!dir.path().join("t.token").exists());
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let got: Vec<_> = (0..5).map(|_| b.next().as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next(), Duration::from_secs(1));
    }
}
