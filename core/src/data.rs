//! Recorded candles: loading the project's CSV format (strictly validated, fast), inferring the
//! timeframe, reporting the exchange's own gaps, and resampling to a coarser timeframe; and the
//! funding file beside the candles (`funding`: [`parse_funding_csv`], [`funding_path_for`]).
//!
//! Format: a header `open_time,open,high,low,close,volume`, then one closed candle per line;
//! `open_time` in milliseconds since the Unix epoch (UTC, years 1970 to 9999), prices and volume as
//! decimal strings.
//!
//! Every malformed input is an error that names the file, the 1-based line and what was wrong.
//! Missing candles (exchange outages) are *not* errors: the series stays a sequence of the candles
//! that exist, as the exchange serves them, and each hole is listed in [`CandleSeries::gaps`] so the
//! caller can warn. Nothing here ever invents a price to fill a gap.
//!
//! The funding-rate file beside the candle files is [`funding`]'s (re-exported here).

mod funding;

pub use funding::{
    funding_csv, funding_file_name, funding_path_for, load_funding_csv, load_funding_for,
    parse_funding_csv, FundingError, FundingRate, FUNDING_HEADER,
};

use crate::domain::{Candle, Price, Symbol, Timeframe};
use rust_decimal::Decimal;
use std::fmt;
use std::path::Path;

/// The header every candle file starts with.
pub const HEADER: &str = "open_time,open,high,low,close,volume";
const COLUMNS: [&str; 6] = ["open_time", "open", "high", "low", "close", "volume"];
/// Latest `open_time` a row may have: 9999-12-31T23:59:59.999Z. Together with the earliest, 0
/// (1970-01-01), it keeps every difference of two open times and every open time plus a
/// timeframe within `i64`.
pub const MAX_OPEN_TIME: i64 = 253_402_300_799_999;

/// A hole in recorded data: `missing_candles` candles are absent right after the candle that opened
/// at `after_open_time`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Gap {
    pub after_open_time: i64,
    pub missing_candles: u64,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} candle(s) missing after {}",
            self.missing_candles,
            utc(self.after_open_time)
        )
    }
}

/// Candles of one timeframe, sorted by open time, with the gaps between them.
#[derive(Clone, PartialEq, Debug)]
pub struct CandleSeries {
    pub candles: Vec<Candle>,
    pub timeframe: Timeframe,
    pub gaps: Vec<Gap>,
}

impl CandleSeries {
    /// Build a series from candles already known to be sorted, unique and aligned to `timeframe`;
    /// the gaps are computed.
    pub fn new(candles: Vec<Candle>, timeframe: Timeframe) -> Self {
        let gaps = find_gaps(&candles, timeframe);
        CandleSeries {
            candles,
            timeframe,
            gaps,
        }
    }

    pub fn len(&self) -> usize {
        self.candles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.candles.is_empty()
    }

    /// This series at a coarser timeframe (see [`resample`] for `complete_only`).
    pub fn resampled(&self, to: Timeframe, complete_only: bool) -> CandleSeries {
        CandleSeries::new(
            resample(&self.candles, self.timeframe, to, complete_only),
            to,
        )
    }
}

/// Why a candle file was refused. Every variant names the file; row problems carry the 1-based line.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum DataError {
    #[error("{file}: cannot read the candle file: {detail}")]
    Read { file: String, detail: String },
    #[error("{file}: the file is empty (expected the header `{HEADER}`)")]
    Empty { file: String },
    #[error("{file}:{line}: bad header `{found}` (expected `{HEADER}`)")]
    BadHeader {
        file: String,
        line: usize,
        found: String,
    },
    #[error("{file}:{line}: expected 6 comma-separated fields ({HEADER}), found {found}")]
    FieldCount {
        file: String,
        line: usize,
        found: usize,
    },
    #[error("{file}:{line}: column `{column}` is not a number: `{value}`")]
    NotNumeric {
        file: String,
        line: usize,
        column: &'static str,
        value: String,
    },
    #[error("{file}:{line}: impossible candle: {detail}")]
    BadCandle {
        file: String,
        line: usize,
        detail: String,
    },
    #[error("{file}:{line}: duplicate open_time {open_time} ({time}); line {first_line} has the same time", time = utc(*open_time))]
    Duplicate {
        file: String,
        line: usize,
        open_time: i64,
        first_line: usize,
    },
    #[error("{file}:{line}: open_time {open_time} ({time}) is earlier than the previous row's {previous} ({prev_time}); rows must be sorted by time", time = utc(*open_time), prev_time = utc(*previous))]
    Unsorted {
        file: String,
        line: usize,
        open_time: i64,
        previous: i64,
    },
    #[error("{file}:{line}: open_time {open_time} ({time}) is not aligned to the file's {timeframe} timeframe (not a multiple of {ms} ms)", time = utc(*open_time), ms = timeframe.millis())]
    Misaligned {
        file: String,
        line: usize,
        open_time: i64,
        timeframe: Timeframe,
    },
    #[error("{file}: no candle rows after the header")]
    NoRows { file: String },
    #[error("{file}: cannot infer the timeframe: {detail}")]
    Timeframe { file: String, detail: String },
    /// A funding file ([`parse_funding_csv`]) that is not one.
    #[error(transparent)]
    Funding(#[from] FundingError),
}

/// Read and validate a candle file (see [`parse_csv`]).
///
/// The file is streamed in pieces (a file-sized buffer would cost a page fault per 4 KiB, which
/// dominates a short process), each chunk of lines on its own thread as in [`parse_csv`]. When
/// anything is wrong the file is read again whole and parsed in order, so every error is exactly
/// the one of that plain reading (a file that is not UTF-8 is refused as such first).
pub fn load_csv(path: &Path) -> Result<CandleSeries, DataError> {
    let file = path.display().to_string();
    if let Some(series) = stream_csv(path, &file, None, PIECE_BYTES) {
        return Ok(series);
    }
    let bytes = std::fs::read(path).map_err(|e| DataError::Read {
        file: file.clone(),
        detail: e.to_string(),
    })?;
    if let Err(e) = std::str::from_utf8(&bytes) {
        return Err(DataError::Read {
            file,
            detail: format!("not UTF-8 text ({e})"),
        });
    }
    parse_bytes(&bytes, &file, 1)
}

/// Parse candle CSV text; `source` names it in errors (usually the file path).
///
/// The timeframe is the most common spacing between consecutive rows; a file with a single row
/// takes it from a `-15m`-style token in `source` (as in `BTCUSDT-perp-15m.csv`).
///
/// Big inputs are parsed in chunks on several threads; the result and any error are exactly those
/// of reading the rows one after the other.
pub fn parse_csv(text: &str, source: &str) -> Result<CandleSeries, DataError> {
    parse_bytes(text.as_bytes(), source, chunks_for(text.len()))
}

/// Inputs from this size up are parsed on several threads: below it, starting a thread (tens of
/// µs) costs about what it saves.
pub(crate) const PARALLEL_MIN_BYTES: usize = 256 * 1024;
/// Each chunk is at least this big, and there are never more than [`MAX_CHUNKS`].
const MIN_CHUNK_BYTES: usize = PARALLEL_MIN_BYTES / 2;
const MAX_CHUNKS: usize = 8;
/// Bytes read at a time when streaming a file (grown for a longer line).
const PIECE_BYTES: usize = 128 * 1024;

/// How many chunks to parse `len` bytes in: one per available core, each at least
/// [`MIN_CHUNK_BYTES`], so small inputs stay on the calling thread.
fn chunks_for(len: usize) -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if len < PARALLEL_MIN_BYTES {
        return 1;
    }
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    (len / MIN_CHUNK_BYTES).clamp(1, cores.clamp(1, MAX_CHUNKS))
}

/// The first non-blank line, checked to be the header: the offset just past it and its line.
fn header(bytes: &[u8], source: &str) -> Result<(usize, usize), DataError> {
    let mut pos = 0usize;
    let mut line = 0usize;
    let header = loop {
        if pos >= bytes.len() {
            return Err(DataError::Empty {
                file: source.to_string(),
            });
        }
        line += 1;
        let end = line_end(bytes, pos);
        let l = line_str(&bytes[pos..end], source)?.trim();
        pos = end + 1;
        if !l.is_empty() {
            break l;
        }
    };
    let header_ok = header.split(',').map(str::trim).eq(COLUMNS.iter().copied());
    if !header_ok {
        return Err(DataError::BadHeader {
            file: source.to_string(),
            line,
            found: excerpt(header),
        });
    }
    Ok((pos.min(bytes.len()), line))
}

/// Parse candle CSV bytes in up to `chunks` pieces on as many threads (1: on this thread).
///
/// Only the lines the fast row parser does not take are checked for UTF-8, so success implies
/// valid text, and for valid text the result and errors are exactly those of the sequential parse:
/// each chunk is a run of whole lines checked like the whole file, the checks between
/// consecutive rows are repeated at each seam, the spacing tallies are merged exactly, and any
/// failure is reported by re-reading sequentially (errors are rare; the re-read gives the first
/// failing line and its exact message without tracking line numbers across chunks).
pub fn parse_bytes(bytes: &[u8], source: &str, chunks: usize) -> Result<CandleSeries, DataError> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let (start, line) = header(bytes, source)?;
    let body = &bytes[start..];
    // ~40 bytes per row in real files; reserving avoids regrowth of the biggest allocation.
    let capacity = bytes.len() / 40 + 1;
    let bounds = chunk_bounds(body, chunks);
    let joined = if bounds.len() > 2 {
        parse_chunks(body, &bounds, line, capacity, source)
    } else {
        None
    };
    let (candles, spacings) = match joined {
        Some(joined) => joined,
        // One chunk, or the chunks failed: the exact error comes from reading in order.
        None => {
            let rows = parse_rows(body, line, capacity, source)?;
            (rows.candles, rows.spacings)
        }
    };
    finish(candles, spacings, source, |row| line_of_row(bytes, row))
}

const BOM: &[u8] = "\u{feff}".as_bytes();

/// The series from its checked rows: the timeframe, alignment and gaps (`line_of` gives the line
/// of a row for an error).
fn finish(
    candles: Vec<Candle>,
    spacings: Spacings,
    source: &str,
    line_of: impl FnOnce(usize) -> usize,
) -> Result<CandleSeries, DataError> {
    if candles.is_empty() {
        return Err(DataError::NoRows {
            file: source.to_string(),
        });
    }
    let timeframe = infer_timeframe(&candles, &spacings, source)?;
    let ms = timeframe.millis();
    // Every row is aligned when the first is and every spacing is a multiple of the timeframe;
    // only otherwise (or when the tally overflowed) are the rows scanned to find the culprit.
    let surely_aligned = !spacings.overflow
        && candles[0].open_time.rem_euclid(ms) == 0
        && spacings.seen.iter().all(|&(s, _)| s % ms == 0);
    if !surely_aligned {
        if let Some(bad) = candles.iter().position(|c| c.open_time.rem_euclid(ms) != 0) {
            return Err(DataError::Misaligned {
                file: source.to_string(),
                line: line_of(bad),
                open_time: candles[bad].open_time,
                timeframe,
            });
        }
    }
    let gaps = spacings
        .gaps(ms)
        .unwrap_or_else(|| find_gaps(&candles, timeframe));
    Ok(CandleSeries {
        candles,
        timeframe,
        gaps,
    })
}

