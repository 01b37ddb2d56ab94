//! Backends: what a broker connection must offer the bus. The bus does the rest (validation,
//! pools, retries, dead letters, close), so every backend has the same semantics.

#[cfg(feature = "kafka")]
mod kafka;
#[cfg(any(feature = "kafka", feature = "nats"))]
mod members;
mod memory;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "kafka")]
mod offload;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

#[cfg(feature = "kafka")]
pub(crate) use kafka::KafkaBackend;
#[cfg(feature = "kafka")]
pub use kafka::{
    Compression, KafkaConfig, Rebalancing, DEFAULT_KAFKA_COMMIT_INTERVAL,
    DEFAULT_KAFKA_COMPRESSION, DEFAULT_KAFKA_FETCH_WAIT_MAX, DEFAULT_KAFKA_HEARTBEAT_INTERVAL,
    DEFAULT_KAFKA_IDEMPOTENCE, DEFAULT_KAFKA_REBALANCING, DEFAULT_KAFKA_SESSION_TIMEOUT,
    DEFAULT_KAFKA_STATS_INTERVAL,
};
pub(crate) use memory::MemoryBackend;
pub use memory::{MemoryBroker, DEFAULT_MEMORY_CAPACITY};
#[cfg(feature = "nats")]
pub(crate) use nats::NatsBackend;
#[cfg(feature = "nats")]
pub use nats::{
    NatsConfig, DEFAULT_NATS_ACK_WAIT, DEFAULT_NATS_CONNECT_TIMEOUT,
    DEFAULT_NATS_MAX_RECONNECT_DELAY, DEFAULT_NATS_PREFIX,
};

use crate::error::{CloseError, PublishError, SubscribeError, TopicError};
use crate::message::{Message, Outbound};
use crate::observe::ConnectionState;
use crate::topic::{TopicConfig, TopicName};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The broker's acknowledgement of one enqueued message (see [`Backend::enqueue`]).
pub(crate) type Acked = BoxFuture<'static, Result<(), PublishError>>;

/// An acknowledgement that is already there: the broker answered as it took the message.
pub(crate) fn acked() -> Acked {
    Box::pin(std::future::ready(Ok(())))
}

/// A connection to a broker.
pub(crate) trait Backend: Send + Sync + 'static {
    /// `memory`, `kafka`, `nats`: for messages.
    fn name(&self) -> &'static str;

    /// Creates the topic, or checks that it exists with a compatible configuration.
    fn create_topic<'a>(&'a self, config: &'a TopicConfig)
        -> BoxFuture<'a, Result<(), TopicError>>;

    /// Hands one message to the broker if that needs no waiting (an in-process broker with
    /// room); `None` means the broker has it, `Some` hands the message back for
    /// [`publish`](Self::publish). It saves the bus a boxed future and a timer per message
    /// where the broker cannot block. The default never takes it.
    fn try_publish(&self, _topic: &TopicName, message: Outbound) -> Option<Outbound> {
        Some(message)
    }

    /// Hands one message to the broker; `Ok` means the broker has it (for persistent topics:
    /// stored): an enqueue and the wait for its acknowledgement.
    fn publish<'a>(
        &'a self,
        topic: &'a TopicName,
        message: Outbound,
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(async move { self.enqueue(topic, message).await?.await })
    }

    /// Hands one message to the broker's client and returns once it is queued there, in call
    /// order, with the wait for the broker's acknowledgement: many messages can be in flight.
    fn enqueue<'a>(
        &'a self,
        topic: &'a TopicName,
        message: Outbound,
    ) -> BoxFuture<'a, Result<Acked, PublishError>>;

    /// Whether an envelope can travel as itself, not as its wire form: the broker is in this
    /// process and hands the publisher's value to the handler.
    fn in_process(&self) -> bool {
        false
    }

    /// Joins `group` on `topic`.
    fn subscribe<'a>(
        &'a self,
        topic: &'a TopicName,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, SubscribeError>>;

    /// The connection's state.
    fn connection(&self) -> ConnectionState;

    /// Messages published to `topic` that `group` has not acknowledged, where known.
    fn lag(&self, topic: &TopicName, group: &str) -> Option<u64>;

    /// Flushes what is buffered and disconnects.
    fn close(&self) -> BoxFuture<'_, Result<(), CloseError>>;

    /// Partitions that consumer group rebalances took from the bus's subscriptions while they
    /// ran (brokers with consumer groups only).
    fn revoked_partitions(&self) -> u64 {
        0
    }
}

