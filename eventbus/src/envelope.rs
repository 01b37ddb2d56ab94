//! The envelope: an event with its identity and metadata, and its wire format (documented on
//! [`Envelope`], which every user of the bus meets).

use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::EnvelopeError;
use crate::message::Headers;

/// The wire format version this crate writes (binary, see [`Envelope`]); it also
/// reads version 1 (JSON).
pub const WIRE_FORMAT_VERSION: u32 = 2;

/// The first byte of the binary wire format.
const MAGIC: u8 = 0xEB;
const FLAG_TRACE: u8 = 1;
const FLAG_CORRELATION: u8 = 2;
/// The bytes before the first string: magic, version, timestamp, event version, flags.
const FIXED: usize = 15;

/// The longest aggregate id accepted, in bytes.
pub const MAX_AGGREGATE_ID: usize = 256;

/// An event: which aggregate it belongs to (the ordering key), what it is, when it happened.
///
/// ```
/// use eventbus::Envelope;
/// let e = Envelope::new("order-42", "OrderPlaced", 1, b"{\"total\":10}".to_vec()).unwrap()
///     .with_correlation_id("req-7");
/// let wire = e.to_wire();
/// assert_eq!(Envelope::from_wire(&wire).unwrap(), e);
/// ```
///
/// # Wire format
///
/// The bus writes version 2, a binary prefix followed by the payload as is, because it costs
/// one allocation and one copy of the payload to write and none to read (the decoded payload
/// and strings are slices of the received bytes, the strings checked as UTF-8 once), where
/// version 1 (JSON with the payload in base64) cost most of a memory publish. Every integer is little-endian; every string is a `u32` length
/// and that many UTF-8 bytes.
///
/// | bytes | field |
/// |---|---|
/// | 1 | magic `0xEB` (never the first byte of a JSON document) |
/// | 1 | format version: `2` |
/// | 8 | `timestamp_ms` (`u64`, milliseconds since the Unix epoch) |
/// | 4 | `event_version` (`u32`) |
/// | 1 | flags: bit 0 a trace id follows, bit 1 a correlation id follows; others 0 |
/// | string | `event_id` |
/// | string | `aggregate_id` |
/// | string | `event_type` |
/// | string | `trace_id`, if flagged |
/// | string | `correlation_id`, if flagged |
/// | 4 | header count (`u32`), then per header: name string, value string |
/// | rest | the payload |
///
/// Version 1, `{"v":1,"event_id":..,"aggregate_id":..,"event_type":..,"event_version":..,
/// "timestamp_ms":..,"trace_id"?:..,"correlation_id"?:..,"headers"?:{..},"payload":"<base64>"}`,
/// is still read, so that what an older build stored stays readable. Any other version is
/// refused with [`EnvelopeError::Decode`] naming it.
#[derive(Clone)]
pub struct Envelope {
    fields: Arc<Fields>,
}

/// An envelope's contents, shared by its clones: handing an envelope to a handler attempt or
/// across an in-process broker costs a reference count, not a copy of its strings.
#[derive(Clone)]
struct Fields {
    event_id: Text,
    aggregate_id: Text,
    event_type: Text,
    event_version: u32,
    /// Milliseconds since the Unix epoch, as on the wire.
    timestamp_ms: u64,
    trace_id: Option<Text>,
    correlation_id: Option<Text>,
    headers: Headers,
    payload: Bytes,
    /// What a decoded envelope's [`Text::Wire`] strings lie in; empty otherwise.
    wire: Bytes,
    /// The wire form, once made by [`Envelope::wire`] (an in-process delivery makes it only if
    /// someone reads its bytes); reset by every setter.
    encoded: OnceLock<Bytes>,
}

/// A string of an envelope. A decoded one is a range of the received bytes (checked as UTF-8
/// when decoded), so that decoding allocates and copies nothing; a short one (a new event id,
/// most aggregate ids and event types) lies in place, so that making, sharing and dropping an
/// envelope allocates once, for its fields.
#[derive(Clone)]
enum Text {
    Owned(String),
    /// `len` UTF-8 bytes at the start of the array.
    Inline(u8, [u8; INLINE]),
    /// `wire[start..end]`.
    Wire(u32, u32),
}

