//! A group's subscription on NATS: a durable JetStream pull consumer (persistent topics) or a
//! core NATS queue subscription (ephemeral topics). Acknowledgements are sent by the
//! subscription itself, so nothing outside it holds a client handle.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self, consumer};
use async_nats::{Client, HeaderMap, Subscriber};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{escape, NatsConfig, KEY_HEADER};
use crate::backend::members::{Member, Members};
use crate::backend::{Ack, BoxFuture, Delivery, DeliveryAck, NoAck, Subscription};
use crate::envelope::Envelope;
use crate::error::SubscribeError;
use crate::message::{Body, Headers, Message};
use crate::topic::TopicName;

/// Messages not yet delivered to the subscription (as the server said with the last one), and
/// delivered but not acknowledged.
#[derive(Default)]
pub(super) struct Lag {
    pending: AtomicU64,
    in_progress: AtomicI64,
}

/// The lag of a subscription: both counts together.
pub(super) fn lag(lag: &Lag) -> Option<u64> {
    let in_progress = lag.in_progress.load(Ordering::Relaxed).max(0) as u64;
    Some(lag.pending.load(Ordering::Relaxed) + in_progress)
}

enum Source {
    Durable(Box<pull::Stream>),
    Ephemeral(Subscriber),
}

pub(super) struct NatsSubscription {
    source: Source,
    topic: TopicName,
    outcome_tx: mpsc::UnboundedSender<(Acker, AckKind)>,
    outcome_rx: mpsc::UnboundedReceiver<(Acker, AckKind)>,
    member: Member<Lag>,
}

impl NatsSubscription {
    pub(super) async fn start(
        config: &NatsConfig,
        client: &Client,
        js: Option<&jetstream::Context>,
        topic: &TopicName,
        group: &str,
        members: &Members<Lag>,
    ) -> Result<Self, SubscribeError> {
        let member = members.join(topic, group, Lag::default())?;
        let source = match js {
            Some(js) => durable(config, js, topic, group).await,
            None => client
                .queue_subscribe(config.subject(topic), group.to_string())
                .await
                .map(Source::Ephemeral)
                .map_err(|e| e.to_string()),
        };
        let source = source.map_err(|message| SubscribeError::Backend {
            topic: topic.clone(),
            backend: "nats",
            message,
        })?;
        let (outcome_tx, outcome_rx) = mpsc::unbounded_channel();
        Ok(NatsSubscription {
            source,
            topic: topic.clone(),
            outcome_tx,
            outcome_rx,
            member,
        })
    }

    async fn settle(lag: &Lag, acker: Acker, kind: AckKind) {
        // A lost acknowledgement is not lost work: the server delivers the message again
        // after the ack wait.
        let _ = acker.ack_with(kind).await;
        lag.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn durable(
    config: &NatsConfig,
    js: &jetstream::Context,
    topic: &TopicName,
    group: &str,
) -> Result<Source, String> {
    let stream = js
        .get_stream(config.stream(topic))
        .await
        .map_err(|e| e.to_string())?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &escape(group),
            pull::Config {
                durable_name: Some(escape(group)),
                filter_subject: config.subject(topic),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_deliver: config.max_deliver.map_or(-1, i64::from),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let messages = consumer.messages().await.map_err(|e| e.to_string())?;
    Ok(Source::Durable(Box::new(messages)))
}

/// A NATS message as the bus hands it to a subscription.
fn delivery(
    topic: &TopicName,
    m: async_nats::Message,
    redelivered: bool,
    ack: Box<dyn Ack>,
) -> Delivery {
    let (headers, key) = split_headers(m.headers.as_ref());
    // An envelope travels without a key header: its key is its aggregate id.
    let key = key.or_else(|| Envelope::wire_key(&m.payload));
    Delivery {
        message: Message {
            topic: topic.clone(),
            key,
            headers: headers.into(),
            payload: Body::Bytes(m.payload),
            attempt: 1,
            redelivered,
        },
        ack: DeliveryAck::Boxed(ack),
    }
}

/// Our headers from NATS headers, and the key taken out of them.
fn split_headers(map: Option<&HeaderMap>) -> (Headers, Option<Bytes>) {
    let mut headers = Headers::new();
    let mut key = None;
    if let Some(map) = map {
        for (name, values) in map.iter() {
            let Some(value) = values.first() else {
                continue;
            };
            if AsRef::<str>::as_ref(name) == KEY_HEADER {
                key = base64::engine::general_purpose::STANDARD
                    .decode(value.as_str())
                    .ok()
                    .map(Bytes::from);
            } else {
                headers.insert(name.to_string(), value.to_string());
            }
        }
    }
    (headers, key)
}

impl Subscription for NatsSubscription {
    fn next(&mut self) -> BoxFuture<'_, Option<Delivery>> {
        Box::pin(async move {
            loop {
                let NatsSubscription {
                    source,
                    topic,
                    outcome_tx,
                    outcome_rx,
                    member,
                } = self;
                let lag = member.lag();
                match source {
                    Source::Ephemeral(sub) => {
                        let m = sub.next().await?;
                        return Some(delivery(topic, m, false, Box::new(NoAck)));
                    }
                    Source::Durable(stream) => {
                        let m = tokio::select! {
                            biased;
                            Some((acker, kind)) = outcome_rx.recv() => {
                                Self::settle(lag, acker, kind).await;
                                continue;
                            }
                            m = stream.next() => m?,
                        };
                        // Errors are transient (missed heartbeats while the server is away);
                        // the stream recovers by itself.
                        let Ok(m) = m else { continue };
                        let (delivered, pending) = match m.info() {
                            Ok(i) => (i.delivered, i.pending),
                            Err(_) => (1, 0),
                        };
                        lag.pending.store(pending, Ordering::Relaxed);
                        lag.in_progress.fetch_add(1, Ordering::Relaxed);
                        let (m, acker) = m.split();
                        let ack = Box::new(NatsAck {
                            tx: outcome_tx.clone(),
                            acker: Some(acker),
                        });
                        return Some(delivery(topic, m, delivered > 1, ack));
                    }
                }
            }
        })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let NatsSubscription {
                source,
                outcome_tx,
                mut outcome_rx,
                member,
                ..
            } = *self;
            // Every delivery is settled by now (the workers are joined): send what is queued.
            drop(outcome_tx);
            while let Ok((acker, kind)) = outcome_rx.try_recv() {
                Self::settle(member.lag(), acker, kind).await;
            }
            drop(source);
            drop(member);
        })
    }
}

/// Acknowledges through the subscription; dropped unacknowledged, it hands the message back at
/// once (`NAK`), so the group's next delivery attempt does not wait for the ack wait.
struct NatsAck {
    tx: mpsc::UnboundedSender<(Acker, AckKind)>,
    acker: Option<Acker>,
}

impl Ack for NatsAck {
    fn ack(mut self: Box<Self>) {
        if let Some(acker) = self.acker.take() {
            let _ = self.tx.send((acker, AckKind::Ack));
        }
    }
}

impl Drop for NatsAck {
    fn drop(&mut self) {
        if let Some(acker) = self.acker.take() {
            let _ = self.tx.send((acker, AckKind::Nak(None)));
        }
    }
}
