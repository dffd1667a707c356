//! Rolling extremes and the Donchian channel.
//!
//! [`RollingMax`] / [`RollingMin`] are TA-Lib's MAX / MIN: the extreme of the last N inputs
//! including the current one, first at index N−1, in amortised O(1) per update (van Herk / Gil-Werman
//! blocks, see `ring.rs`). The Donchian channel is the highest high and lowest low of the last N bars including
//! the current one, with `middle = (upper + lower)/2`.

use super::ring::WindowExtreme;
use super::Bar;

macro_rules! rolling_extreme {
    ($(#[$doc:meta])* $name:ident, $is_max:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            period: usize,
            window: WindowExtreme<$is_max>,
            count: usize,
        }

        impl $name {
            pub fn new(period: usize) -> Self {
                $name {
                    period,
                    window: WindowExtreme::new(period),
                    count: 0,
                }
            }
            pub fn period(&self) -> usize {
                self.period
            }
            pub fn lookback(&self) -> usize {
                self.period - 1
            }
            #[inline]
            pub fn update(&mut self, x: f64) -> Option<f64> {
                let v = self.window.push(x);
                if self.count < self.period {
                    self.count += 1;
                    if self.count < self.period {
                        return None;
                    }
                }
                Some(v)
            }
            pub fn value(&self) -> Option<f64> {
                if self.is_ready() {
                    self.window.current()
                } else {
                    None
                }
            }
            pub fn is_ready(&self) -> bool {
                self.count >= self.period
            }
            pub fn reset(&mut self) {
                self.window.reset();
                self.count = 0;
            }
        }
    };
}

rolling_extreme!(
    /// Highest of the last N inputs (TA-Lib MAX). First output at index `period − 1`.
    RollingMax,
    true
);
rolling_extreme!(
    /// Lowest of the last N inputs (TA-Lib MIN). First output at index `period − 1`.
    RollingMin,
    false
);

/// One Donchian channel reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DonchianOutput {
    pub upper: f64,
    pub middle: f64,
    pub lower: f64,
}

/// Donchian channel over the last N bars including the current one. First output at index
/// `period − 1`.
#[derive(Clone, Debug)]
pub struct Donchian {
    high: RollingMax,
    low: RollingMin,
    value: Option<DonchianOutput>,
}

impl Donchian {
    pub fn new(period: usize) -> Self {
        Donchian {
            high: RollingMax::new(period),
            low: RollingMin::new(period),
            value: None,
        }
    }
    pub fn period(&self) -> usize {
        self.high.period()
    }
    pub fn lookback(&self) -> usize {
        self.high.lookback()
    }
    #[inline]
    pub fn update(&mut self, bar: Bar) -> Option<DonchianOutput> {
        let upper = self.high.update(bar.high);
        let lower = self.low.update(bar.low)?;
        let upper = upper.expect("both windows have the same period");
        let out = DonchianOutput {
            upper,
            middle: (upper + lower) / 2.0,
            lower,
        };
        self.value = Some(out);
        Some(out)
    }
    pub fn value(&self) -> Option<DonchianOutput> {
        self.value
    }
    pub fn is_ready(&self) -> bool {
        self.value.is_some()
    }
    pub fn reset(&mut self) {
        self.high.reset();
        self.low.reset();
        self.value = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_extremes_by_hand() {
        let xs = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        let mut hi = RollingMax::new(3);
        let mut lo = RollingMin::new(3);
        let his: Vec<Option<f64>> = xs.iter().map(|&x| hi.update(x)).collect();
        let los: Vec<Option<f64>> = xs.iter().map(|&x| lo.update(x)).collect();
        let s = Some;
        assert_eq!(
            his,
            vec![None, None, s(4.0), s(4.0), s(5.0), s(9.0), s(9.0), s(9.0)]
        );
        assert_eq!(
            los,
            vec![None, None, s(1.0), s(1.0), s(1.0), s(1.0), s(2.0), s(2.0)]
        );
        assert_eq!(hi.value(), Some(9.0));
        hi.reset();
        assert_eq!(hi.value(), None);
        assert_eq!(hi.update(1.0), None);
    }

    #[test]
    fn donchian_by_hand() {
        // N = 2: bars (h, l) = (10, 8), (12, 9), (11, 7), (9, 8.5).
        let mut d = Donchian::new(2);
        assert_eq!(d.update(Bar::new(10.0, 8.0, 9.0)), None);
        let o = d.update(Bar::new(12.0, 9.0, 11.0)).unwrap();
        assert_eq!((o.upper, o.middle, o.lower), (12.0, 10.0, 8.0));
        let o = d.update(Bar::new(11.0, 7.0, 8.0)).unwrap();
        assert_eq!((o.upper, o.middle, o.lower), (12.0, 9.5, 7.0));
        let o = d.update(Bar::new(9.0, 8.5, 8.7)).unwrap();
        assert_eq!((o.upper, o.middle, o.lower), (11.0, 9.0, 7.0));
        assert_eq!(d.value(), Some(o));
        d.reset();
        assert!(!d.is_ready());
    }
}
