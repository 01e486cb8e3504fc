//! Why a record is invalid: the bounded classes (metric labels, dead-letter reasons) and
//! the decoding error that carries one, shared by the decoder and the scanner.

/// The class of an invalid record: a bounded set, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidKind {
    /// Larger than the configured record size limit.
    Oversize,
    /// Not a JSON object (syntax error, truncated, invalid UTF-8).
    NotJson,
    /// A required field is absent or null.
    MissingField,
    /// A field has the wrong JSON type.
    BadType,
    /// A field has the right type but an unacceptable value (negative quantity, price with
    /// three decimals, unparseable timestamp, ...).
    BadValue,
    /// `event_type` is not one of the four known types.
    UnknownEventType,
    /// `schema` is not a version this build knows.
    UnknownSchema,
    /// Event time too far ahead of the record's ingest time.
    FutureTimestamp,
    /// A schema 2 price in another currency than the configured one (`pipeline.currency`).
    CurrencyMismatch,
    /// A search whose query is empty once normalised (blank or zero-width characters only).
    EmptyQuery,
    /// An event without its category or price, and no catalogue entry of its product at
    /// its time to fill them (issue 18).
    NoCatalogueEntry,
}

impl InvalidKind {
    /// Every kind, for pre-registering metric labels.
    pub const ALL: [InvalidKind; 11] = [
        Self::Oversize,
        Self::NotJson,
        Self::MissingField,
        Self::BadType,
        Self::BadValue,
        Self::UnknownEventType,
        Self::UnknownSchema,
        Self::FutureTimestamp,
        Self::CurrencyMismatch,
        Self::EmptyQuery,
        Self::NoCatalogueEntry,
    ];

    /// Snake-case label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oversize => "oversize",
            Self::NotJson => "not_json",
            Self::MissingField => "missing_field",
            Self::BadType => "bad_type",
            Self::BadValue => "bad_value",
            Self::UnknownEventType => "unknown_event_type",
            Self::UnknownSchema => "unknown_schema",
            Self::FutureTimestamp => "future_timestamp",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::EmptyQuery => "empty_query",
            Self::NoCatalogueEntry => "no_catalogue_entry",
        }
    }
}

/// Why a record is not a valid event. The message is what the dead-letter store keeps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind_str}: {message}", kind_str = .kind.as_str())]
pub struct DecodeError {
    /// Class of failure.
    pub kind: InvalidKind,
    /// Human-readable detail.
    pub message: String,
}

impl DecodeError {
    pub(crate) fn new(kind: InvalidKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}
