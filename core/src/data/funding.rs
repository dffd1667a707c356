//! Recorded funding rates: the file a backtest finds beside its candles
//! (`<dir>/<SYMBOL>-funding.csv`) and charges at each funding time.
//!
//! Format: a header `funding_time,funding_rate,mark_price`, then one funding event per line:
//! `funding_time` in milliseconds since the Unix epoch (UTC), `funding_rate` a decimal (0.0001 =
//! 0.01 %, negative when shorts pay longs), `mark_price` the mark price Binance charged at, or
//! empty when it is not known (the paper exchange then takes the candle's open at that time).
//! Rows are strictly increasing in time. Every malformed input is an error naming the file and
//! the 1-based line.

use super::{DataError, MAX_OPEN_TIME};
use crate::domain::Symbol;
use rust_decimal::Decimal;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The header every funding file starts with.
pub const FUNDING_HEADER: &str = "funding_time,funding_rate,mark_price";

/// One funding event of a symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FundingRate {
    /// Funding time, ms since the Unix epoch (UTC).
    pub time: i64,
    /// The rate: a long pays `notional × rate` when it is positive, receives when negative.
    pub rate: Decimal,
    /// The mark price the payment is computed at, when the file gives it.
    pub mark_price: Option<Decimal>,
}

/// The funding file of a candle file: `<dir>/<SYMBOL>-funding.csv` beside it, `SYMBOL` as the
/// candle file's name gives it ([`super::symbol_from_filename`]; `UNKNOWN` when the name gives
/// none, which no backtest accepts anyway).
pub fn funding_path_for(candle_path: &Path) -> PathBuf {
    let symbol = super::symbol_from_filename(candle_path).unwrap_or_else(|| Symbol::new("UNKNOWN"));
    let name = format!("{symbol}-funding.csv");
    match candle_path.parent() {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// Parse a funding file's text; `source` names it in errors. A header alone is no events.
pub fn parse_funding_csv(text: &str, source: &str) -> Result<Vec<FundingRate>, DataError> {
    let bad = |line: usize, detail: String| DataError::Funding {
        file: source.to_string(),
        line,
        detail,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    match lines.next() {
        Some((_, h)) if h.trim() == FUNDING_HEADER => {}
        Some((n, h)) => {
            return Err(bad(
                n,
                format!("bad header `{h}` (expected `{FUNDING_HEADER}`)"),
            ));
        }
        None => {
            return Err(bad(
                1,
                format!("the file is empty (expected the header `{FUNDING_HEADER}`)"),
            ))
        }
    }
    let mut out: Vec<FundingRate> = Vec::new();
    for (n, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let row = parse_row(line).map_err(|d| bad(n, d))?;
        if let Some(prev) = out.last() {
            if row.time <= prev.time {
                return Err(bad(
                    n,
                    format!(
                        "funding_time {} is not after the previous row's {}; rows must be strictly increasing",
                        row.time, prev.time
                    ),
                ));
            }
        }
        out.push(row);
    }
    Ok(out)
}

/// One data row, or what is wrong with it.
fn parse_row(line: &str) -> Result<FundingRate, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [time, rate, mark] = fields.as_slice() else {
        return Err(format!(
            "expected 3 comma-separated fields ({FUNDING_HEADER}), found {}",
            fields.len()
        ));
    };
    let time: i64 = time
        .parse()
        .ok()
        .filter(|t| (0..=MAX_OPEN_TIME).contains(t))
        .ok_or_else(|| format!("funding_time is not a time in ms since 1970: `{time}`"))?;
    let rate =
        Decimal::from_str(rate).map_err(|_| format!("funding_rate is not a number: `{rate}`"))?;
    let mark_price = match *mark {
        "" => None,
        m => match Decimal::from_str(m) {
            Ok(p) if p > Decimal::ZERO => Some(p),
            _ => return Err(format!("mark_price is not a positive number: `{m}`")),
        },
    };
    Ok(FundingRate {
        time,
        rate,
        mark_price,
    })
}

/// Read the funding file beside `candle_path` ([`funding_path_for`]): `Ok(None)` when there is
/// none, its events otherwise; a file that exists but cannot be read or parsed is an error.
pub fn load_funding_for(
    candle_path: &Path,
) -> Result<Option<(PathBuf, Vec<FundingRate>)>, DataError> {
    let path = funding_path_for(candle_path);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // Line 0: the file as a whole.
        Err(e) => {
            return Err(DataError::Funding {
                file: path.display().to_string(),
                line: 0,
                detail: format!("cannot read it: {e}"),
            })
        }
    };
    let rates = parse_funding_csv(&text, &path.display().to_string())?;
    Ok(Some((path, rates)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn rows_parse_with_and_without_a_mark_price() {
        let text = "funding_time,funding_rate,mark_price\r\n1700000000000,0.0001,37000.5\r\n1700028800000,-0.00005,\n\n";
        let rates = parse_funding_csv(text, "f.csv").unwrap();
        assert_eq!(
            rates,
            vec![
                FundingRate {
                    time: 1_700_000_000_000,
                    rate: dec!(0.0001),
                    mark_price: Some(dec!(37000.5)),
                },
                FundingRate {
                    time: 1_700_028_800_000,
                    rate: dec!(-0.00005),
                    mark_price: None,
                },
            ]
        );
        assert_eq!(parse_funding_csv(FUNDING_HEADER, "f.csv").unwrap(), vec![]);
    }

    #[test]
    fn every_malformed_input_names_the_file_and_line() {
        let h = FUNDING_HEADER;
        let cases = [
            (String::new(), 1, "empty"),
            ("funding_time,rate\n1,0.1,".to_string(), 1, "bad header"),
            (format!("{h}\n1700000000000,0.0001"), 2, "expected 3"),
            (format!("{h}\nyesterday,0.0001,"), 2, "funding_time"),
            (format!("{h}\n-5,0.0001,"), 2, "funding_time"),
            (format!("{h}\n1,abc,"), 2, "funding_rate"),
            (format!("{h}\n1,0.1,-3"), 2, "mark_price"),
            (format!("{h}\n1,0.1,0"), 2, "mark_price"),
            (format!("{h}\n5,0.1,\n5,0.1,"), 3, "strictly increasing"),
            (format!("{h}\n5,0.1,\n4,0.1,"), 3, "strictly increasing"),
        ];
        for (text, want_line, want) in cases {
            let e = parse_funding_csv(&text, "x/BTCUSDT-funding.csv").unwrap_err();
            let DataError::Funding { ref file, line, .. } = e else {
                panic!("{text:?}: {e:?}");
            };
            assert_eq!(
                (file.as_str(), line),
                ("x/BTCUSDT-funding.csv", want_line),
                "{text:?}"
            );
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_funding_file_sits_beside_the_candles_named_by_symbol() {
        assert_eq!(
            funding_path_for(Path::new("data/BTCUSDT-perp-15m.csv")),
            PathBuf::from("data/BTCUSDT-funding.csv")
        );
        assert_eq!(
            funding_path_for(Path::new("ethusdt_1h.csv")),
            PathBuf::from("ETHUSDT-funding.csv")
        );
    }

    #[test]
    fn a_missing_file_is_no_data_and_a_present_one_is_read() {
        let dir = std::env::temp_dir().join(format!("albra-funding-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let candles = dir.join("BTCUSDT-1h.csv");
        assert_eq!(load_funding_for(&candles).unwrap(), None);
        std::fs::write(
            dir.join("BTCUSDT-funding.csv"),
            format!("{FUNDING_HEADER}\n8,0.1,\n"),
        )
        .unwrap();
        let (path, rates) = load_funding_for(&candles).unwrap().unwrap();
        assert_eq!(path, dir.join("BTCUSDT-funding.csv"));
        assert_eq!(rates.len(), 1);
        std::fs::write(dir.join("BTCUSDT-funding.csv"), "nonsense\n").unwrap();
        assert!(load_funding_for(&candles).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
