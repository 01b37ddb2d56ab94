//! An in-process broker with the semantics of the real ones: persistent topics are partitioned
//! logs read by consumer groups that acknowledge per message (what is not acknowledged when a
//! member leaves goes to the group's next member); ephemeral topics deliver only to the members
//! present, at most once. A [`MemoryBroker`] outlives the buses connected to it, as a real
//! broker outlives its clients, so that a closed bus's unhandled messages reach the next one.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use super::{Ack, Backend, BoxFuture, Delivery, NoAck, Subscription};
use crate::error::{CloseError, PublishError, SubscribeError, TopicError};
use crate::message::{Headers, Message, Outbound};
use crate::observe::ConnectionState;
use crate::topic::{Durability, TopicConfig, TopicName};

/// How many messages an ephemeral subscriber may have waiting before new ones are dropped for
/// it (core NATS drops messages for slow consumers the same way).
const EPHEMERAL_BUFFER: usize = 4096;

/// An in-process broker. Clones share it.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken on every append, hand-back, resume and disconnect.
    changed: Notify,
}

#[derive(Default)]
struct State {
    topics: HashMap<TopicName, Topic>,
    /// A simulated outage: publishes wait, subscriptions deliver nothing.
    paused: bool,
    next_member: u64,
}

struct Topic {
    config: TopicConfig,
    partitions: Vec<Partition>,
    groups: HashMap<String, Group>,
    /// Ephemeral topics: each group's present member.
    live: HashMap<String, (u64, mpsc::Sender<Message>)>,
    next_unkeyed: usize,
}

#[derive(Default)]
struct Partition {
    /// The offset of `log[0]`.
    start: u64,
    log: VecDeque<Stored>,
}

struct Stored {
    key: Option<Bytes>,
    headers: Headers,
    payload: Bytes,
    at: Instant,
}

struct Group {
    member: Option<u64>,
    /// Per partition: every offset below is acknowledged.
    committed: Vec<u64>,
    /// Per partition: the next offset to deliver.
    cursor: Vec<u64>,
    /// Per partition: offsets at or above `committed` acknowledged out of order.
    acked: Vec<BTreeSet<u64>>,
    /// Per partition: one past the highest offset ever delivered (for `redelivered`).
    high: Vec<u64>,
    next_partition: usize,
}

impl Group {
    fn new(partitions: &[Partition]) -> Group {
        // A new group starts at the oldest retained message.
        let starts: Vec<u64> = partitions.iter().map(|p| p.start).collect();
        Group {
            member: None,
            committed: starts.clone(),
            cursor: starts.clone(),
            acked: vec![BTreeSet::new(); partitions.len()],
            high: starts,
            next_partition: 0,
        }
    }
}

impl Topic {
    fn new(config: TopicConfig) -> Topic {
        let n = config.partitions as usize;
        Topic {
            config,
            partitions: (0..n).map(|_| Partition::default()).collect(),
            groups: HashMap::new(),
            live: HashMap::new(),
            next_unkeyed: 0,
        }
    }

    fn append(&mut self, message: Outbound) {
        let n = self.partitions.len();
        let p = match &message.key {
            Some(k) => crate::delivery::slot(k, n),
            None => {
                self.next_unkeyed = (self.next_unkeyed + 1) % n;
                self.next_unkeyed
            }
        };
        let retention = self.config.retention;
        let part = &mut self.partitions[p];
        part.log.push_back(Stored {
            key: message.key,
            headers: message.headers,
            payload: message.payload,
            at: Instant::now(),
        });
        while let Some(front) = part.log.front() {
            let too_many = retention
                .max_messages
                .is_some_and(|max| part.log.len() as u64 > max);
            let too_old = retention
                .max_age
                .is_some_and(|age| front.at.elapsed() > age);
            if !(too_many || too_old) {
                break;
            }
            part.log.pop_front();
            part.start += 1;
        }
        let start = part.start;
        for g in self.groups.values_mut() {
            // Retention dropped what a group had not read: it moves on, as Kafka's consumers do.
            g.committed[p] = g.committed[p].max(start);
            g.cursor[p] = g.cursor[p].max(start);
            g.acked[p].retain(|o| *o >= start);
        }
    }

    fn end(&self, p: usize) -> u64 {
        self.partitions[p].start + self.partitions[p].log.len() as u64
    }
}

impl MemoryBroker {
    /// A new, empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates an outage: publishes wait (and fail after the bus's publish timeout) and
    /// subscriptions deliver nothing until [`resume`](Self::resume). Stored messages are kept.
    pub fn pause(&self) {
        self.lock().paused = true;
    }

    /// Ends a simulated outage.
    pub fn resume(&self) {
        self.lock().paused = false;
        self.shared.changed.notify_waiters();
    }

