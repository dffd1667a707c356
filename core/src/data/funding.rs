//! Recorded funding rates: the `<SYMBOL>-funding.csv` file that sits beside a symbol's candle
//! files (`albra download` writes it; backtests read it).
//!
//! Format: a header `funding_time,funding_rate,mark_price`, then one settlement per line, oldest
//! first; `funding_time` in milliseconds since the Unix epoch (UTC), `funding_rate` and
//! `mark_price` as decimal strings exactly as Binance sends them (`-0.00003750`,
//! `34287.54619963`). `mark_price` is empty when Binance gave none (its oldest records).
//!
//! Settlements are not assumed to fall on a fixed grid: Binance has changed the interval of some
//! symbols (8 h to 4 h) and its recorded times carry a few milliseconds of jitter, so the only
//! order rule is "strictly increasing". Every malformed input is an error naming the source, the
//! 1-based line and what was wrong.

use super::{symbol_from_filename, MAX_OPEN_TIME};
use rust_decimal::Decimal;
use std::path::{Path, PathBuf};

/// The header every funding file starts with.
pub const FUNDING_HEADER: &str = "funding_time,funding_rate,mark_price";
const COLUMNS: [&str; 3] = ["funding_time", "funding_rate", "mark_price"];

/// One funding settlement of a perpetual.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FundingRate {
    /// Settlement time, ms since the epoch.
    pub time: i64,
    /// Rate paid by longs to shorts (negative: shorts pay longs), as a fraction of notional.
    pub rate: Decimal,
    /// Mark price at the settlement, when Binance recorded one.
    pub mark_price: Option<Decimal>,
}

/// Why a funding file was refused. Every variant names the source; row problems carry the line.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum FundingError {
    #[error("{file}: cannot read the funding file: {detail}")]
    Read { file: String, detail: String },
    #[error("{file}:{line}: bad header `{found}` (expected `{FUNDING_HEADER}`)")]
    BadHeader {
        file: String,
        line: usize,
        found: String,
    },
    #[error("{file}:{line}: expected 3 comma-separated fields ({FUNDING_HEADER}), found {found}")]
    FieldCount {
        file: String,
        line: usize,
        found: usize,
    },
    #[error("{file}:{line}: column `{column}` is not valid: `{value}`")]
    BadValue {
        file: String,
        line: usize,
        column: &'static str,
        value: String,
    },
    #[error("{file}:{line}: funding_time {time} is not after the previous row's {previous}; rows must be sorted by time without duplicates")]
    Unsorted {
        file: String,
        line: usize,
        time: i64,
        previous: i64,
    },
}

/// `BTCUSDT` → `BTCUSDT-funding.csv`.
pub fn funding_file_name(symbol: &str) -> String {
    format!("{symbol}-funding.csv")
}

/// The funding file of a candle file: same folder, `<SYMBOL>-funding.csv`, the symbol taken from
/// the candle file's name as [`symbol_from_filename`] reads it (`data/BTCUSDT-perp-15m.csv` →
/// `data/BTCUSDT-funding.csv`), or its first `-`/`_`/`.` token as written when that is not a
/// symbol.
pub fn funding_path_for(candle_file: &Path) -> PathBuf {
    let symbol = symbol_from_filename(candle_file)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| {
            let name = candle_file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.split(['-', '_', '.']).next().unwrap_or("").to_string()
        });
    candle_file.with_file_name(funding_file_name(&symbol))
}

/// Read and validate a funding file (see [`parse_funding_csv`]).
pub fn load_funding_csv(path: &Path) -> Result<Vec<FundingRate>, FundingError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| FundingError::Read {
        file: file.clone(),
        detail: e.to_string(),
    })?;
    parse_funding_csv(&text, &file)
}

/// Read the funding file beside `candle_path` ([`funding_path_for`]): `Ok(None)` when there is
/// none (a backtest then charges no funding and says so), its rates otherwise; a file that
/// exists but cannot be read or parsed is an error.
pub fn load_funding_for(
    candle_path: &Path,
) -> Result<Option<(PathBuf, Vec<FundingRate>)>, FundingError> {
    let path = funding_path_for(candle_path);
    let file = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(FundingError::Read {
                file,
                detail: e.to_string(),
            })
        }
    };
    Ok(Some((path, parse_funding_csv(&text, &file)?)))
}

