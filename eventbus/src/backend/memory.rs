//! An in-process broker with the semantics of the real ones: persistent topics are partitioned
//! logs read by consumer groups that acknowledge per message (what is not acknowledged when a
//! member leaves goes to the group's next member); ephemeral topics deliver only to the members
//! present, at most once. A [`MemoryBroker`] outlives the buses connected to it, as a real
//! broker outlives its clients, so that a closed bus's unhandled messages reach the next one.
//!
//! Each partition has its own lock (a publish, a take and an ack touch one partition only) and
//! each subscription its own wake-up, so a publish wakes the members that can take it and no
//! one else. A partition holds at most the broker's capacity of messages that a present member
//! has not acknowledged: a publisher beyond it waits, as it would for a real broker's
//! acknowledgement, instead of growing the log without bound. Memory being its only store, a
//! topic without a retention keeps a message only until every group of the topic has
//! acknowledged it (a long-running process would otherwise grow with every message it ever
//! published); a retention keeps acknowledged ones within it, for groups that subscribe later.
//!
//! A subscription that is caught up gets a new message from the publish itself, straight into
//! its worker queue ([`Inbox`]), as a plain channel would: no wake-up and pull of the
//! subscription's supervisor in between. Whatever cannot go that way (a full queue, a backlog,
//! a delivery the supervisor holds) waits in the log for the supervisor, so that a partition's
//! messages still reach the queues in offset order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use super::{acked, Acked, Backend, BoxFuture, Delivery, DeliveryAck, Inbox, NoAck, Subscription};
use crate::error::{CloseError, PublishError, SubscribeError, TopicError};
use crate::message::{Body, Message, Outbound, SharedHeaders};
use crate::observe::ConnectionState;
use crate::stop::Stop;
use crate::topic::{Durability, TopicConfig, TopicName};

/// How many messages an ephemeral subscriber may have waiting before new ones are dropped for
/// it (core NATS drops messages for slow consumers the same way).
const EPHEMERAL_BUFFER: usize = 4096;

/// How many messages a partition holds that a subscribed group has not acknowledged before a
/// publish to it waits ([`MemoryBroker::with_capacity`]): four worker queues' worth of the
/// bus's defaults, so that a subscription is never starved by it.
pub const DEFAULT_MEMORY_CAPACITY: usize = 1024;

/// An in-process broker. Clones share it.
#[derive(Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_MEMORY_CAPACITY)
    }
}

/// The broker's topics, by name.
type Topics = rustc_hash::FxHashMap<TopicName, Arc<Topic>>;

struct Shared {
    /// Read on every publish: a snapshot loaded without a lock or a reference count on a line
    /// every publisher writes (as a read lock and an `Arc` clone would), replaced whole under
    /// `creating` when a topic is created.
    topics: ArcSwap<Topics>,
    creating: Mutex<()>,
    /// A simulated outage: publishes wait, subscriptions deliver nothing.
    paused: AtomicBool,
    /// Woken when an outage ends.
    resumed: Notify,
    next_member: AtomicU64,
    capacity: usize,
}

struct Topic {
    config: TopicConfig,
    partitions: Box<[Mutex<Partition>]>,
    /// Per partition: woken when acknowledgements or a leaving member make room, when an
    /// outage ends and when a bus closes (outside the partition's lock, which a waiting
    /// publisher need not take).
    rooms: Box<[Notify]>,
    /// The persistent groups, by name: their index in each partition's `cursors`.
    groups: Mutex<HashMap<String, usize>>,
    /// Ephemeral topics: each group's present member.
    live: Mutex<HashMap<String, (u64, mpsc::Sender<Message>)>>,
    next_unkeyed: AtomicUsize,
}

struct Partition {
    /// The offset of `log[0]`.
    start: u64,
    log: Log<Stored>,
    /// One per group of the topic, by the group's index.
    cursors: Vec<Cursor>,
    /// Whether a publisher waits for room (so that acks only wake when someone waits).
    waiting: bool,
}

/// How many messages a segment of a partition's log holds.
const SEGMENT: usize = 1024;

/// A partition's log in segments of [`SEGMENT`] messages: appending never moves what is
/// stored. One growing buffer would copy the whole log at each doubling, tens of microseconds
/// for one unlucky publish once the log holds a few thousand messages.
struct Log<T> {
    /// Every segment but the first and the last is full.
    segments: VecDeque<VecDeque<T>>,
    len: usize,
}

