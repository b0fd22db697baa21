//! A store-call timeout that costs nothing when the store answers at once.
//!
//! `tokio::time::timeout` builds a timer entry for every call. An in-process store answers
//! on the first poll, so [`StoreTimeout`] polls the call first and arms a timer only when
//! the call is actually waiting on something.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{sleep, Sleep};

use crate::error::Error;

pin_project! {
    /// A store call that fails with [`Error::timeout`] once `limit` has passed.
    pub(crate) struct StoreTimeout<F> {
        #[pin]
        call: F,
        limit: Option<Duration>,
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> StoreTimeout<F> {
    /// Runs `call` under `limit`, or with no limit when `None`.
    pub(crate) fn new(call: F, limit: Option<Duration>) -> Self {
        Self {
            call,
            limit,
            timer: None,
        }
    }
}

impl<F, T> Future for StoreTimeout<F>
where
    F: Future<Output = Result<T, Error>>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.call.poll(cx) {
            return Poll::Ready(result);
        }
        let Some(limit) = *this.limit else {
            return Poll::Pending;
        };
        // Armed on the first `Pending`: the clock starts when the store starts waiting,
        // a negligible moment after the call began.
        let timer = this.timer.get_or_insert_with(|| Box::pin(sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Error::timeout())),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A plain test, outside any runtime: building a timer here would panic (no timer
    // driver), so this also proves none is built.
    #[test]
    fn an_immediate_answer_needs_no_timer() {
        let mut call = Box::pin(StoreTimeout::new(
            async { Ok::<_, Error>(7) },
            Some(Duration::from_millis(1)),
        ));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(call.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
        assert!(call.timer.is_none(), "a timer was armed for a ready call");
    }

    #[tokio::test]
    async fn a_waiting_call_arms_its_timer_once() {
        let mut call = Box::pin(StoreTimeout::new(
            std::future::pending::<Result<(), Error>>(),
            Some(Duration::from_secs(30)),
        ));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        let armed = call.timer.as_ref().map(|timer| timer.deadline());
        assert!(armed.is_some(), "no timer for a waiting call");
        assert!(call.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            call.timer.as_ref().map(|timer| timer.deadline()),
            armed,
            "the timer was re-armed"
        );
    }

    #[tokio::test]
    async fn a_slow_call_times_out() {
        let slow = async {
            sleep(Duration::from_secs(30)).await;
            Ok::<_, Error>(())
        };
        let started = std::time::Instant::now();
        let err = StoreTimeout::new(slow, Some(Duration::from_millis(50)))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::StoreTimeout);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_slow_call_within_its_limit_succeeds() {
        let slow = async {
            sleep(Duration::from_millis(20)).await;
            Ok::<_, Error>("done")
        };
        let result = StoreTimeout::new(slow, Some(Duration::from_secs(5))).await;
        assert_eq!(result.unwrap(), "done");
        let unlimited = StoreTimeout::new(async { Ok::<_, Error>(1) }, None).await;
        assert_eq!(unlimited.unwrap(), 1);
    }
}
