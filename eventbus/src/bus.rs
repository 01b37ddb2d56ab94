//! The event bus: one type over every backend.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::backend::{Acked, Backend, MemoryBackend, MemoryBroker};
use crate::delivery::{self, DeadLetterPolicy, Handler, RetryPolicy, SubscriptionCtx, Undecodable};
use crate::envelope::Envelope;
use crate::error::{CloseError, HandlerError, PublishError, SubscribeError, TopicError};
use crate::message::{Body, Message, Outbound, SharedHeaders};
use crate::observe::{ConnectionState, Counters, Health, Metrics};
use crate::stop::Stop;
use crate::topic::{validate_name, TopicConfig, TopicName};

/// Workers per subscription for keyed messages: one per core of a 2-core machine.
pub const DEFAULT_KEYED_WORKERS: usize = 2;
/// Workers per subscription for messages without a key.
pub const DEFAULT_GLOBAL_WORKERS: usize = 2;
/// Messages each worker queue holds before the subscription stops pulling from the broker.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
/// The largest payload accepted (1 MiB, the default limit of both Kafka and NATS).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// How long `close()` lets queued and running work finish before handing the rest back.
pub const DEFAULT_CLOSE_DEADLINE: Duration = Duration::from_secs(5);
/// How long a publish may wait for the broker.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Whether the worker pools are measured with tokio-metrics: off, as tokio's own poll-time
/// histogram is, for its cost (see [`BusBuilder::pool_metrics`]).
pub const DEFAULT_POOL_METRICS: bool = false;

/// The longest group name accepted.
const MAX_GROUP_NAME: usize = 200;
/// Topic names a bus remembers as validated; past that, names are validated on every call.
const TOPIC_CACHE: usize = 1024;

/// Configures an [`EventBus`]. `Default` comes from the `DEFAULT_*` constants.
#[derive(Clone, Debug)]
pub struct BusBuilder {
    keyed_workers: usize,
    global_workers: usize,
    queue_capacity: usize,
    max_payload_bytes: usize,
    close_deadline: Duration,
    publish_timeout: Duration,
    retry: RetryPolicy,
    dead_letter: DeadLetterPolicy,
    pool_metrics: bool,
}

impl Default for BusBuilder {
    fn default() -> Self {
        BusBuilder {
            keyed_workers: DEFAULT_KEYED_WORKERS,
            global_workers: DEFAULT_GLOBAL_WORKERS,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            close_deadline: DEFAULT_CLOSE_DEADLINE,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            retry: RetryPolicy::default(),
            dead_letter: DeadLetterPolicy::default(),
            pool_metrics: DEFAULT_POOL_METRICS,
        }
    }
}

impl BusBuilder {
    /// Keyed workers per subscription (default [`DEFAULT_KEYED_WORKERS`], at least 1).
    pub fn keyed_workers(mut self, n: usize) -> Self {
        self.keyed_workers = n.max(1);
        self
    }

    /// Global workers per subscription (default [`DEFAULT_GLOBAL_WORKERS`], at least 1).
    pub fn global_workers(mut self, n: usize) -> Self {
        self.global_workers = n.max(1);
        self
    }

    /// Capacity of each worker queue (default [`DEFAULT_QUEUE_CAPACITY`], at least 1).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// The largest payload a publish accepts (default [`DEFAULT_MAX_PAYLOAD_BYTES`]).
    pub fn max_payload_bytes(mut self, n: usize) -> Self {
        self.max_payload_bytes = n;
        self
    }

    /// How long `close()` lets work finish (default [`DEFAULT_CLOSE_DEADLINE`]).
    pub fn close_deadline(mut self, d: Duration) -> Self {
        self.close_deadline = d;
        self
    }

    /// How long a publish may wait for the broker (default [`DEFAULT_PUBLISH_TIMEOUT`]).
    pub fn publish_timeout(mut self, d: Duration) -> Self {
        self.publish_timeout = d;
        self
    }

    /// Handler retries (default [`RetryPolicy::default`]).
    pub fn retry(mut self, r: RetryPolicy) -> Self {
        self.retry = r;
        self
    }

    /// The dead-letter path (default [`DeadLetterPolicy::Topic`]).
    pub fn dead_letter(mut self, d: DeadLetterPolicy) -> Self {
        self.dead_letter = d;
        self
    }

