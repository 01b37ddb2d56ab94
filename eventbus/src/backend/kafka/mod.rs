//! The Kafka backend, through rdkafka (librdkafka).
//!
//! - Publishing: one producer per bus, `acks=all`, the key is the message key (an envelope's
//!   aggregate id), headers are Kafka headers, compression as configured. librdkafka itself
//!   gives up on a message after the bus's publish timeout (`message.timeout.ms`), so a timed
//!   out publish is never delivered later behind the caller's back.
//! - Subscribing: one consumer per subscription in the Kafka consumer group. Offsets are
//!   stored only once the handler has succeeded (or the message reached the dead-letter path),
//!   and only up to the lowest message still in progress on that partition: a message is never
//!   committed before every earlier one of its partition is done. Stored offsets are committed
//!   every commit interval, before partitions are revoked in a rebalance, and at close.
//! - Close: the consumers commit and leave their groups, the producer is flushed within the
//!   publish timeout, and every client is dropped on a short-lived thread that is joined (a
//!   client's drop blocks while librdkafka stops its `rdk:*` threads). Afterwards no librdkafka
//!   thread and no socket to the broker remains.

mod context;
mod subscription;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use self::context::{KafkaContext, Link};
use self::subscription::KafkaSubscription;
use super::members::Members;
use super::offload::off_runtime;
use super::{Acked, Backend, BoxFuture, Subscription};
use crate::error::{CloseError, ConnectError, PublishError, SubscribeError, TopicError};
use crate::message::Outbound;
use crate::observe::ConnectionState;
use crate::topic::{Durability, TopicConfig, TopicName};

/// How long a consumer may go without a heartbeat before the group drops it (librdkafka's
/// default). Short values make rebalances fast (and the group join of some brokers, Tansu
/// among them, waits about half of it).
pub const DEFAULT_KAFKA_SESSION_TIMEOUT: Duration = Duration::from_secs(45);
/// How often a consumer sends heartbeats (librdkafka's default).
pub const DEFAULT_KAFKA_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// How often stored offsets (messages handled) are committed.
pub const DEFAULT_KAFKA_COMMIT_INTERVAL: Duration = Duration::from_millis(500);
/// How often librdkafka reports broker states and consumer lag (what `health()` shows).
pub const DEFAULT_KAFKA_STATS_INTERVAL: Duration = Duration::from_millis(500);
/// The longest a consumer's fetch waits at the broker for new data (`fetch.wait.max.ms`;
/// librdkafka's default). Under light traffic a message waits about this long to be fetched.
/// Measured in the pressure run against Tansu (2 cores, loopback), bus and raw alike:
///
/// | wait | end-to-end p50 / p99 | stalls |
/// |---|---|---|
/// | 500 ms | 110-190 ms / 250 ms | none in 16 runs |
/// | 100 ms | 28-30 ms / 53-59 ms | 3 in 24 runs: Tansu answered nothing for 10-30 s |
/// | 10 ms | (not measured) | Tansu storing into S3 fell so far behind that a consumer stalled for a minute |
///
/// A shorter wait also costs more fetch requests while a partition is idle (up to one per
/// partition per wait). The default keeps what never stalled; lower it with
/// [`KafkaConfig::fetch_wait_max`] against a broker that serves short fetches well (a real
/// Kafka cluster with local disks) when latency matters more than idle requests.
pub const DEFAULT_KAFKA_FETCH_WAIT_MAX: Duration = Duration::from_millis(500);
/// Compression of produced batches.
pub const DEFAULT_KAFKA_COMPRESSION: Compression = Compression::None;
/// Whether the producer is idempotent (no duplicates from its own retries).
pub const DEFAULT_KAFKA_IDEMPOTENCE: bool = true;
/// How a consumer group hands partitions around. Every subscription of a bus is a consumer of
/// its own, so subscriptions that share a group (one per topic, say) rebalance together
/// whenever one of them joins or leaves. Eager rebalancing stops every one of them until the
/// group has re-formed: in the pressure run against Tansu, the consumers of five topics in one
/// group stopped for 5 s in 1 of 40 runs at the `high` level, a late join revoking partitions
/// whose owner did not change (0 stalls in 40 runs rebalancing cooperatively).
pub const DEFAULT_KAFKA_REBALANCING: Rebalancing = Rebalancing::Cooperative;

