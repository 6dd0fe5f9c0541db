//! The Unix-socket listener the agent's gRPC servers run on.
//!
//! [`UdsIncoming`] binds the socket the way workloads need it (stale socket
//! file removed, parent directories created, mode 0777 so processes of any
//! user can connect; who gets what is decided by attestation, not by file
//! permissions) and yields one [`UdsConnection`] per accepted client, with the
//! peer's credentials taken at accept time and the `:authority` repair in
//! place. Serve it with `tonic::transport::Server::serve_with_incoming`;
//! handlers read the caller with `request.extensions().get::<PeerInfo>()`.
//!
//! A listener may be bounded ([`UdsIncoming::with_limits`]): past the cap on
//! open connections, or on those of one process, a new connection is closed
//! as soon as it is accepted (with a warning at most once a second).

use std::collections::HashMap;
use std::io;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use sigil_cli::secure_fs::{self, SecureFsError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::Connected;

use super::authority::AuthorityRewrite;
use super::peer::PeerInfo;

/// Accepted connections on a Unix socket, ready for
/// `Server::serve_with_incoming`.
#[derive(Debug)]
pub struct UdsIncoming {
    listener: UnixListener,
    path: PathBuf,
    slots: Option<Arc<Slots>>,
    /// Metric key of this listener's connections (SPIRE's
    /// `workload_api`), when they are counted.
    metric: Option<&'static str>,
}

/// Bounds on the connections of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one process (by PID; peers whose
    /// PID the agent cannot see, in another PID namespace, are counted by
    /// UID instead).
    pub max_per_process: usize,
}

/// Who a connection counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Owner {
    Pid(i32),
    Uid(u32),
}

impl Owner {
    fn of(peer: &PeerInfo) -> Owner {
        if peer.pid > 0 {
            Owner::Pid(peer.pid)
        } else {
            Owner::Uid(peer.uid)
        }
    }
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_owner: HashMap<Owner, usize>,
    last_warning: Option<Instant>,
}

#[derive(Debug)]
struct Slots {
    limits: ConnectionLimits,
    open: Mutex<Open>,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for `owner`, or `None` (and a warning, at most once a
    /// second) when a cap is reached.
    fn take(self: &Arc<Slots>, owner: Owner, path: &Path) -> Option<Slot> {
        let mut open = self.lock();
        let mine = open.by_owner.get(&owner).copied().unwrap_or(0);
        let refused = if open.total >= self.limits.max_connections {
            Some("connection limit reached")
        } else if mine >= self.limits.max_per_process {
            Some("per-process connection limit reached")
        } else {
            None
        };
        if let Some(reason) = refused {
            let now = Instant::now();
            if open
                .last_warning
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                open.last_warning = Some(now);
                tracing::warn!(
                    path = %path.display(),
                    caller = ?owner,
                    max_connections = self.limits.max_connections,
                    max_per_process = self.limits.max_per_process,
                    "{reason}; refusing new connections"
                );
            }
            return None;
        }
        open.total += 1;
        *open.by_owner.entry(owner).or_insert(0) += 1;
        Some(Slot {
            slots: self.clone(),
            owner,
        })
    }
}

/// One open connection's place in its listener's count.
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    owner: Owner,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_owner.get_mut(&self.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_owner.remove(&self.owner);
            }
        }
    }
}

impl UdsIncoming {
    /// Binds the public Workload API socket at `path`: connectable by every
    /// user (`0777`), its directory created `0755` when missing. See
    /// [`UdsIncoming::bind_with_mode`].
    ///
    /// Must be called inside a tokio runtime.
    pub fn bind(path: impl AsRef<Path>) -> Result<UdsIncoming, SecureFsError> {
        UdsIncoming::bind_with_mode(path, 0o777, 0o755)
    }

