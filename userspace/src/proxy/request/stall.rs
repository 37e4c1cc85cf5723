//! The request-body read timeout: a client that promised a body and then
//! stops sending it would otherwise hold its connection, and an upstream
//! connection, for as long as it likes. The clock runs only while the body
//! is being asked for and has nothing: an upstream that is slow to read
//! (back-pressure) is not the client's fault.
use std::{
    future::Future as _,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::error::BodyStalled;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body that fails with [`BodyStalled`] when a wait for its next
/// frame lasts longer than `timeout`.
pub struct StallTimeout<B> {
    inner: B,
    timeout: Duration,
    /// Armed when a wait starts; made on the first wait, then reused.
    clock: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<B> StallTimeout<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        StallTimeout {
            inner,
            timeout,
            clock: None,
            waiting: false,
        }
    }
}

impl<B> Body for StallTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
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
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled(this.timeout))))),
            Poll::Pending => Poll::Pending,
        }
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
    use super::*;
    use http_body_util::{BodyExt as _, StreamBody};

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

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
