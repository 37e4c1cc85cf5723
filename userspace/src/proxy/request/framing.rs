//! Request framing as the client sent it, read below hyper.
//!
//! hyper's HTTP/1 server, given both `Content-Length` and
//! `Transfer-Encoding`, drops `Content-Length` from the header map and reads
//! the body as chunked, so the request handler cannot tell that the request
//! was framed two ways. A front end that picked the other framing would read
//! a different next request than we do: request smuggling. [`FramingWatch`]
//! sits between the TLS/TCP stream and hyper, follows HTTP/1.1 framing on the
//! bytes the client sends (heads, `Content-Length` bodies by count, chunked
//! bodies chunk by chunk) and records in a [`FramingState`] shared with the
//! handler whether a request head had ambiguous framing, so the handler can
//! answer 400 and close, as nginx and Envoy do.
//!
//! Not a validator: whatever hyper refuses by itself (differing duplicate
//! `Content-Length`, malformed chunk sizes, obs-fold lines, a space before a
//! colon, oversized heads) makes the scanner stop, not flag. Not for HTTP/2:
//! on the h2 preface it stops for good. `CONNECT` and `Upgrade` do not stop
//! it: hyper keeps reading HTTP/1 when it answers them without switching.
use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Past this many head bytes the scanner gives up; hyper refuses heads
/// larger than its `max_buf_size`, which [`FramingWatch::head_limit`] should match.
pub const DEFAULT_HEAD_LIMIT: usize = 64 * 1024;
/// hyper's default header count; larger heads are parsed from a heap array.
const STACK_HEADERS: usize = 100;

/// A way a request head can be read as framed differently by two parsers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ambiguity {
    /// Both `Content-Length` and `Transfer-Encoding`, in any order or number.
    ContentLengthAndTransferEncoding,
    /// More than one `Transfer-Encoding` line: parsers differ on first, last or joined.
    RepeatedTransferEncoding,
    /// A `Transfer-Encoding` other than exactly `chunked` (`gzip, chunked`,
    /// `chunked, chunked`), which hyper reads as chunked but others need not.
    TransferEncodingNotChunked,
}

impl Ambiguity {
    /// What was wrong, for the 400 body.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ContentLengthAndTransferEncoding => {
                "the request has both Content-Length and Transfer-Encoding"
            }
            Self::RepeatedTransferEncoding => {
                "the request has more than one Transfer-Encoding header"
            }
            Self::TransferEncodingNotChunked => {
                "the request's Transfer-Encoding is not exactly `chunked`"
            }
        }
    }
}

/// Shared between the wrapper and the request handler of one connection.
#[derive(Debug, Default)]
pub struct FramingState {
    /// 0 while clean, else 1 + the first ambiguity's discriminant.
    found: AtomicU8,
}

impl FramingState {
    /// The first ambiguous framing a request head on this connection had.
    /// Sticky: once set, it stays, since what follows it on the connection
    /// cannot be told apart from a next request.
    pub fn ambiguous(&self) -> Option<Ambiguity> {
        use Ambiguity::*;
        let found = self.found.load(Ordering::Acquire);
        [
            ContentLengthAndTransferEncoding,
            RepeatedTransferEncoding,
            TransferEncodingNotChunked,
        ]
        .into_iter()
        .find(|&a| a as u8 + 1 == found)
    }

    fn record(&self, ambiguity: Ambiguity) {
        // Keep the first: it is the one that broke framing.
        let code = ambiguity as u8 + 1;
        let _ = (self.found).compare_exchange(0, code, Ordering::Release, Ordering::Relaxed);
    }
}

/// Where the scanner is in the client's byte stream. The chunked states
/// mirror hyper's `ChunkedState` (proto/h1/decode.rs) byte for byte, so that
/// the scanner stops only where hyper itself refuses the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Bytes of the h2 preface matched so far (connection start only).
    Preface(usize),
    Head,
    /// `Content-Length` body bytes left.
    Fixed(u64),
    SizeStart,
    Size(u64),
    SizeLws(u64),
    Ext(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
    /// h2, or bytes hyper will refuse, or a head over the limit.
    Stopped,
    Flagged(Ambiguity),
}

