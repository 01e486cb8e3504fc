//! Frame and index formats, segment naming, and [`Cursor`]: the chunked,
//! CRC-checking scanner over a partition's segments that readers and the
//! writer's recovery share.

use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{LogError, MAX_RECORD_BYTES};

/// `u32 body_len | u32 crc`.
pub(super) const HEADER_LEN: usize = 8;
/// `u64 offset | i64 timestamp_ms | u32 key_len`.
pub(super) const BODY_FIXED_LEN: usize = 20;
pub(super) const MAX_BODY_LEN: usize = BODY_FIXED_LEN + MAX_RECORD_BYTES;
pub(super) const INDEX_ENTRY_LEN: usize = 24;
/// An index entry is written every this many bytes of segment data.
pub(super) const INDEX_INTERVAL_BYTES: u64 = 64 << 10;

/// Encoded size of a frame whose key and value together have `key_value_len` bytes.
pub(super) const fn frame_len(key_value_len: usize) -> usize {
    HEADER_LEN + BODY_FIXED_LEN + key_value_len
}

/// Appends one encoded frame to `out`. The caller checks the size limit.
pub(super) fn encode_frame(
    out: &mut Vec<u8>,
    offset: u64,
    timestamp_ms: i64,
    key: &[u8],
    value: &[u8],
) {
    let body_len = BODY_FIXED_LEN + key.len() + value.len();
    debug_assert!(body_len <= MAX_BODY_LEN);
    out.reserve(HEADER_LEN + body_len);
    let start = out.len();
    out.extend_from_slice(
        &u32::try_from(body_len)
            .expect("frame size checked")
            .to_le_bytes(),
    );
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(key.len())
            .expect("key size checked")
            .to_le_bytes(),
    );
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + HEADER_LEN..]);
    out[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FrameInfo {
    /// Whole frame, header included.
    pub len: usize,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key_len: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parse {
    Frame(FrameInfo),
    /// At least this many bytes (from the frame start) are needed.
    NeedMore(usize),
    Bad(String),
}

/// Parses the frame at the start of `buf`, which must carry `expected_offset`.
pub(super) fn parse_frame(buf: &[u8], expected_offset: u64) -> Parse {
    if buf.len() < HEADER_LEN {
        return Parse::NeedMore(HEADER_LEN);
    }
    let body_len = u32_at(buf, 0) as usize;
    if !(BODY_FIXED_LEN..=MAX_BODY_LEN).contains(&body_len) {
        return Parse::Bad(format!("frame body length {body_len} out of range"));
    }
    let len = HEADER_LEN + body_len;
    if buf.len() < len {
        return Parse::NeedMore(len);
    }
    let body = &buf[HEADER_LEN..len];
    if crc32fast::hash(body) != u32_at(buf, 4) {
        return Parse::Bad("frame CRC mismatch".into());
    }
    let offset = u64_at(body, 0);
    if offset != expected_offset {
        return Parse::Bad(format!("expected offset {expected_offset}, found {offset}"));
    }
    let key_len = u32_at(body, 16) as usize;
    if key_len > body_len - BODY_FIXED_LEN {
        return Parse::Bad(format!("key length {key_len} exceeds frame"));
    }
    Parse::Frame(FrameInfo {
        len,
        offset,
        timestamp_ms: u64_at(body, 8).cast_signed(),
        key_len,
    })
}

/// One sparse index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IndexEntry {
    pub offset: u64,
    /// Byte position of the frame with `offset` in the segment file.
    pub position: u64,
    /// Largest record timestamp of the partition before `offset` (`i64::MIN` if none).
    pub max_ts: i64,
}

impl IndexEntry {
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.max_ts.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        Self {
            offset: u64_at(b, 0),
            position: u64_at(b, 8),
            max_ts: u64_at(b, 16).cast_signed(),
        }
    }
}

pub(super) fn segment_path(part_dir: &Path, base: u64) -> PathBuf {
    part_dir.join(format!("{base:020}.log"))
}

pub(super) fn index_path(part_dir: &Path, base: u64) -> PathBuf {
    part_dir.join(format!("{base:020}.idx"))
}