/// Parse funding CSV text; `source` names it in errors. A file with only the header is an empty
/// history (a range with no settlement), not an error; a missing header is.
pub fn parse_funding_csv(text: &str, source: &str) -> Result<Vec<FundingRate>, FundingError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let header = lines.by_ref().find(|(_, l)| !l.is_empty());
    let header_ok = |h: &str| h.split(',').map(str::trim).eq(COLUMNS.iter().copied());
    match header {
        Some((_, h)) if header_ok(h) => {}
        found => {
            return Err(FundingError::BadHeader {
                file: source.to_string(),
                line: found.map_or(1, |(n, _)| n),
                found: found.map_or(String::new(), |(_, h)| h.chars().take(80).collect()),
            })
        }
    }
    let mut out: Vec<FundingRate> = Vec::new();
    for (line, row) in lines.filter(|(_, l)| !l.is_empty()) {
        let rate = parse_row(row, line, source)?;
        if let Some(prev) = out.last() {
            if rate.time <= prev.time {
                return Err(FundingError::Unsorted {
                    file: source.to_string(),
                    line,
                    time: rate.time,
                    previous: prev.time,
                });
            }
        }
        out.push(rate);
    }
    Ok(out)
}

fn parse_row(row: &str, line: usize, source: &str) -> Result<FundingRate, FundingError> {
    let fields: Vec<&str> = row.split(',').map(str::trim).collect();
    let [time, rate, mark] = fields[..] else {
        return Err(FundingError::FieldCount {
            file: source.to_string(),
            line,
            found: fields.len(),
        });
    };
    let bad = |column: &'static str, value: &str| FundingError::BadValue {
        file: source.to_string(),
        line,
        column,
        value: value.chars().take(80).collect(),
    };
    let time = time
        .parse::<i64>()
        .ok()
        .filter(|t| (0..=MAX_OPEN_TIME).contains(t))
        .ok_or_else(|| bad("funding_time", time))?;
    let rate = Decimal::from_str_exact(rate).map_err(|_| bad("funding_rate", rate))?;
    let mark_price = if mark.is_empty() {
        None
    } else {
        // A mark price is a price: zero or negative is a broken record.
        let p = Decimal::from_str_exact(mark)
            .ok()
            .filter(|p| *p > Decimal::ZERO)
            .ok_or_else(|| bad("mark_price", mark))?;
        Some(p)
    };
    Ok(FundingRate {
        time,
        rate,
        mark_price,
    })
}