    /// Measures the worker pools' tasks with tokio-metrics: how long they were polled and how
    /// long they waited to be polled once woken ([`Metrics::keyed_pool`],
    /// [`Metrics::global_pool`]; `None` without). Off by default ([`DEFAULT_POOL_METRICS`]):
    /// it reads the clock at every poll and wake of a worker, about 600 instructions per message
    /// where each message is a poll of its own (the in-process broker at a paced rate; see the
    /// README's pressure run).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use eventbus::{EventBus, MemoryBroker, Outbound};
    /// let broker = MemoryBroker::new();
    /// let bus = EventBus::builder().pool_metrics(true).memory(&broker);
    /// bus.subscribe("greetings", "printer", |_m| async { Ok::<_, std::io::Error>(()) })
    ///     .await?;
    /// let pool = bus.metrics().keyed_pool.expect("measured");
    /// assert_eq!(pool.workers_started, eventbus::DEFAULT_KEYED_WORKERS as u64);
    /// bus.close().await?;
    /// assert!(EventBus::builder().memory(&broker).metrics().keyed_pool.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn pool_metrics(mut self, on: bool) -> Self {
        self.pool_metrics = on;
        self
    }

    /// A bus on an in-process [`MemoryBroker`].
    pub fn memory(self, broker: &MemoryBroker) -> EventBus {
        self.build(Arc::new(MemoryBackend::new(broker)))
    }

    /// A bus on a Kafka cluster. Creates the clients; librdkafka connects in the background
    /// (and reconnects after an outage), so an unreachable cluster shows in
    /// [`EventBus::health`] and as publish timeouts, not here.
    #[cfg(feature = "kafka")]
    pub async fn kafka(self, config: crate::KafkaConfig) -> Result<EventBus, crate::ConnectError> {
        let backend = crate::backend::KafkaBackend::connect(config, self.publish_timeout)?;
        Ok(self.build(Arc::new(backend)))
    }

    /// A bus on a NATS server with JetStream. Connects first: an unreachable server is an
    /// error here; after that the client reconnects by itself.
    #[cfg(feature = "nats")]
    pub async fn nats(self, config: crate::NatsConfig) -> Result<EventBus, crate::ConnectError> {
        let backend = crate::backend::NatsBackend::connect(config, self.publish_timeout).await?;
        Ok(self.build(Arc::new(backend)))
    }

    pub(crate) fn build(self, backend: Arc<dyn Backend>) -> EventBus {
        let monitor = || self.pool_metrics.then(tokio_metrics::TaskMonitor::new);
        EventBus {
            inner: Arc::new(Inner {
                backend,
                keyed_monitor: monitor(),
                global_monitor: monitor(),
                config: self,
                closed: AtomicBool::new(false),
                close_lock: tokio::sync::Mutex::new(false),
                subscriptions: Mutex::new(Vec::new()),
                topics: ArcSwap::default(),
                stop_intake: Stop::default(),
                stop_now: Stop::default(),
                counters: Arc::new(Counters::default()),
                last_error: Arc::new(Mutex::new(None)),
            }),
        }
    }
}

/// An event bus. Clones share it; [`close`](Self::close) closes it for all of them.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use eventbus::{EventBus, MemoryBroker, Outbound};
/// let broker = MemoryBroker::new();
/// let bus = EventBus::builder().memory(&broker);
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// bus.subscribe("greetings", "printer", move |m| {
///     let tx = tx.clone();
///     async move { tx.send(m.payload().clone()).map_err(|e| e.to_string()) }
/// })
/// .await?;
/// bus.publish("greetings", Outbound::new("hello")).await?;
/// assert_eq!(rx.recv().await.unwrap(), "hello");
/// bus.close().await?;
/// // After close, the bus refuses work with a typed error.
/// assert!(matches!(
///     bus.publish("greetings", Outbound::new("late")).await,
///     Err(eventbus::PublishError::Closed)
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    config: BusBuilder,
    closed: AtomicBool,
    /// Held while closing; `true` once closed.
    close_lock: tokio::sync::Mutex<bool>,
    subscriptions: Mutex<Vec<(TopicName, String, JoinHandle<()>)>>,
    /// Topic names already validated, so that a publish neither checks nor allocates one again
    /// (a snapshot: read without a lock or a reference count, see the memory broker's).
    topics: ArcSwap<rustc_hash::FxHashSet<TopicName>>,
    stop_intake: Stop,
    stop_now: Stop,
    counters: Arc<Counters>,
    last_error: Arc<Mutex<Option<String>>>,
    /// `None` unless [`BusBuilder::pool_metrics`] is on.
    keyed_monitor: Option<tokio_metrics::TaskMonitor>,
    global_monitor: Option<tokio_metrics::TaskMonitor>,
}

