//! The suite on a Kafka-compatible broker.

use eventbus::EventBus;
use leakcheck::{leak_test, Kind, Status};
use leakcheck_tests::scenarios::{park, release};

use crate::suite;
use crate::support::{topic, Fixture, Kafka};

macro_rules! on_kafka {
    ($($name:ident),* $(,)?) => {
        $(
            #[leak_test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                suite::$name(&Kafka::start().await).await;
            }
        )*
    };
}

on_kafka!(
    restart_mid_stream,
    ordering,
    redelivery,
    dead_letter_topic,
    undecodable_envelope,
    backpressure,
    close_under_load,
    double_close,
    outage,
);

/// What the Kafka backend starts and what must be gone after close, reviewed as a snapshot.
#[leak_test(flavor = "multi_thread", worker_threads = 2, snapshot)]
async fn lifecycle() {
    suite::lifecycle(&Kafka::start().await).await;
}

/// The broken variant: a bus that is never closed keeps its producer, admin and consumer
/// clients, so librdkafka's threads and its connections to the broker stay. Run by
/// `a_forgotten_kafka_bus_is_caught`, which drops it after the check.
#[leak_test(flavor = "multi_thread", worker_threads = 2, settle = "300ms")]
#[ignore = "a deliberate leak: `a_forgotten_kafka_bus_is_caught` runs it"]
async fn forgets_to_close() {
    let kafka = Kafka::start().await;
    let bus = kafka.bus(EventBus::builder()).await;
    bus.subscribe(&topic("forgotten"), "g", |_m| async {
        Ok::<_, std::io::Error>(())
    })
    .await
    .unwrap();
    park("forgotten-kafka-bus", vec![Box::new(bus), Box::new(kafka)]);
}

#[test]
fn a_forgotten_kafka_bus_is_caught() {
    let reports = leakcheck::__private::capture(forgets_to_close);
    release("forgotten-kafka-bus");
    let r = &reports[0];
    assert!(!r.is_clean());
    let unknown: Vec<_> = r.unknown().collect();
    let has = |kind: Kind, component: &str| {
        unknown
            .iter()
            .any(|s| s.kind == kind && s.component.starts_with(component))
    };
    // The subscription's tasks, librdkafka's threads and sockets, and the broker process.
    assert!(has(Kind::Task, "eventbus"), "{}", r.to_text());
    assert!(has(Kind::Thread, "rdkafka"), "{}", r.to_text());
    assert!(has(Kind::Fd, "tcp"), "{}", r.to_text());
    assert!(has(Kind::Child, "tansu"), "{}", r.to_text());
    assert!(unknown.iter().all(|s| s.status == Status::Unknown));
    assert!(unknown.iter().any(
        |s| s.kind == Kind::Thread && s.name.as_deref().is_some_and(|n| n.starts_with("rdk:"))
    ));
}
