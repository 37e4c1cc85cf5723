//! `body_limit`: a request body larger than `max_bytes` gets 413. A declared
//! `Content-Length` over the limit is answered at once, without contacting
//! the upstream. A body without one (chunked, HTTP/2 without the header) is
//! counted while it streams: the frame that crosses the limit ends the body
//! with an error instead, which aborts the upstream request, and the proxy
//! answers 413 in place of whatever the upstream failure would have been.
//! Nothing is buffered.
//!
//! After a 413 the client is usually still sending. Closing the connection
//! on unread bytes makes the kernel send a reset, which can destroy the 413
//! before the client reads it; so what follows is read and thrown away for
//! a while (a lingering close, as nginx does), up to a bound.
use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{
    body::{Body, Frame, SizeHint},
    header, Request, Response, StatusCode,
};

use super::{answer, Answer, BodyLimitConfig};
use crate::proxy::upstream::ProxyBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How much of a refused body is read and thrown away, at most, and for
/// how long.
const DISCARD_MAX: u64 = 16 << 20;
const DISCARD_FOR: std::time::Duration = std::time::Duration::from_secs(5);

pub struct BodyLimit {
    max_bytes: u64,
}

/// Tells the response side that the body was cut off.
pub struct Overflow {
    flag: Arc<AtomicBool>,
    limit: u64,
    middleware: String,
}

impl Overflow {
    pub fn happened(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    pub fn limit(&self) -> u64 {
        self.limit
    }
    pub fn middleware(&self) -> &str {
        &self.middleware
    }
}

impl BodyLimit {
    pub fn new(config: &BodyLimitConfig) -> Self {
        BodyLimit {
            max_bytes: config.max_bytes,
        }
    }

    /// `Err` is the 413 answer for a declared length over the limit; else
    /// the body is wrapped to count as it streams.
    pub fn wrap(
        &self,
        request: &mut Request<ProxyBody>,
        middleware: &str,
    ) -> Result<Overflow, Answer> {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .or_else(|| request.body().size_hint().exact());
        if declared.is_some_and(|length| length > self.max_bytes) {
            discard(std::mem::replace(request.body_mut(), empty()));
            return Err(Box::new(too_large(self.max_bytes)));
        }
        let flag = Arc::new(AtomicBool::new(false));
        let body = std::mem::replace(request.body_mut(), empty());
        *request.body_mut() = Limited {
            inner: body,
            limit: self.max_bytes,
            remaining: self.max_bytes,
            overflow: flag.clone(),
        }
        .boxed_unsync();
        Ok(Overflow {
            flag,
            limit: self.max_bytes,
            middleware: middleware.to_string(),
        })
    }
}

pub fn too_large(limit: u64) -> Response<ProxyBody> {
    // No `Connection: close`: hyper closes an HTTP/1 connection whose
    // request body was not read to its end by itself, and keeps one whose
    // rest was discarded in time (HTTP/2 has no such header).
    answer(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("413 request body larger than {limit} bytes"),
    )
}

/// Reads what is left of a refused body in the background, so that the
/// connection closes after the client has sent it (see the module doc).
fn discard(mut body: ProxyBody) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut seen = 0u64;
        let _ = tokio::time::timeout(DISCARD_FOR, async {
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > DISCARD_MAX {
                    break;
                }
            }
        })
        .await;
    });
}

fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| -> BoxError { match never {} })
        .boxed_unsync()
}

#[derive(Debug)]
struct TooLarge(u64);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body larger than {} bytes", self.0)
    }
}

impl std::error::Error for TooLarge {}

struct Limited {
    inner: ProxyBody,
    limit: u64,
    remaining: u64,
    overflow: Arc<AtomicBool>,
}

impl Body for Limited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let length = data.len() as u64;
                if length > self.remaining {
                    self.overflow.store(true, Ordering::SeqCst);
                    let limit = self.limit;
                    self.remaining = 0;
                    discard(std::mem::replace(&mut self.inner, empty()));
                    return Poll::Ready(Some(Err(Box::new(TooLarge(limit)))));
                }
                self.remaining -= length;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A body that arrives in chunks and declares no length (chunked).
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
        }
    }

    fn chunked(chunks: &[&'static [u8]]) -> Request<ProxyBody> {
        let chunks = chunks.iter().map(|c| Bytes::from_static(c)).collect();
        Request::new(Chunks(chunks).boxed_unsync())
    }

    async fn drain(request: Request<ProxyBody>) -> Result<usize, String> {
        let mut body = request.into_body();
        let mut total = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            total += frame.data_ref().map_or(0, |d| d.len());
        }
        Ok(total)
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_up_front() {
        let limit = BodyLimit::new(&BodyLimitConfig { max_bytes: 10 });
        let mut request = chunked(&[b"0123456789A"]);
        request.headers_mut().insert(
            header::CONTENT_LENGTH,
            header::HeaderValue::from_static("11"),
        );
        let answer = limit.wrap(&mut request, "cap").err().unwrap();
        assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_stream_is_cut_at_the_chunk_that_crosses_the_limit() {
        let limit = BodyLimit::new(&BodyLimitConfig { max_bytes: 10 });
        let mut request = chunked(&[b"01234", b"56789"]);
        let overflow = limit.wrap(&mut request, "cap").unwrap();
        assert_eq!(drain(request).await, Ok(10), "exactly the limit passes");
        assert!(!overflow.happened());

        let mut request = chunked(&[b"01234", b"56789", b"A"]);
        let overflow = limit.wrap(&mut request, "cap").unwrap();
        let error = drain(request).await.unwrap_err();
        assert!(error.contains("larger than 10 bytes"), "{error}");
        assert!(overflow.happened());
        assert_eq!(overflow.middleware(), "cap");
    }
}
