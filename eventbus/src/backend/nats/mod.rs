//! The NATS backend, through async-nats: JetStream for persistent topics, core NATS for
//! ephemeral ones.
//!
//! - A persistent topic is a stream (`<prefix>_<topic>`, file or memory storage, retention from
//!   the topic configuration) holding one subject, `<prefix>.<topic>`. Publishing waits for the
//!   stream's acknowledgement. A subscription is a durable pull consumer named after the group,
//!   with explicit acknowledgement: a message is acknowledged after its handler succeeded (or
//!   it reached the dead-letter path), handed back at once (`NAK`) when the bus gives it up,
//!   and redelivered by the server after the ack wait if the process dies.
//! - An ephemeral topic is a core NATS subject with a queue group per bus group: at most once,
//!   to the subscribers present.
//! - An envelope's key is its aggregate id, which its binary wire form holds: it travels as a
//!   plain message without headers, and the subscription takes the key from the payload
//!   (`Envelope::wire_key`). Any other key travels base64 in the `Eventbus-Key` header, which
//!   wins over the payload. A stream keeps one order for all its messages, so each key's
//!   messages arrive in publish order.
//! - While the client is disconnected, a publish waits for the connection (up to the publish
//!   timeout) instead of letting the client buffer it. A publish handed to the client just
//!   before it noticed an outage can still be stored after its timeout: as with any timeout,
//!   its outcome is unknown (the tests saw this once in six loaded runs).
//! - Close: every subscription hands back what it did not handle and drops its consumer
//!   stream, then the client is drained and every handle dropped, which ends the client's
//!   tasks (a JetStream context kept anywhere would keep them alive).

mod subscription;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{Client, HeaderMap};
use base64::Engine as _;

use self::subscription::NatsSubscription;
use super::members::Members;
use super::{acked, Acked, Backend, BoxFuture, Subscription};
use crate::envelope::Envelope;
use crate::error::{CloseError, ConnectError, PublishError, SubscribeError, TopicError};
use crate::message::Outbound;
use crate::observe::ConnectionState;
use crate::topic::{Durability, Storage, TopicConfig, TopicName};

/// The first token of every subject and stream name the bus uses.
pub const DEFAULT_NATS_PREFIX: &str = "eventbus";
/// How long the server waits for an acknowledgement before it delivers a message again (to a
/// process that died while handling it).
pub const DEFAULT_NATS_ACK_WAIT: Duration = Duration::from_secs(30);
/// How long the first connection may take.
pub const DEFAULT_NATS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between two reconnection attempts (they start at 10 ms and double).
pub const DEFAULT_NATS_MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// The header that carries a message's key.
const KEY_HEADER: &str = "Eventbus-Key";

/// How to reach a NATS server (with JetStream enabled). Defaults come from the
/// `DEFAULT_NATS_*` constants.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use eventbus::{EventBus, NatsConfig};
/// let bus = EventBus::builder().nats(NatsConfig::new("nats://127.0.0.1:4222")).await?;
/// // ... publish and subscribe ...
/// bus.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct NatsConfig {
    url: String,
    name: String,
    prefix: String,
    ack_wait: Duration,
    max_deliver: Option<u32>,
    connect_timeout: Duration,
    max_reconnect_delay: Duration,
}

impl NatsConfig {
    /// A server at `url` (`nats://host:port`, or several separated by commas).
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            name: "eventbus".into(),
            prefix: DEFAULT_NATS_PREFIX.into(),
            ack_wait: DEFAULT_NATS_ACK_WAIT,
            max_deliver: None,
            connect_timeout: DEFAULT_NATS_CONNECT_TIMEOUT,
            max_reconnect_delay: DEFAULT_NATS_MAX_RECONNECT_DELAY,
        }
    }

    /// The connection's name, shown by the server (default `eventbus`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The prefix of subjects and stream names (default [`DEFAULT_NATS_PREFIX`]).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The consumers' ack wait (default [`DEFAULT_NATS_ACK_WAIT`]).
    pub fn ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }

    /// How many times the server delivers a message to a group at most (default: no limit;
    /// the bus's own retries and dead-letter path apply first).
    pub fn max_deliver(mut self, n: u32) -> Self {
        self.max_deliver = Some(n.max(1));
        self
    }

    /// How long the first connection may take (default [`DEFAULT_NATS_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The longest wait between reconnection attempts (default
    /// [`DEFAULT_NATS_MAX_RECONNECT_DELAY`]).
    pub fn max_reconnect_delay(mut self, d: Duration) -> Self {
        self.max_reconnect_delay = d;
        self
    }

    fn subject(&self, topic: &TopicName) -> String {
        format!("{}.{topic}", self.prefix)
    }

    /// Stream and consumer names may not hold `.`: `_` is doubled and `.` becomes `_d`, so two
    /// names never map to one.
    fn stream(&self, topic: &TopicName) -> String {
        format!("{}_{}", self.prefix, escape(topic.as_str()))
    }

    fn check(&self) -> Result<(), ConnectError> {
        let ok = !self.prefix.is_empty()
            && self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(())
        } else {
            Err(ConnectError::Config {
                backend: "nats",
                message: format!(
                    "the prefix {:?} must be 1 or more letters, digits, `-` or `_`",
                    self.prefix
                ),
            })
        }
    }
}

