//! `body_limit`: a request body larger than `max_bytes` gets 413. A declared
//! `Content-Length` over the limit is answered at once, without contacting
//! the upstream. A body without one (chunked, HTTP/2 without the header) is
//! counted while it streams by `http_body_util::Limited`: the frame that
//! crosses the limit ends the body with an error, which aborts the upstream
//! request, and that error (a [`BodyTooLarge`] naming this middleware)
//! becomes the 413 where the upstream call fails. Nothing is buffered.
//!
//! What the client still sends after a 413 is read and thrown away for a
//! while by the request body's own wrapper (`request::stall`), so that the
//! 413 is not lost to a reset.
use std::sync::Arc;

use http_body_util::{BodyExt as _, Limited};
use hyper::{body::Body as _, header, Request, StatusCode};

use super::{stack::Middleware, BodyLimitConfig};
use crate::proxy::{
    request::{error::BodyTooLarge, ProxyError},
    upstream::ProxyBody,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct BodyLimit {
    max_bytes: u64,
    name: Arc<str>,
}

impl BodyLimit {
    pub fn new(name: &str, config: &BodyLimitConfig) -> Self {
        BodyLimit {
            max_bytes: config.max_bytes,
            name: name.into(),
        }
    }

    fn too_large(&self) -> ProxyError {
        // No `Connection: close`: hyper closes an HTTP/1 connection whose
        // request body was not read to its end by itself, and keeps one whose
        // rest was discarded in time (HTTP/2 has no such header).
        ProxyError::policy(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_limit",
            format!("request body larger than {} bytes", self.max_bytes),
        )
    }
}

impl Middleware for BodyLimit {
    async fn request(&self, request: &mut Request<ProxyBody>) -> Result<(), ProxyError> {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .or_else(|| request.body().size_hint().exact());
        if declared.is_some_and(|length| length > self.max_bytes) {
            return Err(self.too_large());
        }
        let limit = self.max_bytes;
        let name = self.name.clone();
        let body = std::mem::take(request.body_mut());
        *request.body_mut() = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
            .map_err(move |error| -> BoxError {
                if error.is::<http_body_util::LengthLimitError>() {
                    Box::new(BodyTooLarge {
                        limit,
                        middleware: name.clone(),
                    })
                } else {
                    error
                }
            })
            .boxed_unsync();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    use super::*;

    /// A body that arrives in chunks and declares no length (chunked).
    fn chunked(chunks: &[&'static [u8]]) -> Request<ProxyBody> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        Request::new(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
    }

    async fn drain(request: Request<ProxyBody>) -> Result<usize, BoxError> {
        let mut body = request.into_body();
        let mut total = 0;
        while let Some(frame) = body.frame().await {
            total += frame?.data_ref().map_or(0, |d| d.len());
        }
        Ok(total)
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_up_front() {
        let limit = BodyLimit::new("cap", &BodyLimitConfig { max_bytes: 10 });
        let mut request = chunked(&[b"0123456789A"]);
        request.headers_mut().insert(
            header::CONTENT_LENGTH,
            header::HeaderValue::from_static("11"),
        );
        let refusal = limit.request(&mut request).await.unwrap_err();
        assert_eq!(refusal.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(refusal.message.contains("10 bytes"), "{refusal}");
    }

    #[tokio::test]
    async fn a_stream_is_cut_at_the_chunk_that_crosses_the_limit() {
        let limit = BodyLimit::new("cap", &BodyLimitConfig { max_bytes: 10 });
        let mut request = chunked(&[b"01234", b"56789"]);
        limit.request(&mut request).await.unwrap();
        assert_eq!(
            drain(request).await.unwrap(),
            10,
            "exactly the limit passes"
        );

        let mut request = chunked(&[b"01234", b"56789", b"A"]);
        limit.request(&mut request).await.unwrap();
        let error = drain(request).await.unwrap_err();
        let over = error
            .downcast_ref::<BodyTooLarge>()
            .expect("a BodyTooLarge");
        assert_eq!((over.limit, &*over.middleware), (10, "cap"));
        assert!(
            error.to_string().contains("larger than 10 bytes"),
            "{error}"
        );
    }
}