/// The funding file's text for `rates` (header included; each decimal as it was parsed, so a
/// value read from Binance or from a file is written back digit for digit).
pub fn funding_csv(rates: &[FundingRate]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(FUNDING_HEADER.len() + 1 + rates.len() * 40);
    s.push_str(FUNDING_HEADER);
    s.push('\n');
    for r in rates {
        let mark = r.mark_price.map(|p| p.to_string()).unwrap_or_default();
        writeln!(s, "{},{},{mark}", r.time, r.rate).expect("writing to a String");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    const T: i64 = 1_704_067_200_000; // 2024-01-01 00:00 UTC
    const H8: i64 = 8 * 3_600_000;

    #[test]
    fn round_trips_digit_for_digit() {
        let text = format!(
            "{FUNDING_HEADER}\n{T},0.00010000,42314.12345678\n{},-0.00003750,\n{},0.00000000,42000.1\n",
            T + H8,
            T + 2 * H8 + 3
        );
        let rates = parse_funding_csv(&text, "f.csv").unwrap();
        assert_eq!(
            rates,
            vec![
                FundingRate {
                    time: T,
                    rate: dec!(0.00010000),
                    mark_price: Some(dec!(42314.12345678)),
                },
                FundingRate {
                    time: T + H8,
                    rate: dec!(-0.00003750),
                    mark_price: None,
                },
                FundingRate {
                    time: T + 2 * H8 + 3,
                    rate: dec!(0),
                    mark_price: Some(dec!(42000.1)),
                },
            ]
        );
        assert_eq!(funding_csv(&rates), text);
    }

    #[test]
    fn header_only_is_an_empty_history() {
        assert_eq!(
            parse_funding_csv(&format!("{FUNDING_HEADER}\n"), "f"),
            Ok(vec![])
        );
        assert_eq!(funding_csv(&[]), format!("{FUNDING_HEADER}\n"));
        // A BOM, blank lines and spaces around fields are tolerated.
        let text = format!("\u{feff}\n funding_time, funding_rate ,mark_price\n\n{T}, 0.0001 ,\n");
        assert_eq!(parse_funding_csv(&text, "f").unwrap().len(), 1);
    }

    #[test]
    fn every_error_names_the_file_line_and_value() {
        let cases = [
            (String::new(), "f.csv:1: bad header ``"),
            (
                "open_time,open\n".to_string(),
                "f.csv:1: bad header `open_time,open`",
            ),
            (
                format!("{FUNDING_HEADER}\n{T},0.1\n"),
                "f.csv:2: expected 3",
            ),
            (
                format!("{FUNDING_HEADER}\nx,0.1,\n"),
                "f.csv:2: column `funding_time` is not valid: `x`",
            ),
            (
                format!("{FUNDING_HEADER}\n-5,0.1,\n"),
                "`funding_time` is not valid: `-5`",
            ),
            (
                format!("{FUNDING_HEADER}\n{T},abc,\n"),
                "f.csv:2: column `funding_rate`",
            ),
            (
                format!("{FUNDING_HEADER}\n{T},0.1,0\n"),
                "column `mark_price` is not valid: `0`",
            ),
            (
                format!("{FUNDING_HEADER}\n{T},0.1,\n\n{T},0.2,\n"),
                "f.csv:4: funding_time 1704067200000 is not after the previous row's 1704067200000",
            ),
        ];
        for (text, want) in cases {
            let e = parse_funding_csv(&text, "f.csv").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_funding_file_sits_beside_the_candle_file() {
        assert_eq!(
            funding_path_for(Path::new("data/BTCUSDT-perp-15m.csv")),
            PathBuf::from("data/BTCUSDT-funding.csv")
        );
        assert_eq!(
            funding_path_for(Path::new("/x/ethusdt_1h.csv")),
            PathBuf::from("/x/ETHUSDT-funding.csv")
        );
        assert_eq!(
            funding_path_for(Path::new("candles.csv")),
            PathBuf::from("candles-funding.csv")
        );
        assert_eq!(funding_file_name("BTCUSDT"), "BTCUSDT-funding.csv");
    }

    #[test]
    fn loading_names_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("BTCUSDT-funding.csv");
        let e = load_funding_csv(&path).unwrap_err();
        assert!(matches!(e, FundingError::Read { .. }), "{e}");
        let rates = [FundingRate {
            time: T,
            rate: dec!(0.0001),
            mark_price: None,
        }];
        std::fs::write(&path, funding_csv(&rates)).unwrap();
        assert_eq!(load_funding_csv(&path).unwrap(), rates);
    }

    #[test]
    fn a_missing_file_is_no_data_and_a_present_one_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let candles = dir.path().join("BTCUSDT-perp-1h.csv");
        assert_eq!(load_funding_for(&candles).unwrap(), None);
        let funding = dir.path().join("BTCUSDT-funding.csv");
        std::fs::write(
            &funding,
            format!("{FUNDING_HEADER}\n1700000000000,0.0001,\n"),
        )
        .unwrap();
        let (path, rates) = load_funding_for(&candles).unwrap().unwrap();
        assert_eq!(path, funding);
        assert_eq!(rates.len(), 1);
        std::fs::write(&funding, "not,a,funding file\n").unwrap();
        let err = load_funding_for(&candles).unwrap_err();
        assert!(err.to_string().contains("BTCUSDT-funding.csv:1"), "{err}");
    }
}
