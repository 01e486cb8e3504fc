//! Who reads what: the members of the workers' consumer group and the source partitions
//! each owns, as the group coordinator reports them. The merger exports them
//! (`kappa_workers_active`, `kappa_partition_owner_info`) for the Scale-out dashboard and
//! for autoscalers.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;

/// How often the merger asks the coordinator.
const REFRESH: Duration = Duration::from_secs(2);

/// One member of the workers' group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `client.id@host` (kappa's consumers set `client.id` to `kappa/PID`).
    pub worker: String,
    /// Source partitions assigned to it.
    pub partitions: Vec<u32>,
}

/// The members of `group` and their partitions of `topic`.
///
/// # Errors
/// The coordinator could not be asked.
pub fn members(
    client: &BaseConsumer,
    group: &str,
    topic: &str,
) -> Result<Vec<Member>, rdkafka::error::KafkaError> {
    let list = client.fetch_group_list(Some(group), Duration::from_secs(2))?;
    let mut out: Vec<Member> = list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| g.members())
        .map(|m| Member {
            worker: format!(
                "{}@{}",
                m.client_id(),
                m.client_host().trim_start_matches('/')
            ),
            partitions: m
                .assignment()
                .and_then(|a| assigned(a, topic))
                .unwrap_or_default(),
        })
        .collect();
    out.sort_by(|a, b| a.worker.cmp(&b.worker));
    Ok(out)
}

/// The partitions of `topic` in a consumer-protocol assignment (Kafka's
/// `ConsumerProtocolAssignment`, versions 0–3: version i16, then an array of topic
/// name and partitions, then user data). `None` when it does not parse.
fn assigned(bytes: &[u8], topic: &str) -> Option<Vec<u32>> {
    let mut r = Reader(bytes);
    r.take(2)?; // version
    let mut out = Vec::new();
    for _ in 0..r.i32()? {
        let len = usize::try_from(r.i16()?).ok()?;
        let name = r.take(len)?;
        for _ in 0..r.i32()? {
            let p = u32::try_from(r.i32()?).ok()?;
            if name == topic.as_bytes() {
                out.push(p);
            }
        }
    }
    out.sort_unstable();
    Some(out)
}

/// Big-endian reads off a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

/// Keeps the merger's worker metrics current until `cancel`, on its own thread: the group
/// coordinator is asked every 2 s; an answer that fails leaves the last values.
///
/// # Errors
/// The thread could not be started, or the Kafka client not created.
pub fn watch(
    cfg: &Config,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> Result<std::thread::JoinHandle<()>, super::ScaleError> {
    let k = &cfg.kafka;
    let client: BaseConsumer = crate::topics::client_config(k).create().map_err(|e| {
        crate::source::SourceError::kafka("creating the client that watches the workers' group", e)
    })?;
    let (group, topic) = (k.worker_group_id.clone(), k.topic.clone());
    Ok(std::thread::Builder::new()
        .name("group-watch".into())
        .spawn(move || {
            let mut shown = Vec::new();
            while !cancel.is_cancelled() {
                match members(&client, &group, &topic) {
                    Ok(m) => export(&metrics, &m, &mut shown),
                    Err(e) => tracing::debug!("asking for the members of {group}: {e}"),
                }
                let deadline = std::time::Instant::now() + REFRESH;
                while !cancel.is_cancelled() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })?)
}

/// Sets the metrics to `members`: the new owner series first, then the ones no longer
/// true removed (`shown` holds the series set last time), so that a scrape never sees a
/// partition without an owner that has one.
fn export(metrics: &Metrics, members: &[Member], shown: &mut Vec<[String; 2]>) {
    metrics
        .workers_active
        .set(i64::try_from(members.len()).unwrap_or(i64::MAX));
    let now: Vec<[String; 2]> = members
        .iter()
        .flat_map(|m| {
            m.partitions
                .iter()
                .map(|p| [p.to_string(), m.worker.clone()])
        })
        .collect();
    for [p, w] in &now {
        metrics.partition_owner.with_label_values(&[p, w]).set(1);
    }
    for gone in shown.iter().filter(|s| !now.contains(s)) {
        let _ = metrics
            .partition_owner
            .remove_label_values(&[&gone[0], &gone[1]]);
    }
    *shown = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consumer-protocol assignment as the Java client and librdkafka write it.
    fn assignment(version: i16, topics: &[(&str, &[i32])], user_data: &[u8]) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend(i32::try_from(topics.len()).unwrap().to_be_bytes());
        for (name, parts) in topics {
            b.extend(i16::try_from(name.len()).unwrap().to_be_bytes());
            b.extend(name.as_bytes());
            b.extend(i32::try_from(parts.len()).unwrap().to_be_bytes());
            for p in *parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend(i32::try_from(user_data.len()).unwrap().to_be_bytes());
        b.extend(user_data);
        b
    }

    #[test]
    fn assignments_give_the_partitions_of_the_topic_only() {
        let a = assignment(1, &[("other", &[0, 1]), ("shop.events", &[5, 2])], b"x");
        assert_eq!(assigned(&a, "shop.events"), Some(vec![2, 5]));
        assert_eq!(assigned(&a, "missing"), Some(vec![]));
        assert_eq!(assigned(&assignment(0, &[], &[]), "t"), Some(vec![]));
        // Cut anywhere inside the topics: not an assignment.
        let a = assignment(3, &[("t", &[0, 1, 2])], &[]);
        for cut in [1, 5, 8, 12, 20] {
            assert_eq!(assigned(&a[..cut], "t"), None, "cut at {cut}");
        }
        // A negative partition is not a partition.
        assert_eq!(assigned(&assignment(0, &[("t", &[-1])], &[]), "t"), None);
    }

    #[test]
    fn exported_owners_replace_the_previous_ones() {
        let m = Metrics::new();
        let member = |w: &str, p: Vec<u32>| Member {
            worker: w.into(),
            partitions: p,
        };
        let mut shown = Vec::new();
        export(
            &m,
            &[member("a", vec![0, 1]), member("b", vec![2, 3])],
            &mut shown,
        );
        export(&m, &[member("b", vec![0, 1, 2, 3])], &mut shown);
        let text = m.render();
        assert!(text.contains("kappa_workers_active 1"), "{text}");
        let owners: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("kappa_partition_owner_info{"))
            .collect();
        assert_eq!(owners.len(), 4, "{text}");
        assert!(owners.iter().all(|l| l.contains("worker=\"b\"")), "{text}");
    }
}
