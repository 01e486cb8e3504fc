//! The clicks stream (issue 20): any JSON objects — Flink's example
//! `{"user_id":101,"page":"/products/1","timestamp":"2024-04-25 10:00:01"}` — read only by
//! the aggregates declared on it (`stream = "clicks"`). `[clicks]` says where a record's
//! event time is and how it is written, and what the duplicate filter knows it by:
//!
//! ```toml
//! [clicks]
//! time-field = "timestamp"            # a field path, nested ones too (`meta.ts`)
//! time-format = "%Y-%m-%d %H:%M:%S"   # strftime, or rfc3339, epoch-millis, epoch-seconds
//! id-field = ""                       # none: every record is one click
//! ```
//!
//! Decisions (where the issue is silent):
//! - a time written without an offset is UTC, as Flink's `TIMESTAMP` windows are aligned
//!   (`TUMBLE` on a `TIMESTAMP` column ignores the session zone); a format with `%z` reads
//!   the offset written;
//! - without an id field a record is told apart by its place in the log, so a click sent
//!   twice counts twice (Flink's `COUNT(*)` over a source without a key does too); with
//!   one, a repeated id is a duplicate within the duplicate filter's horizon, as an event's
//!   `event_id` is;
//! - a record that is not a JSON object, has no time field, or a time its format does not
//!   read goes to the dead-letter store with its reason, like an invalid event.

use chrono::{DateTime, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::declared::{Paths, Values};
use crate::event::{DecodeError, InvalidKind};

/// `[clicks]`: how a click's time and identity are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ClicksSection {
    /// The field path holding the event time.
    pub time_field: String,
    /// How it is written: a strftime pattern (`%Y-%m-%d %H:%M:%S`), `rfc3339`,
    /// `epoch-millis` or `epoch-seconds`.
    pub time_format: String,
    /// The field path whose value identifies a click for the duplicate filter; empty:
    /// none (a record is its place in the log).
    pub id_field: String,
}

impl Default for ClicksSection {
    fn default() -> Self {
        Self {
            time_field: "timestamp".into(),
            time_format: "%Y-%m-%d %H:%M:%S".into(),
            id_field: String::new(),
        }
    }
}

/// How a time is written.
#[derive(Debug, Clone, PartialEq)]
enum TimeFormat {
    /// A strftime pattern; with an offset (`%z`) or without (UTC).
    Pattern {
        text: String,
        offset: bool,
    },
    Rfc3339,
    EpochMillis,
    EpochSeconds,
}

/// `[clicks]` checked: what the clicks lane reads a record with.
#[derive(Debug, Clone, PartialEq)]
pub struct Clicks {
    format: TimeFormat,
    /// Path ids of the time (0) and, when configured, the id (1) among the clicks' paths
    /// ([`crate::declared::Plan::only`] numbers them first).
    with_id: bool,
    time_field: String,
}

fn is_path(p: &str) -> bool {
    !p.is_empty() && p.split('.').all(|s| !s.is_empty())
}

