//! The request-body read timeout: a client that promised a body and then
//! stops sending it would otherwise hold its connection, and an upstream
//! connection, for as long as it likes. The clock runs only while the body
//! is being asked for and has nothing: an upstream that is slow to read
//! (back-pressure) is not the client's fault.
//!
//! The same wrapper lingers: a body dropped before its end (a 401, 413 or
//! 502 answered while the client still sends) is read and thrown away in
//! the background for a while, up to a bound, as nginx's lingering close
//! does. Closing a connection on unread bytes makes the kernel send a
//! reset, which can destroy the answer before the client reads it.
use std::{
    future::Future as _,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::error::BodyStalled;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How much of an abandoned body is read and thrown away, at most, and for
/// how long.
const LINGER_MAX: u64 = 16 << 20;
const LINGER_FOR: Duration = Duration::from_secs(5);

/// A request body that fails with [`BodyStalled`] when a wait for its next
/// frame lasts longer than `timeout`, and lingers when dropped unread.
pub struct StallTimeout<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    /// Taken out when dropped unread, to be drained.
    inner: Option<B>,
    timeout: Duration,
    /// Armed when a wait starts; made on the first wait, then reused.
    clock: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    /// The body ended, failed or stalled: nothing to linger for.
    over: bool,
}

impl<B> StallTimeout<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    pub fn new(inner: B, timeout: Duration) -> Self {
        StallTimeout {
            inner: Some(inner),
            timeout,
            clock: None,
            waiting: false,
            over: false,
        }
    }
}

impl<B> Drop for StallTimeout<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    fn drop(&mut self) {
        let Some(mut rest) = self
            .inner
            .take()
            .filter(|b| !self.over && !b.is_end_stream())
        else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut seen = 0u64;
            let _ = tokio::time::timeout(LINGER_FOR, async {
                while let Some(Ok(frame)) = rest.frame().await {
                    seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if seen > LINGER_MAX {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

impl<B> Body for StallTimeout<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
            this.waiting = false;
            this.over = !matches!(frame, Some(Ok(_)));
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = Instant::now() + this.timeout;
        let clock = this
            .clock
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !this.waiting {
            this.waiting = true;
            clock.as_mut().reset(deadline);
        }
        match clock.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.over = true;
                Poll::Ready(Some(Err(Box::new(BodyStalled(this.timeout)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_fails_after_the_timeout_and_a_steady_one_does_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let stream = tokio_stream_from(rx);
        let mut body = StallTimeout::new(StreamBody::new(stream), Duration::from_secs(2));
        // Steady: a frame every second, for longer than the timeout in all.
        for _ in 0..4 {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await;
            });
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        // Then silence.
        let started = Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.downcast_ref::<BodyStalled>().is_some(), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        drop(tx);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_is_drained_in_the_background() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let mut body = StallTimeout::new(
            StreamBody::new(tokio_stream_from(rx)),
            Duration::from_secs(30),
        );
        tx.send(Ok(Frame::data(Bytes::from_static(b"head"))))
            .await
            .unwrap();
        body.frame().await.unwrap().unwrap();
        // Answered early: the body is dropped while the client still sends.
        drop(body);
        for _ in 0..8 {
            let frame = Ok(Frame::data(Bytes::from_static(b"rest")));
            tokio::time::timeout(Duration::from_secs(5), tx.send(frame))
                .await
                .expect("the rest is read and thrown away, not left to block the client")
                .unwrap();
        }
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin + Send {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