/// The broker's acknowledgement of a message handed over by [`EventBus::enqueue`]: `Ok` once
/// the broker has it, or the reason it does not (as [`EventBus::publish`] says).
#[must_use = "an acknowledgement nobody awaits hides a failed publish"]
pub struct PublishAck {
    /// `None` when the broker took the message at once (already counted).
    acked: Option<Acked>,
}

impl Future for PublishAck {
    type Output = Result<(), PublishError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.acked.as_mut() {
            Some(acked) => acked.as_mut().poll(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl std::fmt::Debug for PublishAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishAck").finish_non_exhaustive()
    }
}

/// Where an enqueued message's acknowledgement comes from.
enum Ack {
    /// The broker took it at once.
    Now,
    /// The backend's wait for the broker, for this topic.
    Later(TopicName, Acked),
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropped without close(): stop the tasks (they end on their own; nobody awaits them,
        // which a leak check reports while they finish). Call close() instead.
        self.stop_intake.set();
        self.stop_now.set();
    }
}

impl EventBus {
    /// A builder with the default configuration.
    pub fn builder() -> BusBuilder {
        BusBuilder::default()
    }

    /// Creates a topic (or checks that it exists compatibly). Publishing or subscribing to a
    /// topic that does not exist creates it with [`TopicConfig::new`]'s defaults.
    pub async fn create_topic(&self, config: TopicConfig) -> Result<(), TopicError> {
        if self.is_closed() {
            return Err(TopicError::Closed);
        }
        config.validate()?;
        self.inner.backend.create_topic(&config).await
    }

    /// Publishes raw bytes. `Ok` means the broker has the message; an error means it does not,
    /// and says why.
    pub async fn publish(&self, topic: &str, message: Outbound) -> Result<(), PublishError> {
        let result = self.try_publish(topic, message).await;
        self.count(&result);
        result
    }

    /// Hands raw bytes to the broker's client and returns once they are queued there, with a
    /// [`PublishAck`] that resolves when the broker has the message (as [`publish`] returns).
    /// Messages enqueued one after another keep that order per key, so one task can keep many
    /// publishes in flight instead of waiting a round trip per message:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventbus::{EventBus, MemoryBroker, Outbound};
    ///
    /// let broker = MemoryBroker::new();
    /// let bus = EventBus::builder().memory(&broker);
    /// let mut acks = Vec::new();
    /// for i in 0..100 {
    ///     let message = Outbound::new(format!("order {i}")).key("customer-7");
    ///     acks.push(bus.enqueue("orders", message).await?);
    /// }
    /// for ack in acks {
    ///     ack.await?; // every acknowledgement is still checked
    /// }
    /// bus.close().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The publish timeout bounds the enqueue and the acknowledgement together. The bus counts
    /// a message as published (or failed) once the broker's answer is known: at once where the
    /// broker takes it at once (the in-process broker with room), else when its acknowledgement
    /// is awaited; a dropped `PublishAck` loses the outcome, not the message.
    ///
    /// [`publish`]: Self::publish
    pub async fn enqueue(
        &self,
        topic: &str,
        message: Outbound,
    ) -> Result<PublishAck, PublishError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.publish_timeout;
        let acked = match self.try_enqueue(topic, message).await {
            Ok(acked) => acked,
            Err(e) => {
                self.count_failure(&e);
                return Err(e);
            }
        };
        let (topic, ack) = match acked {
            Ack::Now => {
                // No allocation for an in-process broker's answer.
                self.count(&Ok(()));
                return Ok(PublishAck { acked: None });
            }
            Ack::Later(topic, ack) => (topic, ack),
        };
        let bus = self.clone();
        let timeout = self.inner.config.publish_timeout;
        let backend = self.inner.backend.name();
        Ok(PublishAck {
            acked: Some(Box::pin(async move {
                let result = match tokio::time::timeout_at(deadline, ack).await {
                    Ok(r) => r,
                    Err(_) => Err(PublishError::Timeout {
                        topic,
                        backend,
                        timeout,
                    }),
                };
                bus.count(&result);
                result
            })),
        })
    }