impl<T> Default for Log<T> {
    fn default() -> Self {
        Log {
            segments: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> Log<T> {
    fn len(&self) -> usize {
        self.len
    }

    fn push_back(&mut self, item: T) {
        match self.segments.back_mut() {
            Some(last) if last.len() < SEGMENT => last.push_back(item),
            _ => {
                let mut segment = VecDeque::with_capacity(SEGMENT);
                segment.push_back(item);
                self.segments.push_back(segment);
            }
        }
        self.len += 1;
    }

    fn pop_front(&mut self) -> Option<T> {
        let first = self.segments.front_mut()?;
        let item = first.pop_front();
        if first.is_empty() {
            self.segments.pop_front();
        }
        self.len -= usize::from(item.is_some());
        item
    }

    fn front(&self) -> Option<&T> {
        self.segments.front()?.front()
    }

    fn back(&self) -> Option<&T> {
        self.segments.back()?.back()
    }

    fn get(&self, i: usize) -> Option<&T> {
        let first = self.segments.front()?;
        if i < first.len() {
            return first.get(i);
        }
        // The segments after the first are full but for the last.
        let i = i - first.len();
        self.segments.get(1 + i / SEGMENT)?.get(i % SEGMENT)
    }
}

impl<T> std::ops::Index<usize> for Log<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        self.get(i).expect("an offset within the log")
    }
}

struct Stored {
    key: Option<Bytes>,
    headers: SharedHeaders,
    payload: Body,
    /// Kept only for a retention by age.
    at: Option<Instant>,
}

/// A group's position in one partition.
struct Cursor {
    /// The present member and its wake-up.
    member: Option<(u64, Arc<Notify>)>,
    /// The member's worker queues, for hand-offs from the publish.
    inbox: Option<Arc<dyn Inbox>>,
    /// The member's supervisor holds a delivery of this partition (taken, not queued yet), or a
    /// hand-off failed: nothing is handed off until its next take, which keeps the order.
    holding: bool,
    /// Every offset below is acknowledged.
    committed: u64,
    /// The next offset to deliver.
    next: u64,
    /// One past the highest offset ever delivered (for `redelivered`).
    high: u64,
    acks: AckWindow,
}

/// Which offsets at or above `committed` are acknowledged out of order: a ring of flags from
/// `committed` on (a bounded window: a partition holds at most the broker's capacity of
/// unacknowledged messages per present member), cheaper than a set per acknowledgement.
#[derive(Default, Debug)]
struct AckWindow {
    flags: VecDeque<bool>,
    count: u64,
}

impl AckWindow {
    /// Marks `committed + at` acknowledged; returns how far `committed` moves.
    fn ack(&mut self, at: u64) -> u64 {
        let at = at as usize;
        if at >= self.flags.len() {
            // The usual case: one past the last offset remembered.
            self.flags.resize(at, false);
            self.flags.push_back(true);
            self.count += 1;
        } else if !std::mem::replace(&mut self.flags[at], true) {
            self.count += 1;
        }
        self.advance()
    }

    /// Forgets the first `n` offsets (retention dropped them); returns how much further
    /// `committed` moves over offsets acknowledged after them.
    fn skip(&mut self, n: u64) -> u64 {
        for _ in 0..n.min(self.flags.len() as u64) {
            if self.flags.pop_front() == Some(true) {
                self.count -= 1;
            }
        }
        self.advance()
    }

    /// Drops the acknowledged offsets at the front; returns how many.
    fn advance(&mut self) -> u64 {
        let mut advanced = 0;
        while self.flags.front() == Some(&true) {
            self.flags.pop_front();
            self.count -= 1;
            advanced += 1;
        }
        advanced
    }

    /// Whether `committed + at` is acknowledged.
    fn is_acked(&self, at: u64) -> bool {
        self.flags.get(at as usize).copied().unwrap_or(false)
    }
}

impl Cursor {
    fn new(start: u64) -> Cursor {
        // A new group starts at the oldest retained message.
        Cursor {
            member: None,
            inbox: None,
            holding: false,
            committed: start,
            next: start,
            high: start,
            acks: AckWindow::default(),
        }
    }

    fn is_member(&self, member: u64) -> bool {
        self.member.as_ref().is_some_and(|(m, _)| *m == member)
    }
}

impl Partition {
    fn end(&self) -> u64 {
        self.start + self.log.len() as u64
    }

    /// Takes out the messages every group has acknowledged, unless the topic `retains` them (it
    /// has a retention, which then decides), for the caller to drop once it let go of the lock.
    /// Nothing is taken before a group exists.
    fn take_acknowledged(&mut self, retains: bool) -> Vec<Stored> {
        if retains {
            return Vec::new();
        }
        let Some(low) = self.cursors.iter().map(|c| c.committed).min() else {
            return Vec::new();
        };
        if low <= self.start {
            return Vec::new();
        }
        let mut taken = Vec::with_capacity((low - self.start) as usize);
        while self.start < low {
            let Some(s) = self.log.pop_front() else { break };
            taken.push(s);
            self.start += 1;
        }
        taken
    }

    /// Whether a present member has `capacity` messages or more unacknowledged here.
    fn full(&self, capacity: usize) -> bool {
        let end = self.end();
        self.cursors
            .iter()
            .any(|c| c.member.is_some() && end - c.committed >= capacity as u64)
    }

