//! The two sides of the comparison behind one small interface: the event bus on a backend, and
//! the same backend's plain client (a tokio channel for memory, rdkafka, async-nats) with the
//! same delivery semantics: every publish acknowledged before it returns, every message
//! acknowledged (or committed) only after it was handled, one aggregate's messages handled in
//! order. Whatever the bus costs on top of its broker shows as the bus/raw ratio.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eventbus::{Envelope, EventBus, MemoryBroker, TopicConfig};

use crate::tracker::{clock, Tracker};

/// Which broker a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// The in-process `MemoryBroker`.
    Memory,
    /// A Kafka-compatible broker (Tansu by default).
    Kafka,
    /// NATS JetStream.
    Nats,
}

impl Backend {
    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Kafka => "kafka",
            Backend::Nats => "nats",
        }
    }
}

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Connecting or creating topics failed.
    #[error("connect to {backend}: {message}")]
    Connect {
        /// The backend.
        backend: &'static str,
        /// What the client said.
        message: String,
    },
    /// Subscribing failed.
    #[error("subscribe to {topic}: {message}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// What the client said.
        message: String,
    },
    /// A publish failed.
    #[error("publish to {topic}: {message}")]
    Publish {
        /// The topic.
        topic: String,
        /// What the client said.
        message: String,
    },
    /// Closing failed.
    #[error("close the {backend} client: {message}")]
    Close {
        /// The backend.
        backend: &'static str,
        /// What the client said.
        message: String,
    },
    /// This build has no such backend.
    #[error(
        "run the {backend} backend: this build leaves it out; run `cargo run --release -p pressure \
         --features {backend} -- --backend {backend}` (the `kafka` feature builds librdkafka from \
         source: gcc, g++, make)"
    )]
    NotBuilt {
        /// The backend.
        backend: &'static str,
    },
}

/// Where the handled messages go: one tracker per phase, chosen by the payload's phase byte.
pub struct Phases {
    trackers: Vec<Arc<Tracker>>,
    foreign: AtomicU64,
}

impl Phases {
    /// Routes by phase: `trackers[i]` tracks phase `i`.
    pub fn new(trackers: Vec<Arc<Tracker>>) -> Self {
        Phases {
            trackers,
            foreign: AtomicU64::new(0),
        }
    }