    /// How many messages `topic` holds (all partitions, within the retention).
    pub fn stored(&self, topic: &str) -> u64 {
        let state = self.lock();
        TopicName::new(topic)
            .ok()
            .and_then(|t| state.topics.get(&t))
            .map_or(0, |t| t.partitions.iter().map(|p| p.log.len() as u64).sum())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `attempt` on the broker's state whenever it changes, until it returns a value;
    /// `None` once the connection is `closed`. Nothing is attempted during an outage.
    async fn when<T>(
        &self,
        closed: &AtomicBool,
        mut attempt: impl FnMut(&mut State) -> Option<T>,
    ) -> Option<T> {
        loop {
            // Registered before the state is read, so that no change is missed.
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if closed.load(Ordering::SeqCst) {
                return None;
            }
            {
                let mut state = self.lock();
                if !state.paused {
                    if let Some(t) = attempt(&mut state) {
                        return Some(t);
                    }
                }
            }
            notified.await;
        }
    }
}

fn topic_entry<'a>(state: &'a mut State, name: &TopicName) -> &'a mut Topic {
    state.topics.entry(name.clone()).or_insert_with(|| {
        // Publishing or subscribing to an unknown topic creates it with the defaults, as Kafka
        // does with auto-creation.
        Topic::new(TopicConfig::new(name.as_str()).expect("a valid name makes a valid config"))
    })
}

/// One bus's connection to a [`MemoryBroker`].
pub(crate) struct MemoryBackend {
    broker: MemoryBroker,
    closed: Arc<AtomicBool>,
}

impl MemoryBackend {
    pub(crate) fn new(broker: &MemoryBroker) -> Self {
        MemoryBackend {
            broker: broker.clone(),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn create_topic<'a>(
        &'a self,
        config: &'a TopicConfig,
    ) -> BoxFuture<'a, Result<(), TopicError>> {
        Box::pin(async move {
            if self.closed.load(Ordering::SeqCst) {
                return Err(TopicError::Closed);
            }
            let mut state = self.broker.lock();
            match state.topics.get(&config.name) {
                Some(t)
                    if t.config.durability != config.durability
                        || t.config.partitions != config.partitions =>
                {
                    Err(TopicError::Backend {
                        topic: config.name.to_string(),
                        backend: "memory",
                        message: format!(
                            "it exists as {:?} with {} partition(s)",
                            t.config.durability, t.config.partitions
                        ),
                    })
                }
                Some(_) => Ok(()),
                None => {
                    state
                        .topics
                        .insert(config.name.clone(), Topic::new(config.clone()));
                    Ok(())
                }
            }
        })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a TopicName,
        message: Outbound,
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(async move {
            let mut message = Some(message);
            let stored = self
                .broker
                .when(&self.closed, |state| {
                    let t = topic_entry(state, topic);
                    let message = message.take()?;
                    if t.config.durability == Durability::Ephemeral {
                        let msg = Message {
                            topic: topic.clone(),
                            key: message.key,
                            headers: message.headers,
                            payload: message.payload,
                            attempt: 1,
                            redelivered: false,
                        };
                        // A subscriber whose buffer is full misses it (at most once).
                        for (_, tx) in t.live.values() {
                            let _ = tx.try_send(msg.clone());
                        }
                    } else {
                        t.append(message);
                    }
                    Some(())
                })
                .await;
            match stored {
                Some(()) => {
                    self.broker.shared.changed.notify_waiters();
                    Ok(())
                }
                None => Err(PublishError::Closed),
            }
        })
    }

    fn subscribe<'a>(
        &'a self,
        topic: &'a TopicName,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, SubscribeError>> {
        Box::pin(async move {
            if self.closed.load(Ordering::SeqCst) {
                return Err(SubscribeError::Closed);
            }
            let mut state = self.broker.lock();
            state.next_member += 1;
            let member = state.next_member;
            let t = topic_entry(&mut state, topic);
            let taken = || SubscribeError::AlreadySubscribed {
                topic: topic.clone(),
                group: group.to_string(),
            };
            if t.config.durability == Durability::Ephemeral {
                if t.live.contains_key(group) {
                    return Err(taken());
                }
                let (tx, rx) = mpsc::channel(EPHEMERAL_BUFFER);
                t.live.insert(group.to_string(), (member, tx));
                return Ok(Box::new(EphemeralSubscription {
                    broker: self.broker.clone(),
                    closed: self.closed.clone(),
                    topic: topic.clone(),
                    group: group.to_string(),
                    member,
                    rx,
                }) as Box<dyn Subscription>);
            }
            let partitions = &t.partitions;
            let g = t
                .groups
                .entry(group.to_string())
                .or_insert_with(|| Group::new(partitions));
            if g.member.is_some() {
                return Err(taken());
            }
            g.member = Some(member);
            Ok(Box::new(LogSubscription {
                broker: self.broker.clone(),
                closed: self.closed.clone(),
                topic: topic.clone(),
                group: group.to_string(),
                member,
            }) as Box<dyn Subscription>)
        })
    }

    fn connection(&self) -> ConnectionState {
        if self.closed.load(Ordering::SeqCst) {
            ConnectionState::Closed
        } else if self.broker.lock().paused {
            ConnectionState::Disconnected
        } else {
            ConnectionState::Connected
        }
    }

    fn lag(&self, topic: &TopicName, group: &str) -> Option<u64> {
        let state = self.broker.lock();
        let t = state.topics.get(topic)?;
        let g = t.groups.get(group)?;
        Some(
            (0..t.partitions.len())
                .map(|p| {
                    t.end(p)
                        .saturating_sub(g.committed[p])
                        .saturating_sub(g.acked[p].len() as u64)
                })
                .sum(),
        )
    }

    fn close(&self) -> BoxFuture<'_, Result<(), CloseError>> {
        Box::pin(async move {
            // Everything published is already stored: nothing to flush.
            self.closed.store(true, Ordering::SeqCst);
            self.broker.shared.changed.notify_waiters();
            Ok(())
        })
    }
}