    async fn try_enqueue(&self, topic: &str, message: Outbound) -> Result<Ack, PublishError> {
        let Some((topic, message)) = self.admit_and_try(topic, message)? else {
            return Ok(Ack::Now);
        };
        let timeout = self.inner.config.publish_timeout;
        match tokio::time::timeout(timeout, self.inner.backend.enqueue(&topic, message)).await {
            Ok(r) => r.map(|ack| Ack::Later(topic, ack)),
            Err(_) => Err(PublishError::Timeout {
                topic,
                backend: self.inner.backend.name(),
                timeout,
            }),
        }
    }

    async fn try_publish(&self, topic: &str, message: Outbound) -> Result<(), PublishError> {
        // A broker that takes it at once needs neither the boxed future nor the timer.
        let Some((topic, message)) = self.admit_and_try(topic, message)? else {
            return Ok(());
        };
        let timeout = self.inner.config.publish_timeout;
        match tokio::time::timeout(timeout, self.inner.backend.publish(&topic, message)).await {
            Ok(r) => r,
            Err(_) => Err(PublishError::Timeout {
                topic,
                backend: self.inner.backend.name(),
                timeout,
            }),
        }
    }

    /// What every publish checks first (the bus is open, the topic name valid, the payload
    /// within the limit), then the broker's [`Backend::try_publish`]: `None` once the broker
    /// has the message, else the message and its topic for the waiting path. The name is
    /// borrowed from the cache until then: a publish the broker takes at once counts no
    /// reference to it.
    fn admit_and_try(
        &self,
        topic: &str,
        message: Outbound,
    ) -> Result<Option<(TopicName, Outbound)>, PublishError> {
        if self.is_closed() {
            return Err(PublishError::Closed);
        }
        let try_publish = |topic: &TopicName, message: Outbound| {
            let limit = self.inner.config.max_payload_bytes;
            if message.payload.len() > limit {
                return Err(PublishError::TooLarge {
                    topic: topic.clone(),
                    size: message.payload.len(),
                    limit,
                });
            }
            Ok(self
                .inner
                .backend
                .try_publish(topic, message)
                .map(|m| (topic.clone(), m)))
        };
        if let Some(known) = self.inner.topics.load().get(topic) {
            return try_publish(known, message);
        }
        try_publish(&self.topic_name(topic)?, message)
    }

    fn count(&self, result: &Result<(), PublishError>) {
        match result {
            Ok(()) => Counters::add(&self.inner.counters.published),
            Err(e) => self.count_failure(e),
        }
    }

    fn count_failure(&self, e: &PublishError) {
        Counters::add(&self.inner.counters.publish_errors);
        self.fail(format!("failed to {e}"));
    }

    /// Publishes an envelope: its aggregate id is the key (so one aggregate's events are
    /// handled in order), the payload is the envelope's wire form (metadata and headers in a
    /// binary prefix, see [`Envelope::to_wire`]); the message has no headers of its own. On
    /// the in-process broker ([`BusBuilder::memory`]) the envelope travels as itself: an
    /// envelope handler gets it without a decode, and the wire form is made only if a raw
    /// subscriber reads the payload.
    pub async fn publish_envelope(
        &self,
        topic: &str,
        envelope: &Envelope,
    ) -> Result<(), PublishError> {
        let out = self.envelope_message(envelope);
        self.publish(topic, out).await
    }

    /// [`enqueue`](Self::enqueue) for an envelope, as [`publish_envelope`](Self::publish_envelope)
    /// sends it.
    pub async fn enqueue_envelope(
        &self,
        topic: &str,
        envelope: &Envelope,
    ) -> Result<PublishAck, PublishError> {
        let out = self.envelope_message(envelope);
        self.enqueue(topic, out).await
    }

    fn envelope_message(&self, envelope: &Envelope) -> Outbound {
        // Valid by construction: `new` and the decoders check, the setters change nothing
        // they check.
        debug_assert!(envelope.validate().is_ok());
        if self.inner.backend.in_process() {
            // The in-process broker hands the envelope itself to the handler: no wire form,
            // and the key is its aggregate id.
            return Outbound {
                key: None,
                headers: SharedHeaders::default(),
                payload: Body::Envelope(envelope.clone()),
            };
        }
        // The key is the aggregate id inside the wire form: no copy of its own.
        let (wire, key) = envelope.to_wire_keyed();
        let key = wire.slice(key);
        Outbound::new(wire).key(key)
    }

