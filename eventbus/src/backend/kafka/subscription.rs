//! A Kafka consumer in its group, and the offsets it may commit: per partition, up to the lowest
//! message still in progress, so that nothing is committed before it is handled.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _};
use rdkafka::Message as _;
use tokio::sync::mpsc;

use super::context::{KafkaContext, Link};
use super::KafkaConfig;
use crate::backend::members::{Member, Members};
use crate::backend::offload::off_runtime;
use crate::backend::{Ack, BoxFuture, Delivery, DeliveryAck, Subscription};
use crate::error::SubscribeError;
use crate::message::{Body, Headers, Message};
use crate::topic::TopicName;

/// A subscription's lag as librdkafka last reported it (`-1`: not yet).
pub(super) type Lag = AtomicI64;

/// The lag of a subscription, once known.
pub(super) fn lag(lag: &Lag) -> Option<u64> {
    u64::try_from(lag.load(Ordering::Relaxed)).ok()
}

/// A handled message: its offset may be committed.
struct Handled {
    partition: i32,
    offset: i64,
}

/// Messages in progress on one partition.
#[derive(Default)]
struct Partition {
    in_progress: BTreeSet<i64>,
    /// One past the highest offset received.
    next: i64,
    /// The offset last stored for commit (the next one to read).
    stored: i64,
}

pub(super) struct KafkaSubscription {
    consumer: Arc<StreamConsumer<KafkaContext>>,
    topic: TopicName,
    handled_tx: mpsc::UnboundedSender<Handled>,
    handled_rx: mpsc::UnboundedReceiver<Handled>,
    partitions: HashMap<i32, Partition>,
    member: Member<Lag>,
    link: Arc<Link>,
}

impl KafkaSubscription {
    pub(super) fn start(
        config: &KafkaConfig,
        topic: &TopicName,
        group: &str,
        link: Arc<Link>,
        members: &Members<Lag>,
    ) -> Result<Self, SubscribeError> {
        let backend_error = |e: KafkaError| SubscribeError::Backend {
            topic: topic.clone(),
            backend: "kafka",
            message: e.to_string(),
        };
        let member = members.join(topic, group, AtomicI64::new(-1))?;
        let context = KafkaContext::consumer(link.clone(), topic.as_str(), member.lag().clone());
        let consumer: StreamConsumer<KafkaContext> = config
            .consumer(group)
            .create_with_context(context)
            .map_err(backend_error)?;
        consumer
            .subscribe(&[topic.as_str()])
            .map_err(backend_error)?;
        let (handled_tx, handled_rx) = mpsc::unbounded_channel();
        Ok(KafkaSubscription {
            consumer: Arc::new(consumer),
            topic: topic.clone(),
            handled_tx,
            handled_rx,
            partitions: HashMap::new(),
            member,
            link,
        })
    }

    /// Records `m` as in progress and wraps it for the bus.
    fn delivery(
        topic: &TopicName,
        partitions: &mut HashMap<i32, Partition>,
        tx: &mpsc::UnboundedSender<Handled>,
        m: &BorrowedMessage<'_>,
    ) -> Delivery {
        let (partition, offset) = (m.partition(), m.offset());
        let p = partitions.entry(partition).or_insert_with(|| Partition {
            next: offset,
            stored: offset,
            ..Partition::default()
        });
        p.in_progress.insert(offset);
        p.next = p.next.max(offset + 1);
        let mut headers = Headers::new();
        if let Some(hs) = m.headers() {
            for h in hs.iter() {
                let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                headers.insert(h.key.to_string(), value.into_owned());
            }
        }
        Delivery {
            message: Message {
                topic: topic.clone(),
                key: m.key().map(Bytes::copy_from_slice),
                headers: headers.into(),
                payload: Body::Bytes(Bytes::copy_from_slice(m.payload().unwrap_or_default())),
                attempt: 1,
                // Kafka does not say whether the group saw a message before.
                redelivered: false,
            },
            ack: DeliveryAck::Boxed(Box::new(KafkaAck {
                tx: tx.clone(),
                partition,
                offset,
            })),
        }
    }

    /// Marks a message handled.
    fn handled(partitions: &mut HashMap<i32, Partition>, h: Handled) {
        if let Some(p) = partitions.get_mut(&h.partition) {
            p.in_progress.remove(&h.offset);
        }
    }

    /// Stores each partition's new commit position, where it moved: once for every message
    /// handled since, not once per message.
    fn store(
        consumer: &StreamConsumer<KafkaContext>,
        topic: &TopicName,
        partitions: &mut HashMap<i32, Partition>,
    ) {
        for (partition, p) in partitions.iter_mut() {
            let position = p.in_progress.first().copied().unwrap_or(p.next);
            // librdkafka stores `offset + 1`: the next message to read. A partition that was
            // revoked meanwhile refuses it; its next owner reads the message again.
            if position > p.stored
                && consumer
                    .store_offset(topic.as_str(), *partition, position - 1)
                    .is_ok()
            {
                p.stored = position;
            }
        }
    }
}

impl Subscription for KafkaSubscription {
    fn next(&mut self) -> BoxFuture<'_, Option<Delivery>> {
        Box::pin(async move {
            loop {
                let KafkaSubscription {
                    consumer,
                    topic,
                    handled_tx,
                    handled_rx,
                    partitions,
                    link,
                    ..
                } = self;
                tokio::select! {
                    biased;
                    Some(h) = handled_rx.recv() => {
                        Self::handled(partitions, h);
                        while let Ok(h) = handled_rx.try_recv() {
                            Self::handled(partitions, h);
                        }
                        Self::store(consumer, topic, partitions);
                    }
                    // Errors are transient (a broker restarting, a rebalance): librdkafka
                    // retries by itself, and health shows an outage.
                    m = consumer.recv() => if let Ok(m) = m {
                        link.up();
                        return Some(Self::delivery(topic, partitions, handled_tx, &m));
                    },
                }
            }
        })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut me = *self;
            while let Ok(h) = me.handled_rx.try_recv() {
                Self::handled(&mut me.partitions, h);
            }
            Self::store(&me.consumer, &me.topic, &mut me.partitions);
            drop(me.member);
            let consumer = me.consumer;
            consumer.context().leave();
            // Dropping the consumer commits the stored offsets, leaves the group and stops
            // its librdkafka threads; it blocks meanwhile.
            off_runtime("eventbus:kafka-leave", move || drop(consumer)).await;
        })
    }
}

struct KafkaAck {
    tx: mpsc::UnboundedSender<Handled>,
    partition: i32,
    offset: i64,
}

impl Ack for KafkaAck {
    fn ack(self: Box<Self>) {
        // After close nobody listens: the offset was not committed, the message comes again.
        let _ = self.tx.send(Handled {
            partition: self.partition,
            offset: self.offset,
        });
    }
}