#[derive(Debug)]
struct Scanner {
    state: State,
    /// A head split across reads; empty when heads arrive whole.
    head: Vec<u8>,
    /// Where the incomplete last line of `head` starts.
    line_start: usize,
    limit: usize,
}

impl Scanner {
    fn new(limit: usize) -> Self {
        Self {
            state: State::Preface(0),
            head: Vec::new(),
            line_start: 0,
            limit,
        }
    }

    fn done(&self) -> bool {
        matches!(self.state, State::Stopped | State::Flagged(_))
    }

    /// Follows `data`; returns an ambiguity the first time one is found.
    fn feed(&mut self, data: &[u8]) -> Option<Ambiguity> {
        if self.done() {
            return None;
        }
        self.run(data);
        match self.state {
            State::Flagged(a) => Some(a),
            _ => None,
        }
    }

    fn run(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.done() {
            let used = match self.state {
                State::Preface(matched) => self.preface(matched, data),
                State::Head => self.head(data),
                State::Fixed(left) | State::Data(left) => {
                    let n = left.min(data.len() as u64);
                    self.state = match (self.state, left - n) {
                        (State::Fixed(_), 0) => State::Head,
                        (State::Fixed(_), left) => State::Fixed(left),
                        (_, 0) => State::DataCr,
                        (_, left) => State::Data(left),
                    };
                    n as usize
                }
                state => {
                    self.state = chunk_step(state, data[0]).unwrap_or(State::Stopped);
                    1
                }
            };
            data = &data[used..];
        }
    }

    /// hyper-util's auto builder takes a connection opening with the
    /// preface as h2; anything else is HTTP/1 from its first byte, so a
    /// mismatch replays the matched bytes as the start of a head.
    fn preface(&mut self, matched: usize, data: &[u8]) -> usize {
        let n = data.len().min(H2_PREFACE.len() - matched);
        if data[..n] == H2_PREFACE[matched..matched + n] {
            self.state = match matched + n {
                m if m == H2_PREFACE.len() => State::Stopped,
                m => State::Preface(m),
            };
            return n;
        }
        self.state = State::Head;
        self.run(&H2_PREFACE[..matched]);
        0
    }

    /// Collects a head up to its blank line and decides what follows it.
    /// Returns how many bytes of `data` belong to the head.
    fn head(&mut self, data: &[u8]) -> usize {
        if self.head.is_empty() {
            match data[0] {
                b'\r' | b'\n' => return 1, // httparse skips empty lines first
                // Not a method: hyper refuses it, or it is another protocol
                // after an upgrade hyper accepted. Nothing to follow.
                b if !is_tchar(b) => {
                    self.stop();
                    return data.len();
                }
                _ => {}
            }
        }
        let old = self.head.len();
        self.head.extend_from_slice(data);
        match head_end(&self.head, self.line_start, old) {
            Ok(end) => {
                // The limit holds whichever way the head was split.
                self.state = match end <= self.limit {
                    true => decide(&self.head[..end]),
                    false => State::Stopped,
                };
                self.head.clear();
                self.line_start = 0;
                if self.head.capacity() > 8 * 1024 {
                    self.head = Vec::new(); // a rare big head should not pin memory
                }
                end - old
            }
            Err(line_start) => {
                self.line_start = line_start;
                if self.head.len() > self.limit {
                    self.stop();
                }
                data.len()
            }
        }
    }

    fn stop(&mut self) {
        self.state = State::Stopped;
        self.head = Vec::new();
    }
}

/// The end of the blank line closing a head, looking for line ends from
/// `from` only (bytes before it were looked at already: one-byte reads stay
/// linear), else where the incomplete last line starts. A bare LF ends a
/// line, as in httparse.
fn head_end(bytes: &[u8], mut line_start: usize, mut from: usize) -> Result<usize, usize> {
    while let Some(pos) = bytes[from..].iter().position(|&b| b == b'\n') {
        from += pos + 1;
        if matches!(&bytes[line_start..from - 1], b"" | b"\r") {
            return Ok(from);
        }
        line_start = from;
    }
    Err(line_start)
}

