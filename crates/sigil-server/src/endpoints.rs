//! The server's two listeners and who is calling on each.
//!
//! - TCP with TLS for agents (and downstream servers, admins with SVIDs). The
//!   server presents its own SVID (`spiffe://<td>/spire/server`); a client
//!   certificate is optional because an agent attests before it has one.
//!   The server SVID and the accepted client roots follow the trust bundle.
//! - A Unix socket for local administration: whoever can open it is an admin,
//!   as in SPIRE.
//!
//! Each accepted connection carries a [`CallerInfo`] that the API services
//! read from the request extensions to authorize the call.
//!
//! Both listeners are bounded ([`ConnectionBounds`]): a cap on open
//! connections (past it new ones are closed at once, with a warning), a
//! deadline for the TLS handshake and another for the client's first bytes
//! after it, so a peer that connects and stays silent does not hold a slot.
//! The HTTP/2 bounds (streams per connection, maximum connection age) are
//! set where the gRPC servers are built (`run.rs`) from the same struct.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use sigil_crypto::key::{KeyType, Signer, SoftwareKey};
use sigil_plugin::clock::Clock;
use sigil_spiffe::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::ca::CaManager;

/// Limits on the connections of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionBounds {
    /// Most connections open at once; past it, new ones are closed.
    pub max_connections: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: most RPCs in flight on one
    /// connection.
    pub max_concurrent_streams: u32,
    /// After this, the server sends GOAWAY so the client moves its next
    /// calls to a new connection (and, behind a load balancer, perhaps to
    /// another server). `None`: no limit.
    pub max_connection_age: Option<Duration>,
    /// How long calls in flight may finish after the GOAWAY before the
    /// connection is closed.
    pub max_connection_age_grace: Duration,
    /// Deadline for the TLS handshake (TLS listener only).
    pub handshake_timeout: Duration,
    /// Deadline for the client's first bytes once connected (after the
    /// TLS handshake on the TLS listener).
    pub first_byte_timeout: Duration,
}

/// SPIRE's maximum connection age on the agent endpoint.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(180);

impl ConnectionBounds {
    /// The agent (mTLS) endpoint's bounds: 3 minutes of connection age as
    /// SPIRE, 30 s of grace, 100 streams per connection, 10 000
    /// connections, 10 s for the handshake and 10 s for the first bytes.
    pub fn agent_endpoint() -> ConnectionBounds {
        ConnectionBounds {
            max_connections: 10_000,
            max_concurrent_streams: 100,
            max_connection_age: Some(MAX_CONNECTION_AGE),
            max_connection_age_grace: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(10),
        }
    }

    /// The admin socket's bounds: 256 connections, 100 streams each, 10 s
    /// for the first bytes, no age limit (nothing to rebalance locally).
    pub fn admin_socket() -> ConnectionBounds {
        ConnectionBounds {
            max_connections: 256,
            max_concurrent_streams: 100,
            max_connection_age: None,
            max_connection_age_grace: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(10),
        }
    }
}

/// A connection that holds its listener's slot until dropped, fails its
/// reads if the peer sends nothing before the first-byte deadline, and
/// fails everything once its age and grace are over.
///
/// The GOAWAY at the maximum age is tonic's (`Server::max_connection_age`
/// without a grace); the forced close after the grace is here because
/// tonic 0.14, given both, sleeps for their sum and then closes without
/// any GOAWAY.
struct Bounded<S> {
    inner: S,
    first_byte: Option<Pin<Box<Sleep>>>,
    close_at: Option<Pin<Box<Sleep>>>,
    _slot: OwnedSemaphorePermit,
}

impl<S> Bounded<S> {
    fn new(inner: S, slot: OwnedSemaphorePermit, bounds: &ConnectionBounds) -> Bounded<S> {
        Bounded {
            inner,
            first_byte: Some(Box::pin(tokio::time::sleep(bounds.first_byte_timeout))),
            close_at: bounds
                .max_connection_age
                .map(|age| Box::pin(tokio::time::sleep(age + bounds.max_connection_age_grace))),
            _slot: slot,
        }
    }

    /// Whether the grace after the maximum age is over (registering the
    /// waker for when it is, if not).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.close_at
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
    }
}

