//! One subscription at work: a supervisor task pulls deliveries from the backend and routes them
//! to bounded worker queues (a full queue stops the pulling: backpressure), workers call the
//! handler, and at close the supervisor stops pulling, lets the workers drain, joins them and
//! leaves the group, so that whatever was not acknowledged goes back to the broker.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::call::{Call, Handler};
use super::{slot, spawn_named, DeadLetter, DeadLetterPolicy, DeadLetterReason, RetryPolicy};
use crate::backend::{AckBatch, Backend, Delivery, Inbox, Subscription};
use crate::error::{EnvelopeError, HandlerError};
use crate::message::{Message, Outbound};
use crate::observe::Counters;
use crate::stop::Stop;
use crate::topic::TopicName;

/// The error an envelope handler's decoding step returns: such a message is never retried, it
/// takes the dead-letter path at once.
#[derive(Debug)]
pub(crate) struct Undecodable(pub(crate) EnvelopeError);

impl std::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Undecodable {}

/// Everything a subscription's tasks share.
pub(crate) struct SubscriptionCtx {
    pub(crate) topic: TopicName,
    pub(crate) group: String,
    pub(crate) handler: Handler,
    pub(crate) retry: RetryPolicy,
    pub(crate) dead_letter: DeadLetterPolicy,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) last_error: Arc<Mutex<Option<String>>>,
    /// Stop pulling new deliveries (close began).
    pub(crate) stop_intake: Stop,
    /// Stop handling (the close deadline passed): hand everything back.
    pub(crate) stop_now: Stop,
    pub(crate) keyed_workers: usize,
    pub(crate) global_workers: usize,
    pub(crate) queue_capacity: usize,
    /// The pools' monitors, when measured.
    pub(crate) keyed_monitor: Option<tokio_metrics::TaskMonitor>,
    pub(crate) global_monitor: Option<tokio_metrics::TaskMonitor>,
}

impl SubscriptionCtx {
    fn name(&self, role: &str) -> String {
        format!("eventbus:{role}:{}/{}", self.topic, self.group)
    }

    fn fail(&self, message: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }
}

/// The worker queues as a backend sees them ([`Inbox`]). It holds weak senders, so that the
/// supervisor's drop of its own still closes the queues at close.
struct Queues {
    keyed: Vec<mpsc::WeakSender<Delivery>>,
    global: mpsc::WeakSender<Delivery>,
    counters: Arc<Counters>,
    stop_intake: Stop,
}

impl Inbox for Queues {
    fn offer(&self, d: Delivery) -> Result<(), Delivery> {
        if self.stop_intake.is_set() {
            return Err(d);
        }
        let queue = match d.message.key() {
            Some(k) => &self.keyed[slot(k, self.keyed.len())],
            None => &self.global,
        };
        let Some(queue) = queue.upgrade() else {
            return Err(d);
        };
        match queue.try_send(d) {
            Ok(()) => {
                Counters::add(&self.counters.delivered);
                self.counters.enqueued(occupancy(&queue));
                Ok(())
            }
            Err(e) => Err(e.into_inner()),
        }
    }
}

/// Starts the subscription: its workers, then its supervisor, which ends after close once every
/// worker is joined and the group is left. Everything runs when this returns.
pub(crate) fn start(ctx: Arc<SubscriptionCtx>, mut sub: Box<dyn Subscription>) -> JoinHandle<()> {
    let mut workers = JoinSet::new();
    let keyed: Vec<mpsc::Sender<Delivery>> = (0..ctx.keyed_workers.max(1))
        .map(|i| {
            let (tx, rx) = mpsc::channel(ctx.queue_capacity.max(1));
            spawn_into(
                &mut workers,
                &format!("{}#{i}", ctx.name("keyed-worker")),
                ctx.keyed_monitor.as_ref(),
                keyed_worker(ctx.clone(), rx),
            );
            tx
        })
        .collect();
    let (global, global_rx) = mpsc::channel(ctx.queue_capacity.max(1));
    let global_rx = Arc::new(tokio::sync::Mutex::new(global_rx));
    for i in 0..ctx.global_workers.max(1) {
        spawn_into(
            &mut workers,
            &format!("{}#{i}", ctx.name("global-worker")),
            ctx.global_monitor.as_ref(),
            global_worker(ctx.clone(), global_rx.clone()),
        );
    }
    sub.attach(Arc::new(Queues {
        keyed: keyed.iter().map(mpsc::Sender::downgrade).collect(),
        global: global.downgrade(),
        counters: ctx.counters.clone(),
        stop_intake: ctx.stop_intake.clone(),
    }));
    let name = ctx.name("subscription");
    spawn_named(&name, supervise(ctx, sub, workers, keyed, global))
}

