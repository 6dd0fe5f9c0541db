//! Repairs the HTTP/2 `:authority` that grpc-core clients send over Unix sockets.
//!
//! grpc-core clients (Python grpcio as used by py-spiffe, grpc C++) put the
//! percent-encoded socket path in the `:authority` pseudo-header of a
//! `unix:` target (grpcio 1.85 sends `tmp%2Fagent.sock` for
//! `unix:/tmp/agent.sock`; other releases `%2Ftmp%2Fagent.sock`); grpc-java
//! over Netty domain sockets sends the bare path. None of these is a valid
//! authority, and h2 (so hyper and tonic) resets every such stream with
//! `PROTOCOL_ERROR` before our code sees it. The Workload API must serve those
//! clients unmodified, so this module sits between the accepted socket and h2
//! and rewrites an invalid `:authority` to `localhost` (what grpc-go and
//! tonic's own clients send on Unix sockets). Valid authorities are left as
//! they are.
//!
//! What it owns: the client-to-server byte stream of one connection. It checks
//! for the HTTP/2 client preface; anything else passes through untouched, as do
//! all server-to-client bytes. After the preface it walks the frames: frames
//! that carry no header block are forwarded as they arrive (never buffered),
//! HEADERS + CONTINUATION frames are collected into a whole header block
//! (bounded by [`MAX_HEADER_BLOCK`]), decoded, fixed, re-encoded and written
//! out again as HEADERS + CONTINUATION frames.
//!
//! HPACK state. Every header block of the connection is decoded, so the
//! decoder's dynamic table follows the client's encoder exactly. Every block is
//! re-encoded with literals "without indexing" and literal names, which never
//! touch the server's dynamic table: the server-side table stays empty and can
//! never disagree with what we send, even though the client's indexing
//! decisions (and its dynamic-table size updates) are dropped on the way.
//! Re-encoded blocks are split at 16384 bytes, the smallest maximum frame size
//! a server may advertise; END_STREAM and PRIORITY are kept, padding is removed.
//!
//! HPACK crate: `loona-hpack` (formerly `fluke-hpack`, a maintained fork of the
//! original `hpack` crate by the bearcove/loona HTTP project). It decodes
//! Huffman strings, applies dynamic-table size updates with a cap we set, keeps
//! table state across blocks, and its 0.4.3 release fixed the remaining decoder
//! panics on malformed integers. The alternatives were weaker: `hpack` 0.3 has
//! not been released since 2016 and panics on hostile input; `httlib-hpack`
//! 0.1.3 (2021) is unmaintained and re-slices its input per field. Encoding
//! uses loona's integer primitive; its `Encoder` always indexes into the
//! dynamic table, which is exactly what we must avoid, so the literal
//! representation (one flag byte plus two length-prefixed strings) is written
//! here.
//!
//! This module never looks at request semantics beyond `:authority`, never
//! buffers request bodies, and never touches bytes from the server.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use loona_hpack::Decoder;
use loona_hpack::encoder::encode_integer_into;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest header block (sum of the HPACK fragments of one HEADERS frame
/// and its CONTINUATIONs) we buffer; a larger one closes the connection.
pub const MAX_HEADER_BLOCK: usize = 1024 * 1024;

/// The largest decoded header list (RFC 7541 size: name + value + 32 per
/// field) we rebuild. Dynamic-table references let a small block expand
/// enormously; this bounds what one block can cost us.
pub const MAX_DECODED_HEADER_LIST: usize = 1024 * 1024;

/// What an invalid `:authority` becomes.
pub const REPLACEMENT_AUTHORITY: &str = "localhost";

/// Why the rewriter gave up on a connection. Each of these is also a protocol
/// error the server would have answered by closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// A header block grew past [`MAX_HEADER_BLOCK`].
    #[error("HTTP/2 header block on stream {stream_id} exceeds {limit} bytes")]
    HeaderBlockTooLarge {
        /// Stream the block belongs to.
        stream_id: u32,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A header block decoded to more than [`MAX_DECODED_HEADER_LIST`].
    #[error("decoded HTTP/2 header list on stream {stream_id} exceeds {limit} bytes")]
    HeaderListTooLarge {
        /// Stream the block belongs to.
        stream_id: u32,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The header block is not valid HPACK.
    #[error("HPACK decoding failed on stream {stream_id}: {reason}")]
    Hpack {
        /// Stream the block belongs to.
        stream_id: u32,
        /// The decoder's explanation.
        reason: String,
    },
    /// A frame other than CONTINUATION for the same stream arrived while a
    /// header block was still open (RFC 9113 section 6.10).
    #[error(
        "frame of type {frame_type:#04x} on stream {stream_id} interrupts the header block of stream {block_stream_id}"
    )]
    InterleavedFrame {
        /// Type of the offending frame.
        frame_type: u8,
        /// Stream of the offending frame.
        stream_id: u32,
        /// Stream whose header block was open.
        block_stream_id: u32,
    },
    /// A CONTINUATION frame arrived with no header block open.
    #[error("CONTINUATION frame on stream {stream_id} without an open header block")]
    UnexpectedContinuation {
        /// Stream of the CONTINUATION frame.
        stream_id: u32,
    },
    /// A HEADERS frame's padding or priority fields do not fit its payload.
    #[error("HEADERS frame on stream {stream_id} is shorter than its padding and priority fields")]
    MalformedHeadersFrame {
        /// Stream of the HEADERS frame.
        stream_id: u32,
    },
}

