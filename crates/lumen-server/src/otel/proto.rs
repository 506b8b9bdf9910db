//! The OTLP trace request in protobuf, written by hand: Lumen emits one small, fixed shape
//! (resource, one scope, spans with string/int/bool attributes and events), which is about
//! a hundred lines of wire format instead of a code generator and its runtime. Field numbers
//! are those of `opentelemetry/proto/trace/v1/trace.proto` and `collector/trace/v1`; the
//! integration tests decode what this writes with the official generated types.

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    Static(&'static str),
    Int(i64),
    Bool(bool),
}

pub(crate) type Attr = (&'static str, Value);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Server = 2,
    Client = 3,
}

/// A span event (a fallback, for instance).
#[derive(Debug, Clone)]
pub(crate) struct SpanEvent {
    pub time_ns: u64,
    pub name: &'static str,
    pub attrs: Vec<Attr>,
}

/// One finished span.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `None` for a root span.
    pub parent: Option<[u8; 8]>,
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
    pub name: String,
    pub kind: Kind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attrs: Vec<Attr>,
    pub events: Vec<SpanEvent>,
    /// `Some(message)`: status ERROR.
    pub error: Option<String>,
}

/// What goes in every request: `service.name` and the other resource attributes.
pub(crate) struct Resource {
    pub attrs: Vec<(String, String)>,
}

const SCOPE_NAME: &str = "lumen";
const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// An `ExportTraceServiceRequest` carrying `spans`, written into one buffer.
pub(crate) fn export_request(resource: &Resource, spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + spans.len() * 768);
    message(&mut out, 1, |rs| {
        message(rs, 1, |r| {
            for (k, v) in &resource.attrs {
                message(r, 1, |kv| {
                    string(kv, 1, k);
                    message(kv, 2, |any| string_always(any, 1, v));
                });
            }
        });
        message(rs, 2, |ss| {
            message(ss, 1, |scope| {
                string(scope, 1, SCOPE_NAME);
                string(scope, 2, SCOPE_VERSION);
            });
            for s in spans {
                message(ss, 2, |b| span(b, s));
            }
        });
    });
    out
}

fn span(b: &mut Vec<u8>, s: &Span) {
    bytes(b, 1, &s.trace_id);
    bytes(b, 2, &s.span_id);
    if let Some(p) = &s.parent {
        bytes(b, 4, p);
    }
    string(b, 5, &s.name);
    varint_field(b, 6, s.kind as u64);
    fixed64(b, 7, s.start_ns);
    fixed64(b, 8, s.end_ns);
    for (k, v) in &s.attrs {
        message(b, 9, |kv| key_value(kv, k, v));
    }
    for e in &s.events {
        message(b, 11, |ev| {
            fixed64(ev, 1, e.time_ns);
            string(ev, 2, e.name);
            for (k, v) in &e.attrs {
                message(ev, 3, |kv| key_value(kv, k, v));
            }
        });
    }
    if let Some(msg) = &s.error {
        message(b, 15, |st| {
            string(st, 2, msg);
            varint_field(st, 3, 2);
        });
    }
    // `flags` (fixed32, field 16): the W3C flags in the low byte; with a parent, bit 8 says
    // bit 9 (parent is remote) is known: a server span's parent is in another process.
    let mut flags = u32::from(s.flags);
    if s.parent.is_some() {
        flags |= 0x100;
        if s.kind == Kind::Server {
            flags |= 0x200;
        }
    }
    tag(b, 16, 5);
    b.extend_from_slice(&flags.to_le_bytes());
}

fn key_value(b: &mut Vec<u8>, key: &str, v: &Value) {
    string(b, 1, key);
    message(b, 2, |any| match v {
        Value::Str(s) => string_always(any, 1, s),
        Value::Static(s) => string_always(any, 1, s),
        Value::Bool(x) => varint_field_always(any, 2, u64::from(*x)),
        Value::Int(i) => varint_field_always(any, 3, *i as u64),
    });
}

fn tag(b: &mut Vec<u8>, field: u32, wire: u32) {
    varint(b, u64::from((field << 3) | wire));
}

fn varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn varint_field(b: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        varint_field_always(b, field, v);
    }
}

/// Inside a `oneof` a zero value must still be written, or the case is lost.
fn varint_field_always(b: &mut Vec<u8>, field: u32, v: u64) {
    tag(b, field, 0);
    varint(b, v);
}

fn fixed64(b: &mut Vec<u8>, field: u32, v: u64) {
    tag(b, field, 1);
    b.extend_from_slice(&v.to_le_bytes());
}

fn bytes(b: &mut Vec<u8>, field: u32, v: &[u8]) {
    tag(b, field, 2);
    varint(b, v.len() as u64);
    b.extend_from_slice(v);
}

fn string(b: &mut Vec<u8>, field: u32, v: &str) {
    if !v.is_empty() {
        bytes(b, field, v.as_bytes());
    }
}

fn string_always(b: &mut Vec<u8>, field: u32, v: &str) {
    bytes(b, field, v.as_bytes());
}

/// A length-delimited sub-message, written in place: one byte is kept for its length (most
/// sub-messages are attributes, shorter than 128 bytes) and the rest of a longer length is
/// inserted once the body is known. No buffer per sub-message.
fn message(b: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    tag(b, field, 2);
    let at = b.len();
    b.push(0);
    f(b);
    let len = (b.len() - at - 1) as u64;
    if len < 0x80 {
        b[at] = len as u8;
    } else {
        let (mut prefix, mut n, mut v) = ([0u8; 10], 0, len);
        while v >= 0x80 {
            prefix[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        prefix[n] = v as u8;
        b[at] = prefix[0];
        b.splice(at + 1..at + 1, prefix[1..=n].iter().copied());
    }
}

#[cfg(test)]
mod tests;