    /// Binds `path` with permission bits `mode`, which the socket has from
    /// the moment anyone can connect to it: missing directories are created
    /// with `dir_mode`, directories another user could write to are refused,
    /// and a stale socket left by a previous run is replaced (anything else
    /// at `path` is refused). See [`sigil_cli::secure_fs`].
    ///
    /// Must be called inside a tokio runtime.
    pub fn bind_with_mode(
        path: impl AsRef<Path>,
        mode: u32,
        dir_mode: u32,
    ) -> Result<UdsIncoming, SecureFsError> {
        let path = path.as_ref();
        let std_listener = secure_fs::bind_unix_socket(path, mode, dir_mode)?;
        let listener = std_listener
            .set_nonblocking(true)
            .and_then(|()| UnixListener::from_std(std_listener))
            .map_err(|source| SecureFsError::Io {
                op: "listening on",
                path: path.to_owned(),
                source,
            })?;
        Ok(UdsIncoming {
            listener,
            path: path.to_owned(),
            slots: None,
            metric: None,
        })
    }

    /// Counts this listener's connections as SPIRE does: `<key>_connection`
    /// (accepted, a counter) and `<key>_connections` (open, a gauge).
    pub fn with_connection_metrics(mut self, key: &'static str) -> UdsIncoming {
        self.metric = Some(key);
        self
    }

    /// Bounds the connections this listener keeps open.
    pub fn with_limits(mut self, limits: ConnectionLimits) -> UdsIncoming {
        self.slots = Some(Arc::new(Slots {
            limits,
            open: Mutex::new(Open::default()),
        }));
        self
    }

    /// A connection for `stream`, or `None` when it is over a cap (the
    /// stream is then dropped, which closes it).
    fn admit(&self, stream: UnixStream) -> Option<io::Result<UdsConnection>> {
        let mut conn = match UdsConnection::new(stream) {
            Ok(conn) => conn,
            Err(e) => return Some(Err(e)),
        };
        if let Some(slots) = &self.slots {
            conn._slot = Some(slots.take(Owner::of(&conn.peer), &self.path)?);
        }
        if let Some(key) = self.metric {
            metrics::counter!(format!("{key}_connection")).increment(1);
            metrics::gauge!(format!("{key}_connections")).increment(1.0);
            conn._open = Some(OpenGauge(key));
        }
        Some(Ok(conn))
    }

    /// The socket path this listener is bound to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the next connection within the limits.
    pub async fn accept(&self) -> io::Result<UdsConnection> {
        loop {
            let (stream, _) = self.listener.accept().await?;
            if let Some(conn) = self.admit(stream) {
                return conn;
            }
        }
    }
}

impl Stream for UdsIncoming {
    type Item = io::Result<UdsConnection>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => match self.admit(stream) {
                    Some(conn) => return Poll::Ready(Some(conn)),
                    None => continue,
                },
                // tonic logs accept errors and keeps serving.
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// One accepted workload connection: the stream (with `:authority` repair)
/// and the credentials of the process that connected.
#[derive(Debug)]
pub struct UdsConnection {
    io: AuthorityRewrite<UnixStream>,
    peer: PeerInfo,
    _slot: Option<Slot>,
    _open: Option<OpenGauge>,
}

/// Takes a connection off its listener's open-connections gauge when
/// dropped.
#[derive(Debug)]
struct OpenGauge(&'static str);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        metrics::gauge!(format!("{}_connections", self.0)).decrement(1.0);
    }
}

impl UdsConnection {
    /// Takes the peer's credentials now (they must be read before anything
    /// else happens on the connection) and wraps the stream.
    pub fn new(stream: UnixStream) -> io::Result<UdsConnection> {
        let peer = PeerInfo::from_stream(&stream)?;
        Ok(UdsConnection {
            io: AuthorityRewrite::new(stream),
            peer,
            _slot: None,
            _open: None,
        })
    }