/// The longest string a [`Text`] holds in place: a hyphenated UUID and then some, in the room
/// an owned `String` and the enum's tag take anyway.
const INLINE: usize = 38;

impl Text {
    fn new(s: &str) -> Text {
        if s.len() > INLINE {
            return Text::Owned(s.to_owned());
        }
        let mut b = [0; INLINE];
        b[..s.len()].copy_from_slice(s.as_bytes());
        Text::Inline(s.len() as u8, b)
    }

    fn from_string(s: String) -> Text {
        match s.len() > INLINE {
            true => Text::Owned(s),
            false => Text::new(&s),
        }
    }
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.event_id() == other.event_id()
            && self.aggregate_id() == other.aggregate_id()
            && self.event_type() == other.event_type()
            && self.fields.event_version == other.fields.event_version
            && self.fields.timestamp_ms == other.fields.timestamp_ms
            && self.trace_id() == other.trace_id()
            && self.correlation_id() == other.correlation_id()
            && self.fields.headers == other.fields.headers
            && self.fields.payload == other.fields.payload
    }
}

impl Eq for Envelope {}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("event_id", &self.event_id())
            .field("aggregate_id", &self.aggregate_id())
            .field("event_type", &self.event_type())
            .field("event_version", &self.fields.event_version)
            .field("timestamp", &self.timestamp())
            .field("trace_id", &self.trace_id())
            .field("correlation_id", &self.correlation_id())
            .field("headers", &self.fields.headers)
            .field("payload", &self.fields.payload)
            .finish()
    }
}

impl Envelope {
    /// A new event with a random `event_id` and the current time. The aggregate id must be 1 to
    /// [`MAX_AGGREGATE_ID`] bytes of `[A-Za-z0-9._:-]`; the version at least 1. Both strings are
    /// copied (in place when short: no allocation).
    pub fn new(
        aggregate_id: impl AsRef<str>,
        event_type: impl AsRef<str>,
        event_version: u32,
        payload: impl Into<Bytes>,
    ) -> Result<Self, EnvelopeError> {
        let (aggregate_id, event_type) = (aggregate_id.as_ref(), event_type.as_ref());
        // Checked before the fields are made, so that they are made in place.
        check(
            aggregate_id.as_bytes(),
            event_version,
            event_type.as_bytes(),
        )?;
        let mut id = [0; INLINE];
        let len = uuid::Uuid::new_v4()
            .hyphenated()
            .encode_lower(&mut id)
            .len();
        Ok(Envelope {
            fields: Arc::new(Fields {
                event_id: Text::Inline(len as u8, id),
                aggregate_id: Text::new(aggregate_id),
                event_type: Text::new(event_type),
                event_version,
                // Millisecond precision, as on the wire: a round trip gives the same envelope.
                timestamp_ms: millis(SystemTime::now()),
                trace_id: None,
                correlation_id: None,
                headers: Headers::new(),
                payload: payload.into(),
                wire: Bytes::new(),
                encoded: OnceLock::new(),
            }),
        })
    }

    /// The fields, to change: copied first if a clone shares them; the wire form made so far
    /// no longer holds.
    fn fields_mut(&mut self) -> &mut Fields {
        let f = Arc::make_mut(&mut self.fields);
        f.encoded = OnceLock::new();
        f
    }

    /// Sets the trace id.
    pub fn with_trace_id(mut self, id: impl Into<String>) -> Self {
        self.fields_mut().trace_id = Some(Text::from_string(id.into()));
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.fields_mut().correlation_id = Some(Text::from_string(id.into()));
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields_mut().headers.insert(name.into(), value.into());
        self
    }

    /// Sets the event id (for example to re-publish an event under its own identity).
    pub fn with_event_id(mut self, id: impl Into<String>) -> Self {
        self.fields_mut().event_id = Text::from_string(id.into());
        self
    }

