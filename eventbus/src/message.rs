//! Messages: what a publisher sends ([`Outbound`]) and what a handler receives ([`Message`]).
//! Their parts are shared, not copied, between the log, each delivery and each attempt: the
//! payload and key are [`Bytes`], the headers a reference-counted map that costs nothing when
//! empty (an envelope carries its metadata in its wire form, not in headers). Across the
//! in-process broker an envelope travels as itself ([`Body::Envelope`]): no wire form to write
//! and decode again unless someone reads its bytes.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

use crate::envelope::Envelope;
use crate::topic::TopicName;

/// Message headers: string keys and values (what Kafka and NATS headers both carry).
pub type Headers = BTreeMap<String, String>;

/// What an empty [`SharedHeaders`] reads as.
static NO_HEADERS: Headers = BTreeMap::new();

/// Headers shared by every copy of a message: a clone is a reference count, and no headers at
/// all is no allocation.
#[derive(Clone, Default)]
pub(crate) struct SharedHeaders(Option<Arc<Headers>>);

impl SharedHeaders {
    /// The headers, to change: copied first if another message shares them.
    pub(crate) fn make_mut(&mut self) -> &mut Headers {
        Arc::make_mut(self.0.get_or_insert_with(Arc::default))
    }
}

impl Deref for SharedHeaders {
    type Target = Headers;

    fn deref(&self) -> &Headers {
        self.0.as_deref().unwrap_or(&NO_HEADERS)
    }
}

impl From<Headers> for SharedHeaders {
    fn from(h: Headers) -> Self {
        SharedHeaders((!h.is_empty()).then(|| Arc::new(h)))
    }
}

impl<'a> IntoIterator for &'a SharedHeaders {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for SharedHeaders {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for SharedHeaders {}

impl fmt::Debug for SharedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

/// A message's payload: bytes, or an envelope published to the in-process broker, whose bytes
/// (its wire form) are made only when read: an envelope handler takes the envelope itself.
#[derive(Clone)]
pub(crate) enum Body {
    Bytes(Bytes),
    Envelope(Envelope),
}

impl Body {
    /// The payload's bytes.
    pub(crate) fn bytes(&self) -> &Bytes {
        match self {
            Body::Bytes(b) => b,
            Body::Envelope(e) => e.wire(),
        }
    }

    /// The payload's bytes, owned (for a client that takes them by value).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn into_bytes(self) -> Bytes {
        match self {
            Body::Bytes(b) => b,
            Body::Envelope(e) => e.wire().clone(),
        }
    }

    /// How many bytes it has, without making them.
    pub(crate) fn len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Envelope(e) => e.wire_len(),
        }
    }

    /// An envelope's key: its aggregate id (what the wire form's key is a slice of).
    fn key(&self) -> Option<&[u8]> {
        self.envelope().map(Envelope::aggregate_id_bytes)
    }

    /// The envelope, if it travels as one.
    pub(crate) fn envelope(&self) -> Option<&Envelope> {
        match self {
            Body::Bytes(_) => None,
            Body::Envelope(e) => Some(e),
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::Bytes(Bytes::new())
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Body {}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.bytes().fmt(f)
    }
}

/// A message to publish: payload bytes, an optional key and headers.
///
/// Messages with the same key are handled one at a time, in publish order (the key picks the
/// partition and the worker); messages without a key are handled in parallel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outbound {
    pub(crate) key: Option<Bytes>,
    pub(crate) headers: SharedHeaders,
    pub(crate) payload: Body,
}

impl Outbound {
    /// A message with this payload, no key, no headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Outbound {
            key: None,
            headers: SharedHeaders::default(),
            payload: Body::Bytes(payload.into()),
        }
    }

    /// Sets the ordering key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.make_mut().insert(name.into(), value.into());
        self
    }

    /// Its ordering key: an envelope's is its aggregate id.
    pub(crate) fn routing_key(&self) -> Option<&[u8]> {
        self.key.as_deref().or_else(|| self.payload.key())
    }
}

/// A delivered message, as a handler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub(crate) topic: TopicName,
    pub(crate) key: Option<Bytes>,
    pub(crate) headers: SharedHeaders,
    pub(crate) payload: Body,
    pub(crate) attempt: u32,
    pub(crate) redelivered: bool,
}

impl Message {
    /// The topic it was published to.
    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    /// Its ordering key (an envelope's is its aggregate id).
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref().or_else(|| self.payload.key())
    }

    /// Its headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Its payload.
    pub fn payload(&self) -> &Bytes {
        self.payload.bytes()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[leakcheck::leak_test]
    fn headers_are_shared_until_changed() {
        let empty = SharedHeaders::default();
        assert!(empty.is_empty() && empty.0.is_none());
        assert_eq!(empty, SharedHeaders::from(Headers::new()));
        assert!(SharedHeaders::from(Headers::new()).0.is_none());

        let a = Outbound::new("p").header("tenant", "acme");
        let mut b = a.clone();
        let (pa, pb) = (a.headers.0.as_ref().unwrap(), b.headers.0.as_ref().unwrap());
        assert!(Arc::ptr_eq(pa, pb), "a clone shares the map");
        b.headers.make_mut().insert("x".into(), "y".into());
        assert_eq!(a.headers.len(), 1, "changing a copy leaves the original");
        assert_eq!(b.headers.len(), 2);
        assert_eq!(&a.headers["tenant"], "acme");
        let listed: Vec<_> = (&b.headers).into_iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(listed, ["tenant", "x"]);
    }
}