/// A topic known to exist.
#[derive(Clone)]
struct Known {
    subject: async_nats::Subject,
    ephemeral: bool,
}

pub(super) fn escape(name: &str) -> String {
    name.replace('_', "__").replace('.', "_d")
}

/// The client of one bus.
pub(crate) struct NatsBackend {
    config: NatsConfig,
    /// Taken at close: a publish holds it for reading, so close waits for publishes in flight.
    client: tokio::sync::RwLock<Option<(Client, jetstream::Context)>>,
    /// The topics known to exist (a persistent topic's stream was created), with their subject:
    /// one lookup per publish, no subject built each time.
    topics: Mutex<HashMap<TopicName, Known>>,
    members: Members<subscription::Lag>,
    publish_timeout: Duration,
    /// Notified when the client's connection has closed (after the drain at close): its tasks
    /// end then.
    closed: Arc<tokio::sync::Notify>,
}

impl NatsBackend {
    pub(crate) async fn connect(
        config: NatsConfig,
        publish_timeout: Duration,
    ) -> Result<Self, ConnectError> {
        config.check()?;
        let max_delay = config.max_reconnect_delay;
        let closed = Arc::new(tokio::sync::Notify::new());
        let on_closed = closed.clone();
        let client = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Closed) {
                    on_closed.notify_one();
                }
                async {}
            })
            .name(&config.name)
            .connection_timeout(config.connect_timeout)
            .reconnect_delay_callback(move |attempts| {
                let shift = attempts.min(16) as u32;
                (Duration::from_millis(10) * 2u32.pow(shift)).min(max_delay)
            })
            .connect(config.url.as_str())
            .await
            .map_err(|e| ConnectError::Unreachable {
                backend: "nats",
                address: config.url.clone(),
                message: e.to_string(),
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(publish_timeout)
            .build(client.clone());
        Ok(NatsBackend {
            config,
            client: tokio::sync::RwLock::new(Some((client, js))),
            topics: Mutex::default(),
            members: Members::default(),
            publish_timeout,
            closed,
        })
    }

    fn known(&self, topic: &TopicName, ephemeral: bool) -> Known {
        let k = Known {
            subject: self.config.subject(topic).into(),
            ephemeral,
        };
        lock(&self.topics).insert(topic.clone(), k.clone());
        k
    }

    async fn create(&self, config: &TopicConfig) -> Result<Known, TopicError> {
        let topic = &config.name;
        if config.durability == Durability::Ephemeral {
            return Ok(self.known(topic, true));
        }
        let guard = self.client.read().await;
        let Some((_, js)) = guard.as_ref() else {
            return Err(TopicError::Closed);
        };
        let stream = stream::Config {
            name: self.config.stream(topic),
            subjects: vec![self.config.subject(topic)],
            storage: match config.storage {
                Storage::Memory => stream::StorageType::Memory,
                _ => stream::StorageType::File,
            },
            num_replicas: usize::from(config.replicas.max(1)),
            max_messages: config
                .retention
                .max_messages
                .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
            max_age: config.retention.max_age.unwrap_or_default(),
            ..Default::default()
        };
        js.get_or_create_stream(stream)
            .await
            .map_err(|e| TopicError::Backend {
                topic: topic.to_string(),
                backend: "nats",
                message: e.to_string(),
            })?;
        Ok(self.known(topic, false))
    }

    /// Creates the stream of `topic` with the defaults unless it exists or the topic is
    /// ephemeral; returns what the topic is.
    async fn ensure(&self, topic: &TopicName) -> Result<Known, TopicError> {
        if let Some(k) = lock(&self.topics).get(topic) {
            return Ok(k.clone());
        }
        self.create(&TopicConfig::new(topic.as_str())?).await
    }

    /// Waits until the client is connected, polling with a doubling backoff (1 to 20 ms).
    async fn connected(&self, client: &Client) {
        let mut wait = Duration::from_millis(1);
        while client.connection_state() != async_nats::connection::State::Connected {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(20));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Backend for NatsBackend {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn create_topic<'a>(
        &'a self,
        config: &'a TopicConfig,
    ) -> BoxFuture<'a, Result<(), TopicError>> {
        Box::pin(async move { self.create(config).await.map(drop) })
    }

    fn enqueue<'a>(
        &'a self,
        topic: &'a TopicName,
        message: Outbound,
    ) -> BoxFuture<'a, Result<Acked, PublishError>> {
        Box::pin(async move {
            let known = self.ensure(topic).await?;
            let guard = self.client.read().await;
            let Some((client, js)) = guard.as_ref() else {
                return Err(PublishError::Closed);
            };
            let failed = |topic: &TopicName, message: String| PublishError::Backend {
                topic: topic.clone(),
                backend: "nats",
                message,
            };
            let mut headers = HeaderMap::new();
            for (k, v) in &message.headers {
                headers.insert(k.as_str(), v.as_str());
            }
            // An envelope's key is its aggregate id, in the payload already: no header (the
            // subscription takes it from there, see `Envelope::wire_key`).
            let in_payload = || Envelope::wire_key(message.payload.bytes()) == message.key;
            if let Some(k) = message.key.as_ref().filter(|_| !in_payload()) {
                let key = base64::engine::general_purpose::STANDARD.encode(k);
                headers.insert(KEY_HEADER, key.as_str());
            }
            let subject = known.subject;
            // Never hand a message to a disconnected client: it would send it after the
            // caller's timeout. The bus's publish timeout bounds this wait.
            self.connected(client).await;
            // Without headers the message goes as a plain PUB, which the server and the
            // subscriber parse for less.
            let payload = message.payload.into_bytes();
            if known.ephemeral {
                let sent = if headers.is_empty() {
                    client.publish(subject, payload).await
                } else {
                    client.publish_with_headers(subject, headers, payload).await
                };
                sent.map_err(|e| failed(topic, e.to_string()))?;
                return Ok(acked());
            }
            let sent = if headers.is_empty() {
                js.publish(subject, payload).await
            } else {
                js.publish_with_headers(subject, headers, payload).await
            };
            let ack = sent.map_err(|e| failed(topic, e.to_string()))?;
            drop(guard);
            let topic = topic.clone();
            let timeout = self.publish_timeout;
            Ok(Box::pin(async move {
                match ack.await {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == jetstream::context::PublishErrorKind::TimedOut => {
                        Err(PublishError::Timeout {
                            topic,
                            backend: "nats",
                            timeout,
                        })
                    }
                    Err(e) => Err(failed(&topic, e.to_string())),
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
            let known = self.ensure(topic).await?;
            let guard = self.client.read().await;
            let Some((client, js)) = guard.as_ref() else {
                return Err(SubscribeError::Closed);
            };
            let sub = NatsSubscription::start(
                &self.config,
                client,
                (!known.ephemeral).then_some(js),
                topic,
                group,
                &self.members,
            )
            .await?;
            Ok(Box::new(sub) as Box<dyn Subscription>)
        })
    }

    fn connection(&self) -> ConnectionState {
        // No client handle is kept elsewhere: one would keep the client's tasks alive.
        match self.client.try_read().as_deref() {
            Ok(Some((client, _))) => match client.connection_state() {
                async_nats::connection::State::Connected => ConnectionState::Connected,
                _ => ConnectionState::Disconnected,
            },
            // Closed, or closing (close holds the lock).
            Ok(None) | Err(_) => ConnectionState::Closed,
        }
    }

    fn lag(&self, topic: &TopicName, group: &str) -> Option<u64> {
        self.members.lag(topic, group, subscription::lag)
    }

    fn close(&self) -> BoxFuture<'_, Result<(), CloseError>> {
        Box::pin(async move {
            // Waits for publishes in flight (each bounded by the publish timeout).
            let Some((client, js)) = self.client.write().await.take() else {
                return Ok(());
            };
            drop(js);
            let drained = client.drain().await;
            drop(client);
            drained.map_err(|e| CloseError::Backend {
                backend: "nats",
                message: format!("drain the connection: {e}"),
            })?;
            // drain() only asks: the connection closes (and the client's tasks end) once the
            // server has confirmed. Without a server, the client would keep reconnecting.
            let limit = self.publish_timeout;
            tokio::time::timeout(limit, self.closed.notified())
                .await
                .map_err(|_| CloseError::Backend {
                    backend: "nats",
                    message: format!("the connection did not close within {limit:?} of the drain"),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn stream_names_hold_no_dot_and_never_collide() {
        let c = NatsConfig::new("nats://unused");
        let names = ["a.b", "a_b", "a_db", "a__b", "a..b", "a._b"];
        let streams: HashSet<String> = names
            .iter()
            .map(|n| c.stream(&TopicName::new(*n).unwrap()))
            .collect();
        assert_eq!(streams.len(), names.len(), "{streams:?}");
        assert!(streams.iter().all(|s| !s.contains('.')), "{streams:?}");
        assert_eq!(c.subject(&TopicName::new("a.b").unwrap()), "eventbus.a.b");
    }
}