    /// The unique id of this event.
    pub fn event_id(&self) -> &str {
        self.fields.text(&self.fields.event_id)
    }

    /// The aggregate it belongs to: events of one aggregate are handled in publish order.
    pub fn aggregate_id(&self) -> &str {
        self.fields.text(&self.fields.aggregate_id)
    }

    /// What happened.
    pub fn event_type(&self) -> &str {
        self.fields.text(&self.fields.event_type)
    }

    /// The version of the event type's schema.
    pub fn event_version(&self) -> u32 {
        self.fields.event_version
    }

    /// When it happened (millisecond precision on the wire).
    pub fn timestamp(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.fields.timestamp_ms)
    }

    /// The trace id, if any.
    pub fn trace_id(&self) -> Option<&str> {
        let f = &self.fields;
        f.trace_id.as_ref().map(|t| f.text(t))
    }

    /// The correlation id, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        let f = &self.fields;
        f.correlation_id.as_ref().map(|t| f.text(t))
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.fields.headers
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.fields.payload
    }

    pub(crate) fn validate(&self) -> Result<(), EnvelopeError> {
        self.fields.validate()
    }

    /// The aggregate id's bytes (the message key), without the UTF-8 check of
    /// [`aggregate_id`](Self::aggregate_id).
    pub(crate) fn aggregate_id_bytes(&self) -> &[u8] {
        self.fields.raw(&self.fields.aggregate_id)
    }

    /// The wire form (version [`WIRE_FORMAT_VERSION`], see [`Envelope`]).
    pub fn to_wire(&self) -> Bytes {
        self.wire().clone()
    }

    /// The wire form, made once per envelope (its clones share it).
    pub(crate) fn wire(&self) -> &Bytes {
        self.fields.encoded.get_or_init(|| self.to_wire_keyed().0)
    }

    /// Whether the wire form was made.
    #[cfg(test)]
    pub(crate) fn has_wire(&self) -> bool {
        self.fields.encoded.get().is_some()
    }

    /// Whether `other` is a clone of this envelope (its fields shared, not copied).
    #[cfg(test)]
    pub(crate) fn shares_fields(&self, other: &Envelope) -> bool {
        Arc::ptr_eq(&self.fields, &other.fields)
    }

    /// How long the wire form is, without making it.
    pub(crate) fn wire_len(&self) -> usize {
        self.fields.wire_len()
    }

    /// The wire form and where the aggregate id lies in it (the bus's message key is that
    /// slice, so it costs no copy).
    pub(crate) fn to_wire_keyed(&self) -> (Bytes, Range<usize>) {
        let f = &*self.fields;
        let len = f.wire_len();
        let mut w = BytesMut::with_capacity(len);
        w.put_u8(MAGIC);
        w.put_u8(WIRE_FORMAT_VERSION as u8);
        w.put_u64_le(f.timestamp_ms);
        w.put_u32_le(f.event_version);
        let mut flags = 0;
        if f.trace_id.is_some() {
            flags |= FLAG_TRACE;
        }
        if f.correlation_id.is_some() {
            flags |= FLAG_CORRELATION;
        }
        w.put_u8(flags);
        let mut key = 0..0;
        for (i, s) in f.strings().iter().enumerate() {
            if let Some(s) = s {
                put_str(&mut w, s);
                if i == 1 {
                    key = w.len() - s.len()..w.len();
                }
            }
        }
        w.put_u32_le(f.headers.len() as u32);
        for (k, v) in &f.headers {
            put_str(&mut w, k.as_bytes());
            put_str(&mut w, v.as_bytes());
        }
        w.put_slice(&f.payload);
        debug_assert_eq!(w.len(), len);
        (w.freeze(), key)
    }

    /// The aggregate id of a binary wire form, as a slice of `bytes` (no copy): what the bus
    /// publishes an envelope under as its key. `None` for anything else (JSON, or not an
    /// envelope). A backend whose messages carry the key apart (NATS headers) leaves it out
    /// when the payload holds it, and takes it back from here on receipt.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn wire_key(bytes: &Bytes) -> Option<Bytes> {
        let mut r = Reader { bytes, at: 0 };
        let [magic, version] = r.array().ok()?;
        if magic != MAGIC || u32::from(version) != WIRE_FORMAT_VERSION {
            return None;
        }
        // Timestamp, event version, flags, then the event id.
        r.take(FIXED - 2).ok()?;
        let skip = u32::from_le_bytes(r.array().ok()?) as usize;
        r.take(skip).ok()?;
        let len = u32::from_le_bytes(r.array().ok()?) as usize;
        let start = r.at;
        r.take(len).ok()?;
        Some(bytes.slice(start..start + len))
    }

    /// Decodes and validates the wire form (version 2, or version 1's JSON).
    pub fn from_wire(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        match bytes.first() {
            Some(&MAGIC) => Self::from_binary(&Bytes::copy_from_slice(bytes)),
            _ => Self::from_json(bytes),
        }
    }

    /// [`from_wire`](Self::from_wire) without copying: the payload is a slice of `bytes`.
    pub(crate) fn from_wire_bytes(bytes: &Bytes) -> Result<Self, EnvelopeError> {
        match bytes.first() {
            Some(&MAGIC) => Self::from_binary(bytes),
            _ => Self::from_json(bytes),
        }
    }

    fn from_binary(bytes: &Bytes) -> Result<Self, EnvelopeError> {
        let mut r = Reader { bytes, at: 0 };
        r.take(1)?;
        let version = r.take(1)?[0];
        if u32::from(version) != WIRE_FORMAT_VERSION {
            return Err(unsupported(u32::from(version)));
        }
        let timestamp_ms = u64::from_le_bytes(r.array()?);
        let event_version = u32::from_le_bytes(r.array()?);
        let flags = r.take(1)?[0];
        if flags & !(FLAG_TRACE | FLAG_CORRELATION) != 0 {
            return Err(decode(format!("unknown flags {flags:#04x}")));
        }
        let (event_id, _) = r.text("event_id")?;
        let (aggregate_id, id) = r.text("aggregate_id")?;
        let (event_type, kind) = r.text("event_type")?;
        check(id, event_version, kind)?;
        let trace_id = match flags & FLAG_TRACE {
            0 => None,
            _ => Some(r.text("trace_id")?.0),
        };
        let correlation_id = match flags & FLAG_CORRELATION {
            0 => None,
            _ => Some(r.text("correlation_id")?.0),
        };
        let count = u32::from_le_bytes(r.array()?);
        let mut headers = Headers::new();
        for _ in 0..count {
            let name = r.string("a header name")?.to_owned();
            let value = r.string("a header value")?.to_owned();
            headers.insert(name, value);
        }
        Ok(Envelope {
            fields: Arc::new(Fields {
                event_id,
                aggregate_id,
                event_type,
                event_version,
                timestamp_ms,
                trace_id,
                correlation_id,
                headers,
                payload: bytes.slice(r.at..),
                wire: bytes.clone(),
                encoded: OnceLock::new(),
            }),
        })
    }

    fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| {
            // Say which version it was when that is the problem.
            match serde_json::from_slice::<VersionOnly>(bytes) {
                Ok(VersionOnly { v }) if v != JSON_VERSION => unsupported(v),
                _ => decode(e.to_string()),
            }
        })?;
        if wire.v != JSON_VERSION {
            return Err(unsupported(wire.v));
        }
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&wire.payload)
            .map_err(|e| decode(format!("payload is not base64: {e}")))?;
        let f = Fields {
            event_id: Text::from_string(wire.event_id),
            aggregate_id: Text::from_string(wire.aggregate_id),
            event_type: Text::from_string(wire.event_type),
            event_version: wire.event_version,
            timestamp_ms: wire.timestamp_ms,
            trace_id: wire.trace_id.map(Text::from_string),
            correlation_id: wire.correlation_id.map(Text::from_string),
            headers: wire.headers,
            payload: payload.into(),
            wire: Bytes::new(),
            encoded: OnceLock::new(),
        };
        f.validate()?;
        Ok(Envelope {
            fields: Arc::new(f),
        })
    }
}

