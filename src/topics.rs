//! Topics as code: `topics/*.toml` describe the Kafka topics kappa uses; `kappa topics
//! apply` creates the missing ones and reports drift in existing ones (it never alters a
//! topic), `kappa topics list` shows partitions and end offsets.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Deserialize;

use crate::config::KafkaSection;

/// One topic specification (`topics/<name>.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Replication factor.
    pub replication_factor: u32,
    /// Topic configuration (`retention.ms`, …).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// Failures of topic management.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    /// A spec file is unreadable or invalid.
    #[error("{path}: {reason}")]
    Spec {
        /// File.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The admin API failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The brokers did not answer within `kafka.connect-timeout`.
    #[error("kafka: {0}")]
    Unreachable(String),
}

/// The specifications in the repository's `topics/`, built into the binary: used when no
/// `--dir` is given and `./topics` does not exist (a binary run outside the repository).
pub const BUILT_IN: [(&str, &str); 6] = [
    (
        "kappa-control.toml",
        include_str!("../topics/kappa-control.toml"),
    ),
    (
        "kappa-partials.toml",
        include_str!("../topics/kappa-partials.toml"),
    ),
    (
        "shop-clicks.toml",
        include_str!("../topics/shop-clicks.toml"),
    ),
    (
        "shop-events.toml",
        include_str!("../topics/shop-events.toml"),
    ),
    (
        "shop-products.toml",
        include_str!("../topics/shop-products.toml"),
    ),
    (
        "shop-reviews.toml",
        include_str!("../topics/shop-reviews.toml"),
    ),
];

/// The specifications of `dir`, or with `dir` `None` those of `./topics`, else the
/// built-in ones. Returns where they came from too.
///
/// # Errors
/// An unreadable or invalid specification, a directory with none.
pub fn specs(dir: Option<&Path>) -> Result<(Vec<TopicSpec>, String), TopicsError> {
    match dir {
        Some(d) => Ok((load_specs(d)?, d.display().to_string())),
        None if Path::new("topics").is_dir() => {
            Ok((load_specs(Path::new("topics"))?, "topics".into()))
        }
        None => {
            let specs = BUILT_IN
                .iter()
                .map(|(file, text)| parse_spec(Path::new(file), text))
                .collect::<Result<_, _>>()?;
            Ok((
                specs,
                "the ones built into kappa (no ./topics here; --dir DIR for others)".into(),
            ))
        }
    }
}

fn parse_spec(f: &Path, text: &str) -> Result<TopicSpec, TopicsError> {
    let spec_err = |reason: String| TopicsError::Spec {
        path: f.display().to_string(),
        reason,
    };
    let spec: TopicSpec = toml::from_str(text).map_err(|e| spec_err(e.message().to_string()))?;
    if spec.partitions == 0 || spec.replication_factor == 0 {
        return Err(spec_err(
            "partitions and replication-factor must be at least 1".into(),
        ));
    }
    Ok(spec)
}

/// Metadata of the cluster (of `topic` only, if given), waiting at most
/// `kafka.connect-timeout`: a dead broker is one line, not a long wait.
///
/// # Errors
/// The brokers did not answer in time.
pub fn reachable(
    client: &rdkafka::client::Client<impl rdkafka::client::ClientContext>,
    k: &KafkaSection,
    topic: Option<&str>,
) -> Result<rdkafka::metadata::Metadata, TopicsError> {
    client
        .fetch_metadata(topic, k.connect_timeout)
        .map_err(|e| {
            TopicsError::Unreachable(format!(
                "brokers {} did not answer within {} (kafka.connect-timeout): {e}",
                k.brokers,
                crate::config::fmt_duration(k.connect_timeout)
            ))
        })
}

/// Reads every `*.toml` of `dir`, sorted by file name.
///
/// # Errors
/// Unreadable or invalid files, or none at all.
pub fn load_specs(dir: &Path) -> Result<Vec<TopicSpec>, TopicsError> {
    let spec_err = |path: &Path, reason: String| TopicsError::Spec {
        path: path.display().to_string(),
        reason,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| spec_err(dir, e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(spec_err(dir, "no topic specifications (*.toml)".into()));
    }
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| spec_err(f, e.to_string()))?;
            parse_spec(f, &text)
        })
        .collect()
}

/// A client of `k.brokers` with `[kafka.properties]`: for admin calls, not consuming.
pub(crate) fn client_config(k: &KafkaSection) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    c
}