    /// Who connected.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}

impl Connected for UdsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for UdsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for UdsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uds::authority::tests::{BAD_AUTHORITY, frame};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::wrappers::UnixListenerStream;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// What a raw HTTP/2 client saw for its Health/Check call on stream 1.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        /// Trailers arrived with this grpc-status.
        GrpcStatus(String),
        /// The server reset the stream with this HTTP/2 error code.
        Reset(u32),
    }

    /// Calls grpc.health.v1.Health/Check over raw HTTP/2 with the given
    /// `:authority`, as grpc-core does, and reports what came back.
    async fn raw_health_check(path: &Path, authority: &[u8]) -> Outcome {
        let mut stream = UnixStream::connect(path).await.expect("connect");
        let mut enc = loona_hpack::Encoder::new();
        let headers: [(&[u8], &[u8]); 6] = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/grpc.health.v1.Health/Check"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        let block = enc.encode(headers);
        let mut out = PREFACE.to_vec();
        out.extend(frame(0x4, 0, 0, &[]));
        out.extend(frame(0x1, 0x4, 1, &block));
        // Empty HealthCheckRequest: uncompressed flag + zero length.
        out.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]));
        stream.write_all(&out).await.expect("send request");

        let mut dec = loona_hpack::Decoder::new();
        loop {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await.expect("frame header");
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).await.expect("payload");
            match kind {
                0x4 if flags & 0x1 == 0 => {
                    stream
                        .write_all(&frame(0x4, 0x1, 0, &[]))
                        .await
                        .expect("ack");
                }
                0x1 => {
                    let fields = dec.decode(&payload).expect("response headers");
                    if let Some((_, v)) = fields.iter().find(|(n, _)| n == b"grpc-status") {
                        return Outcome::GrpcStatus(String::from_utf8_lossy(v).into_owned());
                    }
                }
                0x3 => {
                    let code = u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"));
                    return Outcome::Reset(code);
                }
                _ => {}
            }
        }
    }

    async fn serve_health(incoming: UdsIncoming) -> tokio::task::JoinHandle<()> {
        let (_reporter, service) = tonic_health::server::health_reporter();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
                .expect("server");
        })
    }

    #[tokio::test]
    async fn bind_replaces_stale_socket_creates_dirs_and_opens_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/dir/agent.sock");
        let first = UdsIncoming::bind(&path).expect("bind");
        drop(first);
        assert!(path.exists(), "a dropped listener leaves its socket file");
        let second = UdsIncoming::bind(&path).expect("rebind over stale socket");
        let mode = fs::metadata(second.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o777);

        let plain = dir.path().join("not-a-socket");
        fs::write(&plain, b"keep me").expect("write");
        let err = UdsIncoming::bind(&plain).expect_err("must not replace a file");
        assert!(matches!(err, SecureFsError::NotASocket { .. }), "{err}");
        assert_eq!(fs::read(&plain).expect("read"), b"keep me");
    }

    #[tokio::test]
    async fn accepted_connection_carries_the_callers_credentials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let incoming = UdsIncoming::bind(dir.path().join("a.sock")).expect("bind");
        let _client = UnixStream::connect(incoming.path()).await.expect("connect");
        let conn = incoming.accept().await.expect("accept");
        let info = conn.connect_info();
        assert_eq!(info.pid, std::process::id() as i32);
        assert_eq!(info.uid, rustix::process::geteuid().as_raw());
        assert_eq!(info.gid, rustix::process::getegid().as_raw());
        assert!(info.still_alive());
    }

    #[tokio::test]
    async fn tonic_resets_a_percent_encoded_authority_without_the_rewrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plain.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let (_reporter, service) = tonic_health::server::health_reporter();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        });
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            raw_health_check(&path, BAD_AUTHORITY),
        )
        .await
        .expect("answer in time");
        // 0x1 = PROTOCOL_ERROR: the hazard this module exists for.
        assert_eq!(outcome, Outcome::Reset(0x1));
        server.abort();
    }

    #[tokio::test]
    async fn tonic_serves_a_percent_encoded_authority_through_uds_incoming() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.sock");
        let server = serve_health(UdsIncoming::bind(&path).expect("bind")).await;
        for authority in [BAD_AUTHORITY, b"/run/spire/agent.sock", b"localhost"] {
            let outcome =
                tokio::time::timeout(Duration::from_secs(10), raw_health_check(&path, authority))
                    .await
                    .expect("answer in time");
            assert_eq!(outcome, Outcome::GrpcStatus("0".into()), "{authority:?}");
        }
        server.abort();
    }

    /// The real grpc-core client. Needs a Python with grpcio and
    /// grpcio-health-checking: `$SIGIL_TEST_PYTHON`, else
    /// `<workspace>/.venv-test/bin/python`. Skips (with a message) otherwise.
    #[tokio::test]
    async fn python_grpcio_health_check_over_unix_socket() {
        let python = std::env::var_os("SIGIL_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-test/bin/python")
            });
        let has_grpc = std::process::Command::new(&python)
            .args(["-c", "import grpc, grpc_health.v1.health_pb2_grpc"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_grpc {
            println!(
                "SKIP python_grpcio_health_check_over_unix_socket: {} has no grpcio/grpcio-health-checking",
                python.display()
            );
            return;
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let script = "import sys, grpc\n\
            from grpc_health.v1 import health_pb2, health_pb2_grpc\n\
            ch = grpc.insecure_channel('unix:' + sys.argv[1])\n\
            try:\n    \
                r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)\n    \
                print('STATUS', r.status)\n\
            except grpc.RpcError as e:\n    \
                print('ERROR', e.code().name, e.details())\n    \
                sys.exit(3)\n";
        let run = |path: PathBuf| {
            let python = python.clone();
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(python)
                    .args(["-c", script])
                    .arg(path)
                    .output()
                    .expect("run python")
            })
        };

        // Without the rewrite grpcio's call fails...
        let plain_path = dir.path().join("plain.sock");
        let listener = UnixListener::bind(&plain_path).expect("bind");
        let (_r1, service) = tonic_health::server::health_reporter();
        let plain = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        });
        let out = run(plain_path).await.expect("join");
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("grpcio without rewrite: {}", stdout.trim());
        assert!(
            !out.status.success(),
            "grpcio must fail without the rewrite"
        );
        assert!(stdout.contains("ERROR"), "{stdout}");
        plain.abort();

        // ...and through UdsIncoming it succeeds.
        let path = dir.path().join("agent.sock");
        let server = serve_health(UdsIncoming::bind(&path).expect("bind")).await;
        let out = run(path).await.expect("join");
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("grpcio through UdsIncoming: {}", stdout.trim());
        assert!(
            out.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("STATUS 1"), "SERVING is 1: {stdout}");
        server.abort();
    }

    #[tokio::test]
    async fn connections_past_the_per_process_cap_are_closed_until_one_ends() {
        use tokio::io::AsyncReadExt as _;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let incoming = UdsIncoming::bind(&socket)
            .unwrap()
            .with_limits(ConnectionLimits {
                max_connections: 10,
                max_per_process: 1,
            });
        let (held_tx, mut held_rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let conn = incoming.accept().await.unwrap();
                if held_tx.send(conn).await.is_err() {
                    return;
                }
            }
        });
        let _first = UnixStream::connect(&socket).await.unwrap();
        let first_held = held_rx.recv().await.expect("first accepted");
        // This process already has its one connection: the next is closed.
        let mut second = UnixStream::connect(&socket).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), second.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(held_rx.try_recv().is_err());
        // Once the first ends, a new one is accepted.
        drop(first_held);
        let _third = UnixStream::connect(&socket).await.unwrap();
        let third_held = tokio::time::timeout(std::time::Duration::from_secs(5), held_rx.recv())
            .await
            .expect("accepted in time");
        assert!(third_held.is_some());
    }
}