/// Base offsets of the segments in `part_dir`, ascending (empty if the directory is missing).
pub(super) fn list_segments(part_dir: &Path) -> Result<Vec<u64>, LogError> {
    let entries = match fs::read_dir(part_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LogError::io(part_dir, e)),
    };
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(part_dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".log")
            && stem.len() == 20
            && stem.bytes().all(|b| b.is_ascii_digit())
            && let Ok(base) = stem.parse::<u64>()
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// The index of segment `base`: its longest prefix of complete entries with
/// strictly increasing offsets and positions (a torn or zeroed tail is cut off).
/// Entries are not validated against the data here; see [`last_valid_entry`].
pub(super) fn read_index(part_dir: &Path, base: u64) -> Result<Vec<IndexEntry>, LogError> {
    let path = index_path(part_dir, base);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LogError::io(path, e)),
    };
    let mut out: Vec<IndexEntry> = Vec::with_capacity(bytes.len() / INDEX_ENTRY_LEN);
    for chunk in bytes.chunks_exact(INDEX_ENTRY_LEN) {
        let e = IndexEntry::decode(chunk);
        let ordered = match out.last() {
            Some(prev) => e.offset > prev.offset && e.position > prev.position,
            None => e.offset >= base,
        };
        if !ordered {
            break;
        }
        out.push(e);
    }
    Ok(out)
}

/// The last entry of `entries` (of segment `base`) satisfying `pred` whose frame
/// checks out: complete, CRC-valid and carrying the entry's offset.
pub(super) fn last_valid_entry(
    part_dir: &Path,
    base: u64,
    entries: &[IndexEntry],
    pred: impl Fn(&IndexEntry) -> bool,
) -> Result<Option<(usize, IndexEntry)>, LogError> {
    if entries.is_empty() {
        return Ok(None);
    }
    let path = segment_path(part_dir, base);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(path, e)),
    };
    for (i, e) in entries.iter().enumerate().rev() {
        if pred(e) && frame_at_is_valid(&file, e.position, e.offset) {
            return Ok(Some((i, *e)));
        }
    }
    Ok(None)
}

fn frame_at_is_valid(file: &File, position: u64, offset: u64) -> bool {
    let mut header = [0u8; HEADER_LEN];
    if file.read_exact_at(&mut header, position).is_err() {
        return false;
    }
    let body_len = u32_at(&header, 0) as usize;
    if !(BODY_FIXED_LEN..=MAX_BODY_LEN).contains(&body_len) {
        return false;
    }
    let mut frame = vec![0u8; HEADER_LEN + body_len];
    frame[..HEADER_LEN].copy_from_slice(&header);
    if file
        .read_exact_at(&mut frame[HEADER_LEN..], position + HEADER_LEN as u64)
        .is_err()
    {
        return false;
    }
    matches!(parse_frame(&frame, offset), Parse::Frame(_))
}

/// A record located by [`Cursor::next_frame`]; its bytes live in the cursor's buffer.
#[derive(Clone, Debug)]
pub(super) struct Frame {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key_len: usize,
    /// `key ++ value` within the cursor's buffer.
    pub key_value: Range<usize>,
}

/// Read chunk of scanning cursors (a partition's tail at open, end offsets, timestamp
/// look-ups); the hot-path reader uses larger chunks.
pub(super) const SCAN_CHUNK: usize = 256 << 10;

/// Sequential reader of one partition's frames, across segments.
///
/// Reads segment data in chunks into a reusable buffer with positional reads
/// and parses frames in place. At the tail (end of the last segment, or an
/// incomplete or bad frame with no later segment) it reports `None` and drops
/// the unparsed bytes, so that the next call reads them afresh (the writer may
/// have completed them, or a new writer may have truncated and rewritten them).
pub(super) struct Cursor {
    part_dir: PathBuf,
    seg_base: u64,
    file: Option<File>,
    buf: Vec<u8>,
    /// Unparsed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// File position of `buf[0]`.
    buf_pos: u64,
    /// Offset the next frame must carry.
    next_offset: u64,
    chunk: usize,
    /// Test hook run at the tail before looking for a later segment (the race window).
    #[cfg(test)]
    tail_hook: Option<Box<dyn FnMut() + Send>>,
}