/// Where to cut `body` into about `chunks` runs of whole lines: offsets starting with 0 and ending
/// with `body.len()`, each inner one just after a `\n` (so every piece starts a line).
fn chunk_bounds(body: &[u8], chunks: usize) -> Vec<usize> {
    let mut bounds = vec![0];
    for k in 1..chunks {
        let target = body.len() / chunks * k;
        let last = bounds[bounds.len() - 1];
        if target < last {
            continue;
        }
        match body[target..].iter().position(|&c| c == b'\n') {
            Some(nl) if target + nl + 1 < body.len() => bounds.push(target + nl + 1),
            _ => break,
        }
    }
    bounds.push(body.len());
    bounds
}

/// Parse the pieces of `body` cut at `bounds` on as many threads and join their rows (see
/// [`join_rows`]). `None` when a piece or a seam fails.
fn parse_chunks(
    body: &[u8],
    bounds: &[usize],
    line: usize,
    capacity: usize,
    source: &str,
) -> Option<(Vec<Candle>, Spacings)> {
    let parts: Vec<&[u8]> = bounds.windows(2).map(|w| &body[w[0]..w[1]]).collect();
    let (first, rest) = std::thread::scope(|s| {
        // Later pieces on new threads, the first on this one: it keeps the big allocation that
        // the others are appended to.
        let handles: Vec<_> = parts[1..]
            .iter()
            .map(|part| s.spawn(move || parse_rows(part, 0, part.len() / 40 + 1, source).ok()))
            .collect();
        let first = parse_rows(parts[0], line, capacity, source).ok();
        (first, join_all(handles))
    });
    join_rows(first?, rest)
}

fn join_all<T>(handles: Vec<std::thread::ScopedJoinHandle<'_, T>>) -> Vec<T> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
        .collect()
}

/// Join chunks' rows in file order, repeating at each seam the checks the row loop makes between
/// consecutive rows. `None` when a chunk failed or a seam check does: the caller then re-reads
/// sequentially for the exact error (a later chunk's line numbers are relative, so its own error
/// is not the one to report).
fn join_rows(first: Rows, rest: Vec<Option<Rows>>) -> Option<(Vec<Candle>, Spacings)> {
    let Rows {
        mut candles,
        mut spacings,
        ..
    } = first;
    for rows in rest {
        let rows = rows?;
        if let (Some(prev), Some(next)) = (candles.last(), rows.candles.first()) {
            // A duplicate or unsorted row at the seam.
            if next.open_time <= prev.open_time {
                return None;
            }
            spacings.add(prev.open_time, next.open_time - prev.open_time);
        }
        spacings.merge(rows.spacings);
        candles.extend_from_slice(&rows.candles);
    }
    Some((candles, spacings))
}

/// [`load_csv`]'s reading: the file in pieces of `piece` bytes, its rows in `chunks` chunks of
/// whole lines (by default as [`chunks_for`] its size) each streamed and parsed on its own thread,
/// joined as [`parse_bytes`] does. `None` when anything fails, including an I/O error or a line
/// that is not UTF-8: the caller then reads the file whole for the exact error.
fn stream_csv(
    path: &Path,
    source: &str,
    chunks: Option<usize>,
    piece: usize,
) -> Option<CandleSeries> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    // The header must end within the first [`PIECE_BYTES`] (else: the plain reading).
    let mut head = vec![0u8; PIECE_BYTES.min(usize::try_from(len).ok()?)];
    file.read_exact(&mut head).ok()?;
    let bom = if head.starts_with(BOM) { BOM.len() } else { 0 };
    let (start, line) = header(&head[bom..], source).ok()?;
    let body_start = (bom + start) as u64;
    if body_start >= len || head[bom + start - 1] != b'\n' {
        return None;
    }
    let size = usize::try_from(len).ok()?;
    let chunks = chunks.unwrap_or_else(|| chunks_for(size)) as u64;
    // Nominal cuts; each chunk runs from its first line starting at or after its cut to the next
    // chunk's (the last to the end of the file, whatever its length now).
    let body = len - body_start;
    let cuts: Vec<u64> = (0..=chunks)
        .map(|k| {
            if k == chunks {
                u64::MAX
            } else {
                body_start + body / chunks * k
            }
        })
        .collect();
    let (first, rest) = std::thread::scope(|s| {
        let handles: Vec<_> = cuts[1..]
            .windows(2)
            .map(|w| {
                let capacity = (w[1].min(len) - w[0]) as usize / 40 + 1;
                s.spawn(move || stream_rows(path, w[0], w[1], None, capacity, source, piece))
            })
            .collect();
        // The first chunk reserves for the whole file: the others are appended to it.
        let first = stream_rows(
            path,
            cuts[0],
            cuts[1],
            Some(line),
            size / 40 + 1,
            source,
            piece,
        );
        (first, join_all(handles))
    });
    let (candles, spacings) = join_rows(first?, rest)?;
    // A misaligned row is an error; its line (not tracked here) comes from the plain reading.
    finish(candles, spacings, source, |_| 0).ok()
}

/// Stream and parse the lines of the file at `path` that start in `from..to`. `line`: the 1-based
/// line before `from` when known (the first chunk, where `from` starts a line); otherwise the
/// chunk starts at the first line starting at or after `from` and its line numbers are relative.
fn stream_rows(
    path: &Path,
    from: u64,
    to: u64,
    line: Option<usize>,
    capacity: usize,
    source: &str,
    piece: usize,
) -> Option<Rows> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    // A later chunk reads from the byte before `from`, to tell whether a line starts there.
    let mut skipping = line.is_none();
    let mut offset = if skipping { from.checked_sub(1)? } else { from };
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut rows = Rows::new(line.unwrap_or(0), capacity);
    let mut buf = vec![0u8; piece.max(1)];
    let mut filled = 0usize;
    loop {
        if filled == buf.len() {
            // A line longer than the buffer.
            buf.resize(buf.len() * 2, 0);
        }
        let n = file.read(&mut buf[filled..]).ok()?;
        let eof = n == 0;
        filled += n;
        let data = &buf[..filled];
        let mut start = 0usize;
        if skipping {
            match data.iter().position(|&c| c == b'\n') {
                Some(nl) => {
                    start = nl + 1;
                    skipping = false;
                }
                None if eof => return Some(rows),
                None => {
                    offset += filled as u64;
                    filled = 0;
                    continue;
                }
            }
        }
        // The chunk ends with the line holding byte `to - 1`.
        if offset + start as u64 >= to {
            return Some(rows);
        }
        let last = usize::try_from(to - 1 - offset).unwrap_or(usize::MAX);
        if last < filled {
            if let Some(nl) = data[last..].iter().position(|&c| c == b'\n') {
                rows.feed(&data[start..last + nl + 1], source).ok()?;
                return Some(rows);
            }
        }
        if eof {
            rows.feed(&data[start..], source).ok()?;
            return Some(rows);
        }
        // Parse the whole lines; keep the partial last one for the next read.
        let keep = match data[start..].iter().rposition(|&c| c == b'\n') {
            Some(nl) => {
                rows.feed(&data[start..start + nl + 1], source).ok()?;
                start + nl + 1
            }
            None => start,
        };
        buf.copy_within(keep..filled, 0);
        offset += keep as u64;
        filled -= keep;
    }
}

/// The candles of a run of whole lines and the spacings between them, as read so far.
struct Rows {
    candles: Vec<Candle>,
    spacings: Spacings,
    /// The 1-based line last read, and the one of the last candle.
    line: usize,
    prev_line: usize,
}

/// Parse and check the rows of `b` (whole lines; `line` is the 1-based line just before it).
fn parse_rows(b: &[u8], line: usize, capacity: usize, source: &str) -> Result<Rows, DataError> {
    let mut rows = Rows::new(line, capacity);
    rows.feed(b, source)?;
    Ok(rows)
}

impl Rows {
    fn new(line: usize, capacity: usize) -> Rows {
        let candles = Vec::with_capacity(capacity);
        crate::hugepages::advise(&candles);
        Rows {
            candles,
            spacings: Spacings::default(),
            line,
            prev_line: 0,
        }
    }

    /// Parse and check the rows of `b` (whole lines, the next ones of the file), each against
    /// the previous one: duplicates and unsorted rows are errors.
    fn feed(&mut self, b: &[u8], source: &str) -> Result<(), DataError> {
        let Rows {
            candles, spacings, ..
        } = self;
        let (mut line, mut prev_line) = (self.line, self.prev_line);
        let mut pos = 0usize;
        while pos < b.len() {
            line += 1;
            let candle = match fast_row(b, pos) {
                Some((parsed, next)) => {
                    pos = next;
                    match parsed {
                        Ok(candle) => candle,
                        Err((open_time, values)) => make_candle(open_time, values, line, source)?,
                    }
                }
                None => {
                    let end = line_end(b, pos);
                    let row = line_str(&b[pos..end], source)?.trim();
                    pos = end + 1;
                    if row.is_empty() {
                        continue;
                    }
                    parse_row(row, line, source)?
                }
            };
            if let Some(prev) = candles.last() {
                if candle.open_time == prev.open_time {
                    return Err(DataError::Duplicate {
                        file: source.to_string(),
                        line,
                        open_time: candle.open_time,
                        first_line: prev_line,
                    });
                }
                if candle.open_time < prev.open_time {
                    return Err(DataError::Unsorted {
                        file: source.to_string(),
                        line,
                        open_time: candle.open_time,
                        previous: prev.open_time,
                    });
                }
                spacings.add(prev.open_time, candle.open_time - prev.open_time);
            }
            candles.push(candle);
            prev_line = line;
        }
        self.line = line;
        self.prev_line = prev_line;
        Ok(())
    }
}

/// A line the fast path did not take, as text.
fn line_str<'a>(line: &'a [u8], source: &str) -> Result<&'a str, DataError> {
    std::str::from_utf8(line).map_err(|e| DataError::Read {
        file: source.to_string(),
        detail: format!("not UTF-8 text ({e})"),
    })
}

/// Most distinct spacings [`Spacings`] tallies before giving up.
const MAX_SPACINGS: usize = 256;
/// Most steps off the first spacing [`Spacings`] records before gaps take a full scan.
const MAX_ODD_STEPS: usize = 4096;