    /// Appends `stored` to this partition (number `p` of `topic`) and hands it to the members
    /// that are caught up, or wakes them.
    fn append(&mut self, stored: Stored, topic: &Arc<Topic>, p: usize) {
        self.log.push_back(stored);
        let retention = topic.config.retention;
        while let Some(front) = self.log.front() {
            let too_many = retention
                .max_messages
                .is_some_and(|max| self.log.len() as u64 > max);
            let too_old = retention
                .max_age
                .zip(front.at)
                .is_some_and(|(age, at)| at.elapsed() > age);
            if !(too_many || too_old) {
                break;
            }
            self.log.pop_front();
            self.start += 1;
        }
        let start = self.start;
        let Some(last) = self.log.back() else { return };
        let off = self.end() - 1;
        for (group, c) in self.cursors.iter_mut().enumerate() {
            // Retention dropped what a group had not read: it moves on, as Kafka's consumers do.
            if c.committed < start {
                c.committed = start + c.acks.skip(start - c.committed);
            }
            c.next = c.next.max(start);
            let Some((member, wake)) = &c.member else {
                continue;
            };
            if c.holding {
                // The member was woken when the hold began, and its next take (once what it
                // holds is queued) reads everything up to here: no wake-up per message.
                continue;
            }
            if c.next == off {
                if let Some(inbox) = &c.inbox {
                    let d = delivery(topic, p, group, *member, off, last, false);
                    if inbox.offer(d).is_ok() {
                        c.next = off + 1;
                        c.high = c.high.max(off + 1);
                        continue;
                    }
                    // Full: the supervisor takes it from here, in order.
                    c.holding = true;
                }
            }
            // Wake the member to take it (a permit if it is busy: nothing is missed).
            wake.notify_one();
        }
    }
}

/// Stored message `off` of partition `p` as a delivery to `member` of `group`.
fn delivery(
    topic: &Arc<Topic>,
    p: usize,
    group: usize,
    member: u64,
    off: u64,
    s: &Stored,
    redelivered: bool,
) -> Delivery {
    Delivery {
        message: Message {
            topic: topic.config.name.clone(),
            key: s.key.clone(),
            headers: s.headers.clone(),
            payload: s.payload.clone(),
            attempt: 1,
            redelivered,
        },
        ack: DeliveryAck::Memory(LogAck {
            topic: topic.clone(),
            group: group as u32,
            member,
            partition: p as u32,
            offset: off,
        }),
    }
}

impl Topic {
    fn new(config: TopicConfig) -> Topic {
        let n = config.partitions as usize;
        Topic {
            config,
            partitions: (0..n)
                .map(|_| {
                    Mutex::new(Partition {
                        start: 0,
                        log: Log::default(),
                        cursors: Vec::new(),
                        waiting: false,
                    })
                })
                .collect(),
            rooms: (0..n).map(|_| Notify::new()).collect(),
            groups: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            next_unkeyed: AtomicUsize::new(0),
        }
    }

    /// Whether acknowledged messages stay for groups that subscribe later: only within a
    /// retention the topic sets.
    fn retains_acknowledged(&self) -> bool {
        let r = self.config.retention;
        r.max_messages.is_some() || r.max_age.is_some()
    }