/// Compression of produced message batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// None.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// How a consumer group moves partitions between its members (librdkafka's
/// `partition.assignment.strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rebalancing {
    /// Only the partitions that change owner are revoked (`cooperative-sticky`); the others go
    /// on being consumed while the group re-forms. Every member of the group must rebalance
    /// cooperatively too.
    Cooperative,
    /// Every member gives up all its partitions until the group has re-formed (`range,roundrobin`,
    /// librdkafka's default). Use it to join a group whose members rebalance eagerly (the default
    /// of librdkafka and of older Java clients): the broker refuses a mix.
    Eager,
}

impl Rebalancing {
    /// librdkafka's `partition.assignment.strategy` for it.
    pub fn strategy(self) -> &'static str {
        match self {
            Rebalancing::Cooperative => "cooperative-sticky",
            Rebalancing::Eager => "range,roundrobin",
        }
    }
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// How to reach a Kafka cluster. `Default`-like values come from the `DEFAULT_KAFKA_*` constants.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use eventbus::{Compression, EventBus, KafkaConfig};
/// let kafka = KafkaConfig::new("127.0.0.1:9092").compression(Compression::Zstd);
/// let bus = EventBus::builder().kafka(kafka).await?;
/// // ... publish and subscribe ...
/// bus.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    bootstrap_servers: String,
    client_id: String,
    session_timeout: Duration,
    heartbeat_interval: Duration,
    commit_interval: Duration,
    stats_interval: Duration,
    fetch_wait_max: Duration,
    compression: Compression,
    idempotence: bool,
    rebalancing: Rebalancing,
    properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// A cluster reached through `bootstrap_servers` (`host:port[,host:port...]`).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaConfig {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: "eventbus".into(),
            session_timeout: DEFAULT_KAFKA_SESSION_TIMEOUT,
            heartbeat_interval: DEFAULT_KAFKA_HEARTBEAT_INTERVAL,
            commit_interval: DEFAULT_KAFKA_COMMIT_INTERVAL,
            stats_interval: DEFAULT_KAFKA_STATS_INTERVAL,
            fetch_wait_max: DEFAULT_KAFKA_FETCH_WAIT_MAX,
            compression: DEFAULT_KAFKA_COMPRESSION,
            idempotence: DEFAULT_KAFKA_IDEMPOTENCE,
            rebalancing: DEFAULT_KAFKA_REBALANCING,
            properties: Vec::new(),
        }
    }

    /// The `client.id` of every client (default `eventbus`).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// `session.timeout.ms` (default [`DEFAULT_KAFKA_SESSION_TIMEOUT`]).
    pub fn session_timeout(mut self, d: Duration) -> Self {
        self.session_timeout = d;
        self
    }

    /// `heartbeat.interval.ms` (default [`DEFAULT_KAFKA_HEARTBEAT_INTERVAL`]).
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.heartbeat_interval = d;
        self
    }

    /// How often handled offsets are committed (default [`DEFAULT_KAFKA_COMMIT_INTERVAL`]).
    pub fn commit_interval(mut self, d: Duration) -> Self {
        self.commit_interval = d;
        self
    }

    /// How often broker states and lag are refreshed (default [`DEFAULT_KAFKA_STATS_INTERVAL`]).
    pub fn stats_interval(mut self, d: Duration) -> Self {
        self.stats_interval = d;
        self
    }

    /// `fetch.wait.max.ms`: latency against fetch requests while idle (default
    /// [`DEFAULT_KAFKA_FETCH_WAIT_MAX`], which says what it trades).
    pub fn fetch_wait_max(mut self, d: Duration) -> Self {
        self.fetch_wait_max = d;
        self
    }

    /// Compression of produced batches (default [`DEFAULT_KAFKA_COMPRESSION`]).
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }

    /// Whether the producer is idempotent (default [`DEFAULT_KAFKA_IDEMPOTENCE`]).
    pub fn idempotence(mut self, on: bool) -> Self {
        self.idempotence = on;
        self
    }

    /// How consumer groups rebalance (default [`DEFAULT_KAFKA_REBALANCING`], which says why).
    pub fn rebalancing(mut self, r: Rebalancing) -> Self {
        self.rebalancing = r;
        self
    }

    /// Any other librdkafka property, for every client (security settings, for example). Set
    /// last, so it overrides the settings above.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    fn client(&self, role: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", format!("{}-{role}", self.client_id))
            .set(
                "statistics.interval.ms",
                self.stats_interval.as_millis().to_string(),
            );
        c
    }

    fn finish(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    fn producer(&self, publish_timeout: Duration) -> ClientConfig {
        let mut c = self.client("producer");
        c.set("acks", "all")
            .set("enable.idempotence", self.idempotence.to_string())
            .set("compression.type", self.compression.as_str())
            .set("linger.ms", "1")
            // librdkafka gives up on a message at the bus's publish timeout, never later.
            .set(
                "message.timeout.ms",
                publish_timeout.as_millis().max(1).to_string(),
            );
        self.finish(c)
    }

    fn consumer(&self, group: &str) -> ClientConfig {
        let mut c = self.client("consumer");
        c.set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                self.commit_interval.as_millis().max(1).to_string(),
            )
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", self.rebalancing.strategy())
            .set(
                "fetch.wait.max.ms",
                self.fetch_wait_max.as_millis().to_string(),
            )
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                self.heartbeat_interval.as_millis().to_string(),
            );
        self.finish(c)
    }

    fn admin(&self) -> ClientConfig {
        let c = self.client("admin");
        self.finish(c)
    }
}