async fn supervise(
    ctx: Arc<SubscriptionCtx>,
    mut sub: Box<dyn Subscription>,
    mut workers: JoinSet<()>,
    keyed: Vec<mpsc::Sender<Delivery>>,
    global: mpsc::Sender<Delivery>,
) {
    loop {
        // Checked first, so that the waits below need to watch for it only while they wait.
        if ctx.stop_intake.is_set() {
            break;
        }
        let delivery = tokio::select! {
            biased;
            d = sub.next() => match d {
                Some(d) => d,
                None => break,
            },
            _ = ctx.stop_intake.wait() => break,
        };
        Counters::add(&ctx.counters.delivered);
        let queue = match delivery.message.key() {
            Some(k) => &keyed[slot(k, keyed.len())],
            None => &global,
        };
        let delivery = match queue.try_send(delivery) {
            Ok(()) => {
                ctx.counters.enqueued(occupancy(queue));
                continue;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => break,
            Err(mpsc::error::TrySendError::Full(d)) => d,
        };
        // A full queue waits here: no more is pulled from the broker meanwhile. It waits for a
        // batch of free slots, not one: the pulls that follow fill them in one go instead of
        // waking this task once per message the worker takes.
        tokio::select! {
            permits = queue.reserve_many(refill_batch(ctx.queue_capacity)) => {
                let Some(slot) = permits.ok().and_then(|mut p| p.next()) else {
                    break;
                };
                slot.send(delivery);
                ctx.counters.enqueued(occupancy(queue));
            }
            _ = ctx.stop_intake.wait() => {
                // The delivery is dropped unacknowledged: the broker keeps it.
                Counters::add(&ctx.counters.handed_back);
                break;
            }
        }
    }
    // Closing the queues lets the workers drain them and stop.
    drop(keyed);
    drop(global);
    while let Some(joined) = workers.join_next().await {
        if let Err(e) = joined {
            ctx.fail(format!(
                "a worker of `{}` ({}) ended abnormally: {e}",
                ctx.topic, ctx.group
            ));
        }
    }
    sub.close().await;
}

/// How many messages a worker queue holds (slots reserved but not yet filled included).
fn occupancy(queue: &mpsc::Sender<Delivery>) -> usize {
    queue.max_capacity() - queue.capacity()
}

/// How many free slots of a full worker queue the supervisor waits for: an eighth of the queue
/// (at most 64), so that the worker still has most of its queue to work through meanwhile.
fn refill_batch(capacity: usize) -> usize {
    (capacity / 8).clamp(1, 64)
}

/// Spawns a worker into `set`, measured by `monitor` if there is one.
fn spawn_into<F>(
    set: &mut JoinSet<()>,
    name: &str,
    monitor: Option<&tokio_metrics::TaskMonitor>,
    fut: F,
) where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let spawn = || match monitor {
        Some(m) => set.spawn(m.instrument(fut)),
        None => set.spawn(fut),
    };
    #[cfg(feature = "leakcheck")]
    leakcheck::with_task_name(name, spawn);
    #[cfg(not(feature = "leakcheck"))]
    {
        let _ = name;
        spawn();
    }
}

/// How many messages a keyed worker handles in a row before it yields to the other tasks of its
/// thread (it also waits whenever its queue is empty or a handler is not done at once): a few
/// milliseconds of work. A busy worker keeps its thread on its queue instead of trading places
/// with the publishers at every tokio budget (128 polls): in the pressure run's memory bus,
/// yielding after one queue's worth (256) cost a third of the throughput; after 4096, the same
/// as never yielding.
const WORKER_TURN: usize = 4096;

/// Handles its queue in order, taking what is queued without waiting, at most [`WORKER_TURN`]
/// messages in a row. Acknowledgements are given in batches while more messages wait, and all
/// of them before the worker waits for anything (an empty queue or a handler not done at once)
/// or yields, so a batch never holds one back while the worker is idle.
async fn keyed_worker(ctx: Arc<SubscriptionCtx>, mut rx: mpsc::Receiver<Delivery>) {
    let mut call = (ctx.handler)();
    let mut acks = AckBatch::default();
    let mut taken = 0;
    loop {
        let d = match rx.try_recv() {
            Ok(d) => d,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                acks.flush();
                taken = 0;
                match rx.recv().await {
                    Some(d) => d,
                    None => break,
                }
            }
        };
        ctx.counters.dequeued();
        handle(&ctx, &mut call, d, &mut acks).await;
        taken += 1;
        if taken == WORKER_TURN {
            taken = 0;
            acks.flush();
            tokio::task::yield_now().await;
        }
    }
}

async fn global_worker(
    ctx: Arc<SubscriptionCtx>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Delivery>>>,
) {
    let mut call = (ctx.handler)();
    loop {
        let next = rx.lock().await.recv().await;
        let Some(d) = next else { break };
        ctx.counters.dequeued();
        // Workers share this queue: each acknowledges at once.
        let mut acks = AckBatch::default();
        handle(&ctx, &mut call, d, &mut acks).await;
    }
}

