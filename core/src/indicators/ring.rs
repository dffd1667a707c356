//! Fixed-size building blocks shared by the indicators: a ring buffer of the last N inputs and a
//! rolling extreme (max / min over the last N inputs). Both allocate once, in `new`, and never again.

/// The last `len` values pushed, oldest first in `pos` order.
#[derive(Clone, Debug)]
pub(crate) struct Ring {
    buf: Box<[f64]>,
    pos: usize,
}

impl Ring {
    pub(crate) fn new(len: usize) -> Self {
        assert!(len >= 1, "ring length must be ≥ 1");
        Ring {
            buf: vec![0.0; len].into_boxed_slice(),
            pos: 0,
        }
    }

    /// Stores `x` and returns the value it replaces: the one pushed `len` pushes ago (0.0 while
    /// the ring has not wrapped yet).
    #[inline]
    pub(crate) fn push(&mut self, x: f64) -> f64 {
        let old = std::mem::replace(&mut self.buf[self.pos], x);
        self.pos += 1;
        if self.pos == self.buf.len() {
            self.pos = 0;
        }
        old
    }

    /// All stored values, in storage (not arrival) order.
    #[inline]
    pub(crate) fn values(&self) -> &[f64] {
        &self.buf
    }

    /// The oldest stored value: the next one `push` will replace.
    #[inline]
    pub(crate) fn oldest(&self) -> f64 {
        self.buf[self.pos]
    }

    pub(crate) fn reset(&mut self) {
        self.buf.fill(0.0);
        self.pos = 0;
    }
}

/// Maximum (`MAX = true`) or minimum of the last `period` values (of all values so far while
/// fewer than `period` have been pushed).
///
/// Van Herk / Gil-Werman: time is cut into blocks of `period` values. The window ending at
/// position p of the current block is the tail of the previous block (positions p+1..) plus the
/// head of the current one (..=p), so its extreme is `pick(suffix[p + 1], prefix)`, where
/// `prefix` is the running extreme of the current block and `suffix` holds the previous block's
/// suffix extremes, rebuilt once per block. That is one comparison and one table read per value,
/// with no data-dependent branch (a monotonic deque pops a data-dependent number of entries and
/// measured ~12× slower here); the O(period) rebuild runs once every `period` values.
#[derive(Clone, Debug)]
pub(crate) struct WindowExtreme<const MAX: bool> {
    block: Box<[f64]>,
    /// `suffix[j]` = extreme of the previous block's positions `j..period`; `suffix[period]` is
    /// the identity (−∞ for a maximum, +∞ for a minimum).
    suffix: Box<[f64]>,
    pos: usize,
    prefix: f64,
    last: Option<f64>,
}

impl<const MAX: bool> WindowExtreme<MAX> {
    const IDENTITY: f64 = if MAX {
        f64::NEG_INFINITY
    } else {
        f64::INFINITY
    };

    pub(crate) fn new(period: usize) -> Self {
        assert!(period >= 1, "window period must be ≥ 1");
        WindowExtreme {
            block: vec![0.0; period].into_boxed_slice(),
            suffix: vec![Self::IDENTITY; period + 1].into_boxed_slice(),
            pos: 0,
            prefix: Self::IDENTITY,
            last: None,
        }
    }

    /// The larger (for a maximum) of two values; compiles to a single max/min instruction.
    #[inline(always)]
    fn pick(a: f64, b: f64) -> f64 {
        if MAX {
            if a > b {
                a
            } else {
                b
            }
        } else if a < b {
            a
        } else {
            b
        }
    }

    /// Pushes `x` and returns the extreme of the last `period` values.
    #[inline]
    pub(crate) fn push(&mut self, x: f64) -> f64 {
        let p = self.pos;
        self.block[p] = x;
        self.prefix = Self::pick(x, self.prefix);
        let out = Self::pick(self.suffix[p + 1], self.prefix);
        if p + 1 == self.block.len() {
            self.rebuild_suffix();
        } else {
            self.pos = p + 1;
        }
        self.last = Some(out);
        out
    }

    #[cold]
    fn rebuild_suffix(&mut self) {
        let mut acc = Self::IDENTITY;
        for j in (0..self.block.len()).rev() {
            acc = Self::pick(self.block[j], acc);
            self.suffix[j] = acc;
        }
        self.pos = 0;
        self.prefix = Self::IDENTITY;
    }

    /// The latest extreme, if anything was pushed.
    #[inline]
    pub(crate) fn current(&self) -> Option<f64> {
        self.last
    }

    pub(crate) fn reset(&mut self) {
        self.suffix.fill(Self::IDENTITY);
        self.pos = 0;
        self.prefix = Self::IDENTITY;
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_returns_the_value_len_pushes_ago() {
        let mut r = Ring::new(3);
        assert_eq!(r.push(1.0), 0.0);
        assert_eq!(r.push(2.0), 0.0);
        assert_eq!(r.push(3.0), 0.0);
        assert_eq!(r.oldest(), 1.0);
        assert_eq!(r.push(4.0), 1.0);
        assert_eq!(r.push(5.0), 2.0);
        assert_eq!(r.oldest(), 3.0);
        r.reset();
        assert_eq!(r.push(9.0), 0.0);
    }

    /// A pseudo-random walk checked against a naive window scan, for both extremes and several
    /// periods (including 1 and runs of equal values).
    #[test]
    fn window_extreme_matches_naive_scan() {
        let mut next = crate::test_rng(0x9E37_79B9_7F4A_7C15);
        let mut xs = Vec::new();
        let mut x = 100.0;
        for i in 0..2000 {
            let seed = next();
            if i % 17 != 0 {
                x += (seed % 21) as f64 - 10.0;
            }
            xs.push(x);
        }
        for period in [1usize, 2, 3, 7, 20, 52] {
            let mut hi = WindowExtreme::<true>::new(period);
            let mut lo = WindowExtreme::<false>::new(period);
            for (i, &x) in xs.iter().enumerate() {
                let from = (i + 1).saturating_sub(period);
                let w = &xs[from..=i];
                let want_hi = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let want_lo = w.iter().cloned().fold(f64::INFINITY, f64::min);
                assert_eq!(hi.push(x), want_hi, "max period {period} at {i}");
                assert_eq!(lo.push(x), want_lo, "min period {period} at {i}");
            }
            assert!(hi.current().is_some());
            hi.reset();
            assert_eq!(hi.current(), None);
        }
    }
}