/// The clients of one bus.
pub(crate) struct KafkaBackend {
    config: KafkaConfig,
    publish_timeout: Duration,
    link: Arc<Link>,
    /// Taken at close: a publish holds it for reading, so close waits for publishes in flight.
    producer: tokio::sync::RwLock<Option<FutureProducer<KafkaContext>>>,
    admin: Mutex<Option<AdminClient<KafkaContext>>>,
    /// Topics known to exist (created here or found existing), as of a number of reconnects.
    known: Mutex<(u64, HashSet<TopicName>)>,
    /// Subscriptions of this bus, with their lag as librdkafka last reported it.
    members: Members<subscription::Lag>,
}

impl KafkaBackend {
    pub(crate) fn connect(
        config: KafkaConfig,
        publish_timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let link = Arc::new(Link::default());
        let bad = |e: KafkaError| ConnectError::Config {
            backend: "kafka",
            message: e.to_string(),
        };
        let producer = config
            .producer(publish_timeout)
            .create_with_context(KafkaContext::new(link.clone()))
            .map_err(bad)?;
        let admin = config
            .admin()
            .create_with_context(KafkaContext::new(link.clone()))
            .map_err(bad)?;
        Ok(KafkaBackend {
            config,
            publish_timeout,
            link,
            producer: tokio::sync::RwLock::new(Some(producer)),
            admin: Mutex::new(Some(admin)),
            known: Mutex::default(),
            members: Members::default(),
        })
    }

    async fn create(&self, config: &TopicConfig) -> Result<(), TopicError> {
        let backend_error = |message: String| TopicError::Backend {
            topic: config.name.to_string(),
            backend: "kafka",
            message,
        };
        if config.durability == Durability::Ephemeral {
            return Err(TopicError::InvalidConfig {
                topic: config.name.to_string(),
                reason:
                    "Kafka keeps every message; ephemeral topics need the NATS or memory backend"
                        .into(),
            });
        }
        if config.retention.max_messages.is_some() {
            return Err(TopicError::InvalidConfig {
                topic: config.name.to_string(),
                reason: "Kafka cannot keep a number of messages; use a retention by age".into(),
            });
        }
        let retention = config.retention.max_age.map(|d| d.as_millis().to_string());
        let mut topic = NewTopic::new(
            config.name.as_str(),
            config.partitions as i32,
            TopicReplication::Fixed(i32::from(config.replicas)),
        );
        if let Some(ms) = &retention {
            topic = topic.set("retention.ms", ms);
        }
        let results = {
            let admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
            let Some(admin) = admin.as_ref() else {
                return Err(TopicError::Closed);
            };
            admin.create_topics([&topic], &AdminOptions::new())
        };
        let results = results.await.map_err(|e| backend_error(e.to_string()))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(backend_error(code.to_string())),
            }
        }
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let reconnects = self.link.reconnects();
        if known.0 != reconnects {
            *known = (reconnects, HashSet::new());
        }
        known.1.insert(config.name.clone());
        Ok(())
    }

    /// Creates `topic` with the defaults unless it is known to exist (since the last outage).
    async fn ensure(&self, topic: &TopicName) -> Result<(), TopicError> {
        {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if known.0 == self.link.reconnects() && known.1.contains(topic) {
                return Ok(());
            }
        }
        self.create(&TopicConfig::new(topic.as_str())?).await
    }
}

