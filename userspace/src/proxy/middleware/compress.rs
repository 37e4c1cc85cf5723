//! `compress`: response bodies compressed with gzip, brotli or zstd, as the
//! client's `Accept-Encoding` prefers, by tower-http's compression (which
//! also adds `Vary: Accept-Encoding` and leaves alone what the upstream
//! already encoded). Not compressed: bodies smaller than `min_bytes`, gRPC,
//! images, `text/event-stream` (a compressor would hold events back), and
//! partial content (a byte range of the encoded body is not the range the
//! client asked for).
use http_body_util::BodyExt as _;
use hyper::{header, Response, StatusCode};
use tower::ServiceExt as _;
use tower_http::compression::{
    predicate::{NotForContentType, Predicate, SizeAbove},
    CompressionLayer,
};
use tower_layer::Layer as _;

use super::{stack::RouteService, CompressConfig};

pub struct Compress {
    min_bytes: u16,
}

impl Compress {
    pub fn new(config: &CompressConfig) -> Self {
        Compress {
            min_bytes: config.min_bytes,
        }
    }

    /// tower-http's compression around `inner`: it reads the request's
    /// `Accept-Encoding` and compresses the response when the client
    /// accepts an encoding and the response is worth it.
    pub fn wrap(&self, inner: RouteService) -> RouteService {
        let predicate = SizeAbove::new(self.min_bytes)
            .and(NotForContentType::GRPC)
            .and(NotForContentType::IMAGES)
            .and(NotForContentType::SSE)
            .and(WholeBodies);
        let compressed = CompressionLayer::new()
            .compress_when(predicate)
            .layer(inner)
            .map_response(|response| response.map(|body| body.boxed_unsync()));
        RouteService::new(compressed)
    }
}

/// Neither partial content (a byte range of the encoded body is not the
/// range the client asked for) nor a protocol switch (what follows a 101
/// is not this response's body).
#[derive(Clone, Copy)]
struct WholeBodies;

impl Predicate for WholeBodies {
    fn should_compress<B: hyper::body::Body>(&self, response: &Response<B>) -> bool {
        response.status() != StatusCode::PARTIAL_CONTENT
            && response.status() != StatusCode::SWITCHING_PROTOCOLS
            && !response.headers().contains_key(header::CONTENT_RANGE)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{header::HeaderValue, Request};

    use super::*;
    use crate::proxy::upstream::ProxyBody;

    impl Compress {
        /// `response` as it leaves the stack for a request that accepted
        /// `accept_encoding`.
        async fn apply(
            &self,
            accept_encoding: Option<&HeaderValue>,
            response: Response<ProxyBody>,
        ) -> Response<ProxyBody> {
            let given = std::sync::Arc::new(std::sync::Mutex::new(Some(response)));
            let upstream = RouteService::new(tower::service_fn(move |_| {
                let response = given.lock().unwrap().take().expect("called once");
                std::future::ready(Ok::<_, std::convert::Infallible>(response))
            }));
            let mut request = Request::new(
                http_body_util::Empty::new()
                    .map_err(|n| match n {})
                    .boxed_unsync(),
            );
            if let Some(accept) = accept_encoding {
                request
                    .headers_mut()
                    .insert(header::ACCEPT_ENCODING, accept.clone());
            }
            super::super::stack::call(self.wrap(upstream), request).await
        }
    }

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
        let compressed = compress
            .apply(Some(&accept), response("text/html", TEXT))
            .await;
        assert_eq!(encoding(&compressed), Some("zstd"));
        assert_eq!(compressed.headers()[header::VARY], "accept-encoding");
        let bytes = compressed.into_body().collect().await.unwrap().to_bytes();
        assert!(
            bytes.len() < 200,
            "4 KiB of `a` compressed to {}",
            bytes.len()
        );

        let gzip = HeaderValue::from_static("gzip");
        let compressed = compress
            .apply(Some(&gzip), response("text/html", TEXT))
            .await;
        assert_eq!(encoding(&compressed), Some("gzip"));
    }

    #[tokio::test]
    async fn leaves_alone_what_it_should() {
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
            ("a protocol switch", Some(&accept), {
                let mut r = response("text/html", TEXT);
                *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                r
            }),
        ];
        for (what, accept, original) in cases {
            let was = encoding(&original).map(str::to_string);
            let out = compress.apply(accept, original).await;
            assert_eq!(encoding(&out).map(str::to_string), was, "{what}");
        }
    }
}
