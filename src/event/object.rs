//! Fields of a record read as a JSON object (`serde_json`), with the kinds and messages of
//! the event decoder: shared by the records of the other streams (reviews, the catalogue,
//! session documents), so that a dead letter says the same thing whatever its stream.

use serde_json::{Map, Value};

use super::{DecodeError, InvalidKind};

/// `name`, present and not null.
///
/// # Errors
/// Missing (or null): `missing_field`.
pub(crate) fn field<'a>(o: &'a Map<String, Value>, name: &str) -> Result<&'a Value, DecodeError> {
    match o.get(name) {
        None | Some(Value::Null) => Err(missing(name)),
        Some(v) => Ok(v),
    }
}

/// The error of a record without `name`.
pub(crate) fn missing(name: &str) -> DecodeError {
    DecodeError::new(InvalidKind::MissingField, format!("missing field `{name}`"))
}

/// `name` as a string (possibly empty).
///
/// # Errors
/// Missing: `missing_field`; not a string: `bad_type`.
pub(crate) fn string<'a>(o: &'a Map<String, Value>, name: &str) -> Result<&'a str, DecodeError> {
    field(o, name)?
        .as_str()
        .ok_or_else(|| DecodeError::new(InvalidKind::BadType, format!("{name} must be a string")))
}

/// `name` as a non-empty string.
///
/// # Errors
/// As [`string`], and empty: `bad_value`.
pub(crate) fn non_empty<'a>(o: &'a Map<String, Value>, name: &str) -> Result<&'a str, DecodeError> {
    let s = string(o, name)?;
    if s.is_empty() {
        return Err(DecodeError::new(
            InvalidKind::BadValue,
            format!("{name} is empty"),
        ));
    }
    Ok(s)
}