fn expired_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the connection outlived its maximum age and grace period",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        if this.expired(cx) {
            return Poll::Ready(Err(expired_error()));
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.first_byte = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let expired = this
                    .first_byte
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing after connecting",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(expired_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(expired_error()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Takes a connection slot, or says why not (once a second at most).
fn take_slot(
    slots: &Arc<Semaphore>,
    listener: &str,
    max: usize,
    last_warning: &mut Option<std::time::Instant>,
) -> Option<OwnedSemaphorePermit> {
    match slots.clone().try_acquire_owned() {
        Ok(slot) => Some(slot),
        Err(_) => {
            let now = std::time::Instant::now();
            if last_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                *last_warning = Some(now);
                tracing::warn!(
                    listener,
                    max_connections = max,
                    "connection limit reached; refusing new connections"
                );
            }
            None
        }
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub enum CallerInfo {
    /// The local admin socket, with the connecting process as seen at accept
    /// time.
    Local(LocalPeer),
    /// A TLS client, with its verified certificate if it sent one.
    Tls {
        /// Remote address.
        addr: SocketAddr,
        /// The verified client certificate, if any.
        peer: Option<PeerCert>,
        /// When the server sends GOAWAY on this connection (its maximum
        /// age). Long-lived streams end on their own then, so the client's
        /// connection drains and its next call opens a new one instead of
        /// failing on the old one.
        goaway_at: Option<tokio::time::Instant>,
    },
}

/// The process on the other end of an admin-socket connection, from the
/// socket's peer credentials taken when the connection was accepted (for the
/// audit log's `caller_uid`, `caller_gid` and `caller_path`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalPeer {
    /// The peer's user ID.
    pub uid: Option<u32>,
    /// The peer's group ID.
    pub gid: Option<u32>,
    /// The peer's executable (`/proc/<pid>/exe`), when it could be read.
    pub path: Option<std::path::PathBuf>,
}

impl LocalPeer {
    fn of(stream: &UnixStream) -> Self {
        let Ok(cred) = stream.peer_cred() else {
            return LocalPeer::default();
        };
        let path = cred
            .pid()
            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok());
        LocalPeer {
            uid: Some(cred.uid()),
            gid: Some(cred.gid()),
            path,
        }
    }
}

/// A client certificate that verified against the trust bundle.
#[derive(Debug, Clone)]
pub struct PeerCert {
    /// The SPIFFE ID in its URI SAN.
    pub spiffe_id: SpiffeId,
    /// Its serial number, lowercase hex, as stored for attested agents.
    pub serial: String,
    /// The leaf certificate.
    pub leaf_der: Vec<u8>,
}

