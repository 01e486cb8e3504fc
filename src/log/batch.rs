//! [`RecordBatch`]: records backed by one reusable buffer.

/// One record, borrowed from a [`RecordBatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Partition it was read from.
    pub partition: u32,
    /// Offset within the partition (from 0).
    pub offset: u64,
    /// Record (ingest) timestamp, epoch milliseconds.
    pub timestamp_ms: i64,
    /// Record key (`user_id` for events).
    pub key: &'a [u8],
    /// Record value (the event JSON).
    pub value: &'a [u8],
}

#[derive(Clone, Copy, Debug)]
struct Meta {
    partition: u32,
    offset: u64,
    timestamp_ms: i64,
    /// Start of the key in `buf`; the value follows the key directly.
    start: usize,
    key_end: usize,
    end: usize,
}

/// A batch of records read from one or several partitions, backed by one
/// reusable buffer (no per-record allocation once the buffer has grown).
#[derive(Clone, Debug, Default)]
pub struct RecordBatch {
    buf: Vec<u8>,
    metas: Vec<Meta>,
}

impl RecordBatch {
    /// An empty batch.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes all records, keeping the allocated memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.metas.clear();
    }

    /// Number of records.
    #[must_use]
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// No records.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// The `i`-th record.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    #[must_use]
    pub fn get(&self, i: usize) -> Record<'_> {
        self.record(&self.metas[i])
    }

    /// The records, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = Record<'_>> {
        self.metas.iter().map(|m| self.record(m))
    }

    /// Bytes of keys and values held.
    #[must_use]
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// Pushes a record, copying key and value into the batch's buffer.
    pub fn push(
        &mut self,
        partition: u32,
        offset: u64,
        timestamp_ms: i64,
        key: &[u8],
        value: &[u8],
    ) {
        let start = self.buf.len();
        self.buf.reserve(key.len() + value.len());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(value);
        self.metas.push(Meta {
            partition,
            offset,
            timestamp_ms,
            start,
            key_end: start + key.len(),
            end: self.buf.len(),
        });
    }

    /// Pushes a record whose key and value are adjacent in `key_value`
    /// (`key_value[..key_len]` is the key): one copy.
    pub(crate) fn push_joined(
        &mut self,
        partition: u32,
        offset: u64,
        timestamp_ms: i64,
        key_value: &[u8],
        key_len: usize,
    ) {
        let start = self.buf.len();
        self.buf.extend_from_slice(key_value);
        self.metas.push(Meta {
            partition,
            offset,
            timestamp_ms,
            start,
            key_end: start + key_len,
            end: self.buf.len(),
        });
    }

    fn record(&self, m: &Meta) -> Record<'_> {
        Record {
            partition: m.partition,
            offset: m.offset,
            timestamp_ms: m.timestamp_ms,
            key: &self.buf[m.start..m.key_end],
            value: &self.buf[m.key_end..m.end],
        }
    }
}