/// The distinct spacings between consecutive rows and how often each occurs, tallied during the
/// parse so the timeframe, alignment and gaps need no further passes over the candles. Real files
/// have one spacing plus a few gap lengths; past [`MAX_SPACINGS`] distinct values the tally gives
/// up (`overflow`) and the slower full computations run instead.
///
/// `odd` lists, in file order, every step that differs from the first one tallied (`seen[0]`)
/// with the open time it follows: when `seen[0]` is the timeframe (the usual case), those are
/// exactly the gaps. Past [`MAX_ODD_STEPS`] entries (`odd_overflow`) the gaps are found by a scan.
#[derive(Default)]
struct Spacings {
    seen: Vec<(i64, usize)>,
    last: usize,
    overflow: bool,
    odd: Vec<(i64, i64)>,
    odd_overflow: bool,
}

impl Spacings {
    /// Tally the step `s` from the row that opened at `after` to the next.
    fn add(&mut self, after: i64, s: i64) {
        if let Some(e) = self.seen.get_mut(self.last) {
            if e.0 == s {
                e.1 += 1;
                if self.last != 0 {
                    self.note_odd(after, s);
                }
                return;
            }
        }
        if !self.seen.is_empty() {
            // Not the last step seen; the first (`seen[0]`) was checked above when it was last.
            if self.seen[0].0 != s {
                self.note_odd(after, s);
            }
        }
        if let Some(k) = self.seen.iter().position(|e| e.0 == s) {
            self.seen[k].1 += 1;
            self.last = k;
        } else if self.seen.len() < MAX_SPACINGS {
            self.seen.push((s, 1));
            self.last = self.seen.len() - 1;
        } else {
            self.overflow = true;
        }
    }

    fn note_odd(&mut self, after: i64, s: i64) {
        if self.odd.len() < MAX_ODD_STEPS {
            self.odd.push((after, s));
        } else {
            self.odd_overflow = true;
        }
    }

    /// Add the tally of the rows that follow (the step across the seam already added): the result
    /// is the tally of all the rows read in one go, up to the order of `seen` after its first
    /// entry, and `overflow` exactly when there are more than [`MAX_SPACINGS`] distinct steps.
    fn merge(&mut self, next: Spacings) {
        if let (Some(a), Some(b)) = (self.seen.first(), next.seen.first()) {
            // `next.odd` is relative to another first step: no longer the list this one needs.
            if a.0 != b.0 {
                self.odd_overflow = true;
            }
        }
        self.odd_overflow |= next.odd_overflow;
        if !self.odd_overflow {
            if self.odd.len() + next.odd.len() <= MAX_ODD_STEPS {
                self.odd.extend(next.odd);
            } else {
                self.odd_overflow = true;
            }
        }
        self.overflow |= next.overflow;
        for (s, n) in next.seen {
            if let Some(e) = self.seen.iter_mut().find(|e| e.0 == s) {
                e.1 += n;
            } else if self.seen.len() < MAX_SPACINGS {
                self.seen.push((s, n));
            } else {
                self.overflow = true;
            }
        }
    }

    /// The gaps of a file of timeframe `ms` from the odd steps, when they tell: `None` when the
    /// first step is not the timeframe or too many odd steps were met.
    fn gaps(&self, ms: i64) -> Option<Vec<Gap>> {
        if self.odd_overflow || self.seen.first().is_some_and(|e| e.0 != ms) {
            return None;
        }
        Some(
            self.odd
                .iter()
                .filter(|&&(_, s)| s > ms)
                .map(|&(after, s)| Gap {
                    after_open_time: after,
                    missing_candles: (s / ms - 1) as u64,
                })
                .collect(),
        )
    }
}

/// The symbol a data file is named after: `BTCUSDT-perp-15m.csv` → `BTCUSDT`.
///
/// The first `-`/`_`/`.`-separated token of the file name, when it is alphanumeric and ends with a
/// USDⓈ-M quote asset (USDT, USDC, BUSD, FDUSD); otherwise `None`.
pub fn symbol_from_filename(path: &Path) -> Option<Symbol> {
    let name = path.file_name()?.to_str()?;
    let token = name.split(['-', '_', '.']).next()?;
    let upper = token.to_ascii_uppercase();
    let quoted = ["USDT", "USDC", "BUSD", "FDUSD"]
        .iter()
        .any(|q| upper.len() > q.len() && upper.ends_with(q));
    (quoted && upper.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| Symbol::new(upper))
}

/// The timeframe a data file is named after: a token such as `15m` or `1h` in `BTCUSDT-perp-15m.csv`.
pub fn timeframe_from_filename(path: &Path) -> Option<Timeframe> {
    let name = path.file_name()?.to_str()?;
    name.split(['-', '_', '.'])
        .find_map(|t| t.to_ascii_lowercase().parse::<Timeframe>().ok())
}

/// Aggregate candles of timeframe `from` into `to` (which must be `from` or coarser).
///
/// Buckets are aligned to UTC like Binance's own klines (`to.open_of`): open of the first candle,
/// highest high, lowest low, close of the last, summed volume. A bucket is emitted only if at least
/// one candle falls in it, so a gap in the input stays a gap (never a flat invented candle); a
/// bucket with a hole *inside* it (an exchange outage) is still emitted, as the exchange does.
///
/// `complete_only`: the edge buckets that the data covers only in part — the last one when the
/// data ends before the bucket closes, and the first one when the data starts after the bucket
/// opened — are left out when `true`, since their OHLC would not be the real candle's; with `false`
/// they are emitted from the candles available (for a live view of the still-forming candle).
///
/// # Panics
/// When `to` is finer than `from` (a programming error; every supported coarser timeframe is a
/// whole multiple of every finer one).
pub fn resample(
    candles: &[Candle],
    from: Timeframe,
    to: Timeframe,
    complete_only: bool,
) -> Vec<Candle> {
    assert!(
        to >= from,
        "cannot resample {from} candles to the finer timeframe {to}"
    );
    let from_ms = from.millis();
    let to_ms = to.millis();
    let mut out = Vec::with_capacity(candles.len() / (to_ms / from_ms) as usize + 2);
    let Some(first) = candles.first() else {
        return out;
    };
    let mut bucket = to.open_of(first.open_time);
    let mut cur = Candle {
        open_time: bucket,
        ..*first
    };
    for c in &candles[1..] {
        let b = to.open_of(c.open_time);
        if b != bucket {
            out.push(cur);
            bucket = b;
            cur = Candle { open_time: b, ..*c };
        } else {
            if c.high > cur.high {
                cur.high = c.high;
            }
            if c.low < cur.low {
                cur.low = c.low;
            }
            cur.close = c.close;
            cur.volume += c.volume;
        }
    }
    out.push(cur);
    if complete_only {
        let last = candles[candles.len() - 1];
        if last.open_time + from_ms != bucket + to_ms {
            out.pop();
        }
        if first.open_time != to.open_of(first.open_time) && !out.is_empty() {
            out.remove(0);
        }
    }
    out
}

/// Gaps in a sorted, aligned sequence of candles of timeframe `tf`.
pub fn find_gaps(candles: &[Candle], tf: Timeframe) -> Vec<Gap> {
    let ms = tf.millis();
    candles
        .windows(2)
        .filter_map(|w| {
            let step = w[1].open_time - w[0].open_time;
            (step > ms).then(|| Gap {
                after_open_time: w[0].open_time,
                missing_candles: (step / ms - 1) as u64,
            })
        })
        .collect()
}

/// The candle file's text for `candles` (header included, one row per candle in the given order;
/// each decimal as it was parsed, so prices read from Binance or from a file are written back digit
/// for digit). [`parse_csv`] reads it back.
pub fn candles_csv(candles: &[Candle]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(HEADER.len() + 1 + candles.len() * 48);
    s.push_str(HEADER);
    s.push('\n');
    for c in candles {
        writeln!(
            s,
            "{},{},{},{},{},{}",
            c.open_time,
            c.open.get(),
            c.high.get(),
            c.low.get(),
            c.close.get(),
            c.volume
        )
        .expect("writing to a String");
    }
    s
}

/// `2025-07-04 11:45 UTC` for messages.
fn utc(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M UTC").to_string(),
        None => format!("{ms} ms"),
    }
}

fn excerpt(s: &str) -> String {
    if s.chars().count() > 80 {
        let cut: String = s.chars().take(80).collect();
        format!("{cut}…")
    } else {
        s.to_string()
    }
}

fn parse_row(row: &str, line: usize, source: &str) -> Result<Candle, DataError> {
    let mut fields = [""; 6];
    let mut n = 0usize;
    for f in row.split(',') {
        if n < 6 {
            fields[n] = f.trim();
        }
        n += 1;
    }
    if n != 6 {
        return Err(DataError::FieldCount {
            file: source.to_string(),
            line,
            found: n,
        });
    }
    let not_numeric = |col: usize| DataError::NotNumeric {
        file: source.to_string(),
        line,
        column: COLUMNS[col],
        value: excerpt(fields[col]),
    };
    let open_time = parse_i64(fields[0]).ok_or_else(|| not_numeric(0))?;
    let mut v = [Decimal::ZERO; 5];
    for (k, slot) in v.iter_mut().enumerate() {
        *slot = parse_decimal(fields[k + 1]).ok_or_else(|| not_numeric(k + 1))?;
    }
    make_candle(open_time, v, line, source)
}

/// Index of the `\n` ending the line that starts at `from` (or the end of the text).
fn line_end(b: &[u8], from: usize) -> usize {
    b[from..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |k| from + k)
}

/// Powers of ten that fit in u64 (a table: `u64::pow` loops).
const POW10: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut k = 1;
    while k < 20 {
        t[k] = t[k - 1] * 10;
        k += 1;
    }
    t
};

/// What [`fast_row`] read: a candle, or the values of a row that is not a possible candle (the
/// caller builds the error message).
type FastRow = Result<Candle, (i64, [Decimal; 5])>;

