//! The envelope: an event with its identity and metadata, and its JSON wire format.
//!
//! ```
//! use eventbus::Envelope;
//! let e = Envelope::new("order-42", "OrderPlaced", 1, b"{\"total\":10}".to_vec()).unwrap()
//!     .with_correlation_id("req-7");
//! let wire = e.to_wire();
//! assert_eq!(Envelope::from_wire(&wire).unwrap(), e);
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::EnvelopeError;
use crate::message::Headers;

/// The wire format version this crate writes; it reads this version only.
pub const WIRE_FORMAT_VERSION: u32 = 1;

/// The longest aggregate id accepted, in bytes.
pub const MAX_AGGREGATE_ID: usize = 256;

/// An event: which aggregate it belongs to (the ordering key), what it is, when it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    event_id: String,
    aggregate_id: String,
    event_type: String,
    event_version: u32,
    timestamp: SystemTime,
    trace_id: Option<String>,
    correlation_id: Option<String>,
    headers: Headers,
    payload: Bytes,
}

impl Envelope {
    /// A new event with a random `event_id` and the current time. The aggregate id must be 1 to
    /// [`MAX_AGGREGATE_ID`] bytes of `[A-Za-z0-9._:-]`; the version at least 1.
    pub fn new(
        aggregate_id: impl Into<String>,
        event_type: impl Into<String>,
        event_version: u32,
        payload: impl Into<Bytes>,
    ) -> Result<Self, EnvelopeError> {
        let e = Envelope {
            event_id: uuid::Uuid::new_v4().to_string(),
            aggregate_id: aggregate_id.into(),
            event_type: event_type.into(),
            event_version,
            // Millisecond precision, as on the wire: a round trip gives the same envelope.
            timestamp: to_millis(SystemTime::now()),
            trace_id: None,
            correlation_id: None,
            headers: Headers::new(),
            payload: payload.into(),
        };
        e.validate()?;
        Ok(e)
    }

    /// Sets the trace id.
    pub fn with_trace_id(mut self, id: impl Into<String>) -> Self {
        self.trace_id = Some(id.into());
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the event id (for example to re-publish an event under its own identity).
    pub fn with_event_id(mut self, id: impl Into<String>) -> Self {
        self.event_id = id.into();
        self
    }

    /// The unique id of this event.
    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    /// The aggregate it belongs to: events of one aggregate are handled in publish order.
    pub fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }

    /// What happened.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The version of the event type's schema.
    pub fn event_version(&self) -> u32 {
        self.event_version
    }

    /// When it happened (millisecond precision on the wire).
    pub fn timestamp(&self) -> SystemTime {
        self.timestamp
    }

    /// The trace id, if any.
    pub fn trace_id(&self) -> Option<&str> {
        self.trace_id.as_deref()
    }

    /// The correlation id, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    pub(crate) fn validate(&self) -> Result<(), EnvelopeError> {
        validate_aggregate_id(&self.aggregate_id)?;
        if self.event_version == 0 {
            return Err(EnvelopeError::Version);
        }
        if self.event_type.trim().is_empty() {
            return Err(EnvelopeError::EventType);
        }
        Ok(())
    }

    /// The JSON wire form (`{"v":1, ...}`, payload in base64).
    pub fn to_wire(&self) -> Bytes {
        let wire = Wire {
            v: WIRE_FORMAT_VERSION,
            event_id: self.event_id.clone(),
            aggregate_id: self.aggregate_id.clone(),
            event_type: self.event_type.clone(),
            event_version: self.event_version,
            timestamp_ms: self
                .timestamp
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            trace_id: self.trace_id.clone(),
            correlation_id: self.correlation_id.clone(),
            headers: self.headers.clone(),
            payload: base64::engine::general_purpose::STANDARD.encode(&self.payload),
        };
        serde_json::to_vec(&wire)
            .expect("an envelope always serializes")
            .into()
    }

    /// Decodes and validates the wire form.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| {
            // Say which version it was when that is the problem.
            match serde_json::from_slice::<VersionOnly>(bytes) {
                Ok(VersionOnly { v }) if v != WIRE_FORMAT_VERSION => EnvelopeError::Decode(
                    format!("wire format version {v} is not supported (this build reads {WIRE_FORMAT_VERSION})"),
                ),
                _ => EnvelopeError::Decode(e.to_string()),
            }
        })?;
        if wire.v != WIRE_FORMAT_VERSION {
            return Err(EnvelopeError::Decode(format!(
                "wire format version {} is not supported (this build reads {WIRE_FORMAT_VERSION})",
                wire.v
            )));
        }
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&wire.payload)
            .map_err(|e| EnvelopeError::Decode(format!("payload is not base64: {e}")))?;
        let e = Envelope {
            event_id: wire.event_id,
            aggregate_id: wire.aggregate_id,
            event_type: wire.event_type,
            event_version: wire.event_version,
            timestamp: UNIX_EPOCH + Duration::from_millis(wire.timestamp_ms),
            trace_id: wire.trace_id,
            correlation_id: wire.correlation_id,
            headers: wire.headers,
            payload: payload.into(),
        };
        e.validate()?;
        Ok(e)
    }
}