/// An accepted TLS connection.
pub struct TlsConn {
    inner: Bounded<tokio_rustls::server::TlsStream<TcpStream>>,
    info: CallerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = CallerInfo;
    fn connect_info(&self) -> CallerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// An accepted admin-socket connection.
pub struct LocalConn(Bounded<UnixStream>, LocalPeer);

impl Connected for LocalConn {
    type ConnectInfo = CallerInfo;
    fn connect_info(&self) -> CallerInfo {
        CallerInfo::Local(self.1.clone())
    }
}

impl AsyncRead for LocalConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for LocalConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Mode of the admin socket: the server's user and group may connect, as
/// SPIRE's (0770).
pub const ADMIN_SOCKET_MODE: u32 = 0o770;

/// Binds the admin socket (replacing a stale socket file) and yields its
/// connections. The socket is `0770` from the moment it can be connected
/// to, whatever the umask; its directory is created `0700` when missing and
/// refused when another user could replace the socket (see
/// [`sigil_cli::secure_fs`]).
pub fn admin_incoming(
    path: &Path,
    bounds: &ConnectionBounds,
) -> Result<ReceiverStream<Result<LocalConn, io::Error>>, sigil_cli::secure_fs::SecureFsError> {
    let std_listener = sigil_cli::secure_fs::bind_unix_socket(path, ADMIN_SOCKET_MODE, 0o700)?;
    let listener = std_listener
        .set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(std_listener))
        .map_err(|source| sigil_cli::secure_fs::SecureFsError::Io {
            op: "listening on",
            path: path.to_owned(),
            source,
        })?;
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
    let max = bounds.max_connections;
    let bounds = bounds.clone();
    tokio::spawn(async move {
        let mut last_warning = None;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let Some(slot) = take_slot(&slots, "admin socket", max, &mut last_warning)
                    else {
                        continue;
                    };
                    let peer = LocalPeer::of(&stream);
                    let conn = LocalConn(Bounded::new(stream, slot, &bounds), peer);
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// Accepts TCP connections and completes TLS handshakes off the accept loop,
/// always with the newest server config, within `bounds`.
pub fn tls_incoming(
    listener: TcpListener,
    configs: watch::Receiver<Arc<rustls::ServerConfig>>,
    bounds: &ConnectionBounds,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(128);
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
    let max = bounds.max_connections;
    let bounds = Arc::new(bounds.clone());
    tokio::spawn(async move {
        let mut last_warning = None;
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "agent endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // A refused connection is closed before the handshake.
            let Some(slot) = take_slot(&slots, "agent endpoint", max, &mut last_warning) else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(configs.borrow().clone());
            let tx = tx.clone();
            let bounds = bounds.clone();
            // tonic's age timer starts when it is handed the connection,
            // after the handshake; this one starts earlier, so streams end
            // just before the GOAWAY, never after it.
            let goaway_at = bounds
                .max_connection_age
                .map(|age| tokio::time::Instant::now() + age);
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(bounds.handshake_timeout, acceptor.accept(tcp)).await;
                let stream = match handshake {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "TLS handshake timed out");
                        return;
                    }
                };
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|leaf| peer_cert(leaf.as_ref()));
                let _ = tx
                    .send(Ok(TlsConn {
                        inner: Bounded::new(stream, slot, &bounds),
                        info: CallerInfo::Tls {
                            addr,
                            peer,
                            goaway_at,
                        },
                    }))
                    .await;
            });
        }
    });
    ReceiverStream::new(rx)
}

fn peer_cert(leaf: &[u8]) -> Option<PeerCert> {
    let info = sigil_crypto::x509::cert_info(leaf).ok()?;
    let uri = info.uri_sans.first()?;
    Some(PeerCert {
        spiffe_id: SpiffeId::parse(uri).ok()?,
        serial: info.serial_hex,
        leaf_der: leaf.to_vec(),
    })
}

/// How often the bundles of foreign admin IDs' trust domains are re-read
/// from the datastore (they change when federation refreshes them).
const FOREIGN_ADMIN_BUNDLE_REFRESH: Duration = Duration::from_secs(5);

/// Keeps the server's own SVID fresh and publishes a TLS config built from
/// it and the current bundle: re-signed at half its lifetime, rebuilt when
/// the bundle changes. Each new SVID chain (leaf first) also goes to
/// `svid_out`, for the debug API.
///
/// Client certificates are accepted as SPIRE accepts them: members of our
/// trust domain chaining to our bundle, and the `admin_ids` of other trust
/// domains chaining to that trust domain's bundle as the datastore holds it
/// (re-read every few seconds while there are such admin IDs).
pub async fn server_tls_configs(
    ca: Arc<CaManager>,
    server_id: SpiffeId,
    svid_ttl: Duration,
    clock: Arc<dyn Clock>,
    svid_out: watch::Sender<Vec<Vec<u8>>>,
    mut foreign_admins: ForeignAdmins,
) -> Result<watch::Receiver<Arc<rustls::ServerConfig>>, crate::ca::CaError> {
    let mut svid = issue_server_svid(&ca, &server_id, svid_ttl, clock.as_ref()).await?;
    svid_out.send_replace(svid.chain.clone());
    let cfg = svid.tls_config(&ca, &mut foreign_admins).await?;
    let (tx, rx) = watch::channel(cfg);
    let mut bundles = ca.subscribe_bundle();
    let has_foreign_admins = !foreign_admins.ids.is_empty();
    tokio::spawn(async move {
        loop {
            let wait = svid
                .renew_at
                .duration_since(clock.now())
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_secs(1));
            let foreign_refresh = async {
                if !has_foreign_admins {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(FOREIGN_ADMIN_BUNDLE_REFRESH).await;
            };
            let resign = tokio::select! {
                _ = tokio::time::sleep(wait) => true,
                changed = bundles.changed() => {
                    if changed.is_err() { return; }
                    true
                }
                () = foreign_refresh => false,
            };
            if resign {
                match issue_server_svid(&ca, &server_id, svid_ttl, clock.as_ref()).await {
                    Ok(next) => {
                        svid = next;
                        svid_out.send_replace(svid.chain.clone());
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not renew the server SVID; retrying");
                        svid.renew_at = clock.now() + Duration::from_secs(5);
                        continue;
                    }
                }
            }
            match svid.tls_config(&ca, &mut foreign_admins).await {
                Ok(cfg) => {
                    if tx.send(cfg).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not build the server TLS config; retrying");
                    svid.renew_at = clock.now() + Duration::from_secs(5);
                }
            }
        }
    });
    Ok(rx)
}