    /// Records one handled payload, now.
    pub fn handle(&self, payload: &[u8]) {
        let now = clock();
        match payload
            .get(1)
            .and_then(|p| self.trackers.get(usize::from(*p)))
        {
            Some(t) => t.handle(payload, now),
            None => {
                self.foreign.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Names for one run's topics and groups: unique per process and run, so that runs (and
/// other users of an external broker) never share them.
#[derive(Clone, Debug)]
pub struct Names {
    /// The topic names, one per topic number.
    pub topics: Vec<String>,
    /// The consumer group (durable consumer) of every subscription.
    pub group: String,
}

impl Names {
    /// Names for a run with `topics` topics.
    pub fn new(run: &str, topics: u64) -> Self {
        Names {
            topics: (0..topics)
                .map(|t| format!("pressure-{run}-t{t}"))
                .collect(),
            group: format!("pressure-{run}"),
        }
    }
}

/// One side of the comparison, connected.
pub(crate) trait Transport: Send + Sync + 'static {
    /// Subscribes to every topic; each handled message goes to `phases`.
    fn subscribe(
        &self,
        names: &Names,
        phases: Arc<Phases>,
    ) -> impl Future<Output = Result<(), TransportError>>;

    /// Publishes one message and returns once the broker has it: by default, an enqueue and
    /// the wait for its acknowledgement.
    fn publish(
        &self,
        topic: usize,
        key: String,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        let queued = self.enqueue(topic, key, payload);
        async move { queued.await?.await }
    }

    /// Hands one message to the client and returns once it is queued, with the wait for the
    /// broker's acknowledgement (for `--in-flight` above 1).
    fn enqueue(
        &self,
        topic: usize,
        key: String,
        payload: Bytes,
    ) -> impl Future<Output = Result<Acked, TransportError>> + Send;

    /// Stops the subscriptions and disconnects: afterwards nothing of the client is left.
    fn close(&self) -> impl Future<Output = Result<(), TransportError>>;
}

/// The wait for one enqueued message's acknowledgement.
pub(crate) type Acked = Pin<Box<dyn Future<Output = Result<(), TransportError>> + Send>>;

/// An acknowledgement that is already there.
pub(crate) fn acked() -> Acked {
    Box::pin(std::future::ready(Ok(())))
}

/// Where a broker runs, for the backends that have one.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The backend.
    pub backend: Backend,
    /// `host:port` for Kafka, `nats://host:port` for NATS; empty for memory.
    pub address: String,
}

/// The event bus: envelopes published with `publish_envelope`, handled by
/// `subscribe_envelopes` (keyed workers: one aggregate at a time, in order).
pub(crate) struct Bus {
    bus: EventBus,
    topics: Vec<String>,
    _memory: Option<MemoryBroker>,
}

/// The Kafka settings of the pressure run (both sides use the same): a 1 s session, so a
/// consumer's group join takes about a second on Tansu, and no idempotence (Tansu makes each
/// idempotent producer wait about a second for its id).
#[cfg(feature = "kafka")]
pub(crate) const KAFKA_SESSION_TIMEOUT: Duration = Duration::from_millis(1000);
#[cfg(feature = "kafka")]
pub(crate) const KAFKA_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

impl Bus {
    /// A bus on `endpoint`, with `names`' topics created (default configuration: persistent,
    /// two partitions, file storage on NATS).
    pub(crate) async fn connect(
        endpoint: &Endpoint,
        names: &Names,
    ) -> Result<Self, TransportError> {
        let builder = EventBus::builder();
        let connect_error = |e: &dyn std::fmt::Display| TransportError::Connect {
            backend: endpoint.backend.name(),
            message: e.to_string(),
        };
        let (bus, memory) = match endpoint.backend {
            Backend::Memory => {
                let broker = MemoryBroker::new();
                (builder.memory(&broker), Some(broker))
            }
            #[cfg(feature = "kafka")]
            Backend::Kafka => {
                let config = eventbus::KafkaConfig::new(&endpoint.address)
                    .session_timeout(KAFKA_SESSION_TIMEOUT)
                    .heartbeat_interval(KAFKA_HEARTBEAT_INTERVAL)
                    .idempotence(false);
                (
                    builder.kafka(config).await.map_err(|e| connect_error(&e))?,
                    None,
                )
            }
            #[cfg(feature = "nats")]
            Backend::Nats => {
                let config = eventbus::NatsConfig::new(&endpoint.address);
                (
                    builder.nats(config).await.map_err(|e| connect_error(&e))?,
                    None,
                )
            }
            #[allow(unreachable_patterns)]
            other => {
                return Err(TransportError::NotBuilt {
                    backend: other.name(),
                })
            }
        };
        for t in &names.topics {
            let config = TopicConfig::new(t).map_err(|e| connect_error(&e))?;
            if let Err(e) = bus.create_topic(config).await {
                let _ = bus.close().await;
                return Err(connect_error(&e));
            }
        }
        Ok(Bus {
            bus,
            topics: names.topics.clone(),
            _memory: memory,
        })
    }
}

impl Transport for Bus {
    async fn subscribe(&self, names: &Names, phases: Arc<Phases>) -> Result<(), TransportError> {
        for t in &names.topics {
            let phases = phases.clone();
            self.bus
                .subscribe_envelopes(t, &names.group, move |e: Envelope| {
                    phases.handle(e.payload());
                    std::future::ready(Ok::<(), std::io::Error>(()))
                })
                .await
                .map_err(|e| TransportError::Subscribe {
                    topic: t.clone(),
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }

    fn publish(
        &self,
        topic: usize,
        key: String,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        let topic = &self.topics[topic];
        async move {
            let envelope = envelope(topic, key, payload)?;
            self.bus
                .publish_envelope(topic, &envelope)
                .await
                .map_err(|e| publish_failed(topic, &e))
        }
    }

    fn enqueue(
        &self,
        topic: usize,
        key: String,
        payload: Bytes,
    ) -> impl Future<Output = Result<Acked, TransportError>> + Send {
        let topic = &self.topics[topic];
        async move {
            let envelope = envelope(topic, key, payload)?;
            let ack = self
                .bus
                .enqueue_envelope(topic, &envelope)
                .await
                .map_err(|e| publish_failed(topic, &e))?;
            let topic = topic.clone();
            Ok(Box::pin(async move { ack.await.map_err(|e| publish_failed(&topic, &e)) }) as Acked)
        }
    }

    async fn close(&self) -> Result<(), TransportError> {
        self.bus.close().await.map_err(|e| TransportError::Close {
            backend: "bus",
            message: e.to_string(),
        })
    }
}

/// The run's event type.
const EVENT_TYPE: &str = "PressureEvent";

/// The run's event: its aggregate is the key.
fn envelope(topic: &str, key: String, payload: Bytes) -> Result<Envelope, TransportError> {
    Envelope::new(key, EVENT_TYPE, 1, payload).map_err(|e| publish_failed(topic, &e))
}

fn publish_failed(topic: &str, e: &dyn std::fmt::Display) -> TransportError {
    TransportError::Publish {
        topic: topic.to_string(),
        message: e.to_string(),
    }
}

/// The memory baseline: per topic, as many bounded tokio channels as the bus has keyed
/// workers (with the same capacity), each drained by one task; a message goes to the channel
/// of its key's hash, so one aggregate is handled in order, as by the bus's keyed pool.
/// Per topic, one sender per worker. The channels carry [`Bytes`], or the envelope the bus's
/// side makes per message (`--raw-envelopes`, to tell the envelope's cost from the bus's).
type Senders<M> = Arc<Vec<Vec<tokio::sync::mpsc::Sender<M>>>>;

pub(crate) struct RawMemory<M> {
    /// The senders, per topic and worker (taken away at close).
    publish: std::sync::RwLock<Option<Senders<M>>>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    topics: usize,
}

impl<M> RawMemory<M> {
    pub(crate) fn new(topics: usize) -> Self {
        RawMemory {
            publish: std::sync::RwLock::new(None),
            tasks: std::sync::Mutex::new(Vec::new()),
            topics,
        }
    }
}

/// What the memory baseline's channels carry: made from a message's key and payload on the
/// publishing side, its payload read by the handling side.
pub(crate) trait RawItem: Sized + Send + 'static {
    /// The item, or why it cannot be made.
    fn make(key: String, payload: Bytes) -> Result<Self, String>;
    fn payload(&self) -> &[u8];
}

/// The payload alone: a bare channel.
impl RawItem for Bytes {
    fn make(_: String, payload: Bytes) -> Result<Self, String> {
        Ok(payload)
    }

    fn payload(&self) -> &[u8] {
        self
    }
}

/// The envelope the bus's side publishes, made the same way.
impl RawItem for Envelope {
    fn make(key: String, payload: Bytes) -> Result<Self, String> {
        Envelope::new(key, EVENT_TYPE, 1, payload).map_err(|e| e.to_string())
    }

    fn payload(&self) -> &[u8] {
        Envelope::payload(self)
    }
}

impl<M: RawItem> Transport for RawMemory<M> {
    async fn subscribe(&self, _names: &Names, phases: Arc<Phases>) -> Result<(), TransportError> {
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..self.topics {
            let mut per_topic = Vec::new();
            for _ in 0..eventbus::DEFAULT_KEYED_WORKERS {
                let (tx, mut rx) =
                    tokio::sync::mpsc::channel::<M>(eventbus::DEFAULT_QUEUE_CAPACITY);
                let phases = phases.clone();
                tasks.push(tokio::spawn(async move {
                    while let Some(m) = rx.recv().await {
                        phases.handle(m.payload());
                    }
                }));
                per_topic.push(tx);
            }
            senders.push(per_topic);
        }
        *self.publish.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(senders));
        *self.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(())
    }

    fn publish(
        &self,
        topic: usize,
        key: String,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        let senders = self
            .publish
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        async move {
            let failed = |message: String| TransportError::Publish {
                topic: format!("channel {topic}"),
                message,
            };
            let closed = || failed("the channel is closed".into());
            let senders = senders.ok_or_else(closed)?;
            let per_topic = &senders[topic];
            let worker = key_hash(key.as_bytes()) as usize % per_topic.len();
            let m = M::make(key, payload).map_err(failed)?;
            per_topic[worker].send(m).await.map_err(|_| closed())
        }
    }

    /// A channel send is its own acknowledgement.
    fn enqueue(
        &self,
        topic: usize,
        key: String,
        payload: Bytes,
    ) -> impl Future<Output = Result<Acked, TransportError>> + Send {
        let sent = self.publish(topic, key, payload);
        async move { sent.await.map(|()| acked()) }
    }

    async fn close(&self) -> Result<(), TransportError> {
        self.publish
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.await.map_err(|e| TransportError::Close {
                backend: "channel",
                message: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// FNV-1a: a stable hash of a key to a worker.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// How long one publish may take before the run counts it as failed (the bus's default
/// publish timeout).
pub(crate) const PUBLISH_TIMEOUT: Duration = eventbus::DEFAULT_PUBLISH_TIMEOUT;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_items_carry_the_payload() {
        let payload = Bytes::from_static(b"stamp and padding");
        let bytes = <Bytes as RawItem>::make("agg-1".into(), payload.clone()).unwrap();
        assert_eq!(RawItem::payload(&bytes), &payload[..]);
        let e = <Envelope as RawItem>::make("agg-1".into(), payload.clone()).unwrap();
        assert_eq!(RawItem::payload(&e), &payload[..]);
        assert_eq!((e.aggregate_id(), e.event_type()), ("agg-1", EVENT_TYPE));
        // An envelope is checked as the bus's side checks it; bytes are not.
        assert!(<Envelope as RawItem>::make("no spaces".into(), payload.clone()).is_err());
        assert!(<Bytes as RawItem>::make("no spaces".into(), payload).is_ok());
    }
}
