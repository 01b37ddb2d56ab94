//! Topic names and configuration.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::TopicError;

/// The longest topic name accepted: what Kafka accepts (249) rounded down, so that a suffix such
/// as `.dlq` still fits.
pub const MAX_TOPIC_NAME: usize = 200;

/// A validated topic name: 1 to [`MAX_TOPIC_NAME`] characters of `[A-Za-z0-9._-]`, the set every
/// backend accepts. Every message delivered carries one: a clone is a reference count.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, TopicError> {
        let name = name.into();
        validate_name(&name, MAX_TOPIC_NAME)
            .map_err(|reason| TopicError::InvalidName {
                name: name.clone(),
                reason,
            })
            .map(|()| TopicName(name.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The dead-letter topic of this topic: `<name>.dlq`.
    pub fn dead_letter(&self) -> TopicName {
        TopicName(format!("{}.dlq", self.0).into())
    }
}

/// Maps keyed by topic name can be read with a `&str`.
impl Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a topic or group name: non-empty, at most `max` bytes, `[A-Za-z0-9._-]` only.
pub(crate) fn validate_name(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > max {
        return Err(format!("it is {} bytes long, over {max}", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{c:?} is not allowed: use letters, digits, `.`, `_` and `-`"
        ));
    }
    if name == "." || name == ".." {
        return Err("`.` and `..` are reserved".into());
    }
    Ok(())
}

/// Whether a topic keeps its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Messages are stored (per the retention) and delivered at least once to each group,
    /// including groups that subscribe later (Kafka topics, JetStream streams). The in-process
    /// broker, whose only store is memory, keeps acknowledged messages for later groups only
    /// within a retention the topic sets; without one, a message goes once every group of the
    /// topic has acknowledged it.
    #[default]
    Persistent,
    /// Messages go only to the subscribers present when they are published, at most once, and
    /// are never stored (core NATS).
    Ephemeral,
}

/// Where a persistent topic's messages are kept, on backends that offer the choice (NATS
/// JetStream).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Storage {
    /// On disk: messages survive a broker restart.
    #[default]
    File,
    /// In memory: faster, lost when the broker restarts.
    Memory,
}

/// How long a persistent topic keeps messages. Messages past the retention are dropped even if
/// a group has not read them yet, as Kafka does. On the in-process broker a topic without one
/// keeps a message until every group has acknowledged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep at most this many messages per partition.
    pub max_messages: Option<u64>,
    /// Keep messages at most this long.
    pub max_age: Option<Duration>,
}

/// A topic's configuration. Backends apply what they have: partitions and replicas on Kafka,
/// storage and retention on JetStream; the memory backend keeps partitions and retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    pub(crate) name: TopicName,
    pub(crate) durability: Durability,
    pub(crate) storage: Storage,
    pub(crate) partitions: u32,
    pub(crate) replicas: u16,
    pub(crate) retention: Retention,
}

/// Partitions of a new topic: two, so that the two workers of a 2-core machine both get work.
pub const DEFAULT_PARTITIONS: u32 = 2;

impl TopicConfig {
    /// A persistent topic with [`DEFAULT_PARTITIONS`] partitions, one replica and no retention
    /// limit.
    pub fn new(name: &str) -> Result<Self, TopicError> {
        Ok(TopicConfig {
            name: TopicName::new(name)?,
            durability: Durability::Persistent,
            storage: Storage::File,
            partitions: DEFAULT_PARTITIONS,
            replicas: 1,
            retention: Retention::default(),
        })
    }

    /// Persistent or ephemeral.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// File or memory storage, where the backend offers the choice (default
    /// [`Storage::File`]).
    pub fn storage(mut self, s: Storage) -> Self {
        self.storage = s;
        self
    }

    /// Partitions (at least 1).
    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = n;
        self
    }

    /// Replicas (at least 1; backends without replication ignore it).
    pub fn replicas(mut self, n: u16) -> Self {
        self.replicas = n;
        self
    }

    /// Retention of a persistent topic.
    pub fn retention(mut self, r: Retention) -> Self {
        self.retention = r;
        self
    }

    /// The topic's name.
    pub fn name(&self) -> &TopicName {
        &self.name
    }

    /// Whether the topic stores messages.
    pub fn durability_kind(&self) -> Durability {
        self.durability
    }

    /// The number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.partitions
    }

    /// The number of replicas.
    pub fn replica_count(&self) -> u16 {
        self.replicas
    }

    /// The retention.
    pub fn retention_policy(&self) -> Retention {
        self.retention
    }

    pub(crate) fn validate(&self) -> Result<(), TopicError> {
        let bad = |reason: &str| {
            Err(TopicError::InvalidConfig {
                topic: self.name.to_string(),
                reason: reason.into(),
            })
        };
        if self.partitions == 0 {
            return bad("partitions must be at least 1");
        }
        if self.replicas == 0 {
            return bad("replicas must be at least 1");
        }
        if self.retention.max_messages == Some(0) {
            return bad("retention.max_messages must be at least 1 (or unset)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[leakcheck::leak_test]
    fn names_are_checked() {
        assert!(TopicName::new("orders.v1_eu-west").is_ok());
        for (bad, why) in [
            ("", "empty"),
            ("a b", "' '"),
            ("orders/1", "'/'"),
            ("ü", "'ü'"),
            ("..", "reserved"),
        ] {
            let e = TopicName::new(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let long = "x".repeat(MAX_TOPIC_NAME + 1);
        assert!(TopicName::new(long)
            .unwrap_err()
            .to_string()
            .contains("over 200"));
    }

    #[leakcheck::leak_test]
    fn configs_are_checked() {
        let c = TopicConfig::new("t").unwrap();
        assert!(c.clone().validate().is_ok());
        let e = c.clone().partitions(0).validate().unwrap_err().to_string();
        assert!(e.contains("partitions"), "{e}");
        let e = c.replicas(0).validate().unwrap_err().to_string();
        assert!(e.contains("replicas"), "{e}");
    }
}