/// What a failed produce means for the caller: librdkafka's own give-up after
/// `message.timeout.ms` is the bus's publish timeout.
fn produce_error(topic: TopicName, timeout: Duration, e: KafkaError) -> PublishError {
    match e {
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => PublishError::Timeout {
            topic,
            backend: "kafka",
            timeout,
        },
        e => PublishError::Backend {
            topic,
            backend: "kafka",
            message: e.to_string(),
        },
    }
}

impl Backend for KafkaBackend {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn create_topic<'a>(
        &'a self,
        config: &'a TopicConfig,
    ) -> BoxFuture<'a, Result<(), TopicError>> {
        Box::pin(self.create(config))
    }

    fn enqueue<'a>(
        &'a self,
        topic: &'a TopicName,
        message: Outbound,
    ) -> BoxFuture<'a, Result<Acked, PublishError>> {
        Box::pin(async move {
            self.ensure(topic).await?;
            let guard = self.producer.read().await;
            let Some(producer) = guard.as_ref() else {
                return Err(PublishError::Closed);
            };
            let mut record = FutureRecord::<[u8], [u8]>::to(topic.as_str())
                .payload(message.payload.bytes().as_ref());
            // An envelope carries its metadata in its payload: no header list to allocate.
            if !message.headers.is_empty() {
                let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
                for (k, v) in &message.headers {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(v.as_str()),
                    });
                }
                record = record.headers(headers);
            }
            if let Some(k) = &message.key {
                record = record.key(k.as_ref());
            }
            // A full client queue waits for room (the bus's publish timeout bounds the wait),
            // briefly at first: librdkafka empties it as fast as the broker acknowledges.
            let mut wait = Duration::from_millis(1);
            let delivery = loop {
                match producer.send_result(record) {
                    Ok(delivery) => break delivery,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_millis(50));
                    }
                    Err((e, _)) => {
                        return Err(produce_error(topic.clone(), self.publish_timeout, e))
                    }
                }
            };
            drop(guard);
            let link = self.link.clone();
            let topic = topic.clone();
            let timeout = self.publish_timeout;
            Ok(Box::pin(async move {
                match delivery.await {
                    Ok(Ok(_)) => {
                        link.up();
                        Ok(())
                    }
                    Ok(Err((e, _))) => Err(produce_error(topic, timeout, e)),
                    // The producer went away without reporting (it is flushed at close first).
                    Err(_) => Err(PublishError::Closed),
                }
            }) as Acked)
        })
    }

    fn subscribe<'a>(
        &'a self,
        topic: &'a TopicName,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, SubscribeError>> {
        Box::pin(async move {
            self.ensure(topic).await?;
            let sub = KafkaSubscription::start(
                &self.config,
                topic,
                group,
                self.link.clone(),
                &self.members,
            )?;
            Ok(Box::new(sub) as Box<dyn Subscription>)
        })
    }

    fn connection(&self) -> ConnectionState {
        self.link.state()
    }

    fn lag(&self, topic: &TopicName, group: &str) -> Option<u64> {
        self.members.lag(topic, group, subscription::lag)
    }

    fn revoked_partitions(&self) -> u64 {
        self.link.revoked()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), CloseError>> {
        Box::pin(async move {
            // Waits for publishes in flight (each bounded by the publish timeout).
            let producer = self.producer.write().await.take();
            let admin = self.admin.lock().unwrap_or_else(|e| e.into_inner()).take();
            let flush = self.publish_timeout;
            let flushed = off_runtime("eventbus:kafka-close", move || {
                let flushed = producer.as_ref().map(|p| p.flush(flush));
                drop(producer);
                drop(admin);
                flushed
            })
            .await;
            self.link.close();
            match flushed {
                Some(Err(e)) => Err(CloseError::Backend {
                    backend: "kafka",
                    message: format!("the producer did not flush within {flush:?}: {e}"),
                }),
                _ => Ok(()),
            }
        })
    }
}