    fn partition_of(&self, key: Option<&[u8]>) -> usize {
        let n = self.partitions.len();
        match key {
            Some(k) => crate::delivery::slot(k, n),
            None => (self.next_unkeyed.fetch_add(1, Ordering::Relaxed) + 1) % n,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryBroker {
    /// A new, empty broker with [`DEFAULT_MEMORY_CAPACITY`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A new, empty broker whose partitions hold at most `capacity` messages (at least 1) that
    /// a subscribed group has not acknowledged: a publish beyond that waits for room, up to the
    /// bus's publish timeout. Groups without a member (and topics without groups) do not count:
    /// they keep what the retention allows, as on Kafka.
    pub fn with_capacity(capacity: usize) -> Self {
        MemoryBroker {
            shared: Arc::new(Shared {
                topics: ArcSwap::default(),
                creating: Mutex::new(()),
                paused: AtomicBool::new(false),
                resumed: Notify::new(),
                next_member: AtomicU64::new(0),
                capacity: capacity.max(1),
            }),
        }
    }

    /// Simulates an outage: publishes wait (and fail after the bus's publish timeout) and
    /// subscriptions deliver nothing until [`resume`](Self::resume). Stored messages are kept.
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    /// Ends a simulated outage.
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
        self.shared.resumed.notify_waiters();
        // A publisher whose last try met the outage waits on its partition's wake-up.
        self.wake_publishers();
    }

    /// Wakes every publisher waiting for room, for it to look again: at the end of an outage
    /// and at a bus's close (those of other buses wait on).
    fn wake_publishers(&self) {
        for t in self.shared.topics.load().values() {
            t.rooms.iter().for_each(Notify::notify_waiters);
        }
    }

    /// How many messages `topic` holds (all partitions, within the retention).
    pub fn stored(&self, topic: &str) -> u64 {
        TopicName::new(topic)
            .ok()
            .and_then(|t| self.topic(&t))
            .map_or(0, |t| {
                t.partitions.iter().map(|p| lock(p).log.len() as u64).sum()
            })
    }

    fn paused(&self) -> bool {
        self.shared.paused.load(Ordering::SeqCst)
    }

    fn topic(&self, name: &TopicName) -> Option<Arc<Topic>> {
        self.shared.topics.load().get(name).cloned()
    }

    /// The topic, created with the defaults if unknown (as Kafka's auto-creation does).
    fn topic_entry(&self, name: &TopicName) -> Arc<Topic> {
        self.with_topic(name, Arc::clone)
    }

    /// Calls `f` with the topic (created with the defaults if unknown), borrowed from the
    /// current snapshot: no reference count taken on the publish path.
    fn with_topic<R>(&self, name: &TopicName, f: impl FnOnce(&Arc<Topic>) -> R) -> R {
        if let Some(t) = self.shared.topics.load().get(name) {
            return f(t);
        }
        let config = TopicConfig::new(name.as_str()).expect("a valid name makes a valid config");
        f(&self.insert_topic(config))
    }

    /// The topic named as `config` says: the one there is, or else a new one made with
    /// `config` and added to the snapshot (under the creation lock).
    fn insert_topic(&self, config: TopicConfig) -> Arc<Topic> {
        let _creating = lock(&self.shared.creating);
        let topics = self.shared.topics.load_full();
        if let Some(t) = topics.get(&config.name) {
            return t.clone();
        }
        let name = config.name.clone();
        let t = Arc::new(Topic::new(config));
        let mut next = (*topics).clone();
        next.insert(name, t.clone());
        self.shared.topics.store(Arc::new(next));
        t
    }

    /// Waits out an outage; `false` once `closed`.
    async fn while_paused(&self, closed: &Stop) -> bool {
        loop {
            // Registered before the flag is read, so that no resume is missed.
            let resumed = self.shared.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if closed.is_set() {
                return false;
            }
            if !self.paused() {
                return true;
            }
            tokio::select! {
                _ = resumed => {}
                _ = closed.wait() => return false,
            }
        }
    }
}

/// One bus's connection to a [`MemoryBroker`].
pub(crate) struct MemoryBackend {
    broker: MemoryBroker,
    closed: Stop,
}

impl MemoryBackend {
    pub(crate) fn new(broker: &MemoryBroker) -> Self {
        MemoryBackend {
            broker: broker.clone(),
            closed: Stop::default(),
        }
    }

    /// Stores `message` if that needs no waiting; otherwise hands it back.
    fn store_now(&self, topic: &TopicName, message: Outbound) -> Result<(), Outbound> {
        if self.broker.paused() {
            return Err(message);
        }
        self.broker
            .with_topic(topic, |t| self.store_now_in(t, topic, message))
    }

    fn store_now_in(
        &self,
        t: &Arc<Topic>,
        topic: &TopicName,
        message: Outbound,
    ) -> Result<(), Outbound> {
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
            for (_, tx) in lock(&t.live).values() {
                let _ = tx.try_send(msg.clone());
            }
            return Ok(());
        }
        let p = t.partition_of(message.routing_key());
        self.store_in(t, p, message, false)
    }

    /// Appends `message` to partition `p` of `t` unless it is full or the broker paused; a
    /// full partition is marked as `waited` on if so (under the same lock, so that the
    /// acknowledgement that makes room next wakes the caller).
    fn store_in(
        &self,
        t: &Arc<Topic>,
        p: usize,
        message: Outbound,
        waited: bool,
    ) -> Result<(), Outbound> {
        let mut part = lock(&t.partitions[p]);
        if self.broker.paused() {
            return Err(message);
        }
        if part.full(self.broker.shared.capacity) {
            part.waiting |= waited;
            return Err(message);
        }
        let at = t.config.retention.max_age.map(|_| Instant::now());
        part.append(
            Stored {
                key: message.key,
                headers: message.headers,
                payload: message.payload,
                at,
            },
            t,
            p,
        );
        Ok(())
    }

    /// The slow path: waits for the outage to end or for room in the partition. A full
    /// partition is the common case of a publisher that outpaces its subscribers, so the wait
    /// registers with the partition's wake-up only: not with the outage's (unless there is
    /// one) nor with the close signal's, both shared by every publisher (the end of an outage
    /// and a close wake the partitions' waiters themselves: [`MemoryBroker::wake_publishers`]).
    async fn store_waiting(&self, topic: &TopicName, mut message: Outbound) -> bool {
        let t = self.broker.topic_entry(topic);
        let p = t.partition_of(message.routing_key());
        loop {
            if self.broker.paused() && !self.broker.while_paused(&self.closed).await {
                return false;
            }
            if t.config.durability == Durability::Ephemeral {
                // Never full: only a pause (waited out above) stops it.
                match self.store_now(topic, message) {
                    Ok(()) => return true,
                    Err(m) => message = m,
                }
                continue;
            }
            // Registered before the checks, so that no room made and no close given meanwhile
            // is missed.
            let notified = t.rooms[p].notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.closed.is_set() {
                return false;
            }
            message = match self.store_in(&t, p, message, true) {
                Ok(()) => return true,
                Err(m) => m,
            };
            notified.await;
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
            if self.closed.is_set() {
                return Err(TopicError::Closed);
            }
            let t = self.broker.insert_topic(config.clone());
            if t.config.durability != config.durability || t.config.partitions != config.partitions
            {
                return Err(TopicError::Backend {
                    topic: config.name.to_string(),
                    backend: "memory",
                    message: format!(
                        "it exists as {:?} with {} partition(s)",
                        t.config.durability, t.config.partitions
                    ),
                });
            }
            Ok(())
        })
    }

