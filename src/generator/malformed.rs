//! Malformed record variants (each one must be rejected by a strict v1 parser).

use rand::Rng;

use super::event::{Event, Fault, Field, write_event};
use super::json::{push_cents, push_rfc3339_ms, push_u64};

/// The kinds of malformed record, emitted in this cyclic order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MalformedKind {
    /// A strict prefix of a valid event.
    Truncated,
    /// CSV, HTML, form-encoded … anything but JSON.
    NotJson,
    /// A required field (`event_id`, `ts`, `user_id`, …) is missing.
    MissingField,
    /// A field of the wrong JSON type (`"quantity":"two"`, `"price":true`).
    WrongType,
    /// `"quantity":-1` (or `-2`).
    NegativeQuantity,
    /// `"price":"12.345"`.
    PriceThreeDecimals,
    /// `"event_type":"refund"`.
    UnknownEventType,
    /// `"schema":99`.
    UnknownSchema,
    /// `"ts":"yesterday"`.
    BadTimestamp,
    /// Invalid UTF-8 bytes inside a string.
    InvalidUtf8,
    /// `"quantity":1.5`.
    FractionalQuantity,
}

impl MalformedKind {
    /// Every kind, in emission order.
    pub const ALL: [MalformedKind; 11] = [
        MalformedKind::Truncated,
        MalformedKind::NotJson,
        MalformedKind::MissingField,
        MalformedKind::WrongType,
        MalformedKind::NegativeQuantity,
        MalformedKind::PriceThreeDecimals,
        MalformedKind::UnknownEventType,
        MalformedKind::UnknownSchema,
        MalformedKind::BadTimestamp,
        MalformedKind::InvalidUtf8,
        MalformedKind::FractionalQuantity,
    ];
}

fn pick<T: Copy>(options: &[T], variant: u64) -> T {
    #[allow(clippy::cast_possible_truncation)]
    options[(variant % options.len() as u64) as usize]
}

/// Write the malformed record of `kind` derived from the (product) event `ev`
/// into `out`. `variant` rotates sub-variants; `scratch` is reused.
pub(super) fn write_malformed<R: Rng>(
    rng: &mut R,
    kind: MalformedKind,
    variant: u64,
    ev: &Event<'_>,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    debug_assert!(
        ev.product.is_some(),
        "malformed records derive from product events"
    );
    scratch.clear();
    match kind {
        MalformedKind::Truncated => {
            write_event(out, ev, &Fault::NONE);
            let len = rng.random_range(1..out.len());
            out.truncate(len);
        }
        MalformedKind::NotJson => write_not_json(variant, ev, out),
        _ => {
            let (omit, replace) = field_fault(kind, variant, ev, scratch);
            write_event(
                out,
                ev,
                &Fault {
                    omit,
                    replace,
                    raw: scratch,
                    ..Fault::NONE
                },
            );
        }
    }
}

/// The field a malformed record of `kind` omits or replaces (with `scratch`'s bytes):
/// (omitted, replaced). `Truncated` and `NotJson` are not faults of one field.
fn field_fault(
    kind: MalformedKind,
    variant: u64,
    ev: &Event<'_>,
    scratch: &mut Vec<u8>,
) -> (Field, Field) {
    match kind {
        MalformedKind::Truncated | MalformedKind::NotJson => (Field::None, Field::None),
        MalformedKind::MissingField => (
            pick(
                &[
                    Field::EventId,
                    Field::Ts,
                    Field::UserId,
                    Field::EventType,
                    Field::Schema,
                    Field::ProductId,
                    Field::Price,
                ],
                variant,
            ),
            Field::None,
        ),
        MalformedKind::WrongType => {
            let (f, raw): (Field, &[u8]) = pick(
                &[
                    (Field::Quantity, b"\"two\""),
                    (Field::Price, b"true"),
                    (Field::UserId, b"81"),
                    (Field::EventType, b"3"),
                    (Field::Quantity, b"[1]"),
                    (Field::Price, b"{\"amount\":\"9.99\"}"),
                ],
                variant,
            );
            scratch.extend_from_slice(raw);
            (Field::None, f)
        }
        MalformedKind::NegativeQuantity => {
            scratch.extend_from_slice(pick(&[&b"-1"[..], b"-2"], variant));
            (Field::None, Field::Quantity)
        }
        MalformedKind::PriceThreeDecimals => {
            let cents = ev.product.map_or(1234, |p| p.price_minor);
            let quoted = variant.is_multiple_of(2);
            if quoted {
                scratch.push(b'"');
            }
            push_cents(scratch, cents);
            scratch.push(b'1' + u8::try_from(variant % 9).expect("< 9"));
            if quoted {
                scratch.push(b'"');
            }
            (Field::None, Field::Price)
        }
        MalformedKind::UnknownEventType => {
            scratch.extend_from_slice(pick(
                &[&b"\"refund\""[..], b"\"wishlist\"", b"\"return\""],
                variant,
            ));
            (Field::None, Field::EventType)
        }
        MalformedKind::UnknownSchema => {
            scratch.extend_from_slice(pick(&[&b"99"[..], b"2", b"0"], variant));
            (Field::None, Field::Schema)
        }
        MalformedKind::BadTimestamp => {
            scratch.extend_from_slice(pick(
                &[
                    &b"\"yesterday\""[..],
                    b"\"2026-13-45T25:61:00.000Z\"",
                    b"\"23/11/2026 10:00:01\"",
                    b"\"\"",
                ],
                variant,
            ));
            (Field::None, Field::Ts)
        }
        MalformedKind::InvalidUtf8 => {
            invalid_utf8_category(variant, ev, scratch);
            (Field::None, Field::Category)
        }
        MalformedKind::FractionalQuantity => {
            scratch.extend_from_slice(pick(&[&b"1.5"[..], b"2.5", b"0.5"], variant));
            (Field::None, Field::Quantity)
        }
    }
}

/// The event's category as a JSON string with a byte sequence that is not UTF-8 inside.
fn invalid_utf8_category(variant: u64, ev: &Event<'_>, scratch: &mut Vec<u8>) {
    let bad: &[u8] = pick(
        &[
            &[0xff][..],
            &[0xc3, 0x28],
            &[0xed, 0xa0, 0x80],
            &[0xe2, 0x82],
            &[0xc0, 0xaf],
        ],
        variant,
    );
    let name = ev.product.map_or("shoes", |p| p.category).as_bytes();
    let (head, tail) = name.split_at(name.len() / 2);
    for part in [&b"\""[..], head, bad, tail, b"\""] {
        scratch.extend_from_slice(part);
    }
}

/// CSV, HTML, form-encoded or plain-text garbage.
fn write_not_json(variant: u64, ev: &Event<'_>, out: &mut Vec<u8>) {
    match variant % 4 {
        0 => {
            out.extend_from_slice(ev.type_name.as_bytes());
            out.extend_from_slice(b",u_");
            push_u64(out, u64::from(ev.user));
            out.push(b',');
            if let Some(p) = ev.product {
                out.extend_from_slice(p.id.as_bytes());
                out.push(b',');
                push_cents(out, p.price_minor);
            }
            out.push(b',');
            push_rfc3339_ms(out, ev.ts_ms);
        }
        1 => out.extend_from_slice(b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
        2 => {
            out.extend_from_slice(b"event_type=");
            out.extend_from_slice(ev.type_name.as_bytes());
            out.extend_from_slice(b"&user_id=u_");
            push_u64(out, u64::from(ev.user));
        }
        _ => out.extend_from_slice(b"ERROR: connection reset by peer"),
    }
}
