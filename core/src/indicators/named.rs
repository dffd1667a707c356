//! Indicators by name, for the `albra indicators` command: parse `NAME:P1,P2,…`, name the output
//! columns (`ema_20`, `macd_signal_12_26_9`, `bb_upper_20_2`, …) and compute them over candles:
//! with the batch (array) functions where an indicator has one (EMA, RSI, ATR, ADX, MACD; the
//! same bits as the streaming updates), by streaming the candles through the others.

use super::*;
use crate::domain::Candle;

/// One catalog entry: name, parameters with defaults, output columns.
pub struct Entry {
    pub name: &'static str,
    pub params: &'static str,
    pub defaults: &'static [f64],
    pub outputs: &'static [&'static str],
    pub about: &'static str,
}

/// Every indicator the command knows.
pub const CATALOG: &[Entry] = &[
    Entry {
        name: "sma",
        params: "period",
        defaults: &[20.0],
        outputs: &["sma"],
        about: "simple moving average of close",
    },
    Entry {
        name: "ema",
        params: "period",
        defaults: &[20.0],
        outputs: &["ema"],
        about: "exponential moving average of close (TA-Lib seeding)",
    },
    Entry {
        name: "wma",
        params: "period",
        defaults: &[20.0],
        outputs: &["wma"],
        about: "linearly weighted moving average of close",
    },
    Entry {
        name: "hma",
        params: "period",
        defaults: &[20.0],
        outputs: &["hma"],
        about: "Hull moving average of close",
    },
    Entry {
        name: "zlema",
        params: "period",
        defaults: &[20.0],
        outputs: &["zlema"],
        about: "zero-lag EMA: EMA(2·EMA − EMA(EMA))",
    },
    Entry {
        name: "zlhma",
        params: "period",
        defaults: &[20.0],
        outputs: &["zlhma"],
        about: "zero-lag HMA: 2·HMA − HMA(HMA)",
    },
    Entry {
        name: "macd",
        params: "fast,slow,signal",
        defaults: &[12.0, 26.0, 9.0],
        outputs: &["macd", "macd_signal", "macd_hist"],
        about: "MACD (TA-Lib seeding)",
    },
    Entry {
        name: "zlmacd",
        params: "fast,slow,signal",
        defaults: &[12.0, 26.0, 9.0],
        outputs: &["zlmacd", "zlmacd_signal", "zlmacd_hist"],
        about: "MACD of zero-lag EMAs",
    },
    Entry {
        name: "rsi",
        params: "period",
        defaults: &[14.0],
        outputs: &["rsi"],
        about: "relative strength index (Wilder)",
    },
    Entry {
        name: "atr",
        params: "period",
        defaults: &[14.0],
        outputs: &["atr"],
        about: "average true range (Wilder)",
    },
    Entry {
        name: "adx",
        params: "period",
        defaults: &[14.0],
        outputs: &["adx", "plus_di", "minus_di"],
        about: "ADX with +DI / −DI",
    },
    Entry {
        name: "donchian",
        params: "period",
        defaults: &[20.0],
        outputs: &["donchian_upper", "donchian_middle", "donchian_lower"],
        about: "Donchian channel (highest high / lowest low incl. the current bar)",
    },
    Entry {
        name: "ichimoku",
        params: "tenkan,kijun,senkou_b,displacement",
        defaults: &[9.0, 26.0, 52.0, 26.0],
        outputs: &[
            "tenkan",
            "kijun",
            "senkou_a",
            "senkou_b",
            "chikou_ref_close",
        ],
        about: "Ichimoku: cloud values at the current bar (computed `displacement` bars ago)",
    },
    Entry {
        name: "bb",
        params: "period,k",
        defaults: &[20.0, 2.0],
        outputs: &["bb_upper", "bb_middle", "bb_lower"],
        about: "Bollinger bands (population std dev)",
    },
    Entry {
        name: "mom",
        params: "period",
        defaults: &[10.0],
        outputs: &["mom"],
        about: "momentum: close − close n bars ago",
    },
    Entry {
        name: "roc",
        params: "period",
        defaults: &[10.0],
        outputs: &["roc"],
        about: "rate of change in % vs n bars ago",
    },
    Entry {
        name: "vma",
        params: "period",
        defaults: &[20.0],
        outputs: &["vma"],
        about: "moving average of volume",
    },
];