    /// Subscribes `handler` to `topic` as `group`. Each message is handled until the handler
    /// returns `Ok` (then acknowledged), retried per the [`RetryPolicy`], then dead-lettered. A
    /// handler that panics (before it returns its future or inside it) fails that attempt, as
    /// an error would. One subscription per topic and group.
    pub async fn subscribe<F, Fut, E>(
        &self,
        topic: &str,
        group: &str,
        handler: F,
    ) -> Result<(), SubscribeError>
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<HandlerError>,
    {
        let handler = delivery::handler(move |m: &Message| Ok(handler(m.clone())));
        self.start_subscription(topic, group, handler).await
    }

    /// Subscribes an envelope handler. A message that is not a decodable envelope is never
    /// retried and never dropped silently: it takes the dead-letter path at once, raw bytes
    /// included, with the decode error as the reason.
    pub async fn subscribe_envelopes<F, Fut, E>(
        &self,
        topic: &str,
        group: &str,
        handler: F,
    ) -> Result<(), SubscribeError>
    where
        F: Fn(Envelope) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<HandlerError>,
    {
        // Decoded from the delivery itself: no copy of the message per attempt. From the
        // in-process broker, the envelope itself (a reference count).
        let handler = delivery::handler(move |m: &Message| {
            let decoded = match m.payload.envelope() {
                Some(e) => Ok(e.clone()),
                None => Envelope::from_wire_bytes(m.payload()),
            };
            match decoded {
                Ok(e) => Ok(handler(e)),
                Err(e) => Err(Box::new(Undecodable(e)) as HandlerError),
            }
        });
        self.start_subscription(topic, group, handler).await
    }

    async fn start_subscription(
        &self,
        topic: &str,
        group: &str,
        handler: Handler,
    ) -> Result<(), SubscribeError> {
        if self.is_closed() {
            return Err(SubscribeError::Closed);
        }
        let topic = TopicName::new(topic)?;
        validate_name(group, MAX_GROUP_NAME).map_err(|_| SubscribeError::Group {
            topic: topic.clone(),
            group: group.to_string(),
            reason: "use 1 to 200 letters, digits, `.`, `_` or `-`",
        })?;
        let sub = self.inner.backend.subscribe(&topic, group).await?;
        let c = &self.inner.config;
        let ctx = Arc::new(SubscriptionCtx {
            topic: topic.clone(),
            group: group.to_string(),
            handler,
            retry: c.retry,
            dead_letter: c.dead_letter.clone(),
            backend: self.inner.backend.clone(),
            counters: self.inner.counters.clone(),
            last_error: self.inner.last_error.clone(),
            stop_intake: self.inner.stop_intake.clone(),
            stop_now: self.inner.stop_now.clone(),
            keyed_workers: c.keyed_workers,
            global_workers: c.global_workers,
            queue_capacity: c.queue_capacity,
            keyed_monitor: self.inner.keyed_monitor.clone(),
            global_monitor: self.inner.global_monitor.clone(),
        });
        let handle = delivery::start(ctx, sub);
        self.inner
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((topic, group.to_string(), handle));
        Ok(())
    }

    /// Closes the bus: stops taking work (publish and subscribe return `Closed` from now on),
    /// lets queued and running handler calls finish within the close deadline, hands back what
    /// did not finish (unacknowledged, so the broker delivers it again), awaits every task the
    /// bus spawned, and flushes and disconnects the backend. Calling it again (or concurrently)
    /// waits for the first close and returns `Ok`.
    pub async fn close(&self) -> Result<(), CloseError> {
        let mut done = self.inner.close_lock.lock().await;
        if *done {
            return Ok(());
        }
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.stop_intake.set();
        let deadline = tokio::time::Instant::now() + self.inner.config.close_deadline;
        let subs = std::mem::take(
            &mut *self
                .inner
                .subscriptions
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let mut late = Vec::new();
        for (_, _, mut handle) in subs {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                late.push(handle);
            }
        }
        let counters = &self.inner.counters;
        let mut result = Ok(());
        if !late.is_empty() {
            let before = counters.handed_back.load(Ordering::Relaxed);
            self.inner.stop_now.set();
            for handle in late {
                let _ = handle.await;
            }
            let handed_back = counters.handed_back.load(Ordering::Relaxed) - before;
            result = Err(CloseError::Deadline {
                deadline: self.inner.config.close_deadline,
                handed_back: handed_back as usize,
            });
        }
        let flushed = self.inner.backend.close().await;
        *done = true;
        if let Err(e) = &result {
            self.fail(format!("failed to {e}"));
        }
        result.and(flushed)
    }