    fn in_process(&self) -> bool {
        true
    }

    fn try_publish(&self, topic: &TopicName, message: Outbound) -> Option<Outbound> {
        if self.closed.is_set() {
            // The async path says why.
            return Some(message);
        }
        self.store_now(topic, message).err()
    }

    /// Stored is acknowledged (one boxed future, not the default's two).
    fn publish<'a>(
        &'a self,
        topic: &'a TopicName,
        message: Outbound,
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(async move {
            match self.store_waiting(topic, message).await {
                true => Ok(()),
                false => Err(PublishError::Closed),
            }
        })
    }

    /// The broker has the message once it is stored: its acknowledgement is there at once.
    fn enqueue<'a>(
        &'a self,
        topic: &'a TopicName,
        message: Outbound,
    ) -> BoxFuture<'a, Result<Acked, PublishError>> {
        Box::pin(async move {
            match self.store_waiting(topic, message).await {
                true => Ok(acked()),
                false => Err(PublishError::Closed),
            }
        })
    }

    fn subscribe<'a>(
        &'a self,
        topic: &'a TopicName,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, SubscribeError>> {
        Box::pin(async move {
            if self.closed.is_set() {
                return Err(SubscribeError::Closed);
            }
            let member = self
                .broker
                .shared
                .next_member
                .fetch_add(1, Ordering::SeqCst)
                + 1;
            let t = self.broker.topic_entry(topic);
            let taken = || SubscribeError::AlreadySubscribed {
                topic: topic.clone(),
                group: group.to_string(),
            };
            if t.config.durability == Durability::Ephemeral {
                let mut live = lock(&t.live);
                if live.contains_key(group) {
                    return Err(taken());
                }
                let (tx, rx) = mpsc::channel(EPHEMERAL_BUFFER);
                live.insert(group.to_string(), (member, tx));
                return Ok(Box::new(EphemeralSubscription {
                    topic: t.clone(),
                    closed: self.closed.clone(),
                    group: group.to_string(),
                    member,
                    rx,
                }) as Box<dyn Subscription>);
            }
            let wake = Arc::new(Notify::new());
            let mut groups = lock(&t.groups);
            let index = match groups.get(group) {
                Some(&i) => {
                    if lock(&t.partitions[0]).cursors[i].member.is_some() {
                        return Err(taken());
                    }
                    i
                }
                None => {
                    let i = groups.len();
                    for p in t.partitions.iter() {
                        let mut p = lock(p);
                        let start = p.start;
                        p.cursors.push(Cursor::new(start));
                    }
                    groups.insert(group.to_string(), i);
                    i
                }
            };
            // Membership is written under the groups lock, partition by partition.
            for p in t.partitions.iter() {
                lock(p).cursors[index].member = Some((member, wake.clone()));
            }
            drop(groups);
            Ok(Box::new(LogSubscription {
                broker: self.broker.clone(),
                closed: self.closed.clone(),
                topic: t,
                group: index,
                member,
                wake,
                next_partition: 0,
            }) as Box<dyn Subscription>)
        })
    }

    fn connection(&self) -> ConnectionState {
        if self.closed.is_set() {
            ConnectionState::Closed
        } else if self.broker.paused() {
            ConnectionState::Disconnected
        } else {
            ConnectionState::Connected
        }
    }

    fn lag(&self, topic: &TopicName, group: &str) -> Option<u64> {
        let t = self.broker.topic(topic)?;
        let index = *lock(&t.groups).get(group)?;
        Some(
            t.partitions
                .iter()
                .map(|p| {
                    let p = lock(p);
                    let c = &p.cursors[index];
                    p.end()
                        .saturating_sub(c.committed)
                        .saturating_sub(c.acks.count)
                })
                .sum(),
        )
    }

    fn close(&self) -> BoxFuture<'_, Result<(), CloseError>> {
        Box::pin(async move {
            // Everything published is already stored: nothing to flush.
            self.closed.set();
            self.broker.wake_publishers();
            Ok(())
        })
    }
}