impl Cursor {
    /// A cursor at byte `position` of segment `seg_base`, where the frame with
    /// offset `next_offset` is expected. The buffer is allocated on first read.
    pub(super) fn new(
        part_dir: PathBuf,
        seg_base: u64,
        position: u64,
        next_offset: u64,
        chunk: usize,
    ) -> Self {
        Self {
            part_dir,
            seg_base,
            file: None,
            buf: Vec::new(),
            start: 0,
            end: 0,
            buf_pos: position,
            next_offset,
            chunk,
            #[cfg(test)]
            tail_hook: None,
        }
    }

    /// Moves the cursor, keeping its buffer allocation.
    pub(super) fn reset(&mut self, seg_base: u64, position: u64, next_offset: u64) {
        if seg_base != self.seg_base {
            self.file = None;
        }
        self.seg_base = seg_base;
        self.start = 0;
        self.end = 0;
        self.buf_pos = position;
        self.next_offset = next_offset;
    }

    pub(super) fn seg_base(&self) -> u64 {
        self.seg_base
    }

    /// File position of the next unparsed frame in the current segment.
    pub(super) fn position(&self) -> u64 {
        self.buf_pos + self.start as u64
    }

    pub(super) fn next_offset(&self) -> u64 {
        self.next_offset
    }

    pub(super) fn key_value(&self, f: &Frame) -> &[u8] {
        &self.buf[f.key_value.clone()]
    }

    fn seg_path(&self) -> PathBuf {
        segment_path(&self.part_dir, self.seg_base)
    }