/// Calls the handler until it succeeds (then acknowledges) or the attempts run out (then takes
/// the dead-letter path). After the close deadline nothing more is handled: the delivery is
/// dropped unacknowledged, which hands it back to the broker.
async fn handle(
    ctx: &SubscriptionCtx,
    call: &mut Pin<Box<dyn Call>>,
    d: Delivery,
    acks: &mut AckBatch,
) {
    let Delivery { mut message, ack } = d;
    if ctx.stop_now.is_set() {
        Counters::add(&ctx.counters.handed_back);
        return;
    }
    let mut attempt = 1;
    loop {
        message.attempt = attempt;
        let outcome = call_once(ctx, call, &message, acks).await;
        if !matches!(outcome, Some(Ok(_))) {
            // Cut short or panicked: what is left of the call goes now.
            call.as_mut().clear();
        }
        let Some(outcome) = outcome else {
            Counters::add(&ctx.counters.handed_back);
            return;
        };
        let error = match outcome {
            Ok(Ok(())) => {
                acks.push(ack);
                Counters::add(&ctx.counters.handled);
                return;
            }
            Ok(Err(e)) => {
                if let Some(Undecodable(e)) = e.downcast_ref::<Undecodable>() {
                    Counters::add(&ctx.counters.undecodable);
                    let reason = DeadLetterReason::Undecodable(e.clone());
                    dead_letter(ctx, message, reason, ack).await;
                    return;
                }
                e.to_string()
            }
            Err(panic) => format!("the handler panicked: {}", panic_message(&*panic)),
        };
        Counters::add(&ctx.counters.handler_errors);
        ctx.fail(format!(
            "the handler of `{}` ({}) failed on attempt {attempt}: {error}",
            ctx.topic, ctx.group
        ));
        if attempt >= ctx.retry.max_attempts.max(1) {
            let reason = DeadLetterReason::HandlerFailed {
                attempts: attempt,
                last_error: error,
            };
            dead_letter(ctx, message, reason, ack).await;
            return;
        }
        Counters::add(&ctx.counters.redeliveries);
        tokio::select! {
            _ = tokio::time::sleep(ctx.retry.backoff_after(attempt)) => {}
            _ = ctx.stop_now.wait() => {
                Counters::add(&ctx.counters.handed_back);
                return;
            }
        }
        attempt += 1;
    }
}

/// One call of the handler on `message`, a panic caught whether the handler panics before it
/// returns its future or inside it; `None` when the close deadline cut it short.
async fn call_once(
    ctx: &SubscriptionCtx,
    call: &mut Pin<Box<dyn Call>>,
    message: &Message,
    acks: &mut AckBatch,
) -> Option<std::thread::Result<Result<(), HandlerError>>> {
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().start(message)))
    {
        return Some(Err(panic));
    }
    let polled = std::future::poll_fn(|cx| call.as_mut().poll_call(cx));
    let mut polled = std::pin::pin!(AssertUnwindSafe(polled).catch_unwind());
    // A handler done at once never registers for the cancellation; one that waits lets the
    // acknowledgements gathered so far go first.
    match std::future::poll_fn(|cx| Poll::Ready(polled.as_mut().poll(cx))).await {
        Poll::Ready(r) => Some(r),
        Poll::Pending => {
            acks.flush();
            tokio::select! {
                biased;
                r = polled => Some(r),
                _ = ctx.stop_now.wait() => None,
            }
        }
    }
}

async fn dead_letter(
    ctx: &SubscriptionCtx,
    message: Message,
    reason: DeadLetterReason,
    ack: crate::backend::DeliveryAck,
) {
    match &ctx.dead_letter {
        DeadLetterPolicy::Callback(f) => {
            let letter = DeadLetter {
                topic: ctx.topic.clone(),
                group: ctx.group.clone(),
                message,
                reason,
            };
            if std::panic::catch_unwind(AssertUnwindSafe(|| f(letter))).is_err() {
                ctx.fail(
                    "the dead-letter callback panicked: the message stays unacknowledged".into(),
                );
                return;
            }
            Counters::add(&ctx.counters.dead_lettered);
            ack.ack();
        }
        DeadLetterPolicy::Topic => {
            let mut out = Outbound {
                key: message.key.clone(),
                headers: message.headers.clone(),
                payload: message.payload.clone(),
            };
            let attempts = match &reason {
                DeadLetterReason::HandlerFailed { attempts, .. } => *attempts,
                DeadLetterReason::Undecodable(_) => 0,
            };
            let headers = out.headers.make_mut();
            headers.insert("eventbus-dead-letter-reason".into(), reason.to_string());
            headers.insert("eventbus-source-topic".into(), ctx.topic.to_string());
            headers.insert("eventbus-group".into(), ctx.group.clone());
            headers.insert("eventbus-attempts".into(), attempts.to_string());
            let dlq = ctx.topic.dead_letter();
            match ctx.backend.publish(&dlq, out).await {
                Ok(()) => {
                    Counters::add(&ctx.counters.dead_lettered);
                    ack.ack();
                }
                Err(e) => ctx.fail(format!(
                    "could not dead-letter a message of `{}` to `{dlq}` ({e}): it stays unacknowledged and will be delivered again",
                    ctx.topic
                )),
            }
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[leakcheck::leak_test]
    fn a_refill_batch_fits_in_its_queue() {
        assert_eq!(refill_batch(1), 1);
        assert_eq!(refill_batch(4), 1);
        assert_eq!(refill_batch(256), 32);
        assert_eq!(refill_batch(100_000), 64);
        assert!((1..2000).all(|c| (1..=c).contains(&refill_batch(c))));
    }
}
