//! Recorded candles: loading the project's CSV format (strictly validated, fast), inferring the
//! timeframe, reporting the exchange's own gaps, and resampling to a coarser timeframe.
//!
//! Format: a header `open_time,open,high,low,close,volume`, then one closed candle per line;
//! `open_time` in milliseconds since the Unix epoch (UTC), prices and volume as decimal strings.
//!
//! Every malformed input is an error that names the file, the 1-based line and what was wrong.
//! Missing candles (exchange outages) are *not* errors: the series stays a sequence of the candles
//! that exist, as the exchange serves them, and each hole is listed in [`CandleSeries::gaps`] so the
//! caller can warn. Nothing here ever invents a price to fill a gap.

use crate::domain::{Candle, Price, Symbol, Timeframe};
use rust_decimal::Decimal;
use std::fmt;
use std::path::Path;

/// The header every candle file starts with.
pub const HEADER: &str = "open_time,open,high,low,close,volume";
const COLUMNS: [&str; 6] = ["open_time", "open", "high", "low", "close", "volume"];

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
}

/// Read and validate a candle file (read in one go; see [`parse_csv`]).
pub fn load_csv(path: &Path) -> Result<CandleSeries, DataError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| DataError::Read {
        file: file.clone(),
        detail: e.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| DataError::Read {
        file: file.clone(),
        detail: format!("not UTF-8 text ({e})"),
    })?;
    parse_csv(&text, &file)
}

/// Parse candle CSV text; `source` names it in errors (usually the file path).
///
/// The timeframe is the most common spacing between consecutive rows; a file with a single row
/// takes it from a `-15m`-style token in `source` (as in `BTCUSDT-perp-15m.csv`).
pub fn parse_csv(text: &str, source: &str) -> Result<CandleSeries, DataError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bytes = text.as_bytes();

    // Header: the first non-blank line.
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
        let l = text[pos..end].trim();
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

    // ~40 bytes per row in real files; reserving avoids regrowth of the biggest allocation.
    let mut candles: Vec<Candle> = Vec::with_capacity(bytes.len() / 40 + 1);
    let mut prev_line = 0usize;
    let mut spacings = Spacings::default();
    while pos < bytes.len() {
        line += 1;
        let candle = match fast_row(bytes, pos) {
            Some((parsed, next)) => {
                pos = next;
                match parsed {
                    Ok(candle) => candle,
                    Err((open_time, values)) => make_candle(open_time, values, line, source)?,
                }
            }
            None => {
                let end = line_end(bytes, pos);
                let row = text[pos..end].trim();
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
        }
        if let Some(prev) = candles.last() {
            spacings.add(candle.open_time - prev.open_time);
        }
        candles.push(candle);
        prev_line = line;
    }
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
                line: line_of_row(text, bad),
                open_time: candles[bad].open_time,
                timeframe,
            });
        }
    }
    let no_gaps = !spacings.overflow && spacings.seen.iter().all(|&(s, _)| s == ms);
    let gaps = if no_gaps {
        Vec::new()
    } else {
        find_gaps(&candles, timeframe)
    };
    Ok(CandleSeries {
        candles,
        timeframe,
        gaps,
    })
}

/// The distinct spacings between consecutive rows and how often each occurs, tallied during the
/// parse so the timeframe, alignment and gaps need no further passes over the candles. Real files
/// have one spacing plus a few gap lengths; past 256 distinct values the tally gives up
/// (`overflow`) and the slower full computations run instead.
#[derive(Default)]
struct Spacings {
    seen: Vec<(i64, usize)>,
    last: usize,
    overflow: bool,
}

impl Spacings {
    fn add(&mut self, s: i64) {
        if let Some(e) = self.seen.get_mut(self.last) {
            if e.0 == s {
                e.1 += 1;
                return;
            }
        }
        if let Some(k) = self.seen.iter().position(|e| e.0 == s) {
            self.seen[k].1 += 1;
            self.last = k;
        } else if self.seen.len() < 256 {
            self.seen.push((s, 1));
            self.last = self.seen.len() - 1;
        } else {
            self.overflow = true;
        }
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
        let (int, n_int) = digits(b, i, 19)?;
        i += n_int;
        let (mut mantissa, mut scale) = (int, 0u32);
        if b.get(i) == Some(&b'.') {
            let (frac, n_frac) = digits(b, i + 1, 19 - n_int)?;
            i += 1 + n_frac;
            mantissa = int * POW10[n_frac] + frac;
            scale = n_frac as u32;
            if n_int + n_frac == 0 {
                return None;
            }
        } else if n_int == 0 {
            return None;
        }
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
    let [o, h, l, c, _] =
        raw.map(|(m, s)| u128::from(m) * u128::from(POW10[(max_scale - s) as usize]));
    let dec = raw.map(|(m, s)| Decimal::from_parts(m as u32, (m >> 32) as u32, 0, false, s));
    if h < l || l == 0 || o < l || o > h || c < l || c > h {
        return Some((Err((t, dec)), next));
    }
    let [open, high, low, close, volume] = dec;
    let candle = Candle {
        open_time: t,
        open: Price(open),
        high: Price(high),
        low: Price(low),
        close: Price(close),
        volume,
    };
    Some((Ok(candle), next))
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
    let x = word.wrapping_sub(0x3030_3030_3030_3030);
    // High bit of each byte set where the byte is not '0'..='9' (below '0' wraps, above '9'
    // carries into the high bit after adding 0x76).
    let non_digit = (x | x.wrapping_add(0x7676_7676_7676_7676)) & 0x8080_8080_8080_8080;
    let n = (non_digit.trailing_zeros() / 8) as usize;
    if n == 0 {
        return (0, 0);
    }
    // Move the n digits to the top bytes; the zero bytes shifted in act as leading zeros.
    let v = x << (8 * (8 - n));
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let v = ((v & 0x0000_00FF_0000_00FF)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32))))
        >> 32;
    (v, n)
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
        open: Price(open),
        high: Price(high),
        low: Price(low),
        close: Price(close),
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
fn line_of_row(text: &str, row: usize) -> usize {
    let mut seen_header = false;
    let mut k = 0usize;
    for (i, l) in text.split('\n').enumerate() {
        if l.trim().is_empty() {
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
    fn parses_a_good_file_and_infers_the_timeframe() {
        let s = parse_csv(&good(5), "x.csv").unwrap();
        assert_eq!(s.timeframe, Timeframe::M15);
        assert_eq!(s.len(), 5);
        assert!(s.gaps.is_empty());
        let c = s.candles[0];
        assert_eq!(c.open_time, T0);
        assert_eq!(c.open, Price(dec!(100.5)));
        assert_eq!(c.high, Price(dec!(101)));
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
        assert_eq!(s.candles[0].open, Price(dec!(100)));
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
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut number = |max_digits: u64| {
            let int_len = next() % max_digits + 1;
            let frac_len = next() % (20 - int_len);
            let mut s: String = (0..int_len)
                .map(|_| (b'0' + (next() % 10) as u8) as char)
                .collect();
            if frac_len > 0 || next() % 4 == 0 {
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

    fn c(t: i64, o: i64, h: i64, l: i64, cl: i64, v: i64) -> Candle {
        Candle {
            open_time: t,
            open: Price(Decimal::from(o)),
            high: Price(Decimal::from(h)),
            low: Price(Decimal::from(l)),
            close: Price(Decimal::from(cl)),
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
        assert_eq!(out[1].open, Price(dec!(108)));
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
        assert_eq!(s.candles[0].open, Price(dec!(108994.3)));
        assert_eq!(s.candles[0].close, Price(dec!(108842.3)));
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
