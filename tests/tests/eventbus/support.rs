//! Fixtures: how the suite gets buses on one broker, and how it takes the broker away.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eventbus::{BusBuilder, Compression, EventBus, KafkaConfig, MemoryBroker, NatsConfig};
use leakcheck::{Kind, Report, Survivor};
use leakcheck_tests::brokers::{Broker, Flavor};

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A broker the suite can connect buses to.
pub trait Fixture: Send + Sync {
    /// A new bus on this fixture's broker.
    fn bus(&self, builder: BusBuilder) -> BoxFut<'_, EventBus>;
    /// Takes the broker away (kills it) until [`Fixture::restore`]. `false` when this fixture
    /// cannot (a broker given by the environment).
    fn outage(&self) -> BoxFut<'_, bool>;
    /// Brings the broker back.
    fn restore(&self) -> BoxFut<'_, ()>;
    /// Whether the lag is current while a subscription is blocked by backpressure. librdkafka
    /// reports lag through the consumer's poll, which a blocked subscription does not call;
    /// NATS says how many messages are pending with each delivery, and the pull consumer has
    /// fetched them all into the client by then.
    fn live_lag(&self) -> bool {
        true
    }
    /// Whether the broker keeps its messages across [`Fixture::outage`] (a Tansu with its data
    /// in memory starts empty again).
    fn keeps_messages(&self) -> bool {
        true
    }
}

/// The in-process broker.
pub struct Memory(pub MemoryBroker);

impl Memory {
    pub fn new() -> Self {
        Memory(MemoryBroker::new())
    }
}

impl Fixture for Memory {
    fn bus(&self, builder: BusBuilder) -> BoxFut<'_, EventBus> {
        Box::pin(async move { builder.memory(&self.0) })
    }

    fn outage(&self) -> BoxFut<'_, bool> {
        self.0.pause();
        Box::pin(async { true })
    }

    fn restore(&self) -> BoxFut<'_, ()> {
        self.0.resume();
        Box::pin(async {})
    }
}

/// A real broker: Tansu or nats-server started for the test, or the one the environment
/// names (`KAFKA_BOOTSTRAP_SERVERS`, `NATS_URL`).
pub struct Real {
    broker: tokio::sync::Mutex<Broker>,
    address: String,
    flavor: Flavor,
    durable: bool,
}

impl Real {
    /// Tansu with its data in memory: quick, but a restart loses it.
    pub async fn kafka() -> Self {
        Real::new(Broker::kafka().await, Flavor::Kafka, false)
    }

    /// Tansu with its data in an S3 server: a restart keeps it, as a Kafka broker's does.
    pub async fn kafka_durable() -> Self {
        Real::new(Broker::kafka_durable().await, Flavor::Kafka, true)
    }

    /// nats-server with JetStream's file storage, which a restart keeps.
    pub async fn nats() -> Self {
        Real::new(Broker::nats().await, Flavor::Nats, true)
    }

    fn new(broker: Broker, flavor: Flavor, durable: bool) -> Self {
        Real {
            address: broker.address().to_string(),
            broker: tokio::sync::Mutex::new(broker),
            flavor,
            durable,
        }
    }

    /// The Kafka client settings of the tests: a short session, so that group joins and
    /// rebalances take about a second (Tansu holds a join for about half the session timeout);
    /// zstd, so that compression is exercised; and no idempotence: Tansu keeps producer ids in
    /// memory, so after a restart it refuses an idempotent producer's id for good (and it makes
    /// each new producer wait about a second for one).
    pub fn kafka_config(&self) -> KafkaConfig {
        KafkaConfig::new(&self.address)
            .session_timeout(Duration::from_millis(1000))
            .heartbeat_interval(Duration::from_millis(100))
            .compression(Compression::Zstd)
            .idempotence(false)
    }

    /// The NATS client settings of the tests: a short ack wait, so that a message whose
    /// acknowledgement was lost comes back within the test, and quick reconnects.
    pub fn nats_config(&self) -> NatsConfig {
        NatsConfig::new(&self.address)
            .ack_wait(Duration::from_secs(5))
            .max_reconnect_delay(Duration::from_millis(100))
    }
}

impl Fixture for Real {
    fn bus(&self, builder: BusBuilder) -> BoxFut<'_, EventBus> {
        Box::pin(async move {
            match self.flavor {
                Flavor::Kafka => builder.kafka(self.kafka_config()).await.unwrap(),
                Flavor::Nats => builder.nats(self.nats_config()).await.unwrap(),
            }
        })
    }

    fn outage(&self) -> BoxFut<'_, bool> {
        Box::pin(async move {
            let mut b = self.broker.lock().await;
            if !b.is_owned() {
                eprintln!(
                    "the broker is external: this test cannot take it away, and checks nothing"
                );
                return false;
            }
            b.kill();
            true
        })
    }

    fn restore(&self) -> BoxFut<'_, ()> {
        Box::pin(async move { self.broker.lock().await.restart().await })
    }

    fn live_lag(&self) -> bool {
        false
    }

    fn keeps_messages(&self) -> bool {
        self.durable
    }
}

/// Whether `r` reports a `kind` survivor of `component` (or a component under it) as a leak, and
/// none of that component as known: a deliberately broken bus must fail, not be excused.
pub fn leaks(r: &Report, kind: Kind, component: &str) -> bool {
    let of = |s: &&Survivor| s.kind == kind && s.component.starts_with(component);
    r.unknown().any(|s| of(&s)) && !r.known().any(|s| of(&s))
}

/// A topic name no other test uses (tests may share a broker).
pub fn topic(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A group name no other test uses: a group is shared by every topic of a broker, and tests
/// may share one (`KAFKA_BOOTSTRAP_SERVERS`). Tansu, for one, never completes a join when one
/// group's members subscribe to different topics.
pub fn group(topic: &str, name: &str) -> String {
    format!("{topic}-{name}")
}

/// Waits until `done()` holds, polling every millisecond, for at most `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
