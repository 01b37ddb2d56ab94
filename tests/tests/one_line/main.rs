//! A suite of plain `#[tokio::test]`s of the event bus's memory backend, as a team writes them,
//! leak-checked by one line: `leakcheck::check_test_binary!()` below. Nothing else here knows
//! about leakcheck.
//!
//! One test leaks on purpose when `LEAKCHECK_DEMO_LEAK=1` is set (a forwarding thread it never
//! joins); `driver.rs` runs this binary with it set and checks what the report says.

leakcheck::check_test_binary!();

mod driver;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::{
    DeadLetter, DeadLetterPolicy, DeadLetterReason, Durability, Envelope, EventBus, MemoryBroker,
    Outbound, PublishError, RetryPolicy, SubscribeError, TopicConfig, TopicError,
};

/// Waits until `done()` holds, for at most five seconds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Subscribes `group` to `topic`, recording each payload in the order handled.
async fn record(bus: &EventBus, topic: &str, group: &str) -> Arc<Mutex<Vec<String>>> {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    bus.subscribe(topic, group, move |m| {
        s.lock()
            .unwrap()
            .push(String::from_utf8(m.payload().to_vec()).unwrap());
        async { Ok::<_, std::io::Error>(()) }
    })
    .await
    .unwrap();
    seen
}

fn len(seen: &Arc<Mutex<Vec<String>>>) -> usize {
    seen.lock().unwrap().len()
}

fn bus() -> (MemoryBroker, EventBus) {
    let broker = MemoryBroker::new();
    let bus = EventBus::builder().memory(&broker);
    (broker, bus)
}

#[tokio::test]
async fn a_published_message_is_handled() {
    let (_broker, bus) = bus();
    let seen = record(&bus, "orders", "billing").await;
    bus.publish("orders", Outbound::new("order-1"))
        .await
        .unwrap();
    eventually("one message", || len(&seen) == 1).await;
    bus.close().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), ["order-1"]);
}