/// Reads the framing headers of a complete head. Header names are matched
/// case-insensitively; the request line's method does not matter: hyper
/// keeps reading HTTP/1 after a `CONNECT` or `Upgrade` it did not accept,
/// and after one it did accept, no further request reaches the handler.
fn decide(head: &[u8]) -> State {
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    match decide_with(head, &mut stack) {
        Err(httparse::Error::TooManyHeaders) => {
            // hyper may be configured for more headers than its default.
            let lines = head.iter().filter(|&&b| b == b'\n').count();
            let mut heap = vec![httparse::EMPTY_HEADER; lines];
            decide_with(head, &mut heap).unwrap_or(State::Stopped)
        }
        other => other.unwrap_or(State::Stopped),
    }
}

fn decide_with<'h>(
    head: &'h [u8],
    headers: &mut [httparse::Header<'h>],
) -> Result<State, httparse::Error> {
    let mut request = httparse::Request::new(headers);
    if !request.parse(head)?.is_complete() {
        return Ok(State::Stopped);
    }
    let (mut lengths, mut length, mut te, mut chunked) = (0, None, 0, false);
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            // hyper refuses differing duplicates, and all but digits (a
            // `+` read here is refused there: harmless).
            let value = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.parse().ok());
            if lengths > 1 && value != length {
                length = None;
            } else {
                length = value;
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            te += 1;
            chunked = header.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        }
    }
    Ok(match (lengths, te, chunked, length) {
        (1.., 1.., _, _) => State::Flagged(Ambiguity::ContentLengthAndTransferEncoding),
        (_, 2.., _, _) => State::Flagged(Ambiguity::RepeatedTransferEncoding),
        (_, 1, false, _) => State::Flagged(Ambiguity::TransferEncodingNotChunked),
        (_, 1, true, _) => State::SizeStart,
        (0, ..) | (_, _, _, Some(0)) => State::Head,
        (_, _, _, Some(n)) => State::Fixed(n),
        (_, _, _, None) => State::Stopped, // hyper answers 400 itself
    })
}

/// RFC 9110 `tchar`, the bytes a method is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One byte of a chunk-size line, chunk delimiter or trailer; `None` where
/// hyper's decoder errors.
fn chunk_step(state: State, b: u8) -> Option<State> {
    use State::*;
    let hex = (b as char).to_digit(16).map(u64::from);
    Some(match (state, b) {
        (SizeStart, _) => Size(hex?),
        (Size(n), _) if hex.is_some() => Size(n.checked_mul(16)?.checked_add(hex?)?),
        (Size(n) | SizeLws(n), b' ' | b'\t') => SizeLws(n),
        (Size(n) | SizeLws(n), b';') => Ext(n),
        (Size(n) | SizeLws(n) | Ext(n), b'\r') => SizeLf(n),
        (Ext(_), b'\n') => return None,
        (Ext(n), _) => Ext(n),
        (SizeLf(0), b'\n') => EndCr,
        (SizeLf(n), b'\n') => Data(n),
        (DataCr, b'\r') => DataLf,
        (DataLf, b'\n') => SizeStart,
        (EndCr, b'\r') => EndLf,
        (EndCr | Trailer, _) if b != b'\r' => Trailer,
        (Trailer, b'\r') => TrailerLf,
        (TrailerLf, b'\n') => EndCr,
        (EndLf, b'\n') => Head,
        _ => return None,
    })
}

/// An IO that hyper's server reads through, watching HTTP/1 request framing.
#[derive(Debug)]
pub struct FramingWatch<S> {
    inner: S,
    state: Arc<FramingState>,
    scanner: Scanner,
}

impl<S> FramingWatch<S> {
    pub fn new(inner: S, state: Arc<FramingState>) -> Self {
        Self {
            inner,
            state,
            scanner: Scanner::new(DEFAULT_HEAD_LIMIT),
        }
    }

    /// The largest head followed; pass hyper's `max_buf_size`, since a head
    /// hyper accepts but the scanner gives up on leaves the rest unwatched.
    pub fn head_limit(mut self, bytes: usize) -> Self {
        self.scanner.limit = bytes;
        self
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingWatch<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(ambiguity) = this.scanner.feed(&buf.filled()[before..]) {
            this.state.record(ambiguity);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingWatch<S> {
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

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