/// A member of a group on a persistent topic.
struct LogSubscription {
    broker: MemoryBroker,
    closed: Stop,
    topic: Arc<Topic>,
    /// The group's index in the partitions' cursors.
    group: usize,
    member: u64,
    wake: Arc<Notify>,
    /// Where the next take starts, so that every partition gets its turn.
    next_partition: usize,
}

impl LogSubscription {
    /// Takes the next message for this member, if one is ready. With an inbox attached, it
    /// queues what it can itself and returns only a delivery whose queue is full (which the
    /// supervisor then holds until it is queued).
    fn take(&mut self) -> Option<Delivery> {
        let n = self.topic.partitions.len();
        for i in 0..n {
            let p = (self.next_partition + i) % n;
            let mut part = self.topic.partitions[p]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let part = &mut *part;
            let c = &mut part.cursors[self.group];
            if !c.is_member(self.member) {
                return None;
            }
            // The supervisor asks again: it holds nothing now.
            c.holding = false;
            let end = part.start + part.log.len() as u64;
            while c.next < end {
                let off = c.next.max(part.start);
                c.next = off + 1;
                if c.acks.is_acked(off - c.committed) {
                    continue;
                }
                let s = &part.log[(off - part.start) as usize];
                let redelivered = off < c.high;
                c.high = c.high.max(off + 1);
                let d = delivery(&self.topic, p, self.group, self.member, off, s, redelivered);
                let d = match &c.inbox {
                    Some(inbox) => match inbox.offer(d) {
                        Ok(()) => continue,
                        Err(d) => d,
                    },
                    None => d,
                };
                c.holding = true;
                self.next_partition = (p + 1) % n;
                return Some(d);
            }
        }
        None
    }
}

impl Subscription for LogSubscription {
    fn next(&mut self) -> BoxFuture<'_, Option<Delivery>> {
        Box::pin(async move {
            loop {
                if self.closed.is_set() {
                    return None;
                }
                if self.broker.paused() {
                    if !self.broker.while_paused(&self.closed).await {
                        return None;
                    }
                    continue;
                }
                if let Some(d) = self.take() {
                    return Some(d);
                }
                // A publish after the take left a permit: this returns at once then.
                let wake = self.wake.clone();
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = self.closed.wait() => return None,
                }
            }
        })
    }

    fn attach(&mut self, inbox: Arc<dyn Inbox>) {
        for p in self.topic.partitions.iter() {
            let mut p = lock(p);
            let c = &mut p.cursors[self.group];
            if c.is_member(self.member) {
                c.inbox = Some(inbox.clone());
            }
        }
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _groups = lock(&self.topic.groups);
            for (i, p) in self.topic.partitions.iter().enumerate() {
                let mut p = lock(p);
                let c = &mut p.cursors[self.group];
                if c.is_member(self.member) {
                    c.member = None;
                    c.inbox = None;
                    c.holding = false;
                    // Unacknowledged messages go to the group's next member.
                    c.next = c.committed;
                    // Its unacknowledged messages no longer hold publishers back.
                    if std::mem::take(&mut p.waiting) {
                        self.topic.rooms[i].notify_waiters();
                    }
                }
            }
        })
    }
}

pub(crate) struct LogAck {
    topic: Arc<Topic>,
    // Indexes in 32 bits (a topic's partitions are counted in a `u32`, its groups never come
    // near): a delivery then fits in 128 bytes, which the compiler moves inline (beyond that,
    // each of the delivery's half a dozen moves between queues is a `memcpy` call).
    group: u32,
    member: u64,
    partition: u32,
    offset: u64,
}

impl LogAck {
    pub(super) fn ack(self) {
        let mut part = lock(&self.topic.partitions[self.partition as usize]);
        if self.apply(&mut part) {
            let acknowledged = part.take_acknowledged(self.topic.retains_acknowledged());
            drop(part);
            drop(acknowledged);
        }
    }

    /// Acknowledges every one of `acks`, taking each partition's lock once per run of acks
    /// to it (a worker's acks come from one topic and few partitions).
    pub(super) fn ack_all(acks: &mut Vec<LogAck>) {
        let mut acks = acks.drain(..).peekable();
        while let Some(first) = acks.next() {
            let topic = first.topic.clone();
            let p = first.partition;
            let mut part = lock(&topic.partitions[p as usize]);
            let mut advanced = first.apply(&mut part);
            while let Some(a) = acks.next_if(|a| a.partition == p && Arc::ptr_eq(&a.topic, &topic))
            {
                advanced |= a.apply(&mut part);
            }
            if !advanced {
                continue;
            }
            // Freed outside the lock, which the publishers wait for.
            let acknowledged = part.take_acknowledged(topic.retains_acknowledged());
            drop(part);
            drop(acknowledged);
        }
    }

