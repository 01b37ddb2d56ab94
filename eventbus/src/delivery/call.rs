//! A subscription's handler, type-erased without an allocation per call: each worker makes one
//! [`Call`] when it starts and every call it makes runs in place there (a boxed future per
//! message cost the in-process bus an allocation and a free on every delivery).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use crate::error::HandlerError;
use crate::message::Message;

/// A subscription's handler: makes one worker's [`Call`].
pub(crate) type Handler = Arc<dyn Fn() -> Pin<Box<dyn Call>> + Send + Sync>;

/// One worker's handler calls, one at a time.
pub(crate) trait Call: Send {
    /// Starts the handler on `message`. The handler borrows the message: a wrapper that needs
    /// it whole (the raw handler) clones it, the envelope decoder does not.
    fn start(self: Pin<&mut Self>, message: &Message);

    /// Polls the call started last. The handler's future is dropped once it is done.
    fn poll_call(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>>;

    /// Drops the call under way, if any (cancelled, or panicked while polled).
    fn clear(self: Pin<&mut Self>);
}

/// A handler made of `begin`, which turns a message into the handler's future, or into the
/// error that fails the call at once (an undecodable envelope).
pub(crate) fn handler<B, Fut, E>(begin: B) -> Handler
where
    B: Fn(&Message) -> Result<Fut, HandlerError> + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<HandlerError>,
{
    let begin = Arc::new(begin);
    Arc::new(move || {
        Box::pin(Slot {
            begin: begin.clone(),
            state: State::Idle,
        }) as Pin<Box<dyn Call>>
    })
}

pin_project! {
    struct Slot<B, Fut> {
        begin: Arc<B>,
        #[pin]
        state: State<Fut>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Fut> {
        Idle,
        Running { #[pin] fut: Fut },
        Failed { error: Option<HandlerError> },
    }
}

impl<B, Fut, E> Call for Slot<B, Fut>
where
    B: Fn(&Message) -> Result<Fut, HandlerError> + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<HandlerError>,
{
    fn start(self: Pin<&mut Self>, message: &Message) {
        let mut this = self.project();
        // Idle unless a call was left under way, which the next one replaces.
        let next = match (this.begin)(message) {
            Ok(fut) => State::Running { fut },
            Err(e) => State::Failed { error: Some(e) },
        };
        this.state.set(next);
    }

    fn poll_call(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        let mut this = self.project();
        let out = match this.state.as_mut().project() {
            StateProj::Running { fut } => ready!(fut.poll(cx)).map_err(Into::into),
            StateProj::Failed { error } => Err(error.take().unwrap_or_else(not_started)),
            StateProj::Idle => Err(not_started()),
        };
        this.state.set(State::Idle);
        Poll::Ready(out)
    }

    fn clear(self: Pin<&mut Self>) {
        self.project().state.set(State::Idle);
    }
}

/// Polled without a call started: a bug of the pool, reported as the attempt's error.
fn not_started() -> HandlerError {
    "the worker polled a handler call it had not started".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::TopicName;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn message(payload: &'static str) -> Message {
        Message {
            topic: TopicName::new("t").unwrap(),
            key: None,
            headers: Default::default(),
            payload: crate::message::Body::Bytes(payload.into()),
            attempt: 1,
            redelivered: false,
        }
    }

    /// Drops of the handler's futures, counted.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[leakcheck::leak_test]
    fn a_call_runs_in_its_slot_and_is_dropped_when_done_or_cleared() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let d = dropped.clone();
        let make = handler(move |m: &Message| {
            let counted = Counted(d.clone());
            let wait = m.payload().as_ref() == b"wait";
            match m.payload().as_ref() == b"undecodable" {
                true => Err("undecodable".into()),
                false => Ok(async move {
                    let _counted = counted;
                    if wait {
                        std::future::pending::<()>().await;
                    }
                    Err::<(), _>(std::io::Error::other("handler error"))
                }),
            }
        });
        let mut call = make();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut error = |call: &mut Pin<Box<dyn Call>>| match call.as_mut().poll_call(&mut cx) {
            Poll::Ready(r) => Some(r.unwrap_err().to_string()),
            Poll::Pending => None,
        };
        let dropped = || dropped.load(Ordering::SeqCst);

        call.as_mut().start(&message("go"));
        assert_eq!(error(&mut call).as_deref(), Some("handler error"));
        assert_eq!(dropped(), 1, "dropped once done");
        assert!(
            error(&mut call).unwrap().contains("had not started"),
            "idle once done"
        );

        call.as_mut().start(&message("undecodable"));
        assert_eq!(dropped(), 2, "begin's value dropped");
        assert_eq!(error(&mut call).as_deref(), Some("undecodable"));

        call.as_mut().start(&message("wait"));
        assert_eq!(error(&mut call), None);
        assert_eq!(dropped(), 2, "kept while under way");
        call.as_mut().clear();
        assert_eq!(dropped(), 3, "cleared");
        assert!(error(&mut call).unwrap().contains("had not started"));

        call.as_mut().start(&message("wait"));
        assert_eq!(error(&mut call), None);
        call.as_mut().start(&message("go"));
        assert_eq!(dropped(), 4, "a new call drops the one under way first");
        drop(call);
        assert_eq!(dropped(), 5, "the slot drops its call");
    }
}
