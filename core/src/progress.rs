//! How far a long research run is (backtest, walk-forward, replay), as data. The runs report
//! through [`ProgressSink`], which the front end implements (the CLI redraws one stderr line, on a
//! terminal only); nothing here writes anywhere, so runs stay free of I/O and a run nobody
//! watches pays nothing for progress.

use std::sync::Arc;

/// One thing a run counts: `done` of `total` (candles, minutes, parameter sets, windows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count {
    pub what: &'static str,
    pub done: usize,
    pub total: usize,
}

/// A run's state as one line: its label, what it counts, and how much of all its work is done.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProgressLine<'a> {
    pub label: &'a str,
    pub counts: &'a [Count],
    /// Fraction of the whole run done, 0 to 1.
    pub fraction: f64,
}

impl ProgressLine<'_> {
    /// `label: what done/total, what done/total  pct%`, e.g.
    /// `walk-forward EMA_CROSS BTCUSDT 1h: parameter sets 12/27, windows 0/69  43%`.
    pub fn render(&self) -> String {
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|c| format!("{} {}/{}", c.what, c.done.min(c.total), c.total))
            .collect();
        let pct = (self.fraction.clamp(0.0, 1.0) * 100.0).floor() as u32;
        format!("{}: {}  {pct:>3}%", self.label, counts.join(", "))
    }
}

/// Receives a run's progress as it goes. Called often (up to about a thousand times a run, from
/// any worker thread): the sink decides when to draw.
pub trait ProgressSink: Send + Sync {
    fn show(&self, line: &ProgressLine<'_>);
}

/// A shared handle on a sink, as run options carry it (`None` there: nobody watches).
#[derive(Clone)]
pub struct Reporter(pub Arc<dyn ProgressSink>);

impl Reporter {
    pub fn show(&self, line: &ProgressLine<'_>) {
        self.0.show(line);
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporter(..)")
    }
}

/// Every how many steps of `total` a run reports: about a thousand reports a run at most, so
/// progress costs nothing next to the work even when someone watches.
pub fn stride(total: usize) -> usize {
    (total / 1000).max(1)
}

/// Whether step `done` (1-based) of `total` is one to report: every [`stride`]-th and the last.
pub fn due(done: usize, total: usize, stride: usize) -> bool {
    done.is_multiple_of(stride) || done == total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_lists_its_counts_and_the_whole_runs_percentage() {
        let counts = [
            Count {
                what: "parameter sets",
                done: 12,
                total: 27,
            },
            Count {
                what: "windows",
                done: 0,
                total: 69,
            },
        ];
        let line = ProgressLine {
            label: "walk-forward EMA_CROSS BTCUSDT 1h",
            counts: &counts,
            fraction: 0.4321,
        };
        assert_eq!(
            line.render(),
            "walk-forward EMA_CROSS BTCUSDT 1h: parameter sets 12/27, windows 0/69   43%"
        );
        let one = [Count {
            what: "candles",
            done: 9000,
            total: 8760,
        }];
        let line = ProgressLine {
            label: "EMA_CROSS BTCUSDT 1h",
            counts: &one,
            fraction: 1.2,
        };
        assert_eq!(
            line.render(),
            "EMA_CROSS BTCUSDT 1h: candles 8760/8760  100%",
            "never past the total"
        );
    }

    #[test]
    fn runs_report_about_a_thousand_times_and_always_at_the_end() {
        assert_eq!(stride(0), 1);
        assert_eq!(stride(999), 1);
        assert_eq!(stride(8760), 8);
        let reports = (1..=8760).filter(|d| due(*d, 8760, stride(8760))).count();
        assert_eq!(reports, 1095);
        assert!(due(8760, 8760, 8));
        assert!(!due(8759, 8760, 8));
        assert!(due(3, 3, stride(3)));
    }
}
