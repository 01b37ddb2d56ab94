//! Errors, one type per operation family. Messages are lowercase fragments that read after
//! "failed to ...".

use std::time::Duration;

use crate::topic::TopicName;

/// A handler's failure: any error, boxed.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Why a publish was refused. Nothing refused was accepted: the caller still owns the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The bus was closed.
    #[error("publish: the bus is closed")]
    Closed,
    /// The topic name is invalid.
    #[error("publish: {0}")]
    Topic(#[from] TopicError),
    /// The payload is larger than the configured limit.
    #[error("publish to `{topic}`: the payload is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The topic.
        topic: TopicName,
        /// The payload's size.
        size: usize,
        /// `BusBuilder::max_payload_bytes`.
        limit: usize,
    },
    /// The envelope is invalid.
    #[error("publish: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The backend did not take the message within the publish timeout.
    #[error("publish to `{topic}`: the {backend} backend did not accept it within {timeout:?}")]
    Timeout {
        /// The topic.
        topic: TopicName,
        /// The backend's name.
        backend: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// The backend refused or lost the message.
    #[error("publish to `{topic}` through the {backend} backend: {message}")]
    Backend {
        /// The topic.
        topic: TopicName,
        /// The backend's name.
        backend: &'static str,
        /// The backend's message.
        message: String,
    },
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The bus was closed.
    #[error("subscribe: the bus is closed")]
    Closed,
    /// The topic name is invalid.
    #[error("subscribe: {0}")]
    Topic(#[from] TopicError),
    /// The group name is invalid.
    #[error("subscribe to `{topic}`: the group name {group:?} is invalid: {reason}")]
    Group {
        /// The topic.
        topic: TopicName,
        /// The group as given.
        group: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// This topic and group already have a subscription (on this bus, or on another bus of the
    /// same memory broker): one member per group.
    #[error("subscribe to `{topic}` as group `{group}`: that group already has a subscription; close it first or use another group")]
    AlreadySubscribed {
        /// The topic.
        topic: TopicName,
        /// The group.
        group: String,
    },
    /// The backend refused.
    #[error("subscribe to `{topic}` through the {backend} backend: {message}")]
    Backend {
        /// The topic.
        topic: TopicName,
        /// The backend's name.
        backend: &'static str,
        /// The backend's message.
        message: String,
    },
}

/// Why a topic could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The name is empty, too long, or holds a character outside `[A-Za-z0-9._-]`.
    #[error("use topic name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration is inconsistent (zero partitions, ...).
    #[error("configure topic `{topic}`: {reason}")]
    InvalidConfig {
        /// The topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// The backend refused.
    #[error("configure topic `{topic}` through the {backend} backend: {message}")]
    Backend {
        /// The topic.
        topic: String,
        /// The backend's name.
        backend: &'static str,
        /// The backend's message.
        message: String,
    },
    /// The bus was closed.
    #[error("configure a topic: the bus is closed")]
    Closed,
}

/// Why an envelope is invalid or could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The aggregate id is empty, too long, or holds a character outside `[A-Za-z0-9._:-]`.
    #[error("build envelope: aggregate id {id:?} is invalid: {reason}")]
    AggregateId {
        /// The id as given.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `event_version` is 0.
    #[error("build envelope: event_version must be at least 1")]
    Version,
    /// The event type is empty.
    #[error("build envelope: event_type is empty")]
    EventType,
    /// Bytes from the wire are not an envelope of a format version this crate reads.
    #[error("decode envelope: {0}")]
    Decode(String),
}

/// Why a bus could not be built on a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The client configuration was refused.
    #[error("configure the {backend} client: {message}")]
    Config {
        backend: &'static str,
        message: String,
    },
    /// The broker could not be reached.
    #[error("connect to {backend} at {address}: {message}")]
    Unreachable {
        backend: &'static str,
        address: String,
        message: String,
    },
}

/// What went wrong while closing. The bus is closed either way: every task it spawned has been
/// awaited; this says what could not be finished.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloseError {
    /// Work was still queued or running at the deadline: it was handed back unacknowledged, so
    /// the broker delivers it again to the group's next subscriber.
    #[error("close within {deadline:?}: {handed_back} message(s) were not handled in time and were handed back unacknowledged")]
    Deadline {
        /// The close deadline.
        deadline: Duration,
        /// How many messages were handed back.
        handed_back: usize,
    },
    /// The backend did not flush or disconnect cleanly.
    #[error("close the {backend} backend: {message}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// The backend's message.
        message: String,
    },
}
