//! Messages: what a publisher sends ([`Outbound`]) and what a handler receives ([`Message`]).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::topic::TopicName;

/// Message headers: string keys and values (what Kafka and NATS headers both carry).
pub type Headers = BTreeMap<String, String>;

/// A message to publish: payload bytes, an optional key and headers.
///
/// Messages with the same key are handled one at a time, in publish order (the key picks the
/// partition and the worker); messages without a key are handled in parallel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outbound {
    pub(crate) key: Option<Bytes>,
    pub(crate) headers: Headers,
    pub(crate) payload: Bytes,
}

impl Outbound {
    /// A message with this payload, no key, no headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Outbound {
            key: None,
            headers: Headers::new(),
            payload: payload.into(),
        }
    }

    /// Sets the ordering key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// A delivered message, as a handler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub(crate) topic: TopicName,
    pub(crate) key: Option<Bytes>,
    pub(crate) headers: Headers,
    pub(crate) payload: Bytes,
    pub(crate) attempt: u32,
    pub(crate) redelivered: bool,
}

impl Message {
    /// The topic it was published to.
    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    /// Its ordering key.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// Its headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Its payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// 1 on the first call of the handler for this delivery, 2 on the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the broker delivered it before (to this group) without an acknowledgement: a
    /// previous subscriber closed or failed before handling it.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }
}
