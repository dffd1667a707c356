//! Where the chart page's candles come from: Binance's public klines (a live store), or candle
//! files (a replay's or backtest's store, whose trades are in the past and maybe offline).

use albra_core::data::{self, symbol_from_filename, timeframe_from_filename};
use albra_core::domain::{Candle, Symbol, Timeframe};
use albra_core::ports::Exchange;
use std::path::PathBuf;
use std::sync::Arc;

/// The candles a chart draws.
pub enum CandleSource {
    /// Closed klines of the exchange (public, no key), `GET /fapi/v1/klines`.
    Exchange {
        client: Arc<dyn Exchange>,
        host: String,
    },
    /// Candle CSV files named `SYMBOL-…-TF.csv`; a finer file is resampled to the chart's
    /// timeframe.
    Files(Vec<PathBuf>),
}

/// Candles and where they came from, for the page to say.
pub struct Candles {
    pub candles: Vec<Candle>,
    pub source: String,
}

impl CandleSource {
    /// Up to `limit` closed candles of `symbol` at `tf` that closed by `to` (ms), oldest first.
    /// The error is a sentence for the page (no file for the symbol, the exchange's refusal).
    pub async fn candles(
        &self,
        symbol: &Symbol,
        tf: Timeframe,
        limit: usize,
        to: i64,
    ) -> Result<Candles, String> {
        match self {
            CandleSource::Exchange { client, host } => {
                let candles = client
                    .closed_klines(symbol, tf, limit as u32, to)
                    .await
                    .map_err(|e| format!("{host} did not give {symbol} {tf} klines: {e}"))?;
                Ok(Candles {
                    candles,
                    source: format!("{host} klines"),
                })
            }
            CandleSource::Files(files) => from_files(files, symbol, tf, limit, to),
        }
    }
}

/// The finest file of `symbol` whose timeframe divides `tf`, resampled, cut at `to`.
fn from_files(
    files: &[PathBuf],
    symbol: &Symbol,
    tf: Timeframe,
    limit: usize,
    to: i64,
) -> Result<Candles, String> {
    let file = files
        .iter()
        .filter(|f| symbol_from_filename(f).as_ref() == Some(symbol))
        .filter_map(|f| timeframe_from_filename(f).map(|t| (t, f)))
        .filter(|(t, _)| *t <= tf && tf.millis() % t.millis() == 0)
        .max_by_key(|(t, _)| *t);
    let Some((file_tf, path)) = file else {
        let names: Vec<_> = files.iter().map(|f| f.display().to_string()).collect();
        return Err(format!(
            "no candle file for {symbol} at {tf} or finer among --data {}",
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    let series = data::load_csv(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let series = if file_tf == tf {
        series
    } else {
        series.resampled(tf, true)
    };
    let mut candles: Vec<Candle> = series
        .candles
        .into_iter()
        .filter(|c| c.close_time(tf) <= to)
        .collect();
    let cut = candles.len().saturating_sub(limit);
    candles.drain(..cut);
    let name = path.file_name().map_or(path.display().to_string(), |n| {
        n.to_string_lossy().into_owned()
    });
    Ok(Candles {
        candles,
        source: if file_tf == tf {
            name
        } else {
            format!("{name} resampled to {tf}")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn files_are_chosen_by_symbol_and_timeframe_resampled_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("BTCUSDT-perp-15m.csv");
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "open_time,open,high,low,close,volume").unwrap();
        for i in 0..16i64 {
            let p = 100 + i;
            writeln!(f, "{},{p},{},{},{p},1", i * 900_000, p + 1, p - 1).unwrap();
        }
        drop(f);
        let src = CandleSource::Files(vec![path]);
        let btc = Symbol::new("BTCUSDT");
        // Four hours of 15-minute candles: the last two hourly candles that closed by 3 h.
        let c = src
            .candles(&btc, Timeframe::H1, 2, 3 * 3_600_000)
            .await
            .unwrap();
        let opens: Vec<_> = c.candles.iter().map(|c| c.open_time).collect();
        assert_eq!(opens, [3_600_000, 7_200_000]);
        assert_eq!(
            c.candles[0].high.get().to_string(),
            "108",
            "the highest of 4..=7"
        );
        assert_eq!(c.source, "BTCUSDT-perp-15m.csv resampled to 1h");
        let err = src
            .candles(&Symbol::new("ETHUSDT"), Timeframe::H1, 2, i64::MAX)
            .await
            .err()
            .unwrap();
        assert!(err.contains("no candle file for ETHUSDT at 1h"), "{err}");
        assert!(src.candles(&btc, Timeframe::M5, 2, i64::MAX).await.is_err());
    }
}