impl ClicksSection {
    /// The section checked.
    ///
    /// # Errors
    /// One line naming the key and what is wrong.
    pub fn compile(&self) -> Result<Clicks, String> {
        if !is_path(&self.time_field) {
            return Err(format!(
                "clicks.time-field: {:?} is not a field path (a.b.c)",
                self.time_field
            ));
        }
        if !self.id_field.is_empty() && !is_path(&self.id_field) {
            return Err(format!(
                "clicks.id-field: {:?} is not a field path (a.b.c)",
                self.id_field
            ));
        }
        let format = match self.time_format.as_str() {
            "rfc3339" => TimeFormat::Rfc3339,
            "epoch-millis" => TimeFormat::EpochMillis,
            "epoch-seconds" => TimeFormat::EpochSeconds,
            p if p.contains('%') => TimeFormat::Pattern {
                text: p.to_string(),
                offset: p.contains("%z") || p.contains("%:z") || p.contains("%#z"),
            },
            p => {
                return Err(format!(
                    "clicks.time-format: {p:?} is none of a strftime pattern (%Y-%m-%d %H:%M:%S), rfc3339, epoch-millis, epoch-seconds"
                ));
            }
        };
        let clicks = Clicks {
            format,
            with_id: !self.id_field.is_empty(),
            time_field: self.time_field.clone(),
        };
        // A pattern must read back a whole date and time it wrote.
        if let TimeFormat::Pattern { text, .. } = &clicks.format {
            let probe = DateTime::from_timestamp_millis(1_714_039_201_000).expect("in range");
            let mut written = String::new();
            let readable =
                std::fmt::Write::write_fmt(&mut written, format_args!("{}", probe.format(text)))
                    .is_ok()
                    && clicks.parse_text(&written).is_some();
            if !readable {
                return Err(format!(
                    "clicks.time-format: {text:?} does not read a whole date and time (%Y-%m-%d %H:%M:%S, …)"
                ));
            }
        }
        Ok(clicks)
    }

    /// The paths a click is read for before any declared one: the time, then the id.
    #[must_use]
    pub fn first_paths(&self) -> Vec<&str> {
        let mut first = vec![self.time_field.as_str()];
        if !self.id_field.is_empty() {
            first.push(&self.id_field);
        }
        first
    }
}

/// A JSON string's text without its quotes (escapes left as written), or `None`.
fn unquoted(raw: &[u8]) -> Option<&[u8]> {
    raw.strip_prefix(b"\"")?.strip_suffix(b"\"")
}