#[tokio::test]
async fn messages_of_one_key_are_handled_in_publish_order() {
    let (_broker, bus) = bus();
    let seen = record(&bus, "orders", "billing").await;
    for i in 0..50 {
        bus.publish("orders", Outbound::new(i.to_string()).key("customer-7"))
            .await
            .unwrap();
    }
    eventually("50 messages", || len(&seen) == 50).await;
    bus.close().await.unwrap();
    let expected: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    assert_eq!(*seen.lock().unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_keeps_its_order_when_many_tasks_publish() {
    let (_broker, bus) = bus();
    let seen = record(&bus, "events", "audit").await;
    let mut publishers = Vec::new();
    for key in 0..4 {
        let bus = bus.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..25 {
                bus.publish(
                    "events",
                    Outbound::new(format!("{key}:{i}")).key(key.to_string()),
                )
                .await
                .unwrap();
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    eventually("100 messages", || len(&seen) == 100).await;
    bus.close().await.unwrap();
    let seen = seen.lock().unwrap();
    for key in 0..4 {
        let of_key: Vec<&String> = seen
            .iter()
            .filter(|m| m.starts_with(&format!("{key}:")))
            .collect();
        let expected: Vec<String> = (0..25).map(|i| format!("{key}:{i}")).collect();
        assert_eq!(of_key, expected.iter().collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn two_groups_each_get_every_message() {
    let (_broker, bus) = bus();
    let billing = record(&bus, "orders", "billing").await;
    let shipping = record(&bus, "orders", "shipping").await;
    for i in 0..3 {
        bus.publish("orders", Outbound::new(format!("o{i}")))
            .await
            .unwrap();
    }
    eventually("3 messages per group", || {
        len(&billing) == 3 && len(&shipping) == 3
    })
    .await;
    bus.close().await.unwrap();
    assert_eq!(*billing.lock().unwrap(), *shipping.lock().unwrap());
}

#[tokio::test]
async fn a_group_subscribes_once() {
    let (_broker, bus) = bus();
    record(&bus, "orders", "billing").await;
    let e = bus
        .subscribe("orders", "billing", |_m| async {
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap_err();
    assert!(matches!(e, SubscribeError::AlreadySubscribed { .. }), "{e}");
    bus.close().await.unwrap();
}

#[tokio::test]
async fn two_buses_on_one_broker_talk_to_each_other() {
    let broker = MemoryBroker::new();
    let producer = EventBus::builder().memory(&broker);
    let consumer = EventBus::builder().memory(&broker);
    let seen = record(&consumer, "payments", "ledger").await;
    producer
        .publish("payments", Outbound::new("paid"))
        .await
        .unwrap();
    eventually("the payment", || len(&seen) == 1).await;
    producer.close().await.unwrap();
    consumer.close().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), ["paid"]);
}

#[tokio::test]
async fn key_and_headers_reach_the_handler() {
    let (_broker, bus) = bus();
    /// The key and the `tenant` header the handler saw.
    type Seen = Option<(Vec<u8>, Option<String>)>;
    let got: Arc<Mutex<Seen>> = Arc::default();
    let g = got.clone();
    bus.subscribe("orders", "billing", move |m| {
        let tenant = m.headers().get("tenant").cloned();
        *g.lock().unwrap() = Some((m.key().unwrap_or_default().to_vec(), tenant));
        async { Ok::<_, std::io::Error>(()) }
    })
    .await
    .unwrap();
    bus.publish(
        "orders",
        Outbound::new("o1")
            .key("customer-1")
            .header("tenant", "acme"),
    )
    .await
    .unwrap();
    eventually("the message", || got.lock().unwrap().is_some()).await;
    bus.close().await.unwrap();
    let (key, tenant) = got.lock().unwrap().clone().unwrap();
    assert_eq!(key, b"customer-1");
    assert_eq!(tenant.as_deref(), Some("acme"));
}

#[tokio::test]
async fn an_envelope_arrives_as_sent() {
    let (_broker, bus) = bus();
    let got: Arc<Mutex<Vec<Envelope>>> = Arc::default();
    let g = got.clone();
    bus.subscribe_envelopes("accounts", "projector", move |e| {
        g.lock().unwrap().push(e);
        async { Ok::<_, std::io::Error>(()) }
    })
    .await
    .unwrap();
    let sent = Envelope::new("account-42", "AccountOpened", 1, "{}")
        .unwrap()
        .with_trace_id("trace-1");
    bus.publish_envelope("accounts", &sent).await.unwrap();
    eventually("the envelope", || got.lock().unwrap().len() == 1).await;
    bus.close().await.unwrap();
    let got = got.lock().unwrap();
    assert_eq!(got[0].event_id(), sent.event_id());
    assert_eq!(got[0].aggregate_id(), "account-42");
    assert_eq!(got[0].event_type(), "AccountOpened");
    assert_eq!(got[0].trace_id(), Some("trace-1"));
}

#[tokio::test]
async fn an_invalid_envelope_is_refused() {
    assert!(Envelope::new("has space", "AccountOpened", 1, "{}").is_err());
    assert!(Envelope::new("account-1", "AccountOpened", 0, "{}").is_err());
    assert!(Envelope::new("account-1", "", 1, "{}").is_err());
}

#[tokio::test]
async fn an_invalid_topic_name_is_refused() {
    let (_broker, bus) = bus();
    let e = bus
        .publish("no spaces", Outbound::new("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, PublishError::Topic(TopicError::InvalidName { .. })),
        "{e}"
    );
    let e = bus.publish("", Outbound::new("x")).await.unwrap_err();
    assert!(matches!(e, PublishError::Topic(_)), "{e}");
    bus.close().await.unwrap();
}

#[tokio::test]
async fn an_oversized_payload_is_refused() {
    let broker = MemoryBroker::new();
    let bus = EventBus::builder().max_payload_bytes(8).memory(&broker);
    let e = bus
        .publish("orders", Outbound::new("nine bytes"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            PublishError::TooLarge {
                size: 10,
                limit: 8,
                ..
            }
        ),
        "{e}"
    );
    bus.publish("orders", Outbound::new("8 bytes!"))
        .await
        .unwrap();
    bus.close().await.unwrap();
}

#[tokio::test]
async fn a_closed_bus_refuses_work() {
    let (_broker, bus) = bus();
    bus.close().await.unwrap();
    assert!(bus.is_closed());
    let e = bus
        .publish("orders", Outbound::new("late"))
        .await
        .unwrap_err();
    assert!(matches!(e, PublishError::Closed), "{e}");
    let e = bus
        .subscribe("orders", "late", |_m| async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap_err();
    assert!(matches!(e, SubscribeError::Closed), "{e}");
    let e = bus
        .create_topic(TopicConfig::new("late").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, TopicError::Closed), "{e}");
}

#[tokio::test]
async fn closing_twice_is_fine() {
    let (_broker, bus) = bus();
    record(&bus, "orders", "billing").await;
    bus.close().await.unwrap();
    bus.close().await.unwrap();
    assert!(bus.is_closed());
}

#[tokio::test]
async fn closing_concurrently_is_fine() {
    let (_broker, bus) = bus();
    record(&bus, "orders", "billing").await;
    let (a, b) = tokio::join!(bus.close(), bus.close());
    a.unwrap();
    b.unwrap();
}

#[tokio::test]
async fn close_lets_a_running_handler_finish() {
    let (_broker, bus) = bus();
    let done = Arc::new(AtomicU32::new(0));
    let started = Arc::new(AtomicU32::new(0));
    let (d, s) = (done.clone(), started.clone());
    bus.subscribe("orders", "slow", move |_m| {
        let (d, s) = (d.clone(), s.clone());
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            d.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        }
    })
    .await
    .unwrap();
    bus.publish("orders", Outbound::new("o1")).await.unwrap();
    eventually("the handler to start", || {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    bus.close().await.unwrap();
    assert_eq!(done.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failing_handler_is_retried_until_it_succeeds() {
    let broker = MemoryBroker::new();
    let bus = EventBus::builder()
        .retry(RetryPolicy {
            max_attempts: 5,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        })
        .memory(&broker);
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    bus.subscribe("orders", "flaky", move |m| {
        let n = a.fetch_add(1, Ordering::SeqCst) + 1;
        assert_eq!(m.attempt(), n);
        async move {
            if n < 3 {
                Err(std::io::Error::other("not yet"))
            } else {
                Ok(())
            }
        }
    })
    .await
    .unwrap();
    bus.publish("orders", Outbound::new("o1")).await.unwrap();
    eventually("the third attempt", || bus.metrics().handled == 1).await;
    bus.close().await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(bus.metrics().redeliveries, 2);
    assert_eq!(bus.metrics().handler_errors, 2);
}

#[tokio::test]
async fn a_message_that_always_fails_is_dead_lettered() {
    let broker = MemoryBroker::new();
    let dead: Arc<Mutex<Vec<DeadLetter>>> = Arc::default();
    let d = dead.clone();
    let bus = EventBus::builder()
        .retry(RetryPolicy {
            max_attempts: 2,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        })
        .dead_letter(DeadLetterPolicy::Callback(Arc::new(move |l| {
            d.lock().unwrap().push(l)
        })))
        .memory(&broker);
    bus.subscribe("orders", "broken", |_m| async {
        Err::<(), _>(std::io::Error::other("always"))
    })
    .await
    .unwrap();
    bus.publish("orders", Outbound::new("poison"))
        .await
        .unwrap();
    eventually("the dead letter", || dead.lock().unwrap().len() == 1).await;
    bus.close().await.unwrap();
    let dead = dead.lock().unwrap();
    assert_eq!(dead[0].group, "broken");
    assert_eq!(dead[0].message.payload().as_ref(), b"poison");
    assert!(
        matches!(
            &dead[0].reason,
            DeadLetterReason::HandlerFailed { attempts: 2, .. }
        ),
        "{:?}",
        dead[0].reason
    );
}

#[tokio::test]
async fn metrics_count_what_was_published_and_handled() {
    let (_broker, bus) = bus();
    let seen = record(&bus, "orders", "billing").await;
    for i in 0..7 {
        bus.publish("orders", Outbound::new(i.to_string()))
            .await
            .unwrap();
    }
    eventually("7 messages", || len(&seen) == 7).await;
    eventually("7 acknowledged", || bus.metrics().handled == 7).await;
    bus.close().await.unwrap();
    let m = bus.metrics();
    assert_eq!(m.published, 7);
    assert_eq!(m.delivered, 7);
    assert_eq!(m.publish_errors, 0);
}

#[tokio::test]
async fn a_healthy_bus_reports_no_error() {
    let (_broker, bus) = bus();
    record(&bus, "orders", "billing").await;
    bus.publish("orders", Outbound::new("o1")).await.unwrap();
    assert_eq!(bus.health().last_error, None);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn a_refused_publish_is_the_last_error() {
    let (_broker, bus) = bus();
    let _ = bus.publish("bad name", Outbound::new("x")).await;
    let last = bus.health().last_error.expect("an error");
    assert!(last.contains("bad name"), "{last}");
    bus.close().await.unwrap();
}

#[tokio::test]
async fn a_durable_topic_keeps_what_was_published() {
    let (broker, bus) = bus();
    bus.create_topic(TopicConfig::new("ledger").unwrap())
        .await
        .unwrap();
    for i in 0..4 {
        bus.publish("ledger", Outbound::new(i.to_string()))
            .await
            .unwrap();
    }
    assert_eq!(broker.stored("ledger"), 4);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn an_ephemeral_topic_reaches_present_subscribers_only() {
    let (broker, bus) = bus();
    bus.create_topic(
        TopicConfig::new("presence")
            .unwrap()
            .durability(Durability::Ephemeral),
    )
    .await
    .unwrap();
    bus.publish("presence", Outbound::new("nobody listens"))
        .await
        .unwrap();
    let seen = record(&bus, "presence", "live").await;
    bus.publish("presence", Outbound::new("heard"))
        .await
        .unwrap();
    eventually("the live message", || len(&seen) == 1).await;
    bus.close().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), ["heard"]);
    assert_eq!(broker.stored("presence"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_does_not_block_publishing() {
    let (_broker, bus) = bus();
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    bus.subscribe("orders", "slow", move |_m| {
        let h = h.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            h.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        }
    })
    .await
    .unwrap();
    for i in 0..5 {
        bus.publish("orders", Outbound::new(i.to_string()))
            .await
            .unwrap();
    }
    assert_eq!(bus.metrics().published, 5);
    eventually("5 handled", || handled.load(Ordering::SeqCst) == 5).await;
    bus.close().await.unwrap();
}

/// Forwards what the bus hands it to a blocking sink on a thread of its own, as code that
/// talks to a synchronous client does; the thread ends when the sender is dropped.
#[tokio::test]
async fn forwarder_thread_is_joined() {
    let (_broker, bus) = bus();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let sink = std::thread::spawn(move || rx.iter().count());
    let spare = tx.clone();
    let tx = Mutex::new(tx);
    bus.subscribe("orders", "forwarder", move |m| {
        let _ = tx
            .lock()
            .unwrap()
            .send(String::from_utf8_lossy(m.payload()).into_owned());
        async { Ok::<_, std::io::Error>(()) }
    })
    .await
    .unwrap();
    bus.publish("orders", Outbound::new("o1")).await.unwrap();
    eventually("the forwarded message", || bus.metrics().handled == 1).await;
    bus.close().await.unwrap();
    drop(bus);
    if std::env::var_os("LEAKCHECK_DEMO_LEAK").is_some() {
        // The bug this demo shows: a spare sender outlives the test (kept in a cache, say),
        // so the thread never ends.
        std::mem::forget(spare);
        return;
    }
    drop(spare);
    assert_eq!(sink.join().unwrap(), 1);
}

/// A test already converted to `#[leak_test]` runs its own exact check (tasks included) inside
/// the binary's; with the demo leak on, it leaks a thread and fails by its own report, and the
/// binary's check does not report that thread again.
#[leakcheck::leak_test(flavor = "multi_thread", worker_threads = 2)]
async fn converted_test_checks_itself() {
    let (_broker, bus) = bus();
    let seen = record(&bus, "orders", "billing").await;
    bus.publish("orders", Outbound::new("o1")).await.unwrap();
    eventually("one message", || len(&seen) == 1).await;
    bus.close().await.unwrap();
    if std::env::var_os("LEAKCHECK_DEMO_LEAK").is_some() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || rx.recv());
        std::mem::forget(tx);
    }
}
