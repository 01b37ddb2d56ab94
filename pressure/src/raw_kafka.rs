//! The Kafka baseline: rdkafka used directly, with the bus's delivery semantics and settings.
//! A `FutureProducer` (`acks=all`, no idempotence, no compression, `linger.ms=1`) whose
//! publish returns at the broker's acknowledgement; per topic one `StreamConsumer` in the
//! run's group that handles each message where it receives it (so a partition's messages,
//! and with them an aggregate's, are handled in order) and commits the handled offsets by hand
//! every 500 ms and at close, as the bus does.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::transport::{
    Acked, Endpoint, Names, Phases, Transport, TransportError, KAFKA_HEARTBEAT_INTERVAL,
    KAFKA_SESSION_TIMEOUT, PUBLISH_TIMEOUT,
};

/// How often handled offsets are committed (the bus's default commit interval).
const COMMIT_INTERVAL: Duration = eventbus::DEFAULT_KAFKA_COMMIT_INTERVAL;

/// A consumer whose task ended, with its offsets still to commit.
struct Stopped {
    consumer: StreamConsumer,
    topic: String,
    handled: HashMap<i32, i64>,
}

pub(crate) struct RawKafka {
    address: String,
    producer: Mutex<Option<FutureProducer>>,
    topics: Vec<String>,
    stop: tokio::sync::watch::Sender<bool>,
    consumers: Mutex<Vec<tokio::task::JoinHandle<Stopped>>>,
}

fn error(e: impl std::fmt::Display) -> TransportError {
    TransportError::Connect {
        backend: "kafka",
        message: e.to_string(),
    }
}

impl RawKafka {
    /// Creates the run's topics (two partitions, as the bus's default) and the producer.
    pub(crate) async fn connect(
        endpoint: &Endpoint,
        names: &Names,
    ) -> Result<Self, TransportError> {
        let mut admin_config = ClientConfig::new();
        admin_config.set("bootstrap.servers", &endpoint.address);
        let admin: AdminClient<DefaultClientContext> = admin_config.create().map_err(error)?;
        let new: Vec<NewTopic<'_>> = names
            .topics
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    eventbus::DEFAULT_PARTITIONS as i32,
                    TopicReplication::Fixed(1),
                )
            })
            .collect();
        let created = admin
            .create_topics(
                new.iter(),
                &AdminOptions::new().operation_timeout(Some(PUBLISH_TIMEOUT)),
            )
            .await;
        off_runtime(move || drop(admin));
        for r in created.map_err(error)? {
            if let Err((topic, code)) = r {
                if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                    return Err(error(format!("create {topic}: {code}")));
                }
            }
        }
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &endpoint.address)
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("compression.type", "none")
            .set("linger.ms", "1")
            .set(
                "message.timeout.ms",
                PUBLISH_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .map_err(error)?;
        Ok(RawKafka {
            address: endpoint.address.clone(),
            producer: Mutex::new(Some(producer)),
            topics: names.topics.clone(),
            stop: tokio::sync::watch::channel(false).0,
            consumers: Mutex::new(Vec::new()),
        })
    }
}

