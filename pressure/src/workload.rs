//! What a run publishes: the Go team's pressure levels (500 / 2 000 / 5 000 / 10 000 messages
//! over 5 topics, aggregates = messages / 10 clamped to 50..1000), which message goes where,
//! and the stamp each payload carries so that the receiving side can tell latency, loss,
//! duplicates and order without asking the publisher.
//!
//! Aggregate `a` always goes to topic `a % topics` and is published by publisher
//! `a % publishers`, one message after the other: an aggregate's messages leave in sequence
//! order, so any reordering seen on the receiving side is the transport's.

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// A pressure level: a number of messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// 500 messages.
    Low,
    /// 2 000 messages.
    Medium,
    /// 5 000 messages.
    High,
    /// 10 000 messages.
    Extreme,
    /// 100 000 messages (behind `--level huge`).
    Huge,
}

impl Level {
    /// The four levels of the comparison, in order.
    pub const STANDARD: [Level; 4] = [Level::Low, Level::Medium, Level::High, Level::Extreme];

    /// Messages at this level.
    pub fn messages(self) -> u64 {
        match self {
            Level::Low => 500,
            Level::Medium => 2_000,
            Level::High => 5_000,
            Level::Extreme => 10_000,
            Level::Huge => 100_000,
        }
    }

    /// The name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Extreme => "extreme",
            Level::Huge => "huge",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Level::Low,
            Level::Medium,
            Level::High,
            Level::Extreme,
            Level::Huge,
        ]
        .into_iter()
        .find(|l| l.name() == s)
        .ok_or_else(|| format!("unknown level `{s}`: expected low, medium, high, extreme or huge"))
    }
}

/// The shape of one run's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Messages published at full speed.
    pub messages: u64,
    /// Distinct aggregate ids (the ordering keys).
    pub aggregates: u64,
    /// Topics, each with its own subscription.
    pub topics: u64,
    /// Concurrent publisher tasks.
    pub publishers: u64,
    /// Payload size in bytes (at least [`Stamp::LEN`]).
    pub payload_bytes: usize,
}

/// Topics of the Go team's comparison.
pub const DEFAULT_TOPICS: u64 = 5;
/// Concurrent publishers (as in the measurement of the issue).
pub const DEFAULT_PUBLISHERS: u64 = 50;
/// Payload bytes per message.
pub const DEFAULT_PAYLOAD_BYTES: usize = 256;

impl Workload {
    /// The level's workload: its messages over [`DEFAULT_TOPICS`] topics, aggregates =
    /// messages / 10 clamped to 50..=1000.
    pub fn level(level: Level) -> Self {
        let messages = level.messages();
        Workload {
            messages,
            aggregates: aggregates_for(messages),
            topics: DEFAULT_TOPICS,
            publishers: DEFAULT_PUBLISHERS,
            payload_bytes: DEFAULT_PAYLOAD_BYTES,
        }
    }

    /// The same shape with `messages` messages (aggregates and publishers no more than
    /// messages, at least 1).
    pub fn with_messages(self, messages: u64) -> Self {
        let messages = messages.max(1);
        Workload {
            messages,
            aggregates: self.aggregates.clamp(1, messages),
            publishers: self.publishers.clamp(1, messages),
            ..self
        }
    }

    /// Makes every count consistent: at least one of each, no more aggregates than messages,
    /// no more topics or publishers than aggregates, a payload that holds the stamp.
    pub fn normalized(self) -> Self {
        let messages = self.messages.max(1);
        let aggregates = self.aggregates.clamp(1, messages);
        Workload {
            messages,
            aggregates,
            topics: self.topics.clamp(1, aggregates),
            publishers: self.publishers.clamp(1, aggregates),
            payload_bytes: self.payload_bytes.max(Stamp::LEN),
        }
    }

    /// The message with global `index`: its aggregate, topic and sequence number.
    pub fn item(&self, index: u64) -> Item {
        let aggregate = index % self.aggregates;
        Item {
            index,
            aggregate,
            topic: aggregate % self.topics,
            seq: index / self.aggregates + 1,
        }
    }

    /// The messages publisher `p` sends, in the order it sends them.
    pub fn items_of(&self, p: u64) -> impl Iterator<Item = Item> + '_ {
        (0..self.messages)
            .map(|i| self.item(i))
            .filter(move |it| it.aggregate % self.publishers == p)
    }
}

/// Aggregates for `messages` messages: a tenth, clamped to 50..=1000 (the Go team's rule).
pub fn aggregates_for(messages: u64) -> u64 {
    (messages / 10).clamp(50, 1000)
}