    /// Records the acknowledgement; returns whether the group's committed offset moved.
    fn apply(&self, part: &mut Partition) -> bool {
        let c = &mut part.cursors[self.group as usize];
        // A member that left no longer acknowledges: its messages went to the next member.
        if !c.is_member(self.member) || self.offset < c.committed {
            return false;
        }
        let advanced = c.acks.ack(self.offset - c.committed);
        c.committed += advanced;
        if advanced > 0 && std::mem::take(&mut part.waiting) {
            self.topic.rooms[self.partition as usize].notify_waiters();
        }
        advanced > 0
    }
}

/// A member of a group on an ephemeral topic.
struct EphemeralSubscription {
    topic: Arc<Topic>,
    closed: Stop,
    group: String,
    member: u64,
    rx: mpsc::Receiver<Message>,
}

impl Subscription for EphemeralSubscription {
    fn next(&mut self) -> BoxFuture<'_, Option<Delivery>> {
        Box::pin(async move {
            if self.closed.is_set() {
                return None;
            }
            tokio::select! {
                m = self.rx.recv() => m.map(|message| Delivery { message, ack: DeliveryAck::Boxed(Box::new(NoAck)) }),
                _ = self.closed.wait() => None,
            }
        })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut live = lock(&self.topic.live);
            if live
                .get(&self.group)
                .is_some_and(|(m, _)| *m == self.member)
            {
                live.remove(&self.group);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[leakcheck::leak_test]
    fn the_ack_window_advances_over_acknowledged_offsets_only() {
        let mut w = AckWindow::default();
        // 1 and 2 out of order: nothing committed yet.
        assert_eq!(w.ack(1), 0);
        assert_eq!(w.ack(2), 0);
        assert_eq!(w.count, 2);
        assert!(w.is_acked(1) && !w.is_acked(0) && !w.is_acked(7));
        // 0 closes the gap: 0, 1 and 2 are committed.
        assert_eq!(w.ack(0), 3);
        assert_eq!(w.count, 0);
        // A second ack of the same offset counts once.
        assert_eq!(w.ack(1), 0);
        assert_eq!(w.ack(1), 0);
        assert_eq!(w.count, 1);
        // Retention drops offsets 0..3 (1 among them, acknowledged); 3 was acknowledged too,
        // so `committed` moves one further.
        w.ack(3);
        assert_eq!(w.skip(3), 1);
        assert_eq!(w.count, 0);
        assert!(w.flags.is_empty());
        assert_eq!(w.skip(5), 0);
    }

    #[leakcheck::leak_test]
    fn the_log_indexes_across_segments_after_pops() {
        let mut log = Log::default();
        let n = 3 * SEGMENT + 10;
        (0..n).for_each(|i| log.push_back(i));
        assert_eq!((log.len(), log.segments.len()), (n, 4));
        // Pop into the second segment: the first shrinks, then goes.
        for expected in 0..SEGMENT + 5 {
            assert_eq!(log.pop_front(), Some(expected));
        }
        assert_eq!(log.segments.len(), 3);
        assert_eq!(log.len(), n - SEGMENT - 5);
        for i in 0..log.len() {
            assert_eq!(log[i], SEGMENT + 5 + i, "index {i}");
        }
        assert_eq!(log.get(log.len()), None);
        assert_eq!(
            (log.front(), log.back()),
            (Some(&(SEGMENT + 5)), Some(&(n - 1)))
        );
        // Appending fills the last segment before starting another.
        log.push_back(n);
        assert_eq!(log.segments.len(), 3);
        assert_eq!(log[log.len() - 1], n);
        while log.pop_front().is_some() {}
        assert_eq!((log.len(), log.segments.len()), (0, 0));
        assert_eq!(log.front(), None);
    }

    fn stored() -> Stored {
        Stored {
            key: None,
            headers: SharedHeaders::default(),
            payload: Body::Bytes(Bytes::new()),
            at: None,
        }
    }

    #[leakcheck::leak_test]
    fn a_full_partition_counts_present_members_only() {
        let topic = Arc::new(Topic::new(TopicConfig::new("t").unwrap()));
        let mut p = lock(&topic.partitions[0]);
        p.cursors = vec![Cursor::new(0), Cursor::new(0)];
        for _ in 0..3 {
            p.append(stored(), &topic, 0);
        }
        // No member: nothing holds publishers back.
        assert!(!p.full(3));
        p.cursors[1].member = Some((1, Arc::new(Notify::new())));
        assert!(p.full(3));
        assert!(!p.full(4));
        p.cursors[1].committed = 1;
        assert!(!p.full(3));
    }

    #[leakcheck::leak_test]
    fn what_every_group_acknowledged_is_dropped_unless_retained() {
        let topic = Arc::new(Topic::new(TopicConfig::new("t").unwrap()));
        let mut p = lock(&topic.partitions[0]);
        (0..5).for_each(|_| p.append(stored(), &topic, 0));
        // No group yet: everything is kept for the first one.
        assert!(p.take_acknowledged(false).is_empty());
        assert_eq!((p.start, p.log.len()), (0, 5));
        p.cursors = vec![Cursor::new(0), Cursor::new(0)];
        p.cursors[0].committed = 4;
        p.cursors[1].committed = 2;
        // A retention decides alone.
        assert!(p.take_acknowledged(true).is_empty());
        assert_eq!((p.start, p.log.len()), (0, 5));
        // Else up to what the slower group acknowledged.
        assert_eq!(p.take_acknowledged(false).len(), 2);
        assert_eq!((p.start, p.log.len()), (2, 3));
        assert!(p.take_acknowledged(false).is_empty());
        p.cursors[1].committed = 5;
        assert_eq!(p.take_acknowledged(false).len(), 2);
        assert_eq!((p.start, p.log.len(), p.end()), (4, 1, 5));
    }

    /// Takes what it has room for, records the payloads in order and keeps the acks (called
    /// later: an offer runs under the partition's lock, as a worker's ack never does).
    #[derive(Default)]
    struct Queue {
        room: Mutex<usize>,
        got: Mutex<Vec<Bytes>>,
        acks: Mutex<Vec<DeliveryAck>>,
    }

    impl Inbox for Queue {
        fn offer(&self, d: Delivery) -> Result<(), Delivery> {
            let mut room = lock(&self.room);
            if *room == 0 {
                return Err(d);
            }
            *room -= 1;
            lock(&self.got).push(d.message.payload().clone());
            lock(&self.acks).push(d.ack);
            Ok(())
        }
    }

    #[leakcheck::leak_test]
    async fn a_topic_is_made_once_and_a_different_config_refused() {
        let broker = MemoryBroker::new();
        let backend = MemoryBackend::new(&broker);
        let two = TopicConfig::new("made").unwrap().partitions(2);
        backend.create_topic(&two).await.unwrap();
        let made = broker.topic(&two.name).unwrap();
        backend.create_topic(&two).await.unwrap();
        let e = backend
            .create_topic(&two.clone().partitions(3))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("with 2 partition(s)"), "{e}");
        assert!(Arc::ptr_eq(&made, &broker.topic(&two.name).unwrap()));
        // A publish to an unknown topic makes it with the defaults, once.
        let auto = TopicName::new("auto").unwrap();
        assert!(backend.try_publish(&auto, Outbound::new("p")).is_none());
        let defaults = TopicConfig::new("auto").unwrap();
        backend.create_topic(&defaults).await.unwrap();
        let t = broker.topic(&auto).unwrap();
        assert_eq!(t.config.partitions, defaults.partitions);
        assert!(Arc::ptr_eq(&t, &broker.topic_entry(&auto)));
    }

