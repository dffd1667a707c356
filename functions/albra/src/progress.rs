//! Progress on the terminal: the [`ProgressSink`] the research commands hand their runs. One
//! stderr line, redrawn with `\r`, only when stderr is a terminal (scripts and tests parse
//! stdout and read stderr for warnings and errors: neither ever sees progress), and only once a
//! run has gone on for a second (a short run stays as quiet as it was).

use albra_core::progress::{ProgressLine, ProgressSink, Reporter};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a run goes before its progress is drawn.
const QUIET_FOR: Duration = Duration::from_secs(1);
/// The shortest time between two redraws: ten a second keep the line readable and cheap.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// Whether to draw now, `elapsed` into the run, the line last drawn at `last` (`None`: never).
pub fn redraw_due(elapsed: Duration, last: Option<Duration>) -> bool {
    elapsed >= QUIET_FOR && last.is_none_or(|l| elapsed >= l + REDRAW_EVERY)
}

/// One progress line on stderr.
pub struct Terminal {
    started: Instant,
    /// When the line was last drawn, into the run.
    drawn: Mutex<Option<Duration>>,
}

impl Terminal {
    /// A sink drawing on stderr when it is a terminal, else `None`: nothing is reported.
    pub fn on_stderr() -> Option<Arc<Terminal>> {
        std::io::stderr().is_terminal().then(|| {
            Arc::new(Terminal {
                started: Instant::now(),
                drawn: Mutex::new(None),
            })
        })
    }

    /// The handle a run's options carry.
    pub fn reporter(self: &Arc<Self>) -> Reporter {
        Reporter(self.clone())
    }

    /// Clear the line, when one was drawn, before the results are printed.
    pub fn finish(&self) {
        if self.drawn.lock().expect("progress line").take().is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

impl ProgressSink for Terminal {
    fn show(&self, line: &ProgressLine<'_>) {
        let elapsed = self.started.elapsed();
        let mut drawn = self.drawn.lock().expect("progress line");
        if !redraw_due(elapsed, *drawn) {
            return;
        }
        *drawn = Some(elapsed);
        // `\x1b[K` clears what a longer line left behind.
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{}\x1b[K", line.render());
        let _ = err.flush();
    }
}

/// [`Terminal::finish`] on a sink that may be absent.
pub fn finish(t: &Option<Arc<Terminal>>) {
    if let Some(t) = t {
        t.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_drawn_in_the_first_second_then_at_most_ten_times_a_second() {
        let ms = Duration::from_millis;
        assert!(!redraw_due(ms(0), None));
        assert!(!redraw_due(ms(999), None));
        assert!(redraw_due(ms(1000), None));
        assert!(!redraw_due(ms(1050), Some(ms(1000))));
        assert!(redraw_due(ms(1100), Some(ms(1000))));
        assert!(redraw_due(ms(5000), Some(ms(1000))));
    }
}