/// One message of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    /// Position in the workload, 0-based.
    pub index: u64,
    /// The aggregate (ordering key).
    pub aggregate: u64,
    /// The topic number.
    pub topic: u64,
    /// The aggregate's sequence number, from 1.
    pub seq: u64,
}

impl Item {
    /// The aggregate id as published (the bus's key).
    pub fn aggregate_id(&self) -> String {
        format!("agg-{}", self.aggregate)
    }
}

/// What every payload starts with: which phase, which message, and when it was published
/// (nanoseconds since the process's clock origin, see [`crate::tracker::clock`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The phase (warm-up, full speed, paced).
    pub phase: u8,
    /// The message's index in its phase's workload.
    pub index: u64,
    /// Its aggregate.
    pub aggregate: u64,
    /// Its sequence number in the aggregate.
    pub seq: u64,
    /// When the publish call started.
    pub sent_ns: u64,
}

impl Stamp {
    /// Encoded length: magic, phase, then four little-endian `u64`.
    pub const LEN: usize = 2 + 4 * 8;
    const MAGIC: u8 = 0xb5;

    /// The payload: the stamp, then zero padding up to `len` bytes.
    pub fn encode(&self, len: usize) -> Bytes {
        let mut b = BytesMut::with_capacity(len.max(Self::LEN));
        b.put_u8(Self::MAGIC);
        b.put_u8(self.phase);
        b.put_u64_le(self.index);
        b.put_u64_le(self.aggregate);
        b.put_u64_le(self.seq);
        b.put_u64_le(self.sent_ns);
        b.resize(len.max(Self::LEN), 0);
        b.freeze()
    }

    /// The stamp at the start of `payload`, or `None` if it is not one of ours.
    pub fn decode(payload: &[u8]) -> Option<Stamp> {
        if payload.len() < Self::LEN || payload[0] != Self::MAGIC {
            return None;
        }
        let u = |i: usize| u64::from_le_bytes(payload[2 + 8 * i..10 + 8 * i].try_into().unwrap());
        Some(Stamp {
            phase: payload[1],
            index: u(0),
            aggregate: u(1),
            seq: u(2),
            sent_ns: u(3),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_go_teams_rule() {
        let w: Vec<_> = Level::STANDARD
            .iter()
            .map(|l| Workload::level(*l))
            .collect();
        assert_eq!(
            w.iter()
                .map(|w| (w.messages, w.aggregates))
                .collect::<Vec<_>>(),
            [(500, 50), (2000, 200), (5000, 500), (10_000, 1000)]
        );
        assert!(w.iter().all(|w| w.topics == 5));
        assert_eq!(Workload::level(Level::Huge).aggregates, 1000);
        assert_eq!("extreme".parse::<Level>(), Ok(Level::Extreme));
        assert!("max".parse::<Level>().is_err());
    }

    #[test]
    fn every_message_is_published_once_and_in_sequence() {
        let w = Workload {
            messages: 1003,
            aggregates: 70,
            topics: 5,
            publishers: 9,
            payload_bytes: 64,
        };
        let mut seen = vec![0u32; w.messages as usize];
        let mut last_seq = vec![0u64; w.aggregates as usize];
        for p in 0..w.publishers {
            for it in w.items_of(p) {
                seen[it.index as usize] += 1;
                assert_eq!(it.aggregate % w.publishers, p);
                assert_eq!(it.topic, it.aggregate % w.topics);
                assert_eq!(it.seq, last_seq[it.aggregate as usize] + 1);
                last_seq[it.aggregate as usize] = it.seq;
            }
        }
        assert!(seen.iter().all(|n| *n == 1));
    }

    #[test]
    fn normalized_keeps_counts_consistent() {
        let w = Workload {
            messages: 10,
            aggregates: 50,
            topics: 20,
            publishers: 0,
            payload_bytes: 1,
        }
        .normalized();
        assert_eq!((w.aggregates, w.topics, w.publishers), (10, 10, 1));
        assert_eq!(w.payload_bytes, Stamp::LEN);
    }

    #[test]
    fn stamp_round_trips_with_padding() {
        let s = Stamp {
            phase: 2,
            index: 7,
            aggregate: 3,
            seq: 99,
            sent_ns: 123_456_789,
        };
        let b = s.encode(256);
        assert_eq!(b.len(), 256);
        assert_eq!(Stamp::decode(&b), Some(s));
        assert_eq!(Stamp::decode(&b[..Stamp::LEN - 1]), None);
        assert_eq!(
            Stamp::decode(b"not ours, long enough to hold a stamp...."),
            None
        );
    }
}