impl Fields {
    /// A string's bytes, unchecked (for the wire: every `Text` is UTF-8 when made).
    fn raw<'a>(&'a self, t: &'a Text) -> &'a [u8] {
        match t {
            Text::Owned(s) => s.as_bytes(),
            Text::Inline(len, b) => &b[..usize::from(*len)],
            Text::Wire(start, end) => self
                .wire
                .get(*start as usize..*end as usize)
                .unwrap_or_default(),
        }
    }

    fn text<'a>(&'a self, t: &'a Text) -> &'a str {
        match t {
            Text::Owned(s) => s,
            // Checked when made: the fallback is never taken.
            _ => std::str::from_utf8(self.raw(t)).unwrap_or_default(),
        }
    }

    fn validate(&self) -> Result<(), EnvelopeError> {
        check(
            self.raw(&self.aggregate_id),
            self.event_version,
            self.raw(&self.event_type),
        )
    }

    /// The strings in wire order; the optional ones `None` when absent.
    fn strings(&self) -> [Option<&[u8]>; 5] {
        [
            Some(self.raw(&self.event_id)),
            Some(self.raw(&self.aggregate_id)),
            Some(self.raw(&self.event_type)),
            self.trace_id.as_ref().map(|t| self.raw(t)),
            self.correlation_id.as_ref().map(|t| self.raw(t)),
        ]
    }