    #[leakcheck::leak_test]
    async fn hand_offs_keep_the_partition_order() {
        let broker = MemoryBroker::new();
        let backend = MemoryBackend::new(&broker);
        let t = TopicName::new("handoff").unwrap();
        let config = TopicConfig::new("handoff").unwrap().partitions(1);
        backend.create_topic(&config).await.unwrap();
        let mut sub = backend.subscribe(&t, "g").await.unwrap();
        let queue = Arc::new(Queue::default());
        *lock(&queue.room) = 2;
        sub.attach(queue.clone());
        let publish = |i: u32| {
            let m = Outbound::new(i.to_string()).key("k");
            assert!(backend.try_publish(&t, m).is_none(), "message {i}");
        };
        let got = || -> Vec<String> {
            lock(&queue.got)
                .iter()
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
                .collect()
        };
        // Caught up: the publish hands 0 and 1 over; 2 and 3 find the queue full.
        (0..4).for_each(publish);
        assert_eq!(got(), ["0", "1"]);
        // The supervisor's take returns 2 (it holds it until queued).
        let held = sub.next().await.unwrap();
        assert_eq!(held.message.payload(), "2");
        // With room again, 4 must not overtake 2 and 3: it waits in the log.
        *lock(&queue.room) = 10;
        publish(4);
        assert_eq!(got(), ["0", "1"]);
        // 2 is queued by the supervisor; its next take queues 3 and 4 and finds nothing else.
        queue.offer(held).ok().unwrap();
        let idle = tokio::time::timeout(std::time::Duration::from_millis(20), sub.next()).await;
        assert!(idle.is_err(), "nothing is left to return");
        assert_eq!(got(), ["0", "1", "2", "3", "4"]);
        // Caught up again: straight from the publish.
        publish(5);
        assert_eq!(got(), ["0", "1", "2", "3", "4", "5"]);
        assert_eq!(backend.lag(&t, "g"), Some(6));
        let acks = std::mem::take(&mut *lock(&queue.acks));
        acks.into_iter().for_each(|a| a.ack());
        assert_eq!(backend.lag(&t, "g"), Some(0));
        sub.close().await;
        backend.close().await.unwrap();
    }
}