    /// The next complete, CRC-valid frame, or `None` at the tail for now.
    pub(super) fn next_frame(&mut self) -> Result<Option<Frame>, LogError> {
        // Set once a later segment was seen: the current segment is then final,
        // and whatever is read from now on decides between "switch" and "corrupt".
        let mut confirmed = false;
        loop {
            match parse_frame(&self.buf[self.start..self.end], self.next_offset) {
                Parse::Frame(f) => {
                    let body = self.start + HEADER_LEN;
                    self.start += f.len;
                    self.next_offset += 1;
                    return Ok(Some(Frame {
                        offset: f.offset,
                        timestamp_ms: f.timestamp_ms,
                        key_len: f.key_len,
                        key_value: body + BODY_FIXED_LEN..self.start,
                    }));
                }
                Parse::NeedMore(need) => {
                    if self.fill(need)? {
                        continue;
                    }
                    if self.file.is_none() {
                        return Ok(None); // segment file does not exist (yet)
                    }
                    let problem = (self.end > self.start).then(|| "incomplete frame".to_string());
                    if !self.at_tail(&mut confirmed, problem)? {
                        return Ok(None);
                    }
                }
                Parse::Bad(reason) => {
                    if !self.at_tail(&mut confirmed, Some(reason))? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Called when no further frame can be parsed from the current segment.
    /// `Ok(true)`: keep scanning (fresh data is to be read, or switched to the
    /// next segment); `Ok(false)`: this is the tail for now.
    fn at_tail(&mut self, confirmed: &mut bool, problem: Option<String>) -> Result<bool, LogError> {
        if *confirmed {
            return match problem {
                None => {
                    *confirmed = false;
                    self.seg_base = self.next_offset;
                    self.file = None;
                    self.buf_pos = 0;
                    self.start = 0;
                    self.end = 0;
                    Ok(true)
                }
                Some(reason) => Err(LogError::Corrupt {
                    path: self.seg_path(),
                    position: self.position(),
                    reason: format!(
                        "{reason} (offset {}), but a later segment exists",
                        self.next_offset
                    ),
                }),
            };
        }
        #[cfg(test)]
        if let Some(hook) = &mut self.tail_hook {
            hook();
        }
        let later = if problem.is_none() {
            // Clean end of frames: the writer rolls to a segment named by the next offset.
            self.next_offset != self.seg_base
                && segment_path(&self.part_dir, self.next_offset).exists()
        } else {
            list_segments(&self.part_dir)?
                .iter()
                .any(|&b| b > self.seg_base)
        };
        // Drop unparsed bytes, so they are read afresh from the file.
        self.end = self.start;
        *confirmed = later;
        Ok(later)
    }

    /// Reads more of the current segment so that at least `need` bytes from
    /// `start` may fit. `Ok(false)` at end of file or if the segment file does not exist.
    fn fill(&mut self, need: usize) -> Result<bool, LogError> {
        if self.file.is_none() {
            let path = self.seg_path();
            match File::open(&path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(LogError::io(path, e)),
            }
        }
        if self.start == self.end {
            self.buf_pos += self.start as u64;
            self.start = 0;
            self.end = 0;
        } else if self.start > 0
            && (self.end == self.buf.len() || self.buf.len() - self.start < need)
        {
            self.buf.copy_within(self.start..self.end, 0);
            self.buf_pos += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        let want = (self.start + need).max(self.chunk);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let file = self.file.as_ref().expect("opened above");
        let at = self.buf_pos + self.end as u64;
        loop {
            match file.read_at(&mut self.buf[self.end..], at) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LogError::io(segment_path(&self.part_dir, self.seg_base), e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_damage() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 7, -3, b"key", b"value");
        assert_eq!(buf.len(), frame_len(8));
        let Parse::Frame(f) = parse_frame(&buf, 7) else {
            panic!("not a frame")
        };
        assert_eq!(
            (f.len, f.offset, f.timestamp_ms, f.key_len),
            (buf.len(), 7, -3, 3)
        );
        assert_eq!(&buf[HEADER_LEN + BODY_FIXED_LEN..][..3], b"key");
        // wrong offset
        assert!(matches!(parse_frame(&buf, 8), Parse::Bad(_)));
        // every prefix is incomplete
        for cut in 0..buf.len() {
            assert!(
                matches!(parse_frame(&buf[..cut], 7), Parse::NeedMore(n) if n > cut),
                "cut {cut}"
            );
        }
        // every flipped body byte breaks the CRC
        for i in 4..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert!(matches!(parse_frame(&b, 7), Parse::Bad(_)), "flip {i}");
        }
    }

    /// The writer completes a frame and rolls between the reader's read (which
    /// saw half a frame) and its check for a later segment: the reader must read
    /// the current segment again instead of reporting corruption or skipping.
    #[test]
    fn cursor_rereads_before_trusting_a_later_segment() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let mut frames = Vec::new();
        for i in 0..4u64 {
            encode_frame(&mut frames, i, 0, b"k", &[b'v'; 40]);
        }
        let cut = frames.len() - 20;
        fs::write(segment_path(&d, 0), &frames[..cut]).unwrap();
        let mut c = Cursor::new(d.clone(), 0, 0, 0, 64);
        for i in 0..3 {
            assert_eq!(c.next_frame().unwrap().unwrap().offset, i);
        }
        let mut fired = false;
        let rest = frames[cut..].to_vec();
        let hd = d.clone();
        c.tail_hook = Some(Box::new(move || {
            if !fired {
                fired = true;
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(segment_path(&hd, 0))
                    .unwrap();
                f.write_all(&rest).unwrap();
                let mut next = Vec::new();
                encode_frame(&mut next, 4, 0, b"k", b"in the next segment");
                fs::write(segment_path(&hd, 4), next).unwrap();
            }
        }));
        assert_eq!(c.next_frame().unwrap().unwrap().offset, 3);
        let f = c.next_frame().unwrap().unwrap();
        assert_eq!((f.offset, c.seg_base()), (4, 4));
        assert_eq!(&c.key_value(&f)[1..], b"in the next segment");
        assert!(c.next_frame().unwrap().is_none());
    }

    #[test]
    fn index_prefix_stops_at_disorder() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        for e in [(10, 0, 1), (20, 100, 2), (30, 200, 3), (0, 0, 0)] {
            IndexEntry {
                offset: e.0,
                position: e.1,
                max_ts: e.2,
            }
            .encode(&mut bytes);
        }
        bytes.extend_from_slice(&[1, 2, 3]); // torn tail
        fs::write(index_path(dir.path(), 10), &bytes).unwrap();
        let got = read_index(dir.path(), 10).unwrap();
        assert_eq!(
            got.iter().map(|e| e.offset).collect::<Vec<_>>(),
            vec![10, 20, 30]
        );
        assert!(read_index(dir.path(), 99).unwrap().is_empty());
    }
}