/// A member of a group on a persistent topic.
struct LogSubscription {
    broker: MemoryBroker,
    closed: Arc<AtomicBool>,
    topic: TopicName,
    group: String,
    member: u64,
}

impl LogSubscription {
    /// Takes the next message for this member, if one is ready.
    fn take(&self, state: &mut State) -> Option<Delivery> {
        let t = state.topics.get_mut(&self.topic)?;
        let n = t.partitions.len();
        let g = t.groups.get_mut(&self.group)?;
        if g.member != Some(self.member) {
            return None;
        }
        for i in 0..n {
            let p = (g.next_partition + i) % n;
            let part = &t.partitions[p];
            let end = part.start + part.log.len() as u64;
            while g.cursor[p] < end {
                let off = g.cursor[p].max(part.start);
                g.cursor[p] = off + 1;
                if g.acked[p].contains(&off) {
                    continue;
                }
                let s = &part.log[(off - part.start) as usize];
                let redelivered = off < g.high[p];
                g.high[p] = g.high[p].max(off + 1);
                g.next_partition = (p + 1) % n;
                return Some(Delivery {
                    message: Message {
                        topic: self.topic.clone(),
                        key: s.key.clone(),
                        headers: s.headers.clone(),
                        payload: s.payload.clone(),
                        attempt: 1,
                        redelivered,
                    },
                    ack: Box::new(LogAck {
                        broker: self.broker.clone(),
                        topic: self.topic.clone(),
                        group: self.group.clone(),
                        member: self.member,
                        partition: p,
                        offset: off,
                    }),
                });
            }
        }
        None
    }
}

impl Subscription for LogSubscription {
    fn next(&mut self) -> BoxFuture<'_, Option<Delivery>> {
        Box::pin(async move {
            let this = &*self;
            this.broker
                .when(&this.closed, |state| this.take(state))
                .await
        })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut state = self.broker.lock();
            if let Some(g) = state
                .topics
                .get_mut(&self.topic)
                .and_then(|t| t.groups.get_mut(&self.group))
            {
                if g.member == Some(self.member) {
                    g.member = None;
                    // Unacknowledged messages go to the group's next member.
                    g.cursor = g.committed.clone();
                }
            }
            drop(state);
            self.broker.shared.changed.notify_waiters();
        })
    }
}

struct LogAck {
    broker: MemoryBroker,
    topic: TopicName,
    group: String,
    member: u64,
    partition: usize,
    offset: u64,
}

impl Ack for LogAck {
    fn ack(self: Box<Self>) {
        let mut state = self.broker.lock();
        let Some(g) = state
            .topics
            .get_mut(&self.topic)
            .and_then(|t| t.groups.get_mut(&self.group))
        else {
            return;
        };
        // A member that left no longer acknowledges: its messages went to the next member.
        if g.member != Some(self.member) {
            return;
        }
        let p = self.partition;
        if self.offset >= g.committed[p] {
            g.acked[p].insert(self.offset);
        }
        while g.acked[p].remove(&g.committed[p]) {
            g.committed[p] += 1;
        }
    }
}

/// A member of a group on an ephemeral topic.
struct EphemeralSubscription {
    broker: MemoryBroker,
    closed: Arc<AtomicBool>,
    topic: TopicName,
    group: String,
    member: u64,
    rx: mpsc::Receiver<Message>,
}

impl Subscription for EphemeralSubscription {
    fn next(&mut self) -> BoxFuture<'_, Option<Delivery>> {
        Box::pin(async move {
            let shared = self.broker.shared.clone();
            loop {
                let notified = shared.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.closed.load(Ordering::SeqCst) {
                    return None;
                }
                tokio::select! {
                    m = self.rx.recv() => {
                        return m.map(|message| Delivery { message, ack: Box::new(NoAck) });
                    }
                    _ = &mut notified => {}
                }
            }
        })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut state = self.broker.lock();
            if let Some(t) = state.topics.get_mut(&self.topic) {
                if t.live
                    .get(&self.group)
                    .is_some_and(|(m, _)| *m == self.member)
                {
                    t.live.remove(&self.group);
                }
            }
        })
    }
}