/// A group membership on a topic.
pub(crate) trait Subscription: Send {
    /// The next delivery, or `None` once the subscription cannot deliver any more (the
    /// connection closed).
    fn next(&mut self) -> BoxFuture<'_, Option<Delivery>>;

    /// Leaves the group. Deliveries not acknowledged go back to the group: its next member gets
    /// them again.
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;

    /// Gives the subscription its pool's queues, for a backend that can hand messages over
    /// itself (see [`Inbox`]). The default ignores them: everything goes through
    /// [`next`](Self::next).
    fn attach(&mut self, _inbox: Arc<dyn Inbox>) {}
}

/// A subscription's worker queues, for a backend that can hand a message straight to them:
/// the in-process broker does it from the publish and from `next`, which saves the
/// supervisor's task switch per message. The backend keeps every order the supervisor keeps
/// (per partition, in offset order, nothing overtaking a delivery `next` returned).
pub(crate) trait Inbox: Send + Sync {
    /// Queues `d` if its queue has room now and the subscription still takes work; otherwise
    /// hands it back. It runs under the backend's lock: it must not block nor call back into
    /// the backend (acknowledge, publish).
    // Handed back by value on purpose: boxing it would cost the allocation per message that
    // the unboxed memory acknowledgement saves.
    #[allow(clippy::result_large_err)]
    fn offer(&self, d: Delivery) -> Result<(), Delivery>;
}

/// One delivered message and the means to acknowledge it. Dropping it unacknowledged hands the
/// message back: the broker delivers it again.
pub(crate) struct Delivery {
    pub(crate) message: Message,
    pub(crate) ack: DeliveryAck,
}

/// The means to acknowledge one delivery: the in-process broker's unboxed (it is made per
/// message, at a channel's pace), any other backend's boxed.
pub(crate) enum DeliveryAck {
    Memory(memory::LogAck),
    Boxed(Box<dyn Ack>),
}

impl DeliveryAck {
    pub(crate) fn ack(self) {
        match self {
            DeliveryAck::Memory(a) => a.ack(),
            DeliveryAck::Boxed(a) => a.ack(),
        }
    }
}

/// Acknowledgements a worker gathers while it has more messages queued, given to the broker
/// together ([`flush`](Self::flush)): the in-process broker's take its partition's lock once
/// per batch instead of once per message (the lock its publishers take too). Any other
/// backend's are given at once. Dropping the batch flushes it.
#[derive(Default)]
pub(crate) struct AckBatch {
    memory: Vec<memory::LogAck>,
}

impl AckBatch {
    /// How many acknowledgements a batch holds at most before it is flushed.
    const MAX: usize = 64;

    pub(crate) fn push(&mut self, ack: DeliveryAck) {
        match ack {
            DeliveryAck::Memory(a) => {
                self.memory.push(a);
                if self.memory.len() >= Self::MAX {
                    self.flush();
                }
            }
            DeliveryAck::Boxed(a) => a.ack(),
        }
    }

    pub(crate) fn flush(&mut self) {
        if !self.memory.is_empty() {
            memory::LogAck::ack_all(&mut self.memory);
        }
    }
}

impl Drop for AckBatch {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Acknowledges one delivery.
pub(crate) trait Ack: Send {
    fn ack(self: Box<Self>);
}

/// For backends (and ephemeral topics) where acknowledging means nothing.
pub(crate) struct NoAck;

impl Ack for NoAck {
    fn ack(self: Box<Self>) {}
}