/// The common row shape (`digits,decimal,decimal,decimal,decimal,decimal` then a line end, no
/// spaces or signs) parsed in one pass from `b[pos..]`: digits eight at a time, each number
/// straight into a mantissa and scale, the candle checked with integer comparisons. Returns what
/// it read and where the next line starts; `None` for any other shape, which then takes the
/// general path (and its precise error messages).
fn fast_row(b: &[u8], pos: usize) -> Option<(FastRow, usize)> {
    let mut i = pos;
    let (t, n) = digits(b, i, 18)?;
    // ≤ 18 digits always fit in i64.
    let t = t as i64;
    if n == 0 || b.get(i + n) != Some(&b',') {
        return None;
    }
    i += n + 1;
    let mut raw = [(0u64, 0u32); 5];
    for (k, slot) in raw.iter_mut().enumerate() {
        let (mantissa, scale, n) = number8(b, i).or_else(|| number_by_digits(b, i))?;
        i += n;
        *slot = (mantissa, scale);
        if k < 4 {
            if b.get(i) != Some(&b',') {
                return None;
            }
            i += 1;
        }
    }
    let next = match b.get(i) {
        None => i,
        Some(b'\n') => i + 1,
        Some(b'\r') if matches!(b.get(i + 1), None | Some(b'\n')) => i + 2,
        _ => return None,
    };
    // Compare on a common scale in u128: a 19-digit mantissa times 10^19 stays below 2^128.
    let max_scale = raw.iter().map(|r| r.1).max().unwrap_or(0);
    // Indexed closures rather than `array::map`, which the compiler left as out-of-line calls
    // moving the arrays through memory (a tenth of the parse time).
    let scaled = |k: usize| {
        let (m, s) = raw[k];
        u128::from(m) * u128::from(POW10[(max_scale - s) as usize])
    };
    let (o, h, l, c) = (scaled(0), scaled(1), scaled(2), scaled(3));
    let decimal = |k: usize| {
        let (m, s) = raw[k];
        Decimal::from_parts(m as u32, (m >> 32) as u32, 0, false, s)
    };
    let dec = [decimal(0), decimal(1), decimal(2), decimal(3), decimal(4)];
    if h < l || l == 0 || o < l || o > h || c < l || c > h || t > MAX_OPEN_TIME {
        return Some((Err((t, dec)), next));
    }
    let [open, high, low, close, volume] = dec;
    let candle = Candle {
        open_time: t,
        open: Price::new(open),
        high: Price::new(high),
        low: Price::new(low),
        close: Price::new(close),
        volume,
    };
    Some((Ok(candle), next))
}

/// The number at `b[i..]` when it is at most eight bytes (digits, at most one dot, a digit
/// before it: `7195.24`, `29374.15`, `108994.3`) and a ninth byte follows: its mantissa, scale
/// and length. One word is read; the dot, found as its first non-digit, is read as a `0` to find
/// the end, then dropped, and the digits on both sides are converted together. Most prices take
/// this path; `None` (longer numbers, most volumes, the last bytes of the text, anything odd):
/// the caller reads the number digit by digit, which also finds what is wrong with it.
#[inline]
fn number8(b: &[u8], i: usize) -> Option<(u64, u32, usize)> {
    let chunk = b.get(i..i + 9)?;
    let w = u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
    let p0 = first_non_digit(w);
    if p0 == 0 || p0 == 8 || chunk[p0] != b'.' {
        return None;
    }
    let w = w ^ (u64::from(b'.' ^ b'0') << (8 * p0));
    let p1 = first_non_digit(w);
    if p1 == 8 && (chunk[8].is_ascii_digit() || chunk[8] == b'.') {
        return None;
    }
    // Below the end every byte is a digit, so no borrow disturbs their values.
    let x = w.wrapping_sub(ZEROS);
    let below = (1u64 << (8 * p0)) - 1;
    let joined = (x & below) | ((x >> 8) & !below);
    Some((swar8(joined, p1 - 1), (p1 - p0 - 1) as u32, p1))
}

/// `'0'` in every byte: subtracted, it leaves each digit's value.
const ZEROS: u64 = 0x3030_3030_3030_3030;

/// Index (0..=8) of the first byte of `w` (lowest first) that is not an ASCII digit; 8 when all
/// are. Bytes after that one are not examined (a borrow may run into them).
#[inline]
fn first_non_digit(w: u64) -> usize {
    // High bit of each byte set where the byte is not '0'..='9' (below '0' wraps, above '9'
    // carries into the high bit after adding 0x76).
    let x = w.wrapping_sub(ZEROS);
    let non_digit = (x | x.wrapping_add(0x7676_7676_7676_7676)) & 0x8080_8080_8080_8080;
    (non_digit.trailing_zeros() / 8) as usize
}

/// The value of the first `n` (≤ 8) digit values (one per byte, lowest byte first) of `w`.
#[inline]
fn swar8(w: u64, n: usize) -> u64 {
    if n == 0 {
        return 0;
    }
    // Move the n digits to the top bytes; the zero bytes shifted in act as leading zeros.
    let v = w << (8 * (8 - n));
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    ((v & 0x0000_00FF_0000_00FF)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32))))
        >> 32
}

/// The number at `b[i..]` (digits with at most one dot, not a lone dot) read digit by digit:
/// its mantissa, scale and length; `None` for no number or more than 19 digits. What
/// [`fast_row`] falls back to when [`number8`] does not take a number.
fn number_by_digits(b: &[u8], i: usize) -> Option<(u64, u32, usize)> {
    let (int, n_int) = digits(b, i, 19)?;
    if b.get(i + n_int) == Some(&b'.') {
        let (frac, n_frac) = digits(b, i + n_int + 1, 19 - n_int)?;
        (n_int + n_frac > 0).then(|| {
            (
                int * POW10[n_frac] + frac,
                n_frac as u32,
                n_int + 1 + n_frac,
            )
        })
    } else {
        (n_int > 0).then_some((int, 0, n_int))
    }
}

/// The run of ASCII digits at `b[i..]` as a number and its length; `None` when it is longer than
/// `max` digits (`max` ≤ 19 keeps it within u64).
#[inline]
fn digits(b: &[u8], i: usize, max: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    let mut count = 0usize;
    loop {
        let (v, n) = digits8(b, i + count);
        if count + n > max {
            return None;
        }
        value = value * POW10[n] + v;
        count += n;
        if n < 8 {
            return Some((value, count));
        }
    }
}

/// Up to eight leading ASCII digits at `b[i..]`: their value and how many there are. Eight bytes
/// are examined at once (SWAR), which avoids a data-dependent branch per character.
#[inline]
fn digits8(b: &[u8], i: usize) -> (u64, usize) {
    let Some(chunk) = b.get(i..i + 8) else {
        // Near the end of the text: one byte at a time.
        let mut v = 0u64;
        let mut n = 0usize;
        while let Some(&c) = b.get(i + n) {
            if !c.is_ascii_digit() || n == 8 {
                break;
            }
            v = v * 10 + u64::from(c - b'0');
            n += 1;
        }
        return (v, n);
    };
    let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
    let n = first_non_digit(word);
    (swar8(word.wrapping_sub(ZEROS), n), n)
}

/// Check a row's values describe a possible candle and build it.
fn make_candle(
    open_time: i64,
    v: [Decimal; 5],
    line: usize,
    source: &str,
) -> Result<Candle, DataError> {
    let [open, high, low, close, volume] = v;
    let bad = |detail: String| DataError::BadCandle {
        file: source.to_string(),
        line,
        detail,
    };
    if !(0..=MAX_OPEN_TIME).contains(&open_time) {
        return Err(bad(format!(
            "open_time {open_time} is outside 1970-01-01..9999-12-31 (ms since the epoch)"
        )));
    }
    if high < low {
        return Err(bad(format!("high {high} < low {low}")));
    }
    if low <= Decimal::ZERO {
        return Err(bad(format!("low {low} is not a positive price")));
    }
    if open < low || open > high {
        return Err(bad(format!("open {open} outside [low {low}, high {high}]")));
    }
    if close < low || close > high {
        return Err(bad(format!(
            "close {close} outside [low {low}, high {high}]"
        )));
    }
    if volume < Decimal::ZERO {
        return Err(bad(format!("negative volume {volume}")));
    }
    Ok(Candle {
        open_time,
        open: Price::new(open),
        high: Price::new(high),
        low: Price::new(low),
        close: Price::new(close),
        volume,
    })
}

fn parse_i64(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if !b.is_empty() && b.len() <= 18 && b.iter().all(u8::is_ascii_digit) {
        // At most 18 digits cannot overflow i64.
        return Some(
            b.iter()
                .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0')),
        );
    }
    s.parse::<i64>().ok()
}

/// Fast path for the common shape (digits with at most one dot, ≤ 19 digits) straight into a
/// mantissa and scale; anything else (sign, exponent, very long) goes through rust_decimal's parser.
fn parse_decimal(s: &str) -> Option<Decimal> {
    let b = s.as_bytes();
    if !b.is_empty() && b.len() <= 19 {
        let mut mantissa: u64 = 0;
        let mut digits = 0u32;
        let mut dot: Option<usize> = None;
        let mut fast = true;
        for (i, &c) in b.iter().enumerate() {
            match c {
                b'0'..=b'9' => {
                    mantissa = mantissa * 10 + u64::from(c - b'0');
                    digits += 1;
                }
                b'.' if dot.is_none() => dot = Some(i),
                _ => {
                    fast = false;
                    break;
                }
            }
        }
        if fast && digits > 0 {
            let scale = dot.map_or(0, |d| (b.len() - d - 1) as u32);
            return Some(Decimal::from_i128_with_scale(i128::from(mantissa), scale));
        }
    }
    Decimal::from_str_exact(s)
        .or_else(|_| Decimal::from_scientific(s))
        .ok()
}

/// The most common spacing between rows (the smaller one on a tie), as a supported timeframe.
fn infer_timeframe(
    candles: &[Candle],
    tally: &Spacings,
    source: &str,
) -> Result<Timeframe, DataError> {
    let err = |detail: String| DataError::Timeframe {
        file: source.to_string(),
        detail,
    };
    if candles.len() < 2 {
        return timeframe_from_filename(Path::new(source)).ok_or_else(|| {
            err("the file has a single row and its name carries no timeframe (like `-15m`)".into())
        });
    }
    let most_common = |counts: &mut dyn Iterator<Item = (i64, usize)>| {
        counts
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map_or(0, |(s, _)| s)
    };
    let mode = if tally.overflow {
        let mut all: Vec<i64> = candles
            .windows(2)
            .map(|w| w[1].open_time - w[0].open_time)
            .collect();
        all.sort_unstable();
        let mut runs = all.chunk_by(|a, b| a == b).map(|r| (r[0], r.len()));
        most_common(&mut runs)
    } else {
        most_common(&mut tally.seen.iter().copied())
    };
    Timeframe::from_millis(mode).ok_or_else(|| {
        err(format!(
            "the most common spacing between rows is {mode} ms ({} min), not one of 1m, 5m, 15m, 1h, 4h",
            mode as f64 / 60_000.0
        ))
    })
}