/// The sans-I/O core: feed it client-to-server bytes, get the bytes the server
/// should see.
///
/// Output is the same whatever way the input is split into `feed` calls.
pub struct AuthorityRewriter {
    phase: Phase,
    /// Bytes of the current frame while we cannot act on it yet: an incomplete
    /// 9-byte frame header, or a whole HEADERS/CONTINUATION frame in progress.
    pending: Vec<u8>,
    /// Payload bytes of the current non-header frame still to forward.
    forward_remaining: usize,
    /// A header block waiting for its CONTINUATION frames.
    block: Option<PendingBlock>,
    decoder: Decoder<'static>,
    rewritten: u64,
}

impl AuthorityRewriter {
    /// A rewriter at the start of a connection.
    pub fn new() -> AuthorityRewriter {
        let mut decoder = Decoder::new();
        // Bounds the memory a client can make us hold for its dynamic table.
        // h2 servers advertise 4096; anything the client raises beyond what
        // the server allowed would be rejected by the server anyway.
        decoder.set_max_allowed_table_size(MAX_DYNAMIC_TABLE);
        AuthorityRewriter {
            phase: Phase::Preface { matched: 0 },
            pending: Vec::new(),
            forward_remaining: 0,
            block: None,
            decoder,
            rewritten: 0,
        }
    }