/// `admin_ids` outside our trust domain, and where their bundles are.
pub struct ForeignAdmins {
    /// The IDs.
    pub ids: Vec<SpiffeId>,
    /// The datastore holding federated bundles.
    pub ds: Arc<dyn sigil_datastore::DataStore>,
    /// Admin IDs already warned about for lack of a bundle (warned again
    /// only after their bundle has been seen).
    pub warned: std::collections::HashSet<SpiffeId>,
}

impl ForeignAdmins {
    /// Each foreign admin ID with the X.509 authorities of its trust
    /// domain; IDs whose trust domain has no bundle are left out, with a
    /// warning (as SPIRE warns), once until the bundle appears.
    async fn with_roots(&mut self) -> Vec<(SpiffeId, Vec<Vec<u8>>)> {
        let mut out = Vec::new();
        for id in &self.ids {
            let td = id.trust_domain();
            let roots = match self.ds.get_bundle(&td).await {
                Ok(Some(stored)) => crate::ca::decode_bundle(&td, &stored.data)
                    .map(|b| b.x509_authorities)
                    .unwrap_or_default(),
                Ok(None) => Vec::new(),
                Err(e) => {
                    tracing::warn!(error = %e, trust_domain = %td, "could not read a foreign admin trust domain's bundle");
                    Vec::new()
                }
            };
            if roots.is_empty() {
                if !self.warned.insert(id.clone()) {
                    continue;
                }
                tracing::warn!(
                    trust_domain = %td,
                    admin_id = %id,
                    "No bundle found for foreign admin trust domain; admins from this trust domain will not be able to connect. Make sure this trust domain is correctly federated."
                );
                continue;
            }
            self.warned.remove(id);
            out.push((id.clone(), roots));
        }
        out
    }
}

/// The server's own X509-SVID.
struct ServerSvid {
    chain: Vec<Vec<u8>>,
    key: SoftwareKey,
    renew_at: std::time::SystemTime,
}

impl ServerSvid {
    async fn tls_config(
        &self,
        ca: &CaManager,
        foreign_admins: &mut ForeignAdmins,
    ) -> Result<Arc<rustls::ServerConfig>, crate::ca::CaError> {
        let bundle = ca.bundle();
        let cfg = sigil_crypto::tls::server_config_spiffe_clients(
            self.chain.clone(),
            self.key.to_pkcs8_der(),
            bundle.trust_domain.clone(),
            bundle.x509_authorities.clone(),
            foreign_admins.with_roots().await,
        )?;
        Ok(Arc::new(cfg))
    }
}

async fn issue_server_svid(
    ca: &CaManager,
    server_id: &SpiffeId,
    svid_ttl: Duration,
    clock: &dyn Clock,
) -> Result<ServerSvid, crate::ca::CaError> {
    let key = SoftwareKey::generate(KeyType::EcP256)?;
    let (chain, not_after) = ca
        .sign_x509_svid(server_id, key.public_key_der(), svid_ttl, &[])
        .await?;
    let now = clock.now();
    let half = not_after.duration_since(now).unwrap_or_default() / 2;
    Ok(ServerSvid {
        chain,
        key,
        renew_at: now + half,
    })
}