/// The catalog as help text: one line per indicator.
pub fn catalog_help() -> String {
    CATALOG
        .iter()
        .map(|e| {
            let d: Vec<String> = e.defaults.iter().map(|v| format!("{v}")).collect();
            format!(
                "  {:<9} {:<36} {} (default {}:{}; columns {})",
                e.name,
                e.params,
                e.about,
                e.name,
                d.join(","),
                e.outputs.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A parsed request: the entry, its parameters, and its column names.
pub struct Spec {
    entry: &'static Entry,
    params: Vec<f64>,
    pub columns: Vec<String>,
}

fn fmt_param(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v}").replace('.', "p")
    }
}

/// Parse `NAME` or `NAME:P1,P2,…`. Errors list the valid names or say which parameter is wrong.
pub fn parse(s: &str) -> Result<Spec, String> {
    let (name, rest) = match s.split_once(':') {
        Some((n, r)) => (n.trim().to_ascii_lowercase(), Some(r)),
        None => (s.trim().to_ascii_lowercase(), None),
    };
    let entry = CATALOG.iter().find(|e| e.name == name).ok_or_else(|| {
        format!(
            "unknown indicator `{name}` (valid: {})",
            CATALOG
                .iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let mut params = entry.defaults.to_vec();
    if let Some(rest) = rest {
        let given: Vec<&str> = rest.split(',').map(str::trim).collect();
        if given.len() > params.len() {
            return Err(format!(
                "{name} takes {} parameter(s) ({}), got `{rest}`",
                params.len(),
                entry.params
            ));
        }
        for (i, g) in given.iter().enumerate() {
            let v: f64 = g.parse().map_err(|_| {
                format!(
                    "{name}: parameter {} (`{}`) must be a number, got `{g}`",
                    i + 1,
                    entry.params.split(',').nth(i).unwrap_or("?")
                )
            })?;
            params[i] = v;
        }
    }
    let names: Vec<&str> = entry.params.split(',').collect();
    for (i, v) in params.iter().enumerate() {
        let is_period = names[i] != "k";
        if !v.is_finite() || *v <= 0.0 || (is_period && (v.fract() != 0.0 || *v > 100_000.0)) {
            return Err(format!(
                "{name}: {} must be a positive {}, got {v}",
                names[i],
                if is_period { "whole number" } else { "number" }
            ));
        }
    }
    if (name == "macd" || name == "zlmacd") && params[0] >= params[1] {
        return Err(format!(
            "{name}: fast ({}) must be below slow ({})",
            params[0], params[1]
        ));
    }
    if (name == "hma" || name == "zlhma") && params[0] < 2.0 {
        return Err(format!("{name}: period must be at least 2"));
    }
    let suffix = params
        .iter()
        .map(|v| fmt_param(*v))
        .collect::<Vec<_>>()
        .join("_");
    let columns = entry
        .outputs
        .iter()
        .map(|o| format!("{o}_{suffix}"))
        .collect();
    Ok(Spec {
        entry,
        params,
        columns,
    })
}

enum Runner {
    Sma(Sma),
    Ema(Ema),
    Wma(Wma),
    Hma(Hma),
    Zlema(Zlema),
    ZlHma(ZlHma),
    Macd(Macd),
    ZlMacd(ZlMacd),
    Rsi(Rsi),
    Atr(Atr),
    Adx(Adx),
    Donchian(Donchian),
    Ichimoku(Ichimoku),
    Bb(Bollinger),
    Mom(Momentum),
    Roc(Roc),
    Vma(VolumeMa),
}

impl Spec {
    fn runner(&self) -> Runner {
        let p = |i: usize| self.params[i] as usize;
        match self.entry.name {
            "sma" => Runner::Sma(Sma::new(p(0))),
            "ema" => Runner::Ema(Ema::new(p(0))),
            "wma" => Runner::Wma(Wma::new(p(0))),
            "hma" => Runner::Hma(Hma::new(p(0))),
            "zlema" => Runner::Zlema(Zlema::new(p(0))),
            "zlhma" => Runner::ZlHma(ZlHma::new(p(0))),
            "macd" => Runner::Macd(Macd::new(p(0), p(1), p(2))),
            "zlmacd" => Runner::ZlMacd(ZlMacd::new(p(0), p(1), p(2))),
            "rsi" => Runner::Rsi(Rsi::new(p(0))),
            "atr" => Runner::Atr(Atr::new(p(0))),
            "adx" => Runner::Adx(Adx::new(p(0))),
            "donchian" => Runner::Donchian(Donchian::new(p(0))),
            "ichimoku" => Runner::Ichimoku(Ichimoku::new(p(0), p(1), p(2), p(3))),
            "bb" => Runner::Bb(Bollinger::new(p(0), self.params[1], self.params[1])),
            "mom" => Runner::Mom(Momentum::new(p(0))),
            "roc" => Runner::Roc(Roc::new(p(0))),
            "vma" => Runner::Vma(VolumeMa::new(p(0))),
            other => unreachable!("catalog entry {other} without a runner"),
        }
    }
}

impl Runner {
    /// Feed one candle; push one value (or None) per output column. (The command computes
    /// EMA, RSI, ATR, ADX and MACD with the batch functions; their arms here are the streaming
    /// reference the tests compare that with.)
    fn update(&mut self, c: &Candle, out: &mut Vec<Option<f64>>) {
        let close = c.close.to_f64();
        let bar = Bar::from(c);
        match self {
            Runner::Sma(i) => out.push(i.update(close)),
            Runner::Ema(i) => out.push(i.update(close)),
            Runner::Wma(i) => out.push(i.update(close)),
            Runner::Hma(i) => out.push(i.update(close)),
            Runner::Zlema(i) => out.push(i.update(close)),
            Runner::ZlHma(i) => out.push(i.update(close)),
            Runner::Macd(i) => {
                let v = i.update(close);
                out.extend([v.map(|m| m.macd), v.map(|m| m.signal), v.map(|m| m.hist)]);
            }
            Runner::ZlMacd(i) => {
                let v = i.update(close);
                out.extend([v.map(|m| m.macd), v.map(|m| m.signal), v.map(|m| m.hist)]);
            }
            Runner::Rsi(i) => out.push(i.update(close)),
            Runner::Atr(i) => out.push(i.update(bar)),
            Runner::Adx(i) => {
                let v = i.update(bar);
                // ±DI are ready before ADX (index n vs 2n−1), as in TA-Lib's PLUS_DI / MINUS_DI.
                let di = i.di();
                out.extend([
                    v.map(|a| a.adx),
                    di.map(|d| d.plus_di),
                    di.map(|d| d.minus_di),
                ]);
            }
            Runner::Donchian(i) => {
                let v = i.update(bar);
                out.extend([v.map(|d| d.upper), v.map(|d| d.middle), v.map(|d| d.lower)]);
            }
            Runner::Ichimoku(i) => {
                let v = i.update(bar);
                out.extend([
                    v.map(|x| x.tenkan),
                    v.map(|x| x.kijun),
                    v.map(|x| x.senkou_a),
                    v.map(|x| x.senkou_b),
                    v.map(|x| x.chikou_ref_close),
                ]);
            }
            Runner::Bb(i) => {
                let v = i.update(close);
                out.extend([v.map(|b| b.upper), v.map(|b| b.middle), v.map(|b| b.lower)]);
            }
            Runner::Mom(i) => out.push(i.update(close)),
            Runner::Roc(i) => out.push(i.update(close)),
            Runner::Vma(i) => out.push(i.update(c.volume.try_into().unwrap_or(f64::NAN))),
        }
    }
}

/// The candles' close, high and low as contiguous arrays, for the batch functions.
struct Arrays {
    close: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
}

impl Arrays {
    fn new(candles: &[Candle]) -> Self {
        let col = |f: fn(&Candle) -> f64| candles.iter().map(f).collect();
        Arrays {
            close: col(|c| c.close.to_f64()),
            high: col(|c| c.high.to_f64()),
            low: col(|c| c.low.to_f64()),
        }
    }
}

/// A batch output array as a column: NaN (warm-up) becomes an empty cell.
fn cells(values: Vec<f64>) -> Vec<Option<f64>> {
    values
        .into_iter()
        .map(|v| (!v.is_nan()).then_some(v))
        .collect()
}

impl Spec {
    /// The spec's output columns over `candles`: by the batch function where the indicator has
    /// one, by streaming otherwise.
    fn compute(&self, candles: &[Candle], arrays: &mut Option<Arrays>) -> Vec<Vec<Option<f64>>> {
        let p = |i: usize| self.params[i] as usize;
        let len = candles.len();
        let batch = matches!(self.entry.name, "ema" | "rsi" | "atr" | "adx" | "macd");
        if batch {
            let a = arrays.get_or_insert_with(|| Arrays::new(candles));
            let mut out = vec![0.0; len];
            return match self.entry.name {
                "ema" => {
                    Ema::batch(p(0), &a.close, &mut out);
                    vec![cells(out)]
                }
                "rsi" => {
                    Rsi::batch(p(0), &a.close, &mut out);
                    vec![cells(out)]
                }
                "atr" => {
                    Atr::batch(p(0), &a.high, &a.low, &a.close, &mut out);
                    vec![cells(out)]
                }
                "adx" => {
                    let (mut plus, mut minus) = (vec![0.0; len], vec![0.0; len]);
                    Adx::batch_with_di(
                        p(0),
                        &a.high,
                        &a.low,
                        &a.close,
                        &mut out,
                        &mut plus,
                        &mut minus,
                    );
                    vec![cells(out), cells(plus), cells(minus)]
                }
                _ => {
                    let (mut signal, mut hist) = (vec![0.0; len], vec![0.0; len]);
                    let arrays = MacdArrays {
                        macd: &mut out,
                        signal: &mut signal,
                        hist: &mut hist,
                    };
                    Macd::batch(p(0), p(1), p(2), &a.close, arrays);
                    vec![cells(out), cells(signal), cells(hist)]
                }
            };
        }
        let mut runner = self.runner();
        let mut cols = vec![Vec::with_capacity(len); self.columns.len()];
        let mut row = Vec::with_capacity(self.columns.len());
        for c in candles {
            row.clear();
            runner.update(c, &mut row);
            for (col, v) in cols.iter_mut().zip(&row) {
                col.push(*v);
            }
        }
        cols
    }
}

/// Compute `specs` over `candles` and write CSV: `open_time` then every spec's columns; empty
/// cells during warm-up; values in shortest round-trip form.
pub fn write_csv(
    candles: &[Candle],
    specs: &[Spec],
    w: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let header: Vec<&str> = specs
        .iter()
        .flat_map(|s| s.columns.iter().map(String::as_str))
        .collect();
    writeln!(w, "open_time,{}", header.join(","))?;
    let mut arrays = None;
    let columns: Vec<Vec<Option<f64>>> = specs
        .iter()
        .flat_map(|s| s.compute(candles, &mut arrays))
        .collect();
    let mut line = String::new();
    for (i, c) in candles.iter().enumerate() {
        line.clear();
        line.push_str(&c.open_time.to_string());
        for col in &columns {
            line.push(',');
            if let Some(v) = col[i] {
                line.push_str(&format!("{v}"));
            }
        }
        writeln!(w, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Price;
    use rust_decimal::Decimal;

    fn candles(closes: &[f64]) -> Vec<Candle> {
        closes
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let p = Price::new(Decimal::try_from(c).unwrap());
                Candle {
                    open_time: i as i64 * 60_000,
                    open: p,
                    high: p,
                    low: p,
                    close: p,
                    volume: Decimal::ONE,
                }
            })
            .collect()
    }

    #[test]
    fn parses_names_params_and_columns() {
        assert_eq!(parse("ema:20").unwrap().columns, vec!["ema_20"]);
        assert_eq!(
            parse("macd").unwrap().columns,
            vec!["macd_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9"]
        );
        assert_eq!(
            parse("bb:20,2").unwrap().columns,
            vec!["bb_upper_20_2", "bb_middle_20_2", "bb_lower_20_2"]
        );
        assert_eq!(
            parse("adx:14").unwrap().columns,
            vec!["adx_14", "plus_di_14", "minus_di_14"]
        );
        assert_eq!(
            parse("donchian:20").unwrap().columns[0],
            "donchian_upper_20"
        );
        assert_eq!(parse("bb:20,2.5").unwrap().columns[0], "bb_upper_20_2p5");
        let e = parse("emaa:20").err().unwrap();
        assert!(
            e.contains("unknown indicator `emaa`") && e.contains("ema, wma"),
            "{e}"
        );
        assert!(parse("ema:x").err().unwrap().contains("must be a number"));
        assert!(parse("ema:20,3")
            .err()
            .unwrap()
            .contains("takes 1 parameter"));
        assert!(parse("ema:0").err().unwrap().contains("positive"));
        assert!(parse("macd:26,12,9").err().unwrap().contains("below slow"));
    }

    /// The batch path of the command equals streaming the candles through the same
    /// indicators, cell for cell and bit for bit.
    #[test]
    fn batch_columns_equal_streaming() {
        let candles: Vec<Candle> = (0..400)
            .map(|i| {
                let mid = 100.0 + (i as f64 * 0.13).sin() * 8.0 + (i % 9) as f64 * 0.37;
                let half = 0.5 + (i % 4) as f64 * 0.3;
                let dec = |v: f64| Price::new(Decimal::try_from(v).unwrap().round_dp(4));
                Candle {
                    open_time: i as i64 * 60_000,
                    open: dec(mid),
                    high: dec(mid + half),
                    low: dec(mid - half),
                    close: dec(mid + half * 0.3),
                    volume: Decimal::ONE,
                }
            })
            .collect();
        for text in [
            "ema:20",
            "rsi:14",
            "atr:14",
            "adx:14",
            "macd:12,26,9",
            "macd:5,8,1",
        ] {
            let spec = parse(text).unwrap();
            let got = spec.compute(&candles, &mut None);
            let mut runner = spec.runner();
            let mut want = vec![Vec::new(); spec.columns.len()];
            for c in &candles {
                let mut row = Vec::new();
                runner.update(c, &mut row);
                for (col, v) in want.iter_mut().zip(row) {
                    col.push(v.map(f64::to_bits));
                }
            }
            let got: Vec<Vec<Option<u64>>> = got
                .iter()
                .map(|col| col.iter().map(|v| v.map(f64::to_bits)).collect())
                .collect();
            assert_eq!(got, want, "{text}");
            assert!(
                got.iter().all(|col| col.iter().any(Option::is_some)),
                "{text}"
            );
        }
    }

    #[test]
    fn csv_has_empty_cells_during_warm_up() {
        let c = candles(&[1.0, 2.0, 3.0, 4.0]);
        let specs = vec![parse("sma:2").unwrap(), parse("ema:3").unwrap()];
        let mut out = Vec::new();
        write_csv(&c, &specs, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "open_time,sma_2,ema_3");
        assert_eq!(lines[1], "0,,");
        assert_eq!(lines[2], "60000,1.5,");
        assert_eq!(lines[3], "120000,2.5,2");
        assert_eq!(lines[4], "180000,3.5,3");
    }
}