impl Transport for RawKafka {
    async fn subscribe(&self, names: &Names, phases: Arc<Phases>) -> Result<(), TransportError> {
        for topic in &names.topics {
            let consumer: StreamConsumer = ClientConfig::new()
                .set("bootstrap.servers", &self.address)
                .set("group.id", &names.group)
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                // The bus's default rebalancing (`eventbus::DEFAULT_KAFKA_REBALANCING`).
                .set(
                    "partition.assignment.strategy",
                    eventbus::DEFAULT_KAFKA_REBALANCING.strategy(),
                )
                // The bus's default (`eventbus::DEFAULT_KAFKA_FETCH_WAIT_MAX`): both sides fetch alike.
                .set(
                    "fetch.wait.max.ms",
                    eventbus::DEFAULT_KAFKA_FETCH_WAIT_MAX
                        .as_millis()
                        .to_string(),
                )
                .set(
                    "session.timeout.ms",
                    KAFKA_SESSION_TIMEOUT.as_millis().to_string(),
                )
                .set(
                    "heartbeat.interval.ms",
                    KAFKA_HEARTBEAT_INTERVAL.as_millis().to_string(),
                )
                .create()
                .map_err(error)?;
            consumer
                .subscribe(&[topic])
                .map_err(|e| TransportError::Subscribe {
                    topic: topic.clone(),
                    message: e.to_string(),
                })?;
            let phases = phases.clone();
            let mut stop = self.stop.subscribe();
            let topic = topic.clone();
            let task = tokio::spawn(async move {
                let mut handled: HashMap<i32, i64> = HashMap::new();
                let mut tick = tokio::time::interval(COMMIT_INTERVAL);
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tick.tick() => commit(&consumer, &topic, &mut handled, CommitMode::Async),
                        m = consumer.recv() => if let Ok(m) = m {
                            phases.handle(m.payload().unwrap_or_default());
                            handled.insert(m.partition(), m.offset() + 1);
                        },
                    }
                }
                Stopped {
                    consumer,
                    topic,
                    handled,
                }
            });
            self.consumers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(task);
        }
        Ok(())
    }

    /// `send_result` queues in librdkafka at once; a full queue is retried after a short
    /// wait, as `send` does.
    fn enqueue(
        &self,
        topic: usize,
        key: String,
        payload: Bytes,
    ) -> impl Future<Output = Result<Acked, TransportError>> + Send {
        let producer = self
            .producer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let topic = &self.topics[topic];
        async move {
            let failed = |message: String| TransportError::Publish {
                topic: topic.clone(),
                message,
            };
            let producer = producer.ok_or_else(|| failed("the producer is closed".into()))?;
            let mut record = FutureRecord::to(topic).key(&key).payload(&payload[..]);
            let delivery = loop {
                match producer.send_result(record) {
                    Ok(d) => break d,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        r,
                    )) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => return Err(failed(e.to_string())),
                }
            };
            let topic = topic.clone();
            Ok(Box::pin(async move {
                match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e.to_string()),
                    Err(_) => Err("the producer went away".to_string()),
                }
                .map_err(|message| TransportError::Publish { topic, message })
            }) as Acked)
        }
    }

    async fn close(&self) -> Result<(), TransportError> {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.consumers.lock().unwrap_or_else(|e| e.into_inner()));
        let mut consumers = Vec::new();
        for t in tasks {
            consumers.push(t.await.map_err(|e| TransportError::Close {
                backend: "kafka",
                message: e.to_string(),
            })?);
        }
        let producer = self
            .producer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // librdkafka's calls block (a flush, a consumer leaving its group): off the runtime,
        // on a thread that is joined, so nothing of the clients outlives close().
        let flushed = off_runtime(move || {
            let flushed = producer.map(|p| p.flush(Timeout::After(PUBLISH_TIMEOUT)));
            // The consumers leave together, as the bus's subscriptions do: one after another,
            // each waited for the group's rebalance after the one before (1.5-5.3 s in all).
            std::thread::scope(|s| {
                for mut c in consumers {
                    std::thread::Builder::new()
                        .name("pressure-kafka-leave".into())
                        .spawn_scoped(s, move || {
                            commit(&c.consumer, &c.topic, &mut c.handled, CommitMode::Sync);
                            c.consumer.unsubscribe();
                            drop(c);
                        })
                        .expect("spawn a thread");
                }
            });
            flushed
        });
        match flushed {
            Some(Err(e)) => Err(TransportError::Close {
                backend: "kafka",
                message: format!("flush the producer: {e}"),
            }),
            _ => Ok(()),
        }
    }
}

/// Commits the handled offsets of `topic` (the next offset to read, per partition).
fn commit(
    consumer: &StreamConsumer,
    topic: &str,
    handled: &mut HashMap<i32, i64>,
    mode: CommitMode,
) {
    if handled.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in handled.drain() {
        let _ = tpl.add_partition_offset(topic, p, Offset::Offset(o));
    }
    let _ = consumer.commit(&tpl, mode);
}

/// Runs `f` on a thread of its own and waits for it.
fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .name("pressure-kafka-close".into())
        .spawn(f)
        .expect("spawn a thread")
        .join()
        .expect("closing a Kafka client never panics")
}