    /// Consumes `input` (the next bytes from the client) and appends what the
    /// server should receive to `out`. Incomplete frames are kept until later
    /// calls complete them.
    ///
    /// After an error the connection must be closed; the rewriter's state is
    /// no longer meaningful.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        while !input.is_empty() {
            match self.phase {
                Phase::Preface { matched } => {
                    let want = &PREFACE[matched..];
                    let n = want.len().min(input.len());
                    if input[..n] == want[..n] {
                        input = &input[n..];
                        let matched = matched + n;
                        if matched == PREFACE.len() {
                            out.extend_from_slice(PREFACE);
                            self.phase = Phase::Frames;
                        } else {
                            self.phase = Phase::Preface { matched };
                        }
                    } else {
                        out.extend_from_slice(&PREFACE[..matched]);
                        self.phase = Phase::Passthrough;
                    }
                }
                Phase::Passthrough => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                Phase::Frames => input = self.feed_frames(input, out)?,
            }
        }
        Ok(())
    }

    /// Tells the rewriter the client closed its side; appends any bytes that
    /// were held back only to decide whether this is HTTP/2.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Phase::Preface { matched } = self.phase {
            out.extend_from_slice(&PREFACE[..matched]);
            self.phase = Phase::Passthrough;
        }
    }

    /// True once the stream is known not to be HTTP/2 with prior knowledge:
    /// from here on every byte passes through untouched.
    pub fn is_passthrough(&self) -> bool {
        matches!(self.phase, Phase::Passthrough)
    }

    /// How many `:authority` values this connection has had rewritten.
    pub fn authorities_rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Handles frame bytes; returns the input not consumed yet.
    fn feed_frames<'a>(
        &mut self,
        input: &'a [u8],
        out: &mut Vec<u8>,
    ) -> Result<&'a [u8], RewriteError> {
        if self.forward_remaining > 0 {
            let n = self.forward_remaining.min(input.len());
            out.extend_from_slice(&input[..n]);
            self.forward_remaining -= n;
            return Ok(&input[n..]);
        }

        let mut input = input;
        if self.pending.len() < FRAME_HEADER_LEN {
            let n = (FRAME_HEADER_LEN - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..n]);
            input = &input[n..];
            let Some(header) = FrameHeader::parse(&self.pending) else {
                return Ok(input);
            };
            if !header.carries_header_block() {
                if let Some(block) = &self.block {
                    return Err(RewriteError::InterleavedFrame {
                        frame_type: header.kind,
                        stream_id: header.stream_id,
                        block_stream_id: block.stream_id,
                    });
                }
                out.extend_from_slice(&self.pending);
                self.pending.clear();
                self.forward_remaining = header.length;
                return Ok(input);
            }
            let open = self.block.as_ref().map_or(0, |b| b.fragment.len());
            if open.saturating_add(header.length) > MAX_HEADER_BLOCK {
                return Err(RewriteError::HeaderBlockTooLarge {
                    stream_id: header.stream_id,
                    limit: MAX_HEADER_BLOCK,
                });
            }
            self.pending.reserve(header.length);
        }

        let header = FrameHeader::parse(&self.pending)
            .expect("pending holds a whole frame header once we get here");
        let frame_len = FRAME_HEADER_LEN + header.length;
        let n = (frame_len - self.pending.len()).min(input.len());
        self.pending.extend_from_slice(&input[..n]);
        input = &input[n..];
        // Checked even when `input` was empty: a zero-length CONTINUATION that
        // ends a block must go out now, not when the client next writes.
        if self.pending.len() == frame_len {
            let frame = std::mem::take(&mut self.pending);
            let result = self.on_header_block_frame(header, &frame[FRAME_HEADER_LEN..], out);
            self.pending = frame;
            self.pending.clear();
            result?;
        }
        Ok(input)
    }

    fn on_header_block_frame(
        &mut self,
        header: FrameHeader,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let block = if header.kind == FRAME_HEADERS {
            if let Some(open) = &self.block {
                return Err(RewriteError::InterleavedFrame {
                    frame_type: header.kind,
                    stream_id: header.stream_id,
                    block_stream_id: open.stream_id,
                });
            }
            let malformed = || RewriteError::MalformedHeadersFrame {
                stream_id: header.stream_id,
            };
            let mut body = payload;
            let mut padding = 0;
            if header.flags & FLAG_PADDED != 0 {
                let (&pad_len, rest) = body.split_first().ok_or_else(malformed)?;
                padding = usize::from(pad_len);
                body = rest;
            }
            let mut priority = None;
            if header.flags & FLAG_PRIORITY != 0 {
                let (fields, rest) = body
                    .split_first_chunk::<PRIORITY_LEN>()
                    .ok_or_else(malformed)?;
                priority = Some(*fields);
                body = rest;
            }
            let fragment_len = body.len().checked_sub(padding).ok_or_else(malformed)?;
            PendingBlock {
                stream_id: header.stream_id,
                end_stream: header.flags & FLAG_END_STREAM != 0,
                priority,
                fragment: body[..fragment_len].to_vec(),
            }
        } else {
            let Some(mut open) = self.block.take() else {
                return Err(RewriteError::UnexpectedContinuation {
                    stream_id: header.stream_id,
                });
            };
            if open.stream_id != header.stream_id {
                return Err(RewriteError::InterleavedFrame {
                    frame_type: header.kind,
                    stream_id: header.stream_id,
                    block_stream_id: open.stream_id,
                });
            }
            open.fragment.extend_from_slice(payload);
            open
        };

        if header.flags & FLAG_END_HEADERS != 0 {
            self.finish_block(block, out)
        } else {
            self.block = Some(block);
            Ok(())
        }
    }

    fn finish_block(&mut self, block: PendingBlock, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let stream_id = block.stream_id;
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut list_size = 0usize;
        self.decoder
            .decode_with_cb(&block.fragment, |name: Cow<[u8]>, value: Cow<[u8]>| {
                // Keep decoding past the limit: the block must still be
                // applied to the dynamic table, and we fail right after.
                list_size = list_size.saturating_add(name.len() + value.len() + 32);
                if list_size <= MAX_DECODED_HEADER_LIST {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| RewriteError::Hpack {
                stream_id,
                reason: e.to_string(),
            })?;
        if list_size > MAX_DECODED_HEADER_LIST {
            return Err(RewriteError::HeaderListTooLarge {
                stream_id,
                limit: MAX_DECODED_HEADER_LIST,
            });
        }

        for (name, value) in &mut fields {
            if name.as_slice() == b":authority" && !is_valid_authority(value) {
                tracing::debug!(
                    stream_id,
                    authority = %String::from_utf8_lossy(value),
                    "rewriting invalid :authority to {REPLACEMENT_AUTHORITY}"
                );
                *value = REPLACEMENT_AUTHORITY.as_bytes().to_vec();
                self.rewritten += 1;
            }
        }

        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        for (name, value) in &fields {
            encode_literal_without_indexing(name, value, &mut encoded);
        }
        write_header_frames(&block, &encoded, out);
        Ok(())
    }
}

impl Default for AuthorityRewriter {
    fn default() -> Self {
        AuthorityRewriter::new()
    }
}

impl fmt::Debug for AuthorityRewriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorityRewriter")
            .field("phase", &self.phase)
            .field("pending", &self.pending.len())
            .field("forward_remaining", &self.forward_remaining)
            .field("block_open", &self.block.as_ref().map(|b| b.stream_id))
            .field("rewritten", &self.rewritten)
            .finish_non_exhaustive()
    }
}

