//! Momentum and rate of change against the input N bars ago, as TA-Lib's MOM and ROC:
//! `mom = x − x[t−N]`, `roc = (x / x[t−N] − 1)·100` (0 when `x[t−N]` is 0). First output at
//! index N.

use super::ring::Ring;

macro_rules! lagged {
    ($(#[$doc:meta])* $name:ident, |$x:ident, $old:ident| $formula:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            period: usize,
            ring: Ring,
            count: usize,
            value: f64,
        }

        impl $name {
            pub fn new(period: usize) -> Self {
                assert!(period >= 1, "lag period must be ≥ 1");
                $name {
                    period,
                    ring: Ring::new(period),
                    count: 0,
                    value: f64::NAN,
                }
            }
            pub fn period(&self) -> usize {
                self.period
            }
            pub fn lookback(&self) -> usize {
                self.period
            }
            #[inline]
            pub fn update(&mut self, $x: f64) -> Option<f64> {
                let $old = self.ring.push($x);
                if self.count < self.period {
                    self.count += 1;
                    return None;
                }
                self.count = self.period + 1;
                self.value = $formula;
                Some(self.value)
            }
            pub fn value(&self) -> Option<f64> {
                self.is_ready().then_some(self.value)
            }
            pub fn is_ready(&self) -> bool {
                self.count > self.period
            }
            pub fn reset(&mut self) {
                self.ring.reset();
                self.count = 0;
                self.value = f64::NAN;
            }
        }
    };
}

lagged!(
    /// Momentum: `x − x[t−N]` (TA-Lib MOM).
    Momentum,
    |x, old| x - old
);
lagged!(
    /// Rate of change in percent: `(x / x[t−N] − 1)·100`, 0 when `x[t−N]` is 0 (TA-Lib ROC).
    Roc,
    |x, old| if old != 0.0 { (x / old - 1.0) * 100.0 } else { 0.0 }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn momentum_and_roc_by_hand() {
        let xs = [100.0, 102.0, 99.0, 110.0, 0.0, 5.0];
        let mut m = Momentum::new(2);
        let mut r = Roc::new(2);
        let mo: Vec<Option<f64>> = xs.iter().map(|&x| m.update(x)).collect();
        let ro: Vec<Option<f64>> = xs.iter().map(|&x| r.update(x)).collect();
        assert_eq!(
            mo,
            vec![None, None, Some(-1.0), Some(8.0), Some(-99.0), Some(-105.0)]
        );
        assert_eq!(ro[..2], [None, None]);
        assert_eq!(ro[2], Some((99.0 / 100.0 - 1.0) * 100.0));
        assert_eq!(ro[3], Some((110.0 / 102.0 - 1.0) * 100.0));
        assert_eq!(ro[4], Some(-100.0));
        // The reference two bars back is 110 → 5/110.
        assert_eq!(ro[5], Some((5.0 / 110.0 - 1.0) * 100.0));
        let mut r0 = Roc::new(1);
        r0.update(0.0);
        assert_eq!(r0.update(3.0), Some(0.0));
        m.reset();
        assert_eq!(m.value(), None);
        assert!(!r.value().unwrap().is_nan());
    }
}