/// 1-based line of the `row`-th candle row (blank lines skipped), recomputed only for an error so
/// the hot path keeps no per-row line table.
fn line_of_row(text: &[u8], row: usize) -> usize {
    let mut seen_header = false;
    let mut k = 0usize;
    for (i, l) in text.split(|&c| c == b'\n').enumerate() {
        // Only called once every line parsed, so every line is text.
        if std::str::from_utf8(l).is_ok_and(|l| l.trim().is_empty()) {
            continue;
        }
        if !seen_header {
            seen_header = true;
            continue;
        }
        if k == row {
            return i + 1;
        }
        k += 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    const T0: i64 = 1_751_630_400_000; // 2025-07-04 12:00 UTC, aligned to 4h
    const M15: i64 = 900_000;

    fn row(t: i64, o: &str, h: &str, l: &str, c: &str, v: &str) -> String {
        format!("{t},{o},{h},{l},{c},{v}\n")
    }

    fn good(n: usize) -> String {
        let mut s = format!("{HEADER}\n");
        for i in 0..n {
            s.push_str(&row(
                T0 + i as i64 * M15,
                "100.5",
                "101",
                "99",
                "100",
                "1.25",
            ));
        }
        s
    }

    #[test]
    fn written_candles_read_back_digit_for_digit() {
        let text = format!(
            "{HEADER}\n{T0},108994.30,109000.00,108900.1,108950.25,12.3450\n{},1,2,0.5,1.5,0\n",
            T0 + M15
        );
        let s = parse_csv(&text, "x-15m.csv").unwrap();
        assert_eq!(candles_csv(&s.candles), text);
        assert_eq!(candles_csv(&[]), format!("{HEADER}\n"));
    }

    #[test]
    fn parses_a_good_file_and_infers_the_timeframe() {
        let s = parse_csv(&good(5), "x.csv").unwrap();
        assert_eq!(s.timeframe, Timeframe::M15);
        assert_eq!(s.len(), 5);
        assert!(s.gaps.is_empty());
        let c = s.candles[0];
        assert_eq!(c.open_time, T0);
        assert_eq!(c.open, Price::new(dec!(100.5)));
        assert_eq!(c.high, Price::new(dec!(101)));
        assert_eq!(c.volume, dec!(1.25));
        assert_eq!(s.candles[4].open_time, T0 + 4 * M15);
    }

    #[test]
    fn accepts_crlf_bom_blank_lines_and_odd_number_shapes() {
        let text = format!(
            "\u{feff}{HEADER}\r\n{}\r\n\r\n{}",
            format_args!("{T0},1E2,101.0,99,100,0"),
            format_args!("{},-0,101,99,100,.5", T0 + M15)
        );
        // `-0` as an open is a bad candle, so use it to check the slow path reports columns right.
        let err = parse_csv(&text, "odd.csv").unwrap_err();
        assert!(matches!(err, DataError::BadCandle { line: 4, .. }), "{err}");
        let text = format!(
            "\u{feff}{HEADER}\r\n{T0},1E2,101.0,99,100,0\r\n\r\n{},100,101,99,100,.5\r\n",
            T0 + M15
        );
        let s = parse_csv(&text, "odd.csv").unwrap();
        assert_eq!(s.candles[0].open, Price::new(dec!(100)));
        assert_eq!(s.candles[1].volume, dec!(0.5));
    }

    #[test]
    fn fast_decimal_path_matches_the_library_parser() {
        for s in [
            "0",
            "0.0",
            "108994.3",
            "108800.0",
            "0.00000001",
            "511.814901",
            "7195.24",
            "12345678901234567.89",
            "1",
            "5.",
            ".5",
            "999999999999999999",
        ] {
            let expected = Decimal::from_str_exact(s)
                .or_else(|_| s.parse::<Decimal>())
                .unwrap();
            assert_eq!(parse_decimal(s), Some(expected), "{s}");
        }
        assert_eq!(parse_decimal("1.2.3"), None);
        assert_eq!(parse_decimal("abc"), None);
        assert_eq!(parse_decimal(""), None);
        assert_eq!(parse_decimal("."), None);
        assert_eq!(parse_decimal("1e3"), Some(dec!(1000)));
        assert_eq!(parse_i64("1751630400000"), Some(T0));
        assert_eq!(parse_i64("-5"), Some(-5));
        assert_eq!(parse_i64("17516304000x0"), None);
    }

    #[test]
    fn fast_row_agrees_with_the_general_parser() {
        // Deterministic pseudo-random numbers of every length and shape the fast path accepts.
        let mut next = crate::test_rng(0x2545_f491_4f6c_dd1du64);
        let mut number = |max_digits: u64| {
            let int_len = next() % max_digits + 1;
            let frac_len = next() % (20 - int_len);
            let mut s: String = (0..int_len)
                .map(|_| (b'0' + (next() % 10) as u8) as char)
                .collect();
            if frac_len > 0 || next().is_multiple_of(4) {
                s.push('.');
                s.extend((0..frac_len).map(|_| (b'0' + (next() % 10) as u8) as char));
            }
            s
        };
        for k in 0..3000 {
            let p = number(12);
            let v = number(19);
            let t = T0 + k * M15;
            // Same number for all prices keeps the candle possible; the shapes still vary.
            for row in [
                format!("{t},{p},{p},{p},{p},{v}"),
                format!("{t},{p},{p},{p},{p},{v}\r\n"),
            ] {
                let general = parse_row(row.trim(), 2, "f");
                let (fast, next_pos) = fast_row(row.as_bytes(), 0).expect("fast shape");
                assert_eq!(next_pos, row.len(), "{row}");
                match (fast, general) {
                    (Ok(f), Ok(g)) => assert_eq!(format!("{f:?}"), format!("{g:?}"), "{row}"),
                    // A zero price: both refuse it (the caller builds the message from these).
                    (Err((ft, fv)), Err(_)) => {
                        assert_eq!(ft, t);
                        assert!(fv[2].is_zero(), "{row}");
                    }
                    (f, g) => panic!("{row}: fast {f:?} vs general {g:?}"),
                }
            }
        }
        // Shapes the fast path leaves to the general one.
        for row in [
            " 1,2,2,2,2,2",
            "1,-2,2,2,2,2",
            "1,2e3,2,2,2,2",
            "1,2,2,2,2",
            "1,2,2,2,2,2,3",
            "1,.,2,2,2,2",
            "1,2,2,2,2,2 ",
        ] {
            assert!(fast_row(row.as_bytes(), 0).is_none(), "{row}");
        }
        for n in 0..=8usize {
            let digits = "12345678";
            let text = format!("{}x{}", &digits[..n], "9".repeat(10));
            assert_eq!(
                digits8(text.as_bytes(), 0),
                (digits[..n].parse().unwrap_or(0), n)
            );
            assert_eq!(
                digits8(&text.as_bytes()[..n], 0),
                (digits[..n].parse().unwrap_or(0), n)
            );
        }
        assert_eq!(digits(b"12345678901234567890,", 0, 19), None);
        assert_eq!(
            digits(b"1234567890123456789,", 0, 19),
            Some((1_234_567_890_123_456_789, 19))
        );
    }

    #[test]
    fn the_one_word_reading_agrees_with_the_digit_by_digit_one() {
        let mut next = crate::test_rng(0x0ddb_a11c_0ffe_e123u64);
        // Digits, dots, the bytes just outside '0'..='9' ('/' and ':'), separators, and bytes
        // with the high bit set ('0' + 0x80 looks like a digit to a careless mask).
        let alphabet = b"012345678901234567890123456789..,/:\r\n \xb0\xb9\xff\x00";
        let mut taken = 0;
        for _ in 0..200_000 {
            let len = 6 + (next() % 8) as usize;
            let b: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let at = (next() % 3) as usize;
            if let Some(got) = number8(&b, at) {
                taken += 1;
                let want = number_by_digits(&b, at);
                assert_eq!(Some(got), want, "{:?}", String::from_utf8_lossy(&b));
                // A digit never follows (a second dot may: the caller's separator check then
                // refuses the row, as it does after the digit-by-digit reading).
                assert!(!b[at + got.2].is_ascii_digit());
            }
        }
        assert!(
            taken > 5_000,
            "the one-word path took only {taken} of the numbers"
        );
        // Every split of up to 9 digits around a dot, ended by each kind of byte.
        for n in 0..=9usize {
            for dot in (0..=n).map(Some).chain([None]) {
                for end in [b',', b'\n', b'\r', b'x', b'5', b'.'] {
                    let mut b = b"987654321"[..n].to_vec();
                    if let Some(d) = dot {
                        b.insert(d, b'.');
                    }
                    b.push(end);
                    let text = String::from_utf8_lossy(&b).into_owned();
                    b.resize(b.len().max(9), b'7');
                    // Taken exactly when a dot follows a digit, the number fills at most eight
                    // bytes, and the byte after it is no digit (nor a dot in the ninth byte,
                    // which the one word cannot tell from a longer number).
                    let len = n + usize::from(dot.is_some());
                    let ends = !(end.is_ascii_digit() || end == b'.' && len == 8);
                    let expect = dot.is_some_and(|d| d > 0) && len <= 8 && ends;
                    match number8(&b, 0) {
                        Some(got) => {
                            assert!(expect, "{text}");
                            assert_eq!(Some(got), number_by_digits(&b, 0), "{text}");
                        }
                        None => assert!(!expect, "{text}"),
                    }
                }
            }
        }
        assert_eq!(number8(b"7195.24,7196.25", 0), Some((719_524, 2, 7)));
        assert_eq!(number8(b"29374.15,29400.00", 0), Some((2_937_415, 2, 8)));
        assert_eq!(number8(b"108994.3\n", 0), Some((1_089_943, 1, 8)));
        assert_eq!(
            number8(b"5.,", 0),
            None,
            "fewer than nine bytes: digit by digit"
        );
        assert_eq!(
            number8(b"1751630400000,", 0),
            None,
            "no dot: digit by digit"
        );
        assert_eq!(number8(b"511.814901,", 0), None, "longer than eight bytes");
    }

    #[test]
    fn missing_and_empty_files_name_the_file() {
        let e = load_csv(Path::new("/nonexistent/BTCUSDT-perp-15m.csv")).unwrap_err();
        assert!(matches!(e, DataError::Read { .. }));
        assert!(
            e.to_string().contains("/nonexistent/BTCUSDT-perp-15m.csv"),
            "{e}"
        );
        let e = parse_csv("", "empty.csv").unwrap_err();
        assert_eq!(
            e,
            DataError::Empty {
                file: "empty.csv".into()
            }
        );
        assert!(e.to_string().starts_with("empty.csv: "), "{e}");
        let e = parse_csv(&format!("{HEADER}\n\n"), "h.csv").unwrap_err();
        assert_eq!(
            e,
            DataError::NoRows {
                file: "h.csv".into()
            }
        );
    }

    #[test]
    fn bad_header_names_line_and_what_was_found() {
        let e = parse_csv("time,o,h,l,c,v\n1,2,3,4,5,6\n", "f.csv").unwrap_err();
        assert!(matches!(e, DataError::BadHeader { line: 1, .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("f.csv:1: bad header `time,o,h,l,c,v`"),
            "{msg}"
        );
        // A data row where the header should be.
        let e = parse_csv(&good(2)[HEADER.len() + 1..], "f.csv").unwrap_err();
        assert!(matches!(e, DataError::BadHeader { line: 1, .. }), "{e}");
    }

    #[test]
    fn wrong_field_count_names_the_line() {
        let mut text = good(3);
        text.push_str(&format!("{},1,2,0.5,1\n", T0 + 3 * M15));
        let e = parse_csv(&text, "f.csv").unwrap_err();
        assert_eq!(
            e,
            DataError::FieldCount {
                file: "f.csv".into(),
                line: 5,
                found: 5
            }
        );
        assert!(e.to_string().starts_with("f.csv:5: expected 6"), "{e}");
        let mut text = good(1);
        text.push_str(&format!("{},1,2,0.5,1,1,7\n", T0 + M15));
        assert!(matches!(
            parse_csv(&text, "f.csv").unwrap_err(),
            DataError::FieldCount {
                line: 3,
                found: 7,
                ..
            }
        ));
    }

    #[test]
    fn non_numeric_field_names_column_and_value() {
        let mut text = good(2);
        text.push_str(&row(T0 + 2 * M15, "100", "1O1", "99", "100", "1"));
        let e = parse_csv(&text, "f.csv").unwrap_err();
        assert_eq!(
            e,
            DataError::NotNumeric {
                file: "f.csv".into(),
                line: 4,
                column: "high",
                value: "1O1".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "f.csv:4: column `high` is not a number: `1O1`"
        );
        let text = format!("{HEADER}\n2025-07-04,1,1,1,1,1\n");
        assert!(matches!(
            parse_csv(&text, "f.csv").unwrap_err(),
            DataError::NotNumeric {
                line: 2,
                column: "open_time",
                ..
            }
        ));
        let text = format!("{HEADER}\n{T0},1,1,1,1,\n");
        assert!(matches!(
            parse_csv(&text, "f.csv").unwrap_err(),
            DataError::NotNumeric {
                line: 2,
                column: "volume",
                ..
            }
        ));
    }

    #[test]
    fn impossible_candles_are_refused() {
        let cases = [
            (row(T0, "100", "99", "101", "100", "1"), "high 99 < low 101"),
            (row(T0, "102", "101", "99", "100", "1"), "open 102 outside"),
            (row(T0, "100", "101", "99", "98", "1"), "close 98 outside"),
            (row(T0, "100", "101", "99", "100", "-1"), "negative volume"),
            (row(T0, "0", "0", "0", "0", "1"), "not a positive price"),
            // Far-apart times used to overflow the spacing between rows (a panic in debug builds).
            (
                row(-1, "100", "101", "99", "100", "1"),
                "open_time -1 is outside",
            ),
            (
                row(MAX_OPEN_TIME + 1, "100", "101", "99", "100", "1"),
                "open_time 253402300800000 is outside",
            ),
        ];
        for (r, want) in cases {
            let text = format!("{HEADER}\n{r}");
            let e = parse_csv(&text, "f.csv").unwrap_err();
            assert!(matches!(e, DataError::BadCandle { line: 2, .. }), "{e}");
            assert!(e.to_string().contains(want), "{e} lacks {want}");
            assert!(e.to_string().starts_with("f.csv:2: "), "{e}");
        }
    }

    #[test]
    fn duplicate_and_unsorted_rows_name_both_lines() {
        let mut text = good(3);
        text.push_str(&row(T0 + 2 * M15, "100", "101", "99", "100", "1"));
        let e = parse_csv(&text, "f.csv").unwrap_err();
        assert_eq!(
            e,
            DataError::Duplicate {
                file: "f.csv".into(),
                line: 5,
                open_time: T0 + 2 * M15,
                first_line: 4
            }
        );
        assert!(e.to_string().contains("2025-07-04 12:30 UTC"), "{e}");

        let mut text = good(3);
        text.push_str(&row(T0 + M15, "100", "101", "99", "100", "1"));
        let e = parse_csv(&text, "f.csv").unwrap_err();
        assert_eq!(
            e,
            DataError::Unsorted {
                file: "f.csv".into(),
                line: 5,
                open_time: T0 + M15,
                previous: T0 + 2 * M15
            }
        );
        assert!(e.to_string().contains("must be sorted"), "{e}");
    }

    #[test]
    fn misaligned_row_is_found_with_its_line_despite_blank_lines() {
        let mut text = good(4);
        text.push('\n');
        text.push_str(&row(T0 + 4 * M15 + 60_000, "100", "101", "99", "100", "1"));
        text.push_str(&row(T0 + 6 * M15, "100", "101", "99", "100", "1"));
        let e = parse_csv(&text, "f.csv").unwrap_err();
        assert_eq!(
            e,
            DataError::Misaligned {
                file: "f.csv".into(),
                line: 7,
                open_time: T0 + 4 * M15 + 60_000,
                timeframe: Timeframe::M15
            }
        );
        assert!(
            e.to_string().contains("not aligned to the file's 15m"),
            "{e}"
        );
    }

    #[test]
    fn unsupported_spacing_and_single_rows() {
        let mut text = format!("{HEADER}\n");
        for i in 0..4 {
            text.push_str(&row(T0 + i * 1_800_000, "100", "101", "99", "100", "1"));
        }
        let e = parse_csv(&text, "f.csv").unwrap_err();
        assert!(matches!(e, DataError::Timeframe { .. }), "{e}");
        assert!(e.to_string().contains("1800000 ms (30 min)"), "{e}");

        let one = good(1);
        assert!(matches!(
            parse_csv(&one, "f.csv").unwrap_err(),
            DataError::Timeframe { .. }
        ));
        let s = parse_csv(&one, "data/BTCUSDT-perp-15m.csv").unwrap();
        assert_eq!(s.timeframe, Timeframe::M15);
    }

    #[test]
    fn gaps_are_accepted_and_reported() {
        let mut text = format!("{HEADER}\n");
        for i in [0i64, 1, 2, 6, 7, 9] {
            text.push_str(&row(T0 + i * M15, "100", "101", "99", "100", "1"));
        }
        let s = parse_csv(&text, "f.csv").unwrap();
        assert_eq!(s.timeframe, Timeframe::M15);
        assert_eq!(s.len(), 6, "gaps are never filled");
        assert_eq!(
            s.gaps,
            vec![
                Gap {
                    after_open_time: T0 + 2 * M15,
                    missing_candles: 3
                },
                Gap {
                    after_open_time: T0 + 7 * M15,
                    missing_candles: 1
                }
            ]
        );
        assert_eq!(
            s.gaps[0].to_string(),
            "3 candle(s) missing after 2025-07-04 12:30 UTC"
        );
    }

    #[test]
    fn timeframe_is_the_most_common_spacing_even_without_a_majority() {
        // Spacings: 15m ×3, 30m ×2, 45m ×2 → 15m wins though it is no majority.
        let mut text = format!("{HEADER}\n");
        for i in [0i64, 1, 3, 6, 7, 9, 12, 13] {
            text.push_str(&row(T0 + i * M15, "100", "101", "99", "100", "1"));
        }
        let s = parse_csv(&text, "f.csv").unwrap();
        assert_eq!(s.timeframe, Timeframe::M15);
        assert_eq!(s.gaps.len(), 4);
    }

    #[test]
    fn many_distinct_spacings_take_the_full_path() {
        // 300 one-off gap lengths alternate with 15m steps: the tally overflows, 15m still wins,
        // every gap is reported and a misaligned row is still found.
        let mut text = format!("{HEADER}\n");
        let mut t = T0;
        let mut times = Vec::new();
        for k in 0..300 {
            times.push(t);
            t += M15;
            times.push(t);
            t += (k + 2) * M15;
        }
        for &t in &times {
            text.push_str(&row(t, "100", "101", "99", "100", "1"));
        }
        let s = parse_csv(&text, "f.csv").unwrap();
        assert_eq!(s.timeframe, Timeframe::M15);
        assert_eq!(s.gaps.len(), 299);
        assert_eq!(s.gaps[3].missing_candles, 4);
        let skewed = text.replace(
            &format!("\n{},", times[500]),
            &format!("\n{},", times[500] + 1),
        );
        let e = parse_csv(&skewed, "f.csv").unwrap_err();
        assert!(matches!(e, DataError::Misaligned { line: 502, .. }), "{e}");
    }

    /// Deterministic xorshift numbers for the generated files below.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A valid candle file of `rows` rows `step` apart with occasional gaps, in the shapes real and
    /// odd files have: CRLF or LF, blank lines, spaces and exponents (the general row path),
    /// varying decimals, with or without a final newline.
    fn random_file(rng: &mut Rng, rows: usize, step: i64) -> String {
        let nl = if rng.below(4) == 0 { "\r\n" } else { "\n" };
        let mut s = format!("{HEADER}{nl}");
        let mut t = T0;
        for i in 0..rows {
            if rng.below(12) == 0 {
                s.push_str(nl);
            }
            let scale = rng.below(5) as u32;
            let low = 1_000 + rng.below(1_000_000);
            let high = low + rng.below(5_000);
            let open = low + rng.below(high - low + 1);
            let close = low + rng.below(high - low + 1);
            let volume = rng.below(10_000_000);
            let d = |v: u64| Decimal::new(v as i64, scale).to_string();
            let (o, h, l, c, v) = (d(open), d(high), d(low), d(close), d(volume));
            match rng.below(10) {
                0 => s.push_str(&format!("{t}, {o},{h} ,{l},{c},{v}")),
                1 => s.push_str(&format!("{t},{o},{h},{l},{c},{v}e0")),
                _ => s.push_str(&format!("{t},{o},{h},{l},{c},{v}")),
            }
            if i + 1 < rows || rng.below(2) == 0 {
                s.push_str(nl);
            }
            t += if rng.below(15) == 0 {
                step * (2 + rng.below(4) as i64)
            } else {
                step
            };
        }
        s
    }

    /// The rows after a header on line 1.
    fn body(text: &str) -> &[u8] {
        &text.as_bytes()[text.find('\n').expect("a header line") + 1..]
    }

    /// The chunked parse of `text`'s rows in `chunks` pieces, without the sequential fallback.
    fn chunked(text: &str, chunks: usize) -> Option<(Vec<Candle>, Spacings)> {
        let body = body(text);
        let bounds = chunk_bounds(body, chunks);
        assert!(bounds.len() > 2, "{chunks} chunks of {} bytes", body.len());
        parse_chunks(body, &bounds, 1, 0, "f.csv")
    }

    /// A tally as a comparable value: the counts by spacing and whether it overflowed.
    fn tally(s: &Spacings) -> (Vec<(i64, usize)>, bool) {
        let mut seen = s.seen.clone();
        seen.sort_unstable();
        (seen, s.overflow)
    }

    fn same(a: &Result<CandleSeries, DataError>, b: &Result<CandleSeries, DataError>, what: &str) {
        assert_eq!(a, b, "{what}");
        // Debug also shows each decimal's scale, which `==` on values does not compare.
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{what}");
    }

    #[test]
    fn parallel_thresholds_keep_small_inputs_on_one_thread() {
        assert_eq!(chunks_for(0), 1);
        assert_eq!(chunks_for(PARALLEL_MIN_BYTES - 1), 1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(chunks_for(PARALLEL_MIN_BYTES), cores.clamp(1, 2));
        assert_eq!(chunks_for(usize::MAX / 2), cores.clamp(1, MAX_CHUNKS));
        // Cuts fall just after a newline, in order, and cover everything.
        let text = good(100);
        let body = body(&text);
        for chunks in 1..=12 {
            let bounds = chunk_bounds(body, chunks);
            assert_eq!(bounds[0], 0);
            assert_eq!(*bounds.last().unwrap(), body.len());
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
            assert!(bounds[1..bounds.len() - 1]
                .iter()
                .all(|&b| body[b - 1] == b'\n'));
            assert_eq!(bounds.len(), chunks + 1, "100 rows split {chunks} ways");
        }
        assert_eq!(chunk_bounds(b"", 4), vec![0, 0]);
        assert_eq!(chunk_bounds(b"1,2,3,4,5,6", 4), vec![0, 11]);
    }

    #[test]
    fn chunked_parse_equals_the_sequential_one_on_random_files() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut exercised = 0;
        for rows in [
            0usize, 1, 2, 3, 4, 5, 7, 9, 16, 31, 64, 100, 257, 600, 2_000,
        ] {
            for step in [M15, 3_600_000] {
                let text = random_file(&mut rng, rows, step);
                let sequential = parse_bytes(text.as_bytes(), "f.csv", 1);
                // A single row has no spacing (and "f.csv" no timeframe): an error, the same in chunks.
                assert!(rows < 2 || sequential.is_ok(), "{sequential:?}\n{text}");
                let (seq_candles, seq_spacings) = {
                    let rows = parse_rows(body(&text), 1, 0, "f.csv").unwrap();
                    (rows.candles, rows.spacings)
                };
                for chunks in 2..=7 {
                    let what = format!("{rows} rows {step} ms apart in {chunks} chunks");
                    same(
                        &parse_bytes(text.as_bytes(), "f.csv", chunks),
                        &sequential,
                        &what,
                    );
                    same(&parse_csv(&text, "f.csv"), &sequential, &what);
                    if chunk_bounds(body(&text), chunks).len() > 2 {
                        // The chunks themselves succeed: the result is not the fallback's.
                        let (candles, spacings) = chunked(&text, chunks).expect(&what);
                        assert_eq!(candles, seq_candles, "{what}");
                        assert_eq!(tally(&spacings), tally(&seq_spacings), "{what}");
                        if let Ok(s) = &sequential {
                            let ms = s.timeframe.millis();
                            let gaps = spacings
                                .gaps(ms)
                                .unwrap_or_else(|| find_gaps(&candles, s.timeframe));
                            assert_eq!(gaps, s.gaps, "{what}");
                        }
                        exercised += 1;
                    }
                }
            }
        }
        assert!(exercised > 100, "only {exercised} chunked parses");
    }

    #[test]
    fn chunked_errors_are_the_sequential_errors_wherever_the_row_is() {
        let rows = 48usize;
        let t = |i: usize| T0 + i as i64 * M15;
        let base: Vec<String> = (0..rows)
            .map(|i| row(t(i), "100", "101", "99", "100", "1"))
            .collect();
        let text = |rows: &[String]| format!("{HEADER}\n{}", rows.concat());
        // Every row length is the same, so the cuts of the good file are those of each variant.
        let good_text = text(&base);
        let mut seams = std::collections::BTreeSet::new();
        for chunks in 2..=5 {
            for &b in &chunk_bounds(body(&good_text), chunks)[1..chunks] {
                seams.insert(b / base[0].len());
            }
        }
        assert!(seams.len() >= 5, "{seams:?}");
        let mut first_rows = 0;
        for i in 1..rows {
            let variants = [
                row(t(i - 1), "100", "101", "99", "100", "1"),
                row(t(i - 1) - M15, "100", "101", "99", "100", "1"),
                row(t(i) + 60_000, "100", "101", "99", "100", "1"),
                row(t(i), "100", "98", "99", "100", "1"),
                row(t(i), "100", "101", "99", "102", "1"),
                format!("{},1O0,101,99,100,1\n", t(i)),
                format!("{},100,101,99,100\n", t(i)),
            ];
            for bad in variants {
                let mut rows_i = base.clone();
                rows_i[i] = bad.clone();
                let text = text(&rows_i);
                let sequential = parse_bytes(text.as_bytes(), "f.csv", 1);
                assert!(sequential.is_err(), "row {i}: {bad}");
                for chunks in 2..=5 {
                    let what = format!("row {i} `{}` in {chunks} chunks", bad.trim());
                    same(
                        &parse_bytes(text.as_bytes(), "f.csv", chunks),
                        &sequential,
                        &what,
                    );
                    // A bad row only passes the chunked parse when only the whole file shows it
                    // (misalignment is found after the join).
                    let misaligned = matches!(sequential, Err(DataError::Misaligned { .. }));
                    assert_eq!(chunked(&text, chunks).is_some(), misaligned, "{what}");
                }
                if seams.contains(&i) {
                    first_rows += 1;
                }
            }
        }
        assert!(
            first_rows >= 5 * 7,
            "{first_rows} errors on a chunk's first row"
        );

        // Spelled out for a duplicate and an unsorted row on the first row of the second chunk.
        let seam = chunk_bounds(body(&good_text), 2)[1] / base[0].len();
        let mut dup = base.clone();
        dup[seam] = row(t(seam - 1), "100", "101", "99", "100", "1");
        assert_eq!(
            parse_bytes(text(&dup).as_bytes(), "f.csv", 2).unwrap_err(),
            DataError::Duplicate {
                file: "f.csv".into(),
                line: seam + 2,
                open_time: t(seam - 1),
                first_line: seam + 1
            }
        );
        let mut unsorted = base.clone();
        unsorted[seam] = row(t(seam - 2), "100", "101", "99", "100", "1");
        assert_eq!(
            parse_bytes(text(&unsorted).as_bytes(), "f.csv", 2).unwrap_err(),
            DataError::Unsorted {
                file: "f.csv".into(),
                line: seam + 2,
                open_time: t(seam - 2),
                previous: t(seam - 1)
            }
        );
        // Errors in both halves: the earlier line is reported.
        let mut both = base.clone();
        both[seam + 3] = row(t(seam + 3), "100", "98", "99", "100", "1");
        both[seam - 3] = format!("{},100,101,99,100\n", t(seam - 3));
        assert!(matches!(
            parse_bytes(text(&both).as_bytes(), "f.csv", 2).unwrap_err(),
            DataError::FieldCount { line, .. } if line == seam - 3 + 2
        ));
    }

    #[test]
    fn a_gap_across_the_seam_is_found() {
        let rows = 40usize;
        let plain = good(rows);
        let seam = chunk_bounds(body(&plain), 2)[1] / (body(&plain).len() / rows);
        let mut text = format!("{HEADER}\n");
        for i in 0..rows {
            let k = if i < seam { i } else { i + 3 };
            text.push_str(&row(
                T0 + k as i64 * M15,
                "100.5",
                "101",
                "99",
                "100",
                "1.25",
            ));
        }
        let (_, spacings) = chunked(&text, 2).expect("chunks parse");
        let want = vec![Gap {
            after_open_time: T0 + (seam as i64 - 1) * M15,
            missing_candles: 3,
        }];
        assert_eq!(spacings.gaps(M15), Some(want.clone()));
        let s = parse_bytes(text.as_bytes(), "f.csv", 2).unwrap();
        assert_eq!(s.gaps, want);
        assert_eq!(s.len(), rows);
        same(
            &Ok(s),
            &parse_bytes(text.as_bytes(), "f.csv", 1),
            "gap at the seam",
        );
    }

    #[test]
    fn spacing_tallies_merge_to_the_sequential_tally_and_overflow() {
        // `distinct` one-off gap lengths alternating with 15m steps, cut in 2..=5 chunks: the
        // merged tally overflows exactly when the whole file has more than 256 distinct steps,
        // though no single chunk may.
        for distinct in [100i64, 255, 256, 257, 300, 600] {
            let mut text = format!("{HEADER}\n");
            let mut t = T0;
            for k in 0..distinct {
                text.push_str(&row(t, "100", "101", "99", "100", "1"));
                t += M15;
                text.push_str(&row(t, "100", "101", "99", "100", "1"));
                t += (k + 2) * M15;
            }
            let sequential = parse_rows(body(&text), 1, 0, "f.csv").unwrap();
            // Distinct steps: 15m and the `distinct - 1` gap lengths between the pairs.
            assert_eq!(sequential.spacings.overflow, distinct > 256, "{distinct}");
            let whole = parse_bytes(text.as_bytes(), "f.csv", 1);
            for chunks in 2..=5 {
                let (candles, spacings) = chunked(&text, chunks).expect("chunks parse");
                assert_eq!(candles, sequential.candles);
                assert_eq!(
                    tally(&spacings),
                    tally(&sequential.spacings),
                    "{distinct} in {chunks}"
                );
                same(
                    &parse_bytes(text.as_bytes(), "f.csv", chunks),
                    &whole,
                    &format!("{distinct} distinct in {chunks} chunks"),
                );
            }
            let s = whole.unwrap();
            assert_eq!(s.gaps.len() as i64, distinct - 1);
        }
    }

    #[test]
    fn a_file_not_utf8_is_refused_as_such_even_when_big() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = good(PARALLEL_MIN_BYTES / 30);
        assert!(text.len() > PARALLEL_MIN_BYTES);
        // A bad row early on, and a byte that is not UTF-8 late (in the last chunk): the file is
        // refused for its encoding first, as when it was read as a String.
        text.replace_range(HEADER.len() + 1..HEADER.len() + 2, "x");
        let mut bytes = text.into_bytes();
        let late = bytes.len() - 30;
        bytes[late] = 0xff;
        let path = dir.path().join("BTCUSDT-perp-15m.csv");
        std::fs::write(&path, &bytes).unwrap();
        let e = load_csv(&path).unwrap_err();
        let want = String::from_utf8(bytes.clone()).unwrap_err();
        assert_eq!(
            e,
            DataError::Read {
                file: path.display().to_string(),
                detail: format!("not UTF-8 text ({want})")
            }
        );
        assert!(e.to_string().contains(&format!("from index {late}")), "{e}");
        // Once it is text, the bad row is what is reported.
        bytes[late] = b'0';
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            load_csv(&path).unwrap_err(),
            DataError::NotNumeric { line: 2, .. }
        ));
        // A non-UTF-8 byte in a line the fast path passes on (a blank-looking one) is caught too.
        let mut small = good(3).into_bytes();
        small.extend_from_slice(b"\xc3\n");
        std::fs::write(&path, &small).unwrap();
        assert!(matches!(
            load_csv(&path).unwrap_err(),
            DataError::Read { .. }
        ));
    }

    #[test]
    fn streamed_reading_equals_the_in_memory_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f-15m.csv");
        let name = path.display().to_string();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut streamed = 0;
        for rows in [1usize, 2, 3, 10, 57, 300, 1_000] {
            for step in [M15, 3_600_000] {
                let mut text = random_file(&mut rng, rows, step);
                if rng.below(3) == 0 {
                    // A BOM and blank lines before the header.
                    text.insert_str(0, "\u{feff}\n \n");
                }
                std::fs::write(&path, &text).unwrap();
                let want = parse_bytes(text.as_bytes(), &name, 1);
                assert!(want.is_ok(), "{want:?}");
                same(&load_csv(&path), &want, "load_csv");
                for chunks in 1..=4 {
                    for piece in [1, 7, 64, 4096, PIECE_BYTES] {
                        let what = format!("{rows} rows in {chunks} chunks, pieces of {piece}");
                        let got = stream_csv(&path, &name, Some(chunks), piece).expect(&what);
                        same(&Ok(got), &want, &what);
                        streamed += 1;
                    }
                }
            }
        }
        assert_eq!(streamed, 7 * 2 * 4 * 5);
        // Rows of one length: cuts and reads fall exactly on line starts too.
        for rows in [2usize, 4, 40, 64, 1_000] {
            let text = good(rows);
            std::fs::write(&path, &text).unwrap();
            let want = parse_bytes(text.as_bytes(), &name, 1);
            let row_len = text.len() / (rows + 1) + 1;
            for chunks in 1..=4 {
                for piece in [
                    1,
                    row_len - 1,
                    row_len,
                    row_len + 1,
                    2 * row_len,
                    PIECE_BYTES,
                ] {
                    let what = format!("{rows} rows in {chunks} chunks, pieces of {piece}");
                    let got = stream_csv(&path, &name, Some(chunks), piece).expect(&what);
                    same(&Ok(got), &want, &what);
                }
            }
        }
    }

    #[test]
    fn streamed_reading_leaves_every_error_to_the_plain_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csv");
        let name = path.display().to_string();
        let rows = 120usize;
        let t = |i: usize| T0 + i as i64 * M15;
        let base: Vec<String> = (0..rows)
            .map(|i| row(t(i), "100", "101", "99", "100", "1"))
            .collect();
        for i in (1..rows).step_by(7) {
            for bad in [
                row(t(i - 1), "100", "101", "99", "100", "1"),
                row(t(i - 1) - M15, "100", "101", "99", "100", "1"),
                row(t(i) + 60_000, "100", "101", "99", "100", "1"),
                row(t(i), "100", "98", "99", "100", "1"),
                format!("{},100,101,99,100\n", t(i)),
                format!("{},10\u{e9},101,99,100,1\n", t(i)),
            ] {
                let mut r = base.clone();
                r[i] = bad.clone();
                let text = format!("{HEADER}\n{}", r.concat());
                std::fs::write(&path, &text).unwrap();
                let want = parse_bytes(text.as_bytes(), &name, 1);
                assert!(want.is_err(), "{bad}");
                for chunks in 1..=3 {
                    for piece in [5, 100, PIECE_BYTES] {
                        let what = format!("row {i} `{}`, {chunks} chunks of {piece}", bad.trim());
                        assert!(
                            stream_csv(&path, &name, Some(chunks), piece).is_none(),
                            "{what}"
                        );
                    }
                }
                same(&load_csv(&path), &want, &bad);
            }
        }
        // Files the stream leaves to the plain reading from the start.
        for (text, want) in [
            ("", "the file is empty"),
            ("\n \n", "the file is empty"),
            (HEADER, "no candle rows"),
            ("open_time,open\n1,2\n", "bad header"),
        ] {
            std::fs::write(&path, text).unwrap();
            assert!(
                stream_csv(&path, &name, None, PIECE_BYTES).is_none(),
                "{text}"
            );
            let e = load_csv(&path).unwrap_err();
            assert_eq!(
                Err(e.clone()),
                parse_bytes(text.as_bytes(), &name, 1).map(|_| ())
            );
            assert!(e.to_string().contains(want), "{e}");
        }
        let e = load_csv(dir.path()).unwrap_err();
        assert!(matches!(e, DataError::Read { .. }), "a directory: {e}");
    }

    #[test]
    fn shared_files_parse_the_same_in_any_number_of_chunks() {
        for name in ["BTCUSDT-perp-15m.csv", "BTCUSDT-spot-1h.csv"] {
            let path = Path::new(SHARED).join(name);
            let Ok(bytes) = std::fs::read(&path) else {
                eprintln!("skipped: {} not present", path.display());
                continue;
            };
            let sequential = parse_bytes(&bytes, name, 1);
            assert!(sequential.is_ok(), "{name}");
            for chunks in [2, 3, 8] {
                same(&parse_bytes(&bytes, name, chunks), &sequential, name);
            }
            same(&load_csv(&path), &sequential, name);
            for chunks in [1, 2, 3] {
                let streamed = stream_csv(&path, name, Some(chunks), PIECE_BYTES);
                same(
                    &streamed.ok_or(DataError::NoRows { file: name.into() }),
                    &sequential,
                    name,
                );
            }
        }
    }

    fn c(t: i64, o: i64, h: i64, l: i64, cl: i64, v: i64) -> Candle {
        Candle {
            open_time: t,
            open: Price::new(Decimal::from(o)),
            high: Price::new(Decimal::from(h)),
            low: Price::new(Decimal::from(l)),
            close: Price::new(Decimal::from(cl)),
            volume: Decimal::from(v),
        }
    }

    #[test]
    fn resample_aggregates_utc_aligned_buckets() {
        // 15m from 11:30 to 13:15: hour 11 is partial (leading), 12 is full, 13 is partial (trailing).
        let start = T0 - 2 * M15;
        let src: Vec<Candle> = (0..8)
            .map(|i| c(start + i * M15, 10 + i, 20 + i, 5 + i, 11 + i, 1 + i))
            .collect();
        let all = resample(&src, Timeframe::M15, Timeframe::H1, false);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], c(T0 - 3_600_000, 10, 21, 5, 12, 3));
        assert_eq!(all[1], c(T0, 12, 25, 7, 16, 3 + 4 + 5 + 6));
        assert_eq!(all[2], c(T0 + 3_600_000, 16, 27, 11, 18, 7 + 8));

        let complete = resample(&src, Timeframe::M15, Timeframe::H1, true);
        assert_eq!(complete, vec![all[1]]);

        // Same timeframe: unchanged.
        assert_eq!(resample(&src, Timeframe::M15, Timeframe::M15, true), src);
        assert!(resample(&[], Timeframe::M15, Timeframe::H1, true).is_empty());
    }

    #[test]
    fn resample_keeps_gaps_as_gaps() {
        // Hours 12 and 14 have data (14 with a hole inside), hour 13 is entirely missing.
        let mut src = Vec::new();
        for i in 0..4 {
            src.push(c(T0 + i * M15, 100, 110, 90, 100, 1));
        }
        for i in [8, 10, 11] {
            src.push(c(T0 + i * M15, 100 + i, 120, 80, 101, 2));
        }
        let out = resample(&src, Timeframe::M15, Timeframe::H1, true);
        assert_eq!(out.len(), 2, "the missing hour is not invented");
        assert_eq!(out[0].open_time, T0);
        assert_eq!(out[1].open_time, T0 + 2 * 3_600_000);
        assert_eq!(out[1].open, Price::new(dec!(108)));
        assert_eq!(out[1].volume, dec!(6));
        let series = CandleSeries::new(src, Timeframe::M15).resampled(Timeframe::H1, true);
        assert_eq!(
            series.gaps,
            vec![Gap {
                after_open_time: T0,
                missing_candles: 1
            }]
        );
    }

    #[test]
    #[should_panic(expected = "finer timeframe")]
    fn resample_refuses_finer_targets() {
        resample(&[], Timeframe::H1, Timeframe::M15, true);
    }

    #[test]
    fn names_from_filenames() {
        assert_eq!(
            symbol_from_filename(Path::new("/x/BTCUSDT-perp-15m.csv")),
            Some(Symbol::new("BTCUSDT"))
        );
        assert_eq!(
            symbol_from_filename(Path::new("ethusdt_1h.csv")),
            Some(Symbol::new("ETHUSDT"))
        );
        assert_eq!(symbol_from_filename(Path::new("data.csv")), None);
        assert_eq!(symbol_from_filename(Path::new("USDT.csv")), None);
        assert_eq!(
            timeframe_from_filename(Path::new("BTCUSDT-spot-1h.csv")),
            Some(Timeframe::H1)
        );
        assert_eq!(timeframe_from_filename(Path::new("candles.csv")), None);
    }

    const SHARED: &str = "/work/shared/data";

    #[test]
    fn loads_the_shared_perp_file_without_gaps() {
        let path = Path::new(SHARED).join("BTCUSDT-perp-15m.csv");
        if !path.exists() {
            eprintln!("skipped: {} not present", path.display());
            return;
        }
        let s = load_csv(&path).unwrap();
        assert_eq!(s.timeframe, Timeframe::M15);
        assert_eq!(s.len(), 17_280);
        assert!(s.gaps.is_empty());
        assert_eq!(s.candles[0].open_time, 1_751_629_500_000);
        assert_eq!(s.candles[0].open, Price::new(dec!(108994.3)));
        assert_eq!(s.candles[0].close, Price::new(dec!(108842.3)));
        let h1 = s.resampled(Timeframe::H1, true);
        // 11:45 starts a partial hour; the last candle (11:30) leaves 11:00 partial too.
        assert_eq!(h1.len(), (17_280 - 1 - 3) / 4);
        assert!(h1.gaps.is_empty());
    }

    #[test]
    fn loads_the_shared_spot_file_with_its_fifteen_gaps() {
        let path = Path::new(SHARED).join("BTCUSDT-spot-1h.csv");
        if !path.exists() {
            eprintln!("skipped: {} not present", path.display());
            return;
        }
        let s = load_csv(&path).unwrap();
        assert_eq!(s.timeframe, Timeframe::H1);
        assert_eq!(s.len(), 51_224);
        assert_eq!(s.gaps.len(), 15);
        // The README's example outage: 2020-02-19 11:00 → 17:00.
        let feb19_11 = 1_582_110_000_000;
        let g = s
            .gaps
            .iter()
            .find(|g| g.after_open_time == feb19_11)
            .expect("the 2020-02-19 outage");
        assert_eq!(g.missing_candles, 5);
        assert_eq!(symbol_from_filename(&path), Some(Symbol::new("BTCUSDT")));
    }
}