fn to_millis(t: SystemTime) -> SystemTime {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Checks an aggregate id: 1 to [`MAX_AGGREGATE_ID`] bytes of `[A-Za-z0-9._:-]`.
pub fn validate_aggregate_id(id: &str) -> Result<(), EnvelopeError> {
    let bad = |reason: String| {
        Err(EnvelopeError::AggregateId {
            id: id.chars().take(64).collect(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("it is empty".into());
    }
    if id.len() > MAX_AGGREGATE_ID {
        return bad(format!(
            "it is {} bytes long, over {MAX_AGGREGATE_ID}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return bad(format!(
            "{c:?} is not allowed: use letters, digits, `.`, `_`, `:` and `-`"
        ));
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u32,
    event_id: String,
    aggregate_id: String,
    event_type: String,
    event_version: u32,
    timestamp_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    headers: Headers,
    payload: String,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope::new("order-42", "OrderPlaced", 3, &b"\x00\x01binary\xff"[..])
            .unwrap()
            .with_trace_id("t-1")
            .with_correlation_id("c-1")
            .with_header("tenant", "acme")
    }

    #[leakcheck::leak_test]
    fn round_trips_every_field() {
        let e = sample();
        let back = Envelope::from_wire(&e.to_wire()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.payload().as_ref(), b"\x00\x01binary\xff");
        assert_eq!(back.headers()["tenant"], "acme");
        let minimal = Envelope::new("a", "T", 1, Vec::new()).unwrap();
        assert_eq!(Envelope::from_wire(&minimal.to_wire()).unwrap(), minimal);
    }

    #[leakcheck::leak_test]
    fn the_wire_carries_its_format_version() {
        let v: serde_json::Value = serde_json::from_slice(&sample().to_wire()).unwrap();
        assert_eq!(v["v"], WIRE_FORMAT_VERSION);
        let mut future = v.clone();
        future["v"] = 2.into();
        let e = Envelope::from_wire(future.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("version 2 is not supported"), "{e}");
    }

    #[leakcheck::leak_test]
    fn bad_envelopes_are_refused() {
        assert_eq!(
            Envelope::new("a", "T", 0, Vec::new()).unwrap_err(),
            EnvelopeError::Version
        );
        assert_eq!(
            Envelope::new("a", " ", 1, Vec::new()).unwrap_err(),
            EnvelopeError::EventType
        );
        for id in [
            "",
            "has space",
            "slash/y",
            &"x".repeat(MAX_AGGREGATE_ID + 1),
        ] {
            let e = Envelope::new(id, "T", 1, Vec::new()).unwrap_err();
            assert!(
                matches!(e, EnvelopeError::AggregateId { .. }),
                "{id:?}: {e}"
            );
        }
        for garbage in [&b"not json"[..], b"{}", b"{\"v\":1}", b"\xff\xfe"] {
            assert!(matches!(
                Envelope::from_wire(garbage),
                Err(EnvelopeError::Decode(_))
            ));
        }
        // Valid JSON, invalid envelope: validation runs on decode too.
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_wire()).unwrap();
        v["event_version"] = 0.into();
        assert_eq!(
            Envelope::from_wire(v.to_string().as_bytes()).unwrap_err(),
            EnvelopeError::Version
        );
    }
}
