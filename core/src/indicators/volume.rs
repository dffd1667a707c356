//! Volume moving average: the SMA of candle volumes (TA-Lib SMA arithmetic), e.g. the 20-bar
//! average TFPE compares the current volume with.

use super::ema::Sma;

#[derive(Clone, Debug)]
pub struct VolumeMa {
    sma: Sma,
}

impl VolumeMa {
    pub fn new(period: usize) -> Self {
        VolumeMa {
            sma: Sma::new(period),
        }
    }
    pub fn period(&self) -> usize {
        self.sma.period()
    }
    pub fn lookback(&self) -> usize {
        self.sma.lookback()
    }
    #[inline]
    pub fn update(&mut self, volume: f64) -> Option<f64> {
        self.sma.update(volume)
    }
    pub fn value(&self) -> Option<f64> {
        self.sma.value()
    }
    pub fn is_ready(&self) -> bool {
        self.sma.is_ready()
    }
    pub fn reset(&mut self) {
        self.sma.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_ma_by_hand() {
        let mut v = VolumeMa::new(3);
        assert_eq!(v.update(10.0), None);
        assert_eq!(v.update(20.0), None);
        assert_eq!(v.update(60.0), Some(30.0));
        assert_eq!(v.update(100.0), Some(60.0));
        assert_eq!(v.value(), Some(60.0));
        v.reset();
        assert!(!v.is_ready());
    }
}
