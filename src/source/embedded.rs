//! The embedded log as a [`Source`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::{Source, SourceError};
use crate::log::{LogError, LogReader, RecordBatch};

/// How long a poll at the tail waits for the writer (files give no notification; this
/// bounds the latency it adds).
const TAIL_WAIT: Duration = Duration::from_millis(5);

/// Reads an embedded log directory, partitions in round-robin.
pub struct EmbeddedSource {
    reader: LogReader,
    /// Next partition to serve first (rotates so no partition starves).
    next: u32,
    /// In bounded mode, the end offsets when it was set.
    stop: Option<Vec<u64>>,
    /// Whether the (single, whole) assignment was handed out.
    assigned: bool,
    dir: std::path::PathBuf,
    /// A poll at the tail waits a little for the writer ([`Source::no_wait`] turns it off).
    wait: bool,
    /// [`Source::read_ahead`] was asked for.
    read_ahead: bool,
    /// The thread reading ahead, once a poll started it.
    ahead: Option<Ahead>,
    /// Where the reader must resume after the thread stopped (kept until every partition
    /// was sought there, so a failed seek loses nothing).
    resume: Option<Vec<u64>>,
}

/// A thread with a reader of its own that fills the next batch while the pipeline works
/// on the previous one. A batch is handed over by swapping buffers, and the pipeline's
/// previous buffer comes back to be filled (two batches in memory, one more than reading
/// directly). A seek or a bound stops the thread (the reader then resumes
/// where the pipeline got to); the next poll starts another.
struct Ahead {
    /// Each batch with the reader's next offset per partition after it.
    batches: mpsc::Receiver<Result<(RecordBatch, Vec<u64>), LogError>>,
    spare: mpsc::Sender<RecordBatch>,
    quit: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    /// Next offset per partition after what was handed to the pipeline.
    delivered: Vec<u64>,
    max_records: usize,
}

