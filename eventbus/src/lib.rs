//! An event bus that closes without leaving anything behind.
//!
//! One [`EventBus`] type over every backend (the in-process [`MemoryBroker`]; Kafka with the
//! feature `kafka`; NATS JetStream with the feature `nats`), with envelopes, per-key ordering, worker pools, retries, a
//! dead-letter path, health, metrics and an explicit, bounded [`EventBus::close`].
//!
//! # What is guaranteed
//!
//! - **At least once** on persistent topics: a message is acknowledged only after its handler
//!   returned `Ok` (or after it reached the dead-letter path). A message that was delivered but
//!   not acknowledged (the handler was still running at the close deadline, the process died)
//!   is delivered again to the group's next subscriber, with [`Message::redelivered`] set. A
//!   handler may therefore see a message twice: make it idempotent (the envelope's `event_id`
//!   is there for that).
//! - **Order per key**: messages with the same key (an envelope's aggregate id) are handled one
//!   at a time, in publish order, including across retries. Messages without a key, and
//!   messages of different keys, are handled in parallel. After a redelivery (a new
//!   subscriber after a close), a key's unacknowledged messages come again in order, but a
//!   handler can see a message it already handled before a later one.
//! - **Bounded retries**: an `Err` (or a panic) from the handler is retried with a doubling
//!   backoff up to [`RetryPolicy::max_attempts`] calls, then the message takes the dead-letter
//!   path ([`DeadLetterPolicy`]): a `<topic>.dlq` topic or a callback. Nothing is dropped
//!   silently: an undecodable envelope also takes that path, raw bytes included.
//! - **Backpressure**: worker queues are bounded; when they are full the subscription stops
//!   pulling from the broker (its lag grows, see [`EventBus::health`]). The in-process
//!   [`MemoryBroker`] also bounds what a subscribed group has not acknowledged
//!   ([`DEFAULT_MEMORY_CAPACITY`] per partition): a publish beyond it waits for room, up to
//!   the publish timeout. Without a retention it keeps a message only until every group of
//!   the topic has acknowledged it (memory is its only store): a group that subscribes later
//!   starts at the oldest message still kept.
//! - **Close**: after [`EventBus::close`] returns, every task the bus spawned has ended and has
//!   been awaited, and the backend is flushed and disconnected.
//!
//! Per backend:
//!
//! - **Kafka** ([`BusBuilder::kafka`]): an offset is committed only once its message and every
//!   earlier one of its partition are done; commits happen every
//!   `DEFAULT_KAFKA_COMMIT_INTERVAL` and at close, so a rebalance can redeliver messages handled
//!   just before it. Kafka does not say whether a message was delivered before:
//!   [`Message::redelivered`] is always `false` there. Ephemeral topics and retention by count
//!   are refused (Kafka has neither).
//! - **NATS** ([`BusBuilder::nats`]): persistent topics are JetStream streams, one subject each,
//!   so a topic keeps one order for all keys; ephemeral topics are core NATS. A bus knows a
//!   topic is ephemeral from its own [`EventBus::create_topic`]: create it on every bus.
//! - On both, lag (in [`EventBus::health`]) is what the broker said last; it is not refreshed
//!   while a subscription is blocked by backpressure.
//!
//! What is **not** guaranteed: exactly-once handling; order between different keys; delivery on
//! ephemeral topics (at most once, only to subscribers present at publish time, dropped for a
//! subscriber that lags more than 4096 messages); messages past a topic's retention.

mod backend;
mod bus;
mod delivery;
mod envelope;
mod error;
mod message;
mod observe;
mod stop;
mod topic;

#[cfg(feature = "kafka")]
pub use backend::{
    Compression, KafkaConfig, Rebalancing, DEFAULT_KAFKA_COMMIT_INTERVAL,
    DEFAULT_KAFKA_COMPRESSION, DEFAULT_KAFKA_FETCH_WAIT_MAX, DEFAULT_KAFKA_HEARTBEAT_INTERVAL,
    DEFAULT_KAFKA_IDEMPOTENCE, DEFAULT_KAFKA_REBALANCING, DEFAULT_KAFKA_SESSION_TIMEOUT,
    DEFAULT_KAFKA_STATS_INTERVAL,
};
pub use backend::{MemoryBroker, DEFAULT_MEMORY_CAPACITY};
#[cfg(feature = "nats")]
pub use backend::{
    NatsConfig, DEFAULT_NATS_ACK_WAIT, DEFAULT_NATS_CONNECT_TIMEOUT,
    DEFAULT_NATS_MAX_RECONNECT_DELAY, DEFAULT_NATS_PREFIX,
};
pub use bus::{
    BusBuilder, EventBus, PublishAck, DEFAULT_CLOSE_DEADLINE, DEFAULT_GLOBAL_WORKERS,
    DEFAULT_KEYED_WORKERS, DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_POOL_METRICS,
    DEFAULT_PUBLISH_TIMEOUT, DEFAULT_QUEUE_CAPACITY,
};
pub use delivery::{
    DeadLetter, DeadLetterPolicy, DeadLetterReason, RetryPolicy, DEFAULT_BACKOFF,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF,
};
pub use envelope::{validate_aggregate_id, Envelope, MAX_AGGREGATE_ID, WIRE_FORMAT_VERSION};
pub use error::{
    CloseError, ConnectError, EnvelopeError, HandlerError, PublishError, SubscribeError, TopicError,
};
pub use message::{Headers, Message, Outbound};
pub use observe::{ConnectionState, Health, Metrics, PoolMetrics};
pub use topic::{
    Durability, Retention, Storage, TopicConfig, TopicName, DEFAULT_PARTITIONS, MAX_TOPIC_NAME,
};