    fn wire_len(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum();
        // Each string is its `u32` length and its bytes.
        let optional = |t: &Option<Text>| t.as_ref().map_or(0, |t| 4 + self.raw(t).len());
        FIXED
            + 3 * 4
            + self.raw(&self.event_id).len()
            + self.raw(&self.aggregate_id).len()
            + self.raw(&self.event_type).len()
            + optional(&self.trace_id)
            + optional(&self.correlation_id)
            + 4
            + headers
            + self.payload.len()
    }
}

/// The version of the JSON wire form.
const JSON_VERSION: u32 = 1;

fn decode(message: String) -> EnvelopeError {
    EnvelopeError::Decode(message)
}

fn unsupported(v: u32) -> EnvelopeError {
    decode(format!(
        "wire format version {v} is not supported (this build reads {JSON_VERSION} and {WIRE_FORMAT_VERSION})"
    ))
}

fn put_str(w: &mut BytesMut, s: &[u8]) {
    w.put_u32_le(s.len() as u32);
    w.put_slice(s);
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() * 1000 + u64::from(d.subsec_millis()))
}

/// Reads the binary form front to back; running out of bytes is a decode error.
struct Reader<'a> {
    bytes: &'a Bytes,
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| decode(format!("truncated at byte {}", self.at)))?;
        let bytes: &'a Bytes = self.bytes;
        let s = &bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EnvelopeError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn string(&mut self, what: &str) -> Result<&'a str, EnvelopeError> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        let s = self.take(len)?;
        std::str::from_utf8(s).map_err(|e| decode(format!("{what} is not UTF-8: {e}")))
    }

    /// A string as a range of the bytes (what the envelope keeps), and its bytes, checked as
    /// UTF-8 (ASCII, the usual case, word by word).
    fn text(&mut self, what: &str) -> Result<(Text, &'a [u8]), EnvelopeError> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        let s = self.take(len)?;
        if !s.is_ascii() {
            std::str::from_utf8(s).map_err(|e| decode(format!("{what} is not UTF-8: {e}")))?;
        }
        let end =
            u32::try_from(self.at).map_err(|_| decode(format!("{what} ends beyond 4 GiB")))?;
        Ok((Text::Wire(end - s.len() as u32, end), s))
    }
}

