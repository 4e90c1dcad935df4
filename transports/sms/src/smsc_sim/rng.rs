//! Deterministic fault decisions: a tiny xorshift64* generator, seeded from the configuration.
//!
//! No clock and no OS randomness: the same seed and the same order of submit_sm give the same
//! decisions.

use std::sync::Mutex;
use std::time::Duration;

use super::config::FaultConfig;

/// xorshift64* (Vigna): 64 bits of state, never zero.
#[derive(Debug, Clone)]
pub struct XorShift64 {
    state: u64,
}

impl XorShift64 {
    /// A generator from `seed`; any seed (including 0) gives a valid, non-zero state.
    pub fn new(seed: u64) -> Self {
        // splitmix64 finaliser spreads small seeds over the state; zero is remapped.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self {
            state: if z == 0 { 0x2545_F491_4F6C_DD1D } else { z },
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform value in `[0, 1)` (53 bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// What fault injection decided for one submit_sm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Handle normally.
    None,
    /// Answer ESME_RTHROTTLED; the message is not accepted.
    Throttle,
    /// Accept, then lose the message: no delivery, no receipt, no PoR.
    Drop,
    /// Accept, deliver after this extra delay.
    Delay(Duration),
}

/// The shares of each fault, and the generator that picks them.
#[derive(Debug)]
pub(crate) struct FaultPlan {
    throttle: f64,
    drop: f64,
    delay: f64,
    delay_min: Duration,
    delay_max: Duration,
    rng: Option<Mutex<XorShift64>>,
    por_drop: f64,
    por_rng: Option<Mutex<XorShift64>>,
}

fn share(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

impl FaultPlan {
    pub(crate) fn new(config: &FaultConfig) -> Self {
        // Shares are applied in this order and capped so that they sum to at most 1.
        let throttle = share(config.throttle_share);
        let drop = share(config.drop_share).min(1.0 - throttle);
        let delay = share(config.delay_share).min(1.0 - throttle - drop);
        let (delay_min, delay_max) = if config.delay_min <= config.delay_max {
            (config.delay_min, config.delay_max)
        } else {
            (config.delay_max, config.delay_min)
        };
        let active = throttle > 0.0 || drop > 0.0 || delay > 0.0;
        let por_drop = share(config.por_drop_share);
        Self {
            throttle,
            drop,
            delay,
            delay_min,
            delay_max,
            rng: active.then(|| Mutex::new(XorShift64::new(config.seed))),
            por_drop,
            por_rng: (por_drop > 0.0)
                .then(|| Mutex::new(XorShift64::new(config.seed ^ 0x504F_5244_524F_5021))),
        }
    }

    /// Whether the PoR of a delivered command packet is lost; free when not configured.
    pub(crate) fn drop_por(&self) -> bool {
        let Some(rng) = &self.por_rng else {
            return false;
        };
        let mut rng = match rng.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        rng.next_f64() < self.por_drop
    }

    /// One decision; free (no lock, no draw) when no fault is configured.
    pub(crate) fn decide(&self) -> Fault {
        let Some(rng) = &self.rng else {
            return Fault::None;
        };
        let mut rng = match rng.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let u = rng.next_f64();
        if u < self.throttle {
            Fault::Throttle
        } else if u < self.throttle + self.drop {
            Fault::Drop
        } else if u < self.throttle + self.drop + self.delay {
            let span = self.delay_max.saturating_sub(self.delay_min);
            let extra = span.mul_f64(rng.next_f64());
            Fault::Delay(self.delay_min + extra)
        } else {
            Fault::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = XorShift64::new(42);
        let mut b = XorShift64::new(42);
        for _ in 0..1000 {
            let x = a.next_f64();
            assert_eq!(x.to_bits(), b.next_f64().to_bits());
            assert!((0.0..1.0).contains(&x));
        }
        assert_ne!(XorShift64::new(0).next_u64(), 0);
    }

    #[test]
    fn shares_roughly_respected() {
        let plan = FaultPlan::new(&FaultConfig {
            seed: 7,
            throttle_share: 0.25,
            drop_share: 0.25,
            delay_share: 0.25,
            delay_min: Duration::from_millis(10),
            delay_max: Duration::from_millis(20),
            por_drop_share: 0.5,
        });
        let mut counts = [0usize; 4];
        for _ in 0..10_000 {
            match plan.decide() {
                Fault::None => counts[0] += 1,
                Fault::Throttle => counts[1] += 1,
                Fault::Drop => counts[2] += 1,
                Fault::Delay(d) => {
                    assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
                    counts[3] += 1
                }
            }
        }
        for c in counts {
            assert!((2200..2800).contains(&c), "{counts:?}");
        }
        // PoR losses come from their own generator, at their own share.
        let lost = (0..10_000).filter(|_| plan.drop_por()).count();
        assert!((4700..5300).contains(&lost), "{lost}");
        assert!(!FaultPlan::new(&FaultConfig::default()).drop_por());
        let all = FaultPlan::new(&FaultConfig {
            throttle_share: 1.0,
            ..FaultConfig::default()
        });
        assert!((0..100).all(|_| all.decide() == Fault::Throttle));
        assert_eq!(
            FaultPlan::new(&FaultConfig::default()).decide(),
            Fault::None
        );
    }
}