    /// Whether `close` has begun.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// The connection, the last error, and the lag of each subscription.
    pub fn health(&self) -> Health {
        let connection = if self.is_closed() {
            ConnectionState::Closed
        } else {
            self.inner.backend.connection()
        };
        let lag: BTreeMap<(String, String), u64> = self
            .inner
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(t, g, _)| {
                let lag = self.inner.backend.lag(t, g)?;
                Some(((t.to_string(), g.clone()), lag))
            })
            .collect();
        Health {
            connection,
            last_error: self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            lag,
        }
    }

    /// Counters and pool metrics.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.inner.counters.snapshot(
            self.inner.keyed_monitor.as_ref(),
            self.inner.global_monitor.as_ref(),
        );
        m.revoked_partitions = self.inner.backend.revoked_partitions();
        m
    }

    /// `name` validated, from the cache when it was seen before.
    fn topic_name(&self, name: &str) -> Result<TopicName, TopicError> {
        if let Some(t) = self.inner.topics.load().get(name) {
            return Ok(t.clone());
        }
        let t = TopicName::new(name)?;
        // A copy of the set per new name, up to `TOPIC_CACHE` of them.
        self.inner.topics.rcu(|cache| {
            let mut cache = (**cache).clone();
            if cache.len() < TOPIC_CACHE {
                cache.insert(t.clone());
            }
            cache
        });
        Ok(t)
    }

    fn fail(&self, message: String) {
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(message);
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    /// A memory bus with one topic.
    async fn memory_bus(builder: BusBuilder, topic: &str) -> EventBus {
        let bus = builder.memory(&MemoryBroker::new());
        bus.create_topic(TopicConfig::new(topic).unwrap())
            .await
            .unwrap();
        bus
    }

    async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a message within 10 s")
            .expect("the subscription is open")
    }

    #[leakcheck::leak_test]
    async fn an_envelope_crosses_the_memory_broker_as_itself() {
        let bus = memory_bus(EventBus::builder(), "orders").await;
        let (tx, mut envelopes) = mpsc::unbounded_channel();
        bus.subscribe_envelopes("orders", "decoded", move |e: Envelope| {
            tx.send(e).unwrap();
            std::future::ready(Ok::<(), std::io::Error>(()))
        })
        .await
        .unwrap();
        let e = Envelope::new("order-42", "OrderPlaced", 1, "total=10")
            .unwrap()
            .with_header("tenant", "acme");
        bus.publish_envelope("orders", &e).await.unwrap();
        let got = recv(&mut envelopes).await;
        assert_eq!(got, e);
        assert!(
            got.shares_fields(&e),
            "the handler gets the published value"
        );
        assert!(!e.has_wire(), "no wire form was made");

        // A raw subscriber of the same topic reads the wire form, made once, on demand.
        let (tx, mut raw) = mpsc::unbounded_channel();
        bus.subscribe("orders", "raw", move |m: Message| {
            let key = m.key().map(<[u8]>::to_vec);
            tx.send((key, m.payload().clone())).unwrap();
            std::future::ready(Ok::<(), std::io::Error>(()))
        })
        .await
        .unwrap();
        let second = Envelope::new("order-43", "OrderPlaced", 1, "total=11").unwrap();
        bus.publish_envelope("orders", &second).await.unwrap();
        let (key, payload) = recv(&mut raw).await;
        assert_eq!(key.as_deref(), Some(&b"order-43"[..]));
        assert_eq!(Envelope::from_wire(&payload).unwrap(), second);
        assert_eq!(payload, second.to_wire());
        assert!(second.has_wire());
        assert_eq!(recv(&mut envelopes).await, second);
        bus.close().await.unwrap();
    }

    #[leakcheck::leak_test]
    async fn an_in_process_envelope_is_held_to_its_wire_size() {
        let e = Envelope::new("order-42", "OrderPlaced", 1, vec![0; 100])
            .unwrap()
            .with_correlation_id("req-7");
        let size = e.to_wire().len();
        let fits = memory_bus(EventBus::builder().max_payload_bytes(size), "t").await;
        fits.publish_envelope("t", &e).await.unwrap();
        fits.close().await.unwrap();
        let tight = memory_bus(EventBus::builder().max_payload_bytes(size - 1), "t").await;
        match tight.publish_envelope("t", &e).await {
            Err(PublishError::TooLarge { size: s, limit, .. }) => {
                assert_eq!((s, limit), (size, size - 1))
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        tight.close().await.unwrap();
    }
}
