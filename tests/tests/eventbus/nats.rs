//! The suite on a NATS server with JetStream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::{
    CloseError, ConnectError, Durability, EventBus, NatsConfig, Outbound, Storage, TopicConfig,
};
use leakcheck::{leak_test, Kind};
use leakcheck_tests::scenarios::release;

use crate::suite;
use crate::support::{group, leaks, topic, wait_until, Fixture, Real};

suite_on!(Real::nats().await;
    rebalance,
    restart_mid_stream,
    ordering,
    pipelined,
    keys,
    redelivery,
    dead_letter_topic,
    undecodable_envelope,
    backpressure,
    close_under_load,
    resumes_after_close,
    double_close,
    outage,
);

/// What the NATS backend starts and what must be gone after close, reviewed as a snapshot.
/// Child processes are left out: the broker this test starts is one (and an external broker is
/// none), and the bus starts none; every other test checks them.
#[leak_test(
    flavor = "multi_thread",
    worker_threads = 2,
    snapshot,
    kinds = ["tasks", "threads", "fds"]
)]
async fn lifecycle() {
    suite::lifecycle(&Real::nats().await).await;
}

/// The broken variant: a bus that is never closed keeps its NATS client, whose tasks and
/// connection stay with it. Run by `a_forgotten_nats_bus_is_caught`, which drops it after the
/// check.
#[leak_test(flavor = "multi_thread", worker_threads = 2, settle = "300ms")]
#[ignore = "a deliberate leak: `a_forgotten_nats_bus_is_caught` runs it"]
async fn forgets_to_close() {
    suite::forgets_to_close(Real::nats().await, "forgotten-nats-bus").await;
}

#[test]
fn a_forgotten_nats_bus_is_caught() {
    let reports = leakcheck::__private::capture(forgets_to_close);
    release("forgotten-nats-bus");
    let r = &reports[0];
    assert!(!r.is_clean());
    // The subscription's tasks and the client's tasks. (The connection itself closes when the
    // runtime's shutdown drops the client's tasks; the server this test started is reported
    // too, as a child.)
    assert!(leaks(r, Kind::Task, "eventbus"), "{}", r.to_text());
    assert!(leaks(r, Kind::Task, "async-nats"), "{}", r.to_text());
    // Filed under the crate that spawned them, pointing at the line that called it, with a
    // hint about the owner and a portable rule.
    let text = r.to_text();
    let in_connect = |s: &&leakcheck::Survivor| {
        s.user_frame
            .as_ref()
            .and_then(|f| f.file.as_deref())
            .is_some_and(|f| f == "eventbus/src/backend/nats/mod.rs")
    };
    let client = r
        .unknown()
        .filter(|s| s.component == "async-nats")
        .find(in_connect)
        .unwrap_or_else(|| panic!("a client task spawned from the bus's connect:\n{text}"));
    let via = client.via.as_ref().expect("the library function called");
    assert!(via.function.starts_with("async_nats::"), "{via:?}");
    assert!(
        text.contains("hint: the `async-nats` task that `async_nats::"),
        "{text}"
    );
    assert!(text.contains("component = '^async\\-nats$'"), "{text}");
}

#[leak_test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_or_a_bad_setting_is_a_typed_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let e = EventBus::builder()
        .nats(NatsConfig::new(&url).connect_timeout(Duration::from_millis(500)))
        .await
        .err()
        .expect("nobody listens there");
    assert!(matches!(e, ConnectError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains(&url), "{e}");
    let e = EventBus::builder()
        .nats(NatsConfig::new(&url).prefix("a.b"))
        .await
        .err()
        .expect("a prefix with a dot is refused");
    assert!(matches!(e, ConnectError::Config { .. }), "{e}");
    assert!(e.to_string().contains("\"a.b\""), "{e}");
}

/// Ephemeral topics are core NATS: a message reaches the subscribers present, once.
#[leak_test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_topics_reach_present_subscribers_only() {
    let nats = Real::nats().await;
    let bus = nats.bus(EventBus::builder()).await;
    let t = topic("ephemeral");
    let config = TopicConfig::new(&t)
        .unwrap()
        .durability(Durability::Ephemeral);
    bus.create_topic(config).await.unwrap();
    bus.publish(&t, Outbound::new("nobody listens"))
        .await
        .unwrap();
    let seen = suite::payloads(&bus, &t, "live").await;
    bus.publish(&t, Outbound::new("heard").key("k"))
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "the live message", || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    bus.close().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), ["heard"]);
}

/// A topic in memory storage works like one on file.
#[leak_test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_storage_topics_deliver() {
    let nats = Real::nats().await;
    let bus = nats.bus(EventBus::builder()).await;
    let t = topic("in-memory");
    bus.create_topic(TopicConfig::new(&t).unwrap().storage(Storage::Memory))
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    bus.subscribe(&t, &group(&t, "g"), move |m| {
        s.lock().unwrap().push(m.key().map(<[u8]>::to_vec));
        async { Ok::<_, std::io::Error>(()) }
    })
    .await
    .unwrap();
    bus.publish(&t, Outbound::new("x").key(&b"\xff binary key"[..]))
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "the message", || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    bus.close().await.unwrap();
    // The key travels in a header, binary bytes included.
    assert_eq!(*seen.lock().unwrap(), [Some(b"\xff binary key".to_vec())]);
}

/// Shutting down while the server is away: the bus's own tasks end and close returns in
/// time, but async-nats has no hard close, so its connection tasks keep reconnecting until the
/// runtime ends. Close says so; the rule `nats-reconnecting` files those two tasks as known.
#[leak_test(flavor = "multi_thread", worker_threads = 2, allow = ["nats-reconnecting"])]
async fn close_while_down() {
    let nats = Real::nats().await;
    let Some(closed) = suite::close_while_down(&nats).await else {
        return;
    };
    let e = closed.unwrap_err();
    assert!(matches!(e, CloseError::Backend { .. }), "{e}");
    assert!(e.to_string().contains("did not close"), "{e}");
}