/// An accepted connection whose client-to-server bytes go through an
/// [`AuthorityRewriter`]. Writes go straight to the inner stream.
#[derive(Debug)]
pub struct AuthorityRewrite<S> {
    inner: S,
    rewriter: AuthorityRewriter,
    scratch: Box<[u8]>,
    /// Rewritten bytes not yet handed to the reader, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
    failed: Option<RewriteError>,
}

impl<S> AuthorityRewrite<S> {
    /// Wraps a freshly accepted stream (nothing read from it yet).
    pub fn new(inner: S) -> AuthorityRewrite<S> {
        AuthorityRewrite {
            inner,
            rewriter: AuthorityRewriter::new(),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            out: Vec::new(),
            out_pos: 0,
            eof: false,
            failed: None,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// How many `:authority` values have been rewritten so far.
    pub fn authorities_rewritten(&self) -> u64 {
        self.rewriter.authorities_rewritten()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRewrite<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(err) = &this.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, err.clone())));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.is_passthrough() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }

            let mut chunk = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
            let filled = chunk.filled().len();
            if filled == 0 {
                this.eof = true;
                this.rewriter.finish(&mut this.out);
                continue;
            }
            if let Err(err) = this.rewriter.feed(&this.scratch[..filled], &mut this.out) {
                tracing::debug!(error = %err, "closing Unix-socket connection");
                this.failed = Some(err);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRewrite<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The HTTP/2 client connection preface (RFC 9113 section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Stream dependency (4 bytes) and weight (1 byte) of a HEADERS frame.
const PRIORITY_LEN: usize = 5;
/// SETTINGS_MAX_FRAME_SIZE's initial value, which every server accepts.
const MAX_OUT_FRAME: usize = 16_384;
const MAX_DYNAMIC_TABLE: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `matched` bytes of the preface seen so far, none passed on yet.
    Preface {
        matched: usize,
    },
    /// Not HTTP/2 with prior knowledge: hands off.
    Passthrough,
    Frames,
}

#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    length: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHeader {
    /// Parses the first 9 bytes, if there are that many.
    fn parse(bytes: &[u8]) -> Option<FrameHeader> {
        let h: &[u8; FRAME_HEADER_LEN] = bytes.first_chunk()?;
        Some(FrameHeader {
            length: usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]),
            kind: h[3],
            flags: h[4],
            stream_id: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }

    fn carries_header_block(&self) -> bool {
        self.kind == FRAME_HEADERS || self.kind == FRAME_CONTINUATION
    }
}

#[derive(Debug)]
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_LEN]>,
    fragment: Vec<u8>,
}

fn is_valid_authority(value: &[u8]) -> bool {
    // The same parser h2 applies to `:authority`, so we rewrite exactly the
    // values h2 would reject.
    http::uri::Authority::try_from(value).is_ok()
}

/// RFC 7541 section 6.2.2: literal header field without indexing, new name.
fn encode_literal_without_indexing(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    for s in [name, value] {
        encode_integer_into(s.len(), 7, 0x00, out).expect("writing to a Vec cannot fail");
        out.extend_from_slice(s);
    }
}

fn write_header_frames(block: &PendingBlock, encoded: &[u8], out: &mut Vec<u8>) {
    let priority_len = block.priority.map_or(0, |_| PRIORITY_LEN);
    let (first, mut rest) = encoded.split_at(encoded.len().min(MAX_OUT_FRAME - priority_len));

    let mut flags = 0;
    if block.end_stream {
        flags |= FLAG_END_STREAM;
    }
    if block.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    write_frame_header(
        out,
        first.len() + priority_len,
        FRAME_HEADERS,
        flags,
        block.stream_id,
    );
    if let Some(priority) = &block.priority {
        out.extend_from_slice(priority);
    }
    out.extend_from_slice(first);

    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_OUT_FRAME));
        let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
        write_frame_header(out, chunk.len(), FRAME_CONTINUATION, flags, block.stream_id);
        out.extend_from_slice(chunk);
        rest = tail;
    }
}