/// What every envelope must be: an aggregate id, a version of at least 1, an event type. On
/// UTF-8 bytes, so that a decoder checks them before it makes strings of them.
fn check(aggregate_id: &[u8], event_version: u32, event_type: &[u8]) -> Result<(), EnvelopeError> {
    check_aggregate_id(aggregate_id)?;
    if event_version == 0 {
        return Err(EnvelopeError::Version);
    }
    let blank = match event_type.is_ascii() {
        // `str::trim`'s whitespace, in ASCII.
        true => event_type
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')),
        false => String::from_utf8_lossy(event_type).trim().is_empty(),
    };
    if blank {
        return Err(EnvelopeError::EventType);
    }
    Ok(())
}

/// Checks an aggregate id: 1 to [`MAX_AGGREGATE_ID`] bytes of `[A-Za-z0-9._:-]`.
pub fn validate_aggregate_id(id: &str) -> Result<(), EnvelopeError> {
    check_aggregate_id(id.as_bytes())
}

/// Which bytes an aggregate id may hold: `[A-Za-z0-9._:-]` (one load per byte, where the
/// comparisons cost a publish more than the rest of its checks).
const AGGREGATE_ID_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-');
        b += 1;
    }
    t
};

/// [`validate_aggregate_id`] on UTF-8 bytes.
fn check_aggregate_id(id: &[u8]) -> Result<(), EnvelopeError> {
    let bad = |reason: String| {
        Err(EnvelopeError::AggregateId {
            id: String::from_utf8_lossy(id).chars().take(64).collect(),
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
    // Bytes first (the usual case, no UTF-8 decoding); the character only to name it.
    if id.iter().all(|b| AGGREGATE_ID_BYTES[usize::from(*b)]) {
        return Ok(());
    }
    let c = String::from_utf8_lossy(id)
        .chars()
        .find(|c| !c.is_ascii() || !AGGREGATE_ID_BYTES[*c as usize])
        .unwrap_or(char::REPLACEMENT_CHARACTER);
    bad(format!(
        "{c:?} is not allowed: use letters, digits, `.`, `_`, `:` and `-`"
    ))
}

/// Version 1's JSON form (read only; the tests write it).
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
    fn the_wire_key_is_the_aggregate_id_of_a_binary_wire_form_only() {
        let wire = sample().to_wire();
        assert_eq!(Envelope::wire_key(&wire).as_deref(), Some(&b"order-42"[..]));
        let (wire, key) = sample().to_wire_keyed();
        assert_eq!(Envelope::wire_key(&wire), Some(wire.slice(key.clone())));
        let json = Bytes::from(serde_json::to_vec(&json_v1(&sample())).unwrap());
        assert_eq!(Envelope::wire_key(&json), None);
        let mut future = wire.to_vec();
        future[1] = 3;
        assert_eq!(Envelope::wire_key(&Bytes::from(future)), None);
        // Cut inside the aggregate id, in its length, or in the event id before it.
        for cut in [key.start + 3, key.start - 2, FIXED + 6] {
            assert_eq!(Envelope::wire_key(&wire.slice(..cut)), None, "{cut} bytes");
        }
        assert!(Envelope::wire_key(&wire.slice(..key.end)).is_some());
        assert_eq!(Envelope::wire_key(&Bytes::from_static(b"\xebplain")), None);
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
    fn short_and_long_strings_read_the_same() {
        for len in [1, INLINE - 1, INLINE, INLINE + 1, MAX_AGGREGATE_ID] {
            let id = "a".repeat(len);
            let kind = format!("T{}", "e".repeat(len));
            let e = Envelope::new(&id, kind.as_str(), 1, "p")
                .unwrap()
                .with_trace_id("t".repeat(len))
                .with_event_id("é".repeat(len));
            assert!(matches!(
                (&e.fields.aggregate_id, len <= INLINE),
                (Text::Inline(..), true) | (Text::Owned(_), false)
            ));
            assert_eq!(
                (e.aggregate_id(), e.event_type()),
                (id.as_str(), kind.as_str())
            );
            assert_eq!(e.trace_id(), Some("t".repeat(len).as_str()));
            assert_eq!(e.event_id(), "é".repeat(len));
            assert_eq!(Envelope::from_wire(&e.to_wire()).unwrap(), e);
        }
        assert_eq!(
            Envelope::new("a", "T", 1, "p").unwrap().event_id().len(),
            36
        );
    }

    #[leakcheck::leak_test]
    fn the_wire_length_is_known_before_the_wire_form() {
        let long = "x".repeat(INLINE + 5);
        let minimal = Envelope::new("a", "T", 1, Vec::new()).unwrap();
        let owned = Envelope::new(&long, long.as_str(), 1, "p")
            .unwrap()
            .with_correlation_id(long.as_str());
        for e in [sample(), minimal, owned] {
            let len = e.wire_len();
            assert!(!e.has_wire(), "computed, not encoded");
            assert_eq!(len, e.to_wire().len(), "{e:?}");
            let decoded = Envelope::from_wire_bytes(&e.to_wire()).unwrap();
            assert!(matches!(decoded.fields.aggregate_id, Text::Wire(..)));
            assert_eq!(decoded.wire_len(), len, "{decoded:?}");
        }
    }

    #[leakcheck::leak_test]
    fn every_byte_of_an_aggregate_id_is_judged_as_documented() {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b".:_-".contains(&b);
        for b in 0..=255u8 {
            let id = [b'a', b, b'z'];
            assert_eq!(check_aggregate_id(&id).is_ok(), allowed(b), "byte {b:#04x}");
        }
    }

    #[leakcheck::leak_test]
    fn a_setter_makes_the_wire_form_anew() {
        let e = sample();
        let before = e.to_wire();
        assert_eq!(e.to_wire(), before, "made once");
        let changed = e.clone().with_header("extra", "1");
        assert!(!changed.has_wire());
        let after = Envelope::from_wire(&changed.to_wire()).unwrap();
        assert_eq!(after.headers()["extra"], "1");
        assert_eq!(
            Envelope::from_wire(&e.to_wire()).unwrap(),
            e,
            "the original is unchanged"
        );
        assert!(!e.headers().contains_key("extra"));
    }

    /// `e` in version 1's JSON form, as an older build wrote it.
    fn json_v1(e: &Envelope) -> serde_json::Value {
        let wire = Wire {
            v: 1,
            event_id: e.event_id().into(),
            aggregate_id: e.aggregate_id().into(),
            event_type: e.event_type().into(),
            event_version: e.event_version(),
            timestamp_ms: e.fields.timestamp_ms,
            trace_id: e.trace_id().map(Into::into),
            correlation_id: e.correlation_id().map(Into::into),
            headers: e.headers().clone(),
            payload: base64::engine::general_purpose::STANDARD.encode(e.payload()),
        };
        serde_json::to_value(&wire).unwrap()
    }

    #[leakcheck::leak_test]
    fn the_wire_carries_its_format_version() {
        let wire = sample().to_wire();
        assert_eq!(wire[..2], [MAGIC, WIRE_FORMAT_VERSION as u8]);
        let mut future = wire.to_vec();
        future[1] = 3;
        let e = Envelope::from_wire(&future).unwrap_err();
        assert!(e.to_string().contains("version 3 is not supported"), "{e}");
        let mut json = json_v1(&sample());
        json["v"] = 2.into();
        let e = Envelope::from_wire(json.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("version 2 is not supported"), "{e}");
    }

    #[leakcheck::leak_test]
    fn version_1_is_still_read() {
        let e = sample();
        let json = json_v1(&e).to_string();
        assert_eq!(Envelope::from_wire(json.as_bytes()).unwrap(), e);
    }

    #[leakcheck::leak_test]
    fn the_payload_and_key_are_slices_of_the_wire() {
        let e = sample();
        let (wire, key) = e.to_wire_keyed();
        assert_eq!(&wire[key], b"order-42");
        // The payload comes last, as is.
        assert!(wire.ends_with(b"\x00\x01binary\xff"));
        let back = Envelope::from_wire_bytes(&wire).unwrap();
        assert_eq!(back, e);
        let tail = wire.len() - back.payload().len();
        assert_eq!(back.payload().as_ptr(), wire[tail..].as_ptr());
    }

    #[leakcheck::leak_test]
    fn truncated_or_corrupt_binary_is_refused() {
        let wire = sample().to_wire();
        let payload_start = wire.len() - sample().payload().len();
        // Cut anywhere in the prefix: a decode error, never a panic.
        for cut in 0..payload_start {
            let e = Envelope::from_wire(&wire[..cut]).unwrap_err();
            assert!(matches!(e, EnvelopeError::Decode(_)), "cut at {cut}: {e}");
        }
        let mut flags = wire.to_vec();
        flags[FIXED - 1] |= 0x80;
        assert!(Envelope::from_wire(&flags)
            .unwrap_err()
            .to_string()
            .contains("unknown flags"));
        // A string length past the end.
        let mut long = wire.to_vec();
        long[FIXED..FIXED + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Envelope::from_wire(&long),
            Err(EnvelopeError::Decode(_))
        ));
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
        // Well-formed, invalid envelope: validation runs on decode too.
        let mut v = json_v1(&sample());
        v["event_version"] = 0.into();
        assert_eq!(
            Envelope::from_wire(v.to_string().as_bytes()).unwrap_err(),
            EnvelopeError::Version
        );
        let mut wire = sample().to_wire().to_vec();
        wire[10..14].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            Envelope::from_wire(&wire).unwrap_err(),
            EnvelopeError::Version
        );
        // In the binary form: the aggregate id is checked byte by byte, a character outside
        // the set (ASCII or not) named; a string that is not UTF-8 is a decode error.
        let (wire, key) = sample().to_wire_keyed();
        for (bad, named) in [(&b"/"[..], "'/'"), ("é".as_bytes(), "'é'")] {
            let mut w = wire.to_vec();
            w.splice(
                key.start + 1..key.start + 1 + bad.len(),
                bad.iter().copied(),
            );
            let e = Envelope::from_wire(&w).unwrap_err();
            assert!(
                matches!(&e, EnvelopeError::AggregateId { reason, .. } if reason.contains(named)),
                "{named}: {e}"
            );
        }
        let mut w = wire.to_vec();
        w[FIXED + 4] = 0xff;
        let e = Envelope::from_wire(&w).unwrap_err();
        assert!(e.to_string().contains("event_id is not UTF-8"), "{e}");
        // A blank event type, ASCII (vertical tab included, as `str::trim` has it) or not.
        let wire = Envelope::new("a", "XYZ", 1, Vec::new()).unwrap().to_wire();
        let at = wire.windows(3).position(|w| w == b"XYZ").unwrap();
        for blank in ["\t\u{b} ", "\u{2003}"] {
            let mut w = wire.to_vec();
            w.splice(at..at + 3, blank.bytes());
            assert_eq!(
                Envelope::from_wire(&w).unwrap_err(),
                EnvelopeError::EventType,
                "{blank:?}"
            );
        }
        let e = validate_aggregate_id("caf\u{e9}").unwrap_err();
        assert!(e.to_string().contains("'é' is not allowed"), "{e}");
    }

    #[leakcheck::leak_test]
    fn a_decoded_envelope_reads_like_the_one_sent() {
        let sent = sample();
        let got = Envelope::from_wire_bytes(&sent.to_wire()).unwrap();
        for e in [&sent, &got, &got.clone()] {
            assert_eq!(e.event_id(), sent.event_id());
            assert_eq!(e.event_id().len(), 36, "a hyphenated UUID");
            assert_eq!(e.aggregate_id(), "order-42");
            assert_eq!(e.event_type(), "OrderPlaced");
            assert_eq!(e.trace_id(), Some("t-1"));
            assert_eq!(e.correlation_id(), Some("c-1"));
            assert_eq!(e.timestamp(), sent.timestamp());
            let debug = format!("{e:?}");
            assert!(debug.contains("aggregate_id: \"order-42\""), "{debug}");
        }
        // Re-sent as it came: the same wire form.
        assert_eq!(got.to_wire(), sent.to_wire());
        let renamed = got.with_event_id("e-1");
        assert_eq!(renamed.event_id(), "e-1");
        assert_ne!(renamed, sent);
    }
}
