//! The suite on a NATS server with JetStream.

use eventbus::EventBus;
use leakcheck::{leak_test, Kind, Status};
use leakcheck_tests::scenarios::{park, release};

use crate::suite;
use crate::support::{topic, Fixture, Nats};

macro_rules! on_nats {
    ($($name:ident),* $(,)?) => {
        $(
            #[leak_test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                suite::$name(&Nats::start().await).await;
            }
        )*
    };
}

on_nats!(
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

/// What the NATS backend starts and what must be gone after close, reviewed as a snapshot.
#[leak_test(flavor = "multi_thread", worker_threads = 2, snapshot)]
async fn lifecycle() {
    suite::lifecycle(&Nats::start().await).await;
}

/// The broken variant: a bus that is never closed keeps its NATS client, whose tasks and
/// connection stay with it. Run by `a_forgotten_nats_bus_is_caught`, which drops it after the
/// check.
#[leak_test(flavor = "multi_thread", worker_threads = 2, settle = "300ms")]
#[ignore = "a deliberate leak: `a_forgotten_nats_bus_is_caught` runs it"]
async fn forgets_to_close() {
    let nats = Nats::start().await;
    let bus = nats.bus(EventBus::builder()).await;
    bus.subscribe(&topic("forgotten"), "g", |_m| async {
        Ok::<_, std::io::Error>(())
    })
    .await
    .unwrap();
    park("forgotten-nats-bus", vec![Box::new(bus), Box::new(nats)]);
}

#[test]
fn a_forgotten_nats_bus_is_caught() {
    let reports = leakcheck::__private::capture(forgets_to_close);
    release("forgotten-nats-bus");
    let r = &reports[0];
    assert!(!r.is_clean());
    let unknown: Vec<_> = r.unknown().collect();
    let has = |kind: Kind, component: &str| {
        unknown
            .iter()
            .any(|s| s.kind == kind && s.component.starts_with(component))
    };
    // The subscription's tasks, the client's tasks, and the server process. (The connection
    // itself closes when the runtime's shutdown drops the client's tasks.)
    assert!(has(Kind::Task, "eventbus"), "{}", r.to_text());
    assert!(has(Kind::Task, "async-nats"), "{}", r.to_text());
    assert!(has(Kind::Child, "nats-server"), "{}", r.to_text());
    assert!(unknown.iter().all(|s| s.status == Status::Unknown));
}
