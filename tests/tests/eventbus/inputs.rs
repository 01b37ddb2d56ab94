//! Bad input is a typed error with a clear message, and nothing already accepted is lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use eventbus::{
    Envelope, EnvelopeError, EventBus, MemoryBroker, Outbound, PublishError, SubscribeError,
    TopicConfig, TopicError,
};
use leakcheck::leak_test;

use crate::support::{topic, wait_until};

#[leak_test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_accepted_is_lost() {
    let broker = MemoryBroker::new();
    let bus = EventBus::builder().max_payload_bytes(64).memory(&broker);
    let t = topic("inputs");
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    bus.subscribe(&t, "g", move |_m| {
        h.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, std::io::Error>(()) }
    })
    .await
    .unwrap();
    bus.publish(&t, Outbound::new("accepted before"))
        .await
        .unwrap();

    // Topic names.
    for bad in ["", "has space", "slash/no", &"x".repeat(201)] {
        let e = bus.publish(bad, Outbound::new("x")).await.unwrap_err();
        assert!(
            matches!(e, PublishError::Topic(TopicError::InvalidName { .. })),
            "{bad:?}: {e}"
        );
        assert!(e.to_string().starts_with("publish: use topic name"), "{e}");
    }
    // Group names.
    let e = bus
        .subscribe(&t, "bad group", |_m| async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap_err();
    assert!(matches!(e, SubscribeError::Group { .. }), "{e}");
    // A second subscription on the same topic and group.
    let e = bus
        .subscribe(&t, "g", |_m| async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap_err();
    assert!(matches!(e, SubscribeError::AlreadySubscribed { .. }), "{e}");
    // Oversized payloads.
    let e = bus
        .publish(&t, Outbound::new(vec![0u8; 65]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            PublishError::TooLarge {
                size: 65,
                limit: 64,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("65 bytes, over the limit of 64"),
        "{e}"
    );
    // Envelopes.
    assert_eq!(
        Envelope::new("a", "T", 0, "x").unwrap_err(),
        EnvelopeError::Version
    );
    let e = Envelope::new("not-valid!", "T", 1, "x").unwrap_err();
    assert!(e.to_string().contains("'!' is not allowed"), "{e}");
    // Topic configurations.
    let e = bus
        .create_topic(TopicConfig::new("cfg").unwrap().partitions(0))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("partitions must be at least 1"),
        "{e}"
    );

    bus.publish(&t, Outbound::new("accepted after"))
        .await
        .unwrap();
    wait_until(
        std::time::Duration::from_secs(30),
        "both accepted messages",
        || handled.load(Ordering::SeqCst) == 2,
    )
    .await;
    bus.close().await.unwrap();
    let m = bus.metrics();
    assert_eq!((m.published, m.handled), (2, 2));
    assert_eq!(m.publish_errors, 5);
    // After close: typed errors.
    assert!(matches!(
        bus.publish(&t, Outbound::new("late")).await,
        Err(PublishError::Closed)
    ));
    assert!(matches!(
        bus.create_topic(TopicConfig::new("late").unwrap()).await,
        Err(TopicError::Closed)
    ));
}
