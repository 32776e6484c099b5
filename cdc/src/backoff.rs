//! Capped exponential backoff with jitter, for reconnects.

use std::time::Duration;

use rand::Rng;

/// Default first delay.
pub const DEFAULT_INITIAL: Duration = Duration::from_millis(100);
/// Default cap.
pub const DEFAULT_MAX: Duration = Duration::from_secs(30);

/// Delays that double from `initial` up to `max`, each with up to 20% random jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(DEFAULT_INITIAL, DEFAULT_MAX)
    }
}

impl Backoff {
    /// A backoff starting at `initial`, capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter = rand::thread_rng().gen_range(0.0..0.2);
        base.mul_f64(1.0 + jitter).min(self.max)
    }

    /// Back to the first delay (after a healthy session).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let d: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(100) && d[0] < Duration::from_millis(121));
        assert!(d[1] >= Duration::from_millis(200) && d[1] < Duration::from_millis(241));
        assert!(d[4] <= Duration::from_millis(500) && d[4] >= Duration::from_millis(400));
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(121));
    }
}