/// What `apply` found for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Created (or would be, with `dry_run`).
    Created,
    /// Exists and matches.
    UpToDate,
    /// Exists and differs; each line names a difference. Nothing was changed.
    Drift(Vec<String>),
}

/// Creates missing topics and reports drift of existing ones.
///
/// # Errors
/// Brokers unreachable or the admin API refused.
pub async fn apply(
    k: &KafkaSection,
    specs: &[TopicSpec],
    dry_run: bool,
) -> Result<Vec<(String, Applied)>, TopicsError> {
    let kerr = |e: rdkafka::error::KafkaError| TopicsError::Kafka(e.to_string());
    let admin: AdminClient<DefaultClientContext> = client_config(k).create().map_err(kerr)?;
    let md = reachable(admin.inner(), k, None)?;
    let existing: BTreeMap<String, usize> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let mut out = Vec::new();
    for spec in specs {
        match existing.get(&spec.name) {
            None => {
                if !dry_run {
                    let cfg: Vec<(&str, &str)> = spec
                        .config
                        .iter()
                        .map(|(a, b)| (a.as_str(), b.as_str()))
                        .collect();
                    let mut nt = NewTopic::new(
                        &spec.name,
                        i32::try_from(spec.partitions).unwrap_or(i32::MAX),
                        TopicReplication::Fixed(
                            i32::try_from(spec.replication_factor).unwrap_or(i32::MAX),
                        ),
                    );
                    for (a, b) in &cfg {
                        nt = nt.set(a, b);
                    }
                    let res = admin.create_topics(&[nt], &opts).await.map_err(kerr)?;
                    for r in res {
                        if let Err((name, code)) = r
                            && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
                        {
                            return Err(TopicsError::Kafka(format!("creating {name}: {code}")));
                        }
                    }
                }
                out.push((spec.name.clone(), Applied::Created));
            }
            Some(&parts) => {
                let mut drift = Vec::new();
                if parts != spec.partitions as usize {
                    drift.push(format!(
                        "partitions: {parts} on the broker, {} in the spec",
                        spec.partitions
                    ));
                }
                match admin
                    .describe_configs(&[ResourceSpecifier::Topic(&spec.name)], &opts)
                    .await
                {
                    Ok(results) => {
                        for r in results.into_iter().flatten() {
                            for (key, want) in &spec.config {
                                let have = r.get(key).and_then(|e| e.value.clone());
                                if have.as_deref() != Some(want.as_str()) {
                                    drift.push(format!(
                                        "{key}: {} on the broker, {want} in the spec",
                                        have.as_deref().unwrap_or("unset")
                                    ));
                                }
                            }
                        }
                    }
                    Err(e) => drift.push(format!("configuration could not be read ({e})")),
                }
                out.push((
                    spec.name.clone(),
                    if drift.is_empty() {
                        Applied::UpToDate
                    } else {
                        Applied::Drift(drift)
                    },
                ));
            }
        }
    }
    Ok(out)
}

/// Partition count and per-partition end offsets (high watermarks) of `topic`.
///
/// # Errors
/// Brokers unreachable or unknown topic.
pub fn end_offsets(k: &KafkaSection, topic: &str) -> Result<Vec<i64>, TopicsError> {
    let consumer: BaseConsumer = client_config(k)
        .create()
        .map_err(|e| TopicsError::Kafka(e.to_string()))?;
    let md = reachable(consumer.client(), k, Some(topic))?;
    let t = md
        .topics()
        .first()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| TopicsError::Kafka(format!("no topic {topic}")))?;
    t.partitions()
        .iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p.id(), k.connect_timeout)
                .map(|(_, high)| high)
                .map_err(|e| TopicsError::Kafka(e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_specs_parse() {
        let specs = load_specs(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/topics"))).unwrap();
        let events = specs.iter().find(|s| s.name == "shop.events").unwrap();
        assert_eq!(
            events.config.get("retention.ms").map(String::as_str),
            Some("-1")
        );
        assert!(events.partitions >= 1);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.toml"),
            "name = \"x\"\npartitions = 1\nreplication-factor = 1\nretention = 5\n",
        )
        .unwrap();
        let e = load_specs(dir.path()).unwrap_err().to_string();
        assert!(e.contains("retention"), "{e}");
    }
}
