//! Serialises one event (schema v1) by hand, optionally with a fault injected.

use super::catalogue::Product;
use super::json::{
    push_cents, push_cents_trimmed, push_hex16, push_json_str, push_rfc3339_ms, push_u64,
};
use super::session::{APP_VERSIONS, CAMPAIGNS, DEVICES, NONE8, REFERRERS};

/// How the price is spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PriceMode {
    /// `"59.90"`
    String,
    /// `59.90`
    Number,
    /// `59.9`
    NumberTrimmed,
}

/// A top-level field that a fault can omit or replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Field {
    None,
    Schema,
    EventId,
    EventType,
    UserId,
    SessionId,
    ProductId,
    Category,
    Price,
    Quantity,
    Ts,
}

/// Fault injection: drop `omit`, and write `raw` verbatim as the value of
/// `replace`.
pub(super) struct Fault<'a> {
    pub omit: Field,
    /// A second field to drop (a session document's purchase leaves out its category
    /// and price for the catalogue to fill).
    pub omit_too: Field,
    pub replace: Field,
    pub raw: &'a [u8],
}

impl Fault<'_> {
    pub(super) const NONE: Fault<'static> = Fault {
        omit: Field::None,
        omit_too: Field::None,
        replace: Field::None,
        raw: b"",
    };
}

pub(super) struct Event<'a> {
    pub id: u64,
    pub type_name: &'static str,
    pub user: u32,
    pub session: u64,
    /// `None` for searches.
    pub product: Option<&'a Product>,
    pub quantity: u8,
    pub price_mode: PriceMode,
    pub ts_ms: i64,
    pub device: u8,
    pub app: u8,
    pub referrer: u8,
    pub campaign: u8,
    /// Search text (UTF-8, unescaped); `None` for product events.
    pub query: Option<&'a [u8]>,
    /// For product events: omit `"query"` instead of writing `null`.
    pub query_absent: bool,
}

/// Append `user_id` bytes (`u_N`) — also the record key.
pub(super) fn push_user(buf: &mut Vec<u8>, user: u32) {
    buf.extend_from_slice(b"u_");
    push_u64(buf, u64::from(user));
}

struct Obj<'b> {
    buf: &'b mut Vec<u8>,
    first: bool,
}

impl Obj<'_> {
    #[inline]
    fn key(&mut self, name: &[u8]) {
        self.buf.push(if self.first { b'{' } else { b',' });
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(name);
        self.buf.extend_from_slice(b"\":");
    }

    /// Write field `f` named `name` unless the fault omits or replaces it.
    #[inline]
    fn field(
        &mut self,
        fault: &Fault<'_>,
        f: Field,
        name: &[u8],
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        if fault.omit == f || fault.omit_too == f {
            return;
        }
        self.key(name);
        if fault.replace == f {
            self.buf.extend_from_slice(fault.raw);
        } else {
            write(self.buf);
        }
    }
}

/// Append the JSON for `ev` to `buf`.
pub(super) fn write_event(buf: &mut Vec<u8>, ev: &Event<'_>, fault: &Fault<'_>) {
    let mut o = Obj { buf, first: true };
    o.field(fault, Field::Schema, b"schema", |b| b.push(b'1'));
    o.field(fault, Field::EventId, b"event_id", |b| {
        b.push(b'"');
        push_hex16(b, ev.id);
        b.push(b'"');
    });
    o.field(fault, Field::EventType, b"event_type", |b| {
        b.push(b'"');
        b.extend_from_slice(ev.type_name.as_bytes());
        b.push(b'"');
    });
    o.field(fault, Field::UserId, b"user_id", |b| {
        b.push(b'"');
        push_user(b, ev.user);
        b.push(b'"');
    });
    o.field(fault, Field::SessionId, b"session_id", |b| {
        b.extend_from_slice(b"\"s_");
        push_u64(b, ev.session);
        b.push(b'"');
    });
    if let Some(p) = ev.product {
        o.field(fault, Field::ProductId, b"product_id", |b| {
            push_json_str(b, p.id.as_bytes())
        });
        o.field(fault, Field::Category, b"category", |b| {
            push_json_str(b, p.category.as_bytes())
        });
        o.field(fault, Field::Price, b"price", |b| match ev.price_mode {
            PriceMode::String => {
                b.push(b'"');
                push_cents(b, p.price_minor);
                b.push(b'"');
            }
            PriceMode::Number => push_cents(b, p.price_minor),
            PriceMode::NumberTrimmed => push_cents_trimmed(b, p.price_minor),
        });
        o.field(fault, Field::Quantity, b"quantity", |b| {
            push_u64(b, u64::from(ev.quantity))
        });
    }
    o.field(fault, Field::Ts, b"ts", |b| {
        b.push(b'"');
        push_rfc3339_ms(b, ev.ts_ms);
        b.push(b'"');
    });
    if ev.device != NONE8 {
        let (ty, os, _) = DEVICES[usize::from(ev.device)];
        o.key(b"device");
        o.buf.extend_from_slice(b"{\"type\":\"");
        o.buf.extend_from_slice(ty.as_bytes());
        o.buf.extend_from_slice(b"\",\"os\":\"");
        o.buf.extend_from_slice(os.as_bytes());
        o.buf.extend_from_slice(b"\",\"app_version\":\"");
        o.buf
            .extend_from_slice(APP_VERSIONS[usize::from(ev.app)].0.as_bytes());
        o.buf.extend_from_slice(b"\"}");
    }
    if ev.referrer != NONE8 {
        o.key(b"context");
        o.buf.extend_from_slice(b"{\"referrer\":\"");
        o.buf
            .extend_from_slice(REFERRERS[usize::from(ev.referrer)].0.as_bytes());
        o.buf.push(b'"');
        if ev.campaign != NONE8 {
            let (id, name) = CAMPAIGNS[usize::from(ev.campaign)];
            o.buf.extend_from_slice(b",\"campaign\":{\"id\":\"");
            o.buf.extend_from_slice(id.as_bytes());
            o.buf.extend_from_slice(b"\",\"name\":\"");
            o.buf.extend_from_slice(name.as_bytes());
            o.buf.extend_from_slice(b"\"}");
        }
        o.buf.push(b'}');
    }
    match ev.query {
        Some(q) => {
            o.key(b"query");
            push_json_str(o.buf, q);
        }
        None if !ev.query_absent => {
            o.key(b"query");
            o.buf.extend_from_slice(b"null");
        }
        None => {}
    }
    if o.first {
        o.buf.push(b'{');
    }
    o.buf.push(b'}');
}
