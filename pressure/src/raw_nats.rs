//! The NATS baseline: async-nats used directly, with the bus's delivery semantics. A JetStream
//! stream per topic (file storage, one subject), an acknowledged publish (the publish returns
//! once the stream has the message), and per topic a durable pull consumer with explicit acks,
//! each message acknowledged after it was handled, one at a time (so in order). Close stops
//! the consumers, drains the client and waits until its connection is closed, so its tasks end.

use std::future::Future;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::transport::{
    Acked, Endpoint, Names, Phases, Transport, TransportError, PUBLISH_TIMEOUT,
};

pub(crate) struct RawNats {
    client: Mutex<Option<(async_nats::Client, jetstream::Context)>>,
    closed: Arc<tokio::sync::Notify>,
    subjects: Vec<String>,
    stop: tokio::sync::watch::Sender<bool>,
    consumers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn error(e: impl std::fmt::Display) -> TransportError {
    TransportError::Connect {
        backend: "nats",
        message: e.to_string(),
    }
}

fn stream_name(topic: &str) -> String {
    format!("pressure_{topic}")
}

fn subject(topic: &str) -> String {
    format!("pressure.{topic}")
}

impl RawNats {
    /// Connects and creates a stream per topic.
    pub(crate) async fn connect(
        endpoint: &Endpoint,
        names: &Names,
    ) -> Result<Self, TransportError> {
        let closed = Arc::new(tokio::sync::Notify::new());
        let on_closed = closed.clone();
        let client = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Closed) {
                    on_closed.notify_one();
                }
                async {}
            })
            .connect(endpoint.address.as_str())
            .await
            .map_err(error)?;
        let js = jetstream::ContextBuilder::new()
            .timeout(PUBLISH_TIMEOUT)
            .build(client.clone());
        let raw = RawNats {
            client: Mutex::new(Some((client, js.clone()))),
            closed,
            subjects: names.topics.iter().map(|t| subject(t)).collect(),
            stop: tokio::sync::watch::channel(false).0,
            consumers: Mutex::new(Vec::new()),
        };
        for t in &names.topics {
            let created = js
                .get_or_create_stream(stream::Config {
                    name: stream_name(t),
                    subjects: vec![subject(t)],
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await;
            if let Err(e) = created {
                drop(js);
                let _ = raw.close().await;
                return Err(error(e));
            }
        }
        Ok(raw)
    }

    fn js(&self) -> Option<jetstream::Context> {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, js)| js.clone())
    }
}

impl Transport for RawNats {
    async fn subscribe(&self, names: &Names, phases: Arc<Phases>) -> Result<(), TransportError> {
        let js = self.js().ok_or_else(|| error("the client is closed"))?;
        for t in &names.topics {
            let failed = |e: &dyn std::fmt::Display| TransportError::Subscribe {
                topic: t.clone(),
                message: e.to_string(),
            };
            let stream = js
                .get_stream(stream_name(t))
                .await
                .map_err(|e| failed(&e))?;
            let consumer: consumer::PullConsumer = stream
                .get_or_create_consumer(
                    &names.group,
                    consumer::pull::Config {
                        durable_name: Some(names.group.clone()),
                        deliver_policy: consumer::DeliverPolicy::All,
                        ack_policy: consumer::AckPolicy::Explicit,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| failed(&e))?;
            let mut messages = consumer.messages().await.map_err(|e| failed(&e))?;
            let phases = phases.clone();
            let mut stop = self.stop.subscribe();
            let task = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        m = messages.next() => match m {
                            Some(Ok(m)) => {
                                phases.handle(&m.payload);
                                let _ = m.ack().await;
                            }
                            Some(Err(_)) => continue,
                            None => break,
                        },
                    }
                }
            });
            self.consumers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(task);
        }
        Ok(())
    }

    /// The publish returns once the client has the message; its `PublishAckFuture` is the
    /// acknowledgement.
    fn enqueue(
        &self,
        topic: usize,
        _key: String,
        payload: Bytes,
    ) -> impl Future<Output = Result<Acked, TransportError>> + Send {
        let js = self.js();
        let subject = self.subjects[topic].clone();
        async move {
            let failed = |subject: &str, e: &dyn std::fmt::Display| TransportError::Publish {
                topic: subject.to_string(),
                message: e.to_string(),
            };
            let js = js.ok_or_else(|| failed(&subject, &"the client is closed"))?;
            let ack = js
                .publish(subject.clone(), payload)
                .await
                .map_err(|e| failed(&subject, &e))?;
            Ok(
                Box::pin(async move { ack.await.map(|_| ()).map_err(|e| failed(&subject, &e)) })
                    as Acked,
            )
        }
    }

    async fn close(&self) -> Result<(), TransportError> {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.consumers.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
        let Some((client, js)) = self.client.lock().unwrap_or_else(|e| e.into_inner()).take()
        else {
            return Ok(());
        };
        drop(js);
        let failed = |message: String| TransportError::Close {
            backend: "nats",
            message,
        };
        let drained = client.drain().await;
        drop(client);
        drained.map_err(|e| failed(format!("drain the connection: {e}")))?;
        tokio::time::timeout(PUBLISH_TIMEOUT, self.closed.notified())
            .await
            .map_err(|_| failed("the connection did not close after the drain".into()))
    }
}