impl Clicks {
    /// Epoch ms of a time written as text.
    fn parse_text(&self, text: &str) -> Option<i64> {
        match &self.format {
            TimeFormat::Pattern { text: p, offset } => {
                if *offset {
                    DateTime::parse_from_str(text, p)
                        .ok()
                        .map(|t| t.timestamp_millis())
                } else {
                    NaiveDateTime::parse_from_str(text, p)
                        .ok()
                        .map(|t| t.and_utc().timestamp_millis())
                }
            }
            TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.timestamp_millis()),
            TimeFormat::EpochMillis => text.parse().ok(),
            TimeFormat::EpochSeconds => text.parse::<i64>().ok()?.checked_mul(1000),
        }
    }

    /// Reads `value` (a record of the clicks log) into `values` (its time, its id, then
    /// the declared paths, as `paths` numbers them): its event time and its id (`None`
    /// without an id field).
    ///
    /// # Errors
    /// The dead-letter reason: oversize, not a JSON object, no time or id, a time the
    /// format does not read.
    pub fn decode<'r>(
        &self,
        value: &'r [u8],
        paths: &Paths,
        max_bytes: usize,
        values: &mut Values<'r>,
    ) -> Result<(i64, Option<&'r str>), DecodeError> {
        crate::event::check_size(value, max_bytes)?;
        let not_json = |m: String| DecodeError::new(InvalidKind::NotJson, m);
        serde_json::from_slice::<serde::de::IgnoredAny>(value)
            .map_err(|e| not_json(format!("not JSON: {e}")))?;
        if value.trim_ascii_start().first() != Some(&b'{') {
            return Err(not_json("not a JSON object".into()));
        }
        paths.extract(value, values).map_err(not_json)?;
        let field = &self.time_field;
        let raw = values[0].filter(|r| *r != b"null").ok_or_else(|| {
            DecodeError::new(InvalidKind::MissingField, format!("no {field:?} field"))
        })?;
        // The record is valid JSON: its text is UTF-8.
        let text = std::str::from_utf8(unquoted(raw).unwrap_or(raw)).unwrap_or_default();
        let ts = self.parse_text(text).ok_or_else(|| {
            DecodeError::new(
                InvalidKind::BadValue,
                format!(
                    "{field} {} is not a time written {:?}",
                    String::from_utf8_lossy(raw),
                    self.format_text()
                ),
            )
        })?;
        if !self.with_id {
            return Ok((ts, None));
        }
        let id = values[1]
            .filter(|r| *r != b"null")
            .ok_or_else(|| DecodeError::new(InvalidKind::MissingField, "no id field"))?;
        let id = std::str::from_utf8(unquoted(id).unwrap_or(id)).unwrap_or_default();
        Ok((ts, Some(id)))
    }

    fn format_text(&self) -> &str {
        match &self.format {
            TimeFormat::Pattern { text, .. } => text,
            TimeFormat::Rfc3339 => "rfc3339",
            TimeFormat::EpochMillis => "epoch-millis",
            TimeFormat::EpochSeconds => "epoch-seconds",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declared::Plan;

    fn read(section: &ClicksSection, record: &str) -> Result<(i64, Option<String>), String> {
        let clicks = section.compile()?;
        let plan = Plan::default().only(crate::stream::Stream::Clicks, &section.first_paths());
        let mut values = Values::new();
        clicks
            .decode(record.as_bytes(), &plan.paths, 1 << 20, &mut values)
            .map(|(t, id)| (t, id.map(str::to_string)))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flinks_example_reads_as_utc() {
        let s = ClicksSection::default();
        let r = r#"{"user_id":101,"page":"/products/1","timestamp":"2024-04-25 10:00:01"}"#;
        // 2024-04-25T10:00:01Z, worked out by hand: 19838 days after 1970-01-01.
        assert_eq!(read(&s, r), Ok((19_838 * 86_400_000 + 36_001_000, None)));
    }

    #[test]
    fn other_formats_and_ids() {
        let s = ClicksSection {
            time_field: "meta.ts".into(),
            time_format: "epoch-seconds".into(),
            id_field: "click_id".into(),
        };
        assert_eq!(
            read(&s, r#"{"meta":{"ts":1714039201},"click_id":"c-1"}"#),
            Ok((1_714_039_201_000, Some("c-1".into())))
        );
        assert_eq!(
            read(&s, r#"{"meta":{"ts":1714039201},"click_id":7}"#),
            Ok((1_714_039_201_000, Some("7".into())))
        );
        assert!(
            read(&s, r#"{"meta":{"ts":1714039201}}"#)
                .unwrap_err()
                .contains("missing_field")
        );
        let s = ClicksSection {
            time_format: "%d/%m/%Y %H:%M:%S %z".into(),
            ..ClicksSection::default()
        };
        assert_eq!(
            read(&s, r#"{"timestamp":"25/04/2024 12:00:01 +0200"}"#),
            Ok((1_714_039_201_000, None))
        );
        let s = ClicksSection {
            time_format: "rfc3339".into(),
            ..ClicksSection::default()
        };
        assert_eq!(
            read(&s, r#"{"timestamp":"2024-04-25T10:00:01.5Z"}"#),
            Ok((1_714_039_201_500, None))
        );
    }

    #[test]
    fn bad_records_and_bad_settings_say_why() {
        let s = ClicksSection::default();
        let reason = |r: &str| read(&s, r).unwrap_err();
        assert!(reason("[1,2]").starts_with("not_json"));
        assert!(reason("{\"timestamp\":").starts_with("not_json"));
        assert!(reason(r#"{"page":"/"}"#).starts_with("missing_field"));
        assert!(reason(r#"{"timestamp":null}"#).starts_with("missing_field"));
        assert!(reason(r#"{"timestamp":"2024-04-25T10:00:01"}"#).starts_with("bad_value"));
        let bad = |f: &str| {
            ClicksSection {
                time_format: f.into(),
                ..ClicksSection::default()
            }
            .compile()
            .unwrap_err()
        };
        assert!(bad("%H:%M").contains("whole date and time"));
        assert!(bad("yyyy-MM-dd").contains("clicks.time-format"));
        let e = ClicksSection {
            time_field: "a..b".into(),
            ..ClicksSection::default()
        }
        .compile()
        .unwrap_err();
        assert!(e.starts_with("clicks.time-field"));
    }
}