fn write_frame_header(out: &mut Vec<u8>, length: usize, kind: u8, flags: u8, stream_id: u32) {
    debug_assert!(length <= MAX_OUT_FRAME);
    let len = u32::try_from(length).expect("frame payloads are at most 16384 bytes");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use loona_hpack::Encoder;

    pub(crate) const BAD_AUTHORITY: &[u8] = b"%2Ftmp%2Fagent.sock";

    /// A decoded header list.
    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    pub(crate) fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let len = u32::try_from(payload.len()).expect("test frame fits");
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream_id.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn request_headers(authority: &[u8], extra: &[(&[u8], &[u8])]) -> Fields {
        let mut h: Fields = vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/SpiffeWorkloadAPI/FetchX509SVID".to_vec(),
            ),
            (b":authority".to_vec(), authority.to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (b"te".to_vec(), b"trailers".to_vec()),
            (b"workload.spiffe.io".to_vec(), b"true".to_vec()),
        ];
        h.extend(extra.iter().map(|(n, v)| (n.to_vec(), v.to_vec())));
        h
    }

    fn encode(enc: &mut Encoder<'_>, headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        enc.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
    }

    /// A parsed output frame.
    #[derive(Debug)]
    struct Frame {
        kind: u8,
        flags: u8,
        stream_id: u32,
        payload: Vec<u8>,
    }

    fn parse_frames(mut bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let h = FrameHeader::parse(bytes).expect("whole frame header");
            let end = FRAME_HEADER_LEN + h.length;
            frames.push(Frame {
                kind: h.kind,
                flags: h.flags,
                stream_id: h.stream_id,
                payload: bytes[FRAME_HEADER_LEN..end].to_vec(),
            });
            bytes = &bytes[end..];
        }
        frames
    }

    /// Decodes every header block in `frames` the way a server would, with a
    /// decoder whose dynamic table has size 0: any reference into the dynamic
    /// table would fail, proving the output never uses it.
    fn server_view(frames: &[Frame]) -> Vec<(u32, Fields)> {
        let mut dec = Decoder::new();
        dec.set_max_table_size(0);
        let mut blocks = Vec::new();
        let mut open: Option<(u32, Vec<u8>)> = None;
        for f in frames {
            match f.kind {
                FRAME_HEADERS => {
                    assert!(open.is_none());
                    assert_eq!(f.flags & FLAG_PADDED, 0, "padding is removed");
                    let skip = if f.flags & FLAG_PRIORITY != 0 { 5 } else { 0 };
                    open = Some((f.stream_id, f.payload[skip..].to_vec()));
                }
                FRAME_CONTINUATION => {
                    let (id, frag) = open.as_mut().expect("open block");
                    assert_eq!(*id, f.stream_id);
                    frag.extend_from_slice(&f.payload);
                }
                _ => {
                    assert!(open.is_none(), "no frame interleaves a header block");
                    continue;
                }
            }
            assert!(f.payload.len() <= MAX_OUT_FRAME);
            if f.flags & FLAG_END_HEADERS != 0 {
                let (id, frag) = open.take().expect("open block");
                blocks.push((id, dec.decode(&frag).expect("server-side decode")));
            }
        }
        assert!(open.is_none());
        blocks
    }

    fn get<'a>(headers: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
        headers
            .iter()
            .find(|(n, _)| n.as_slice() == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// One HPACK field representation, chosen by the test.
    enum Field<'a> {
        /// Fully indexed (static or dynamic table).
        Indexed(usize),
        /// Literal with incremental indexing, name from the table.
        IndexedName(usize, &'a [u8]),
        /// Literal with incremental indexing, literal name.
        Literal(&'a [u8], &'a [u8]),
        /// Literal never indexed, literal name.
        NeverIndexed(&'a [u8], &'a [u8]),
        /// Dynamic table size update.
        SizeUpdate(usize),
    }

    fn hpack(fields: &[Field<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        let string = |s: &[u8], out: &mut Vec<u8>| {
            encode_integer_into(s.len(), 7, 0, out).expect("vec");
            out.extend_from_slice(s);
        };
        for f in fields {
            match *f {
                Field::Indexed(i) => encode_integer_into(i, 7, 0x80, &mut out).expect("vec"),
                Field::IndexedName(i, v) => {
                    encode_integer_into(i, 6, 0x40, &mut out).expect("vec");
                    string(v, &mut out);
                }
                Field::Literal(n, v) => {
                    out.push(0x40);
                    string(n, &mut out);
                    string(v, &mut out);
                }
                Field::NeverIndexed(n, v) => {
                    out.push(0x10);
                    string(n, &mut out);
                    string(v, &mut out);
                }
                Field::SizeUpdate(size) => {
                    encode_integer_into(size, 5, 0x20, &mut out).expect("vec")
                }
            }
        }
        out
    }

    /// A client byte stream exercising the interesting cases: request 1
    /// inserts the bad authority (and everything else) into the client's
    /// dynamic table; request 2 starts with a table size update and is made
    /// of nothing but table references, in a padded, prioritised HEADERS
    /// frame split over two CONTINUATIONs; request 3 has a valid authority
    /// and a never-indexed field; DATA and control frames sit in between.
    fn client_stream() -> (Vec<u8>, Vec<Fields>) {
        const PATH: &[u8] = b"/SpiffeWorkloadAPI/FetchX509SVID";
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])); // SETTINGS

        let req1 = request_headers(BAD_AUTHORITY, &[(b"x-custom", b"one")]);
        let block1 = hpack(&[
            Field::Indexed(3), // :method POST
            Field::Indexed(6), // :scheme http
            Field::IndexedName(4, PATH),
            Field::IndexedName(1, BAD_AUTHORITY),
            Field::IndexedName(31, b"application/grpc"),
            Field::Literal(b"te", b"trailers"),
            Field::Literal(b"workload.spiffe.io", b"true"),
            Field::Literal(b"x-custom", b"one"),
        ]);
        bytes.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block1));
        bytes.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0")); // DATA

        bytes.extend(frame(0x8, 0, 0, &[0, 0, 1, 0])); // WINDOW_UPDATE
        // Dynamic table now, newest first: x-custom=62 ... :path=67.
        let req2 = req1.clone();
        let block2 = hpack(&[
            Field::SizeUpdate(4096),
            Field::Indexed(3),
            Field::Indexed(6),
            Field::Indexed(67),
            Field::Indexed(66),
            Field::Indexed(65),
            Field::Indexed(64),
            Field::Indexed(63),
            Field::Indexed(62),
        ]);
        // HEADERS: PADDED + PRIORITY + END_STREAM, block split in three.
        let (a, rest) = block2.split_at(4);
        let (b, c) = rest.split_at(2);
        let mut payload = vec![4u8]; // pad length
        payload.extend_from_slice(&[0, 0, 0, 0, 15]); // dependency 0, weight 15
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0; 4]);
        bytes.extend(frame(
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
            3,
            &payload,
        ));
        bytes.extend(frame(FRAME_CONTINUATION, 0, 3, b));
        bytes.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, c));

        let good = request_headers(b"localhost:8080", &[(b"authorization", b"secret")]);
        let block3 = hpack(&[
            Field::Indexed(3),
            Field::Indexed(6),
            Field::Indexed(67),
            Field::IndexedName(1, b"localhost:8080"),
            // The new entry pushed everything down by one.
            Field::Indexed(66),
            Field::Indexed(65),
            Field::Indexed(64),
            Field::NeverIndexed(b"authorization", b"secret"),
        ]);
        bytes.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 5, &block3));
        bytes.extend(frame(0x6, 0, 0, b"pingpong")); // PING
        (bytes, vec![req1, req2, good])
    }

    fn rewrite_all(chunks: &[&[u8]]) -> Vec<u8> {
        let mut rw = AuthorityRewriter::new();
        let mut out = Vec::new();
        for chunk in chunks {
            rw.feed(chunk, &mut out).expect("feed");
        }
        rw.finish(&mut out);
        out
    }

    #[test]
    fn invalid_authority_becomes_localhost_and_other_headers_survive() {
        let (bytes, sent) = client_stream();
        let mut rw = AuthorityRewriter::new();
        let mut out = Vec::new();
        rw.feed(&bytes, &mut out).expect("feed");
        assert_eq!(rw.authorities_rewritten(), 2);
        assert!(out.starts_with(PREFACE));

        let frames = parse_frames(&out[PREFACE.len()..]);
        let blocks = server_view(&frames);
        assert_eq!(blocks.len(), 3);
        for ((stream_id, got), (want_id, want)) in blocks.iter().zip([1, 3, 5].iter().zip(&sent)) {
            assert_eq!(stream_id, want_id);
            assert_eq!(got.len(), want.len());
            for ((gn, gv), (wn, wv)) in got.iter().zip(want) {
                assert_eq!(gn, wn);
                if gn.as_slice() == b":authority" && wv.as_slice() == BAD_AUTHORITY {
                    assert_eq!(gv.as_slice(), b"localhost");
                } else {
                    assert_eq!(gv, wv, "header {}", String::from_utf8_lossy(gn));
                }
            }
        }
        assert_eq!(
            get(&blocks[2].1, ":authority"),
            Some(&b"localhost:8080"[..])
        );

        let kinds: Vec<(u8, u8, u32)> = frames
            .iter()
            .map(|f| (f.kind, f.flags, f.stream_id))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (0x4, 0, 0),
                (FRAME_HEADERS, FLAG_END_HEADERS, 1),
                (0x0, FLAG_END_STREAM, 1),
                (0x8, 0, 0),
                (
                    FRAME_HEADERS,
                    FLAG_END_HEADERS | FLAG_PRIORITY | FLAG_END_STREAM,
                    3
                ),
                (FRAME_HEADERS, FLAG_END_HEADERS, 5),
                (0x6, 0, 0),
            ]
        );
        let prioritised = &frames[4];
        assert_eq!(&prioritised.payload[..5], &[0, 0, 0, 0, 15]);
        assert_eq!(frames[2].payload, b"\0\0\0\0\0");
        assert_eq!(frames[6].payload, b"pingpong");
    }

    #[test]
    fn output_is_identical_for_every_split_point_and_byte_by_byte() {
        let (bytes, _) = client_stream();
        let whole = rewrite_all(&[&bytes]);
        for i in 0..=bytes.len() {
            let (a, b) = bytes.split_at(i);
            assert_eq!(rewrite_all(&[a, b]), whole, "split at {i}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(rewrite_all(&singles), whole);
    }

    #[test]
    fn bytes_are_emitted_as_soon_as_a_frame_allows() {
        let (bytes, _) = client_stream();
        let mut rw = AuthorityRewriter::new();
        let mut out = Vec::new();
        // Preface + SETTINGS + the first HEADERS frame, nothing more: the
        // rewritten HEADERS must be out without waiting for further input.
        let first_headers_end = PREFACE.len() + 15 + FRAME_HEADER_LEN + {
            let h = FrameHeader::parse(&bytes[PREFACE.len() + 15..]).expect("header");
            h.length
        };
        rw.feed(&bytes[..first_headers_end], &mut out)
            .expect("feed");
        let frames = parse_frames(&out[PREFACE.len()..]);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].kind, FRAME_HEADERS);

        // A DATA frame's payload is forwarded byte by byte, never held back.
        let mut rw = AuthorityRewriter::new();
        let mut out = Vec::new();
        let mut stream = PREFACE.to_vec();
        stream.extend(frame(0x0, 0, 1, b"abcdef"));
        rw.feed(&stream[..stream.len() - 3], &mut out)
            .expect("feed");
        assert_eq!(out, &stream[..stream.len() - 3]);
    }

    #[test]
    fn zero_length_continuation_ending_a_block_is_flushed_immediately() {
        let mut enc = Encoder::new();
        let block = encode(&mut enc, &request_headers(BAD_AUTHORITY, &[]));
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(FRAME_HEADERS, 0, 1, &block));
        bytes.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &[]));
        let mut rw = AuthorityRewriter::new();
        let mut out = Vec::new();
        rw.feed(&bytes, &mut out).expect("feed");
        let blocks = server_view(&parse_frames(&out[PREFACE.len()..]));
        assert_eq!(blocks.len(), 1);
        assert_eq!(get(&blocks[0].1, ":authority"), Some(&b"localhost"[..]));
    }

    #[test]
    fn large_block_is_reemitted_as_headers_plus_continuations_under_16k() {
        let mut enc = Encoder::new();
        let big = vec![b'a'; 40_000];
        let headers = request_headers(b"/run/spire/agent.sock", &[(b"x-big", &big)]);
        let block = encode(&mut enc, &headers);
        let mut bytes = PREFACE.to_vec();
        // The client used a 64 KiB frame (allowed if the server said so).
        bytes.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            &block,
        ));
        let out = rewrite_all(&[&bytes]);
        let frames = parse_frames(&out[PREFACE.len()..]);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].flags, FLAG_END_STREAM);
        assert_eq!(frames[1].kind, FRAME_CONTINUATION);
        assert_eq!(frames[1].flags, 0);
        assert_eq!(frames[2].flags, FLAG_END_HEADERS);
        let blocks = server_view(&frames);
        assert_eq!(get(&blocks[0].1, ":authority"), Some(&b"localhost"[..]));
        assert_eq!(get(&blocks[0].1, "x-big"), Some(big.as_slice()));
    }

    #[test]
    fn non_http2_bytes_pass_through_untouched() {
        let http1 = b"GET / HTTP/1.1\r\nHost: /tmp/x.sock\r\n\r\n".to_vec();
        assert_eq!(rewrite_all(&[&http1]), http1);
        // Diverging late in the preface still emits everything.
        let almost = b"PRI * HTTP/2.0\r\n\r\nXX and more".to_vec();
        let singles: Vec<&[u8]> = almost.chunks(1).collect();
        assert_eq!(rewrite_all(&singles), almost);
        // A truncated preface at EOF is flushed, not swallowed.
        assert_eq!(rewrite_all(&[&PREFACE[..10]]), &PREFACE[..10]);
        // Random bytes after a non-preface start are never parsed as frames.
        let mut junk = b"hello".to_vec();
        junk.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &[0xff; 3]));
        assert_eq!(rewrite_all(&[&junk]), junk);
    }

    #[test]
    fn valid_authorities_are_left_alone_and_invalid_ones_match_h2() {
        for ok in [
            "localhost",
            "localhost:1234",
            "example.org",
            "[::1]:8081",
            "a-b.c",
        ] {
            assert!(is_valid_authority(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "%2Ftmp%2Fagent.sock",
            // What grpcio 1.85 sends for `unix:/tmp/agent.sock`.
            "tmp%2Fagent.sock",
            "unix:%2Ftmp%2Fagent.sock",
            "/run/spire/sockets/agent.sock",
            "",
        ] {
            assert!(!is_valid_authority(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn oversized_and_malformed_blocks_close_the_connection() {
        // Header block larger than the limit, spread over CONTINUATIONs.
        let mut rw = AuthorityRewriter::new();
        let mut out = Vec::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(FRAME_HEADERS, 0, 1, &vec![0u8; 600 * 1024]));
        rw.feed(&bytes, &mut out).expect("first half fits");
        let cont = frame(FRAME_CONTINUATION, 0, 1, &vec![0u8; 600 * 1024]);
        // Rejected on the frame header alone, before buffering the payload.
        assert!(matches!(
            rw.feed(&cont[..FRAME_HEADER_LEN], &mut out),
            Err(RewriteError::HeaderBlockTooLarge { stream_id: 1, .. })
        ));

        // A frame interleaved into an open block.
        let mut rw = AuthorityRewriter::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(FRAME_HEADERS, 0, 1, &[0x82]));
        bytes.extend(frame(0x0, 0, 1, b"x"));
        assert!(matches!(
            rw.feed(&bytes, &mut Vec::new()),
            Err(RewriteError::InterleavedFrame {
                frame_type: 0,
                block_stream_id: 1,
                ..
            })
        ));

        // CONTINUATION out of the blue.
        let mut rw = AuthorityRewriter::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &[0x82]));
        assert!(matches!(
            rw.feed(&bytes, &mut Vec::new()),
            Err(RewriteError::UnexpectedContinuation { stream_id: 1 })
        ));

        // Padding longer than the payload.
        let mut rw = AuthorityRewriter::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_END_HEADERS,
            1,
            &[9, 0x82],
        ));
        assert!(matches!(
            rw.feed(&bytes, &mut Vec::new()),
            Err(RewriteError::MalformedHeadersFrame { stream_id: 1 })
        ));

        // Invalid HPACK (index 0 does not exist).
        let mut rw = AuthorityRewriter::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &[0x80]));
        assert!(matches!(
            rw.feed(&bytes, &mut Vec::new()),
            Err(RewriteError::Hpack { stream_id: 1, .. })
        ));
    }

    #[test]
    fn dynamic_table_amplification_is_bounded() {
        // One 4000-byte entry, then a block of thousands of one-byte
        // references to it: tiny on the wire, gigabytes decoded.
        let mut enc = Encoder::new();
        let first = encode(&mut enc, &[(b"x-fat".to_vec(), vec![b'z'; 4000])]);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &first));
        bytes.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            3,
            &vec![0x80 | 62; 16_000],
        ));
        let mut rw = AuthorityRewriter::new();
        assert!(matches!(
            rw.feed(&bytes, &mut Vec::new()),
            Err(RewriteError::HeaderListTooLarge { stream_id: 3, .. })
        ));
    }

    #[test]
    fn hostile_header_blocks_never_panic() {
        // A cheap deterministic generator; the decoder must return errors,
        // not panic, on arbitrary input.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let len = (next() % 64) as usize;
            let block: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut bytes = PREFACE.to_vec();
            bytes.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block));
            let _ = AuthorityRewriter::new().feed(&bytes, &mut Vec::new());
        }
    }

    #[tokio::test]
    async fn async_wrapper_rewrites_reads_and_passes_writes_through() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (bytes, _) = client_stream();
        let expected = rewrite_all(&[&bytes]);
        let (mut client, server) = tokio::io::duplex(64);
        let mut wrapped = AuthorityRewrite::new(server);

        let writer = tokio::spawn(async move {
            for chunk in bytes.chunks(7) {
                client.write_all(chunk).await.expect("write");
            }
            let mut reply = [0u8; 5];
            client.read_exact(&mut reply).await.expect("reply");
            assert_eq!(&reply, b"hello");
        });

        let mut got = Vec::new();
        let mut buf = [0u8; 11];
        while got.len() < expected.len() {
            let n = wrapped.read(&mut buf).await.expect("read");
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, expected);
        assert_eq!(wrapped.authorities_rewritten(), 2);
        wrapped.write_all(b"hello").await.expect("write back");
        writer.await.expect("writer");
        assert_eq!(wrapped.read(&mut buf).await.expect("eof"), 0);
    }

    #[tokio::test]
    async fn async_wrapper_reports_protocol_errors_as_invalid_data() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (mut client, server) = tokio::io::duplex(1024);
        let mut wrapped = AuthorityRewrite::new(server);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &[0x82]));
        client.write_all(&bytes).await.expect("write");
        let mut sink = Vec::new();
        let err = wrapped
            .read_to_end(&mut sink)
            .await
            .expect_err("protocol error");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(sink, PREFACE);
    }
}