/// Appends up to `max_records` records to `batch`, partitions in round-robin from `next`
/// (which moves on by one), none at or after `stop`'s offsets.
fn fill(
    reader: &mut LogReader,
    next: &mut u32,
    stop: Option<&[u64]>,
    batch: &mut RecordBatch,
    max_records: usize,
) -> Result<usize, LogError> {
    let n = reader.partitions();
    let share = (max_records / n as usize).max(1);
    let mut total = 0;
    for i in 0..n {
        let p = (*next + i) % n;
        let mut want = share.min(max_records - total);
        if let Some(stop) = stop {
            let left = stop[p as usize].saturating_sub(reader.position(p));
            want = want.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        if want > 0 {
            total += reader.read(p, want, batch)?;
        }
        if total >= max_records {
            break;
        }
    }
    *next = (*next + 1) % n;
    Ok(total)
}

impl EmbeddedSource {
    /// Opens the log in `dir`, creating an empty one with `partitions` if none exists yet
    /// (an existing log keeps its own partition count).
    ///
    /// # Errors
    /// I/O failure or a malformed log.
    pub fn open(dir: &Path, partitions: u32) -> Result<Self, SourceError> {
        let reader = if dir.join("meta.json").exists() {
            LogReader::open(dir)?
        } else {
            LogReader::open_or_create(dir, partitions)?
        };
        Ok(Self {
            reader,
            next: 0,
            stop: None,
            assigned: false,
            dir: dir.to_path_buf(),
            wait: true,
            read_ahead: false,
            ahead: None,
            resume: None,
        })
    }

    /// Next offset per partition the pipeline will be handed.
    fn position(&self, p: u32) -> u64 {
        match (&self.ahead, &self.resume) {
            (Some(a), _) => a.delivered[p as usize],
            (None, Some(at)) => at[p as usize],
            (None, None) => self.reader.position(p),
        }
    }

    /// Starts the thread reading ahead from where the pipeline is.
    fn start_ahead(&mut self, max_records: usize) -> Result<Ahead, SourceError> {
        let n = self.reader.partitions();
        let mut reader = LogReader::open(&self.dir)?;
        let delivered: Vec<u64> = (0..n).map(|p| self.reader.position(p)).collect();
        for (p, &at) in (0..n).zip(&delivered) {
            reader.seek(p, at)?;
        }
        let (stop, mut next) = (self.stop.clone(), self.next);
        let (tx, batches) = mpsc::sync_channel(1);
        let (spare, spares) = mpsc::channel::<RecordBatch>();
        let quit = Arc::new(AtomicBool::new(false));
        let quitting = Arc::clone(&quit);
        let thread = std::thread::Builder::new()
            .name("log-reader".into())
            .spawn(move || {
                let mut b = RecordBatch::new();
                while !quitting.load(Ordering::Relaxed) {
                    match fill(&mut reader, &mut next, stop.as_deref(), &mut b, max_records) {
                        Ok(0)
                            if stop.as_ref().is_some_and(|s| {
                                (0..n).all(|p| reader.position(p) >= s[p as usize])
                            }) =>
                        {
                            return;
                        }
                        Ok(0) => std::thread::sleep(TAIL_WAIT),
                        Ok(_) => {
                            let at = (0..n).map(|p| reader.position(p)).collect();
                            if tx.send(Ok((std::mem::take(&mut b), at))).is_err() {
                                return;
                            }
                            // A buffer comes back for each one handed over, once the
                            // pipeline has the next: two batches in memory in all.
                            match spares.recv() {
                                Ok(spare) => b = spare,
                                Err(_) => return,
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            })
            .map_err(|source| LogError::Io {
                path: self.dir.clone(),
                source,
            })?;
        Ok(Ahead {
            batches,
            spare,
            quit,
            thread,
            delivered,
            max_records,
        })
    }

    /// Stops the thread reading ahead (if one runs): what it handed over ends where.
    fn halt(&mut self) -> Option<Vec<u64>> {
        let Ahead {
            batches,
            spare,
            quit,
            thread,
            delivered,
            ..
        } = self.ahead.take()?;
        quit.store(true, Ordering::Relaxed);
        // A thread blocked handing over a batch, or waiting for a buffer back, fails to
        // and returns.
        drop(batches);
        drop(spare);
        let _ = thread.join();
        Some(delivered)
    }

    /// Stops the thread reading ahead; the reader resumes where the pipeline got to.
    fn stop_ahead(&mut self) -> Result<(), SourceError> {
        if let Some(delivered) = self.halt() {
            self.resume = Some(delivered);
        }
        if let Some(at) = &self.resume {
            for (p, &at) in (0..self.reader.partitions()).zip(at) {
                self.reader.seek(p, at)?;
            }
            self.resume = None;
        }
        Ok(())
    }

    /// [`Source::poll`] from the thread reading ahead.
    fn poll_ahead(
        &mut self,
        batch: &mut RecordBatch,
        max_records: usize,
    ) -> Result<usize, SourceError> {
        if self
            .ahead
            .as_ref()
            .is_some_and(|a| a.max_records != max_records)
        {
            self.stop_ahead()?;
        }
        if self.ahead.is_none() {
            self.stop_ahead()?;
            self.ahead = Some(self.start_ahead(max_records)?);
        }
        let a = self.ahead.as_mut().expect("started above");
        let got = if self.wait {
            a.batches.recv_timeout(TAIL_WAIT).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => mpsc::TryRecvError::Empty,
                mpsc::RecvTimeoutError::Disconnected => mpsc::TryRecvError::Disconnected,
            })
        } else {
            a.batches.try_recv()
        };
        match got {
            // Nothing yet.
            Err(mpsc::TryRecvError::Empty) => Ok(0),
            // The thread ends on its own only at the bound (or by panicking).
            Err(mpsc::TryRecvError::Disconnected) => {
                if self.exhausted() {
                    return Ok(0);
                }
                self.stop_ahead()?;
                Err(LogError::Io {
                    path: self.dir.clone(),
                    source: std::io::Error::other("the thread reading the log ahead stopped"),
                }
                .into())
            }
            Ok(Ok((mut b, at))) => {
                a.delivered = at;
                let n = b.len();
                if batch.is_empty() {
                    std::mem::swap(batch, &mut b);
                } else {
                    for r in b.iter() {
                        batch.push(r.partition, r.offset, r.timestamp_ms, r.key, r.value);
                    }
                }
                b.clear();
                let _ = a.spare.send(b);
                Ok(n)
            }
            // The reader resumes at the record that failed: the error comes again.
            Ok(Err(e)) => {
                self.stop_ahead()?;
                Err(e.into())
            }
        }
    }
}

impl Drop for EmbeddedSource {
    fn drop(&mut self) {
        self.halt();
    }
}

impl EmbeddedSource {
    /// Per partition, the first offset whose record (ingest) time is at or after `ms`, or
    /// the end: every record before it was written earlier.
    ///
    /// # Errors
    /// The log cannot be read.
    pub fn offsets_for_time(&mut self, ms: i64) -> Result<Vec<u64>, SourceError> {
        (0..self.reader.partitions())
            .map(|p| Ok(self.reader.offset_for_timestamp(p, ms)?))
            .collect()
    }
}

impl Source for EmbeddedSource {
    fn id(&self) -> String {
        format!("embedded:{}", self.reader.log_id())
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn describe(&self) -> String {
        format!("the embedded log in {}", self.dir.display())
    }

    fn partitions(&self) -> u32 {
        self.reader.partitions()
    }

    fn take_assignment(&mut self) -> Option<Vec<u32>> {
        if self.assigned {
            return None;
        }
        self.assigned = true;
        Some((0..self.reader.partitions()).collect())
    }

    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), SourceError> {
        self.stop_ahead()?;
        Ok(self.reader.seek(partition, offset)?)
    }

    fn set_bounded(&mut self) -> Result<(), SourceError> {
        self.stop_ahead()?;
        self.stop = Some(self.end_offsets()?);
        Ok(())
    }

    fn exhausted(&mut self) -> bool {
        self.stop.as_ref().is_some_and(|stop| {
            (0..self.reader.partitions()).all(|p| self.position(p) >= stop[p as usize])
        })
    }

    fn poll(&mut self, batch: &mut RecordBatch, max_records: usize) -> Result<usize, SourceError> {
        if self.read_ahead {
            return self.poll_ahead(batch, max_records);
        }
        let stop = self.stop.as_deref();
        let total = fill(&mut self.reader, &mut self.next, stop, batch, max_records)?;
        if total == 0 && self.wait {
            // At the tail: wait a little for the writer instead of spinning.
            std::thread::sleep(TAIL_WAIT);
        }
        Ok(total)
    }

    fn read_ahead(&mut self) -> bool {
        self.read_ahead = true;
        true
    }

    fn no_wait(&mut self) {
        self.wait = false;
    }

    fn end_offsets(&mut self) -> Result<Vec<u64>, SourceError> {
        (0..self.reader.partitions())
            .map(|p| Ok(self.reader.end_offset(p)?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{LogConfig, LogWriter};

    /// Writes `n` records to each of 3 partitions (small segments: reads cross them).
    fn log(dir: &Path, n: u64) -> LogWriter {
        let cfg = LogConfig {
            partitions: 3,
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let mut w = LogWriter::open(dir, &cfg).unwrap();
        append(&mut w, 0, n);
        w
    }

    fn append(w: &mut LogWriter, from: u64, to: u64) {
        for i in from..to {
            for p in 0..3 {
                let v = format!("p{p} r{i}");
                w.append_to(p, b"k", v.as_bytes(), 1_000).unwrap();
            }
        }
        w.flush().unwrap();
    }

    /// Polls until `want` records came (or 5 s passed): (partition, offset, value).
    fn take(s: &mut EmbeddedSource, want: usize, max: usize) -> Vec<(u32, u64, String)> {
        take_for(s, want, max, Duration::from_secs(5))
    }

    fn take_for(
        s: &mut EmbeddedSource,
        want: usize,
        max: usize,
        patience: Duration,
    ) -> Vec<(u32, u64, String)> {
        let (mut out, mut b) = (Vec::new(), RecordBatch::new());
        let t = std::time::Instant::now();
        while out.len() < want && t.elapsed() < patience {
            b.clear();
            s.poll(&mut b, max).unwrap();
            out.extend(b.iter().map(|r| {
                (
                    r.partition,
                    r.offset,
                    String::from_utf8_lossy(r.value).into(),
                )
            }));
        }
        out
    }

    fn sorted(mut v: Vec<(u32, u64, String)>) -> Vec<(u32, u64, String)> {
        v.sort();
        v
    }

    /// Reading ahead hands over every record once, in offset order per partition, as
    /// reading directly does; a seek and a bound take effect from the next poll.
    #[test]
    fn reading_ahead_delivers_what_reading_directly_does() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = log(dir.path(), 200);
        let mut direct = EmbeddedSource::open(dir.path(), 3).unwrap();
        let mut ahead = EmbeddedSource::open(dir.path(), 3).unwrap();
        ahead.read_ahead();
        let want = take(&mut direct, 600, 64);
        let got = take(&mut ahead, 600, 64);
        assert_eq!(want.len(), 600);
        for p in 0..3 {
            let offsets: Vec<u64> = got.iter().filter(|r| r.0 == p).map(|r| r.1).collect();
            assert_eq!(offsets, (0..200).collect::<Vec<_>>(), "partition {p}");
        }
        assert_eq!(sorted(got), sorted(want));

        // Back to offset 150 of partition 1 while the thread may be ahead of it.
        ahead.seek(1, 150).unwrap();
        append(&mut w, 200, 210);
        let again = take(&mut ahead, 80, 64);
        let p1: Vec<u64> = again.iter().filter(|r| r.0 == 1).map(|r| r.1).collect();
        assert_eq!(p1, (150..210).collect::<Vec<_>>());
        assert_eq!(again.len(), 80);

        // Bounded: what is there now, then nothing, and exhausted.
        ahead.seek(0, 205).unwrap();
        ahead.set_bounded().unwrap();
        append(&mut w, 210, 220);
        let last = take(&mut ahead, 5, 64);
        assert_eq!(
            last.iter().map(|r| r.1).collect::<Vec<_>>(),
            (205..210).collect::<Vec<_>>()
        );
        assert!(take_for(&mut ahead, 1, 64, Duration::from_millis(200)).is_empty());
        assert!(ahead.exhausted());
    }
}
