//! `compress`: response bodies compressed with gzip, brotli or zstd, as the
//! client's `Accept-Encoding` prefers, by tower-http's compression (which
//! also adds `Vary: Accept-Encoding` and leaves alone what the upstream
//! already encoded). Not compressed: bodies smaller than `min_bytes`, gRPC,
//! images, `text/event-stream` (a compressor would hold events back), and
//! partial content (a byte range of the encoded body is not the range the
//! client asked for).
use std::{
    convert::Infallible,
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use http_body_util::BodyExt as _;
use hyper::{
    header::{self, HeaderValue},
    Request, Response, StatusCode,
};
use tower_http::compression::{
    predicate::{NotForContentType, Predicate, SizeAbove},
    Compression,
};
use tower_service::Service;

use super::{answer, CompressConfig};
use crate::proxy::upstream::ProxyBody;

pub struct Compress {
    min_bytes: u16,
}

impl Compress {
    pub fn new(config: &CompressConfig) -> Self {
        Compress {
            min_bytes: config.min_bytes,
        }
    }

    /// The response, compressed if the client accepts an encoding and the
    /// response is worth it.
    pub fn apply(
        &self,
        accept_encoding: Option<&HeaderValue>,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let predicate = SizeAbove::new(self.min_bytes)
            .and(NotForContentType::GRPC)
            .and(NotForContentType::IMAGES)
            .and(NotForContentType::SSE)
            .and(NotPartial);
        // tower-http decides per request/response pair inside a Service;
        // the pair here is the original request's Accept-Encoding and a
        // response that is already there.
        let mut service = Compression::new(Given(Some(response))).compress_when(predicate);
        let mut request = Request::new(());
        if let Some(accept) = accept_encoding {
            request
                .headers_mut()
                .insert(header::ACCEPT_ENCODING, accept.clone());
        }
        let future = pin!(service.call(request));
        match future.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(response)) => response.map(|body| body.boxed_unsync()),
            Poll::Ready(Err(never)) => match never {},
            // `Given` answers at once, so the future is ready on first poll.
            Poll::Pending => answer(StatusCode::INTERNAL_SERVER_ERROR, "compression stalled"),
        }
    }
}

/// A service that answers with the response it holds.
struct Given(Option<Response<ProxyBody>>);

impl Service<Request<()>> for Given {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<ProxyBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        let response = self
            .0
            .take()
            .unwrap_or_else(|| answer(StatusCode::INTERNAL_SERVER_ERROR, "answered twice"));
        std::future::ready(Ok(response))
    }
}

#[derive(Clone, Copy)]
struct NotPartial;

impl Predicate for NotPartial {
    fn should_compress<B: hyper::body::Body>(&self, response: &Response<B>) -> bool {
        response.status() != StatusCode::PARTIAL_CONTENT
            && !response.headers().contains_key(header::CONTENT_RANGE)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::Full;

    use super::*;

    fn response(content_type: &str, body: &'static [u8]) -> Response<ProxyBody> {
        let mut response = Response::new(
            Full::new(Bytes::from_static(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        response
    }

    const TEXT: &[u8] = &[b'a'; 4096];

    fn encoding(r: &Response<ProxyBody>) -> Option<&str> {
        r.headers()
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn negotiates_and_round_trips() {
        let compress = Compress::new(&CompressConfig { min_bytes: 1024 });
        let accept = HeaderValue::from_static("gzip;q=0.5, br;q=0.8, zstd");
        let compressed = compress.apply(Some(&accept), response("text/html", TEXT));
        assert_eq!(encoding(&compressed), Some("zstd"));
        assert_eq!(compressed.headers()[header::VARY], "accept-encoding");
        let bytes = compressed.into_body().collect().await.unwrap().to_bytes();
        assert!(
            bytes.len() < 200,
            "4 KiB of `a` compressed to {}",
            bytes.len()
        );

        let gzip = HeaderValue::from_static("gzip");
        let compressed = compress.apply(Some(&gzip), response("text/html", TEXT));
        assert_eq!(encoding(&compressed), Some("gzip"));
    }

    #[test]
    fn leaves_alone_what_it_should() {
        let compress = Compress::new(&CompressConfig { min_bytes: 1024 });
        let accept = HeaderValue::from_static("gzip, br, zstd");
        let cases = [
            ("no accept-encoding", None, response("text/html", TEXT)),
            ("tiny", Some(&accept), response("text/html", b"small")),
            ("grpc", Some(&accept), response("application/grpc", TEXT)),
            ("events", Some(&accept), response("text/event-stream", TEXT)),
            ("image", Some(&accept), response("image/png", TEXT)),
            ("encoded", Some(&accept), {
                let mut r = response("text/html", TEXT);
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
                r
            }),
            ("a range", Some(&accept), {
                let mut r = response("text/html", TEXT);
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                r
            }),
        ];
        for (what, accept, original) in cases {
            let was = encoding(&original).map(str::to_string);
            let out = compress.apply(accept, original);
            assert_eq!(encoding(&out).map(str::to_string), was, "{what}");
        }
    }
}
