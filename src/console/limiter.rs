//! Login attempts rate-limited per user name and per client address, in this gateway's
//! memory (several gateways each count their own).
//!
//! Policy: a user name may fail 5 times, an address 20 times (many people may share one
//! address). From then on each failure locks that key for a time that doubles: 15 s after
//! the 5th (20th) failure, 30 s after the next, up to 15 minutes. While a key is locked,
//! attempts are refused without looking at the password (no hash computed). A success clears
//! the user name's count, not the address's; a key with no failure for a day is forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::clock::Millis;

/// The thresholds and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures a user name may have before it is locked.
    pub per_user: u32,
    /// Failures an address may have before it is locked.
    pub per_address: u32,
    /// The first lock, ms; each further failure doubles it.
    pub first_lock_ms: Millis,
    /// The longest lock, ms.
    pub max_lock_ms: Millis,
    /// A key with no failure for this long is forgotten, ms.
    pub forget_ms: Millis,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            per_user: 5,
            per_address: 20,
            first_lock_ms: 15_000,
            max_lock_ms: 15 * 60_000,
            forget_ms: 24 * 3_600_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    failures: u32,
    last_failure: Millis,
    locked_until: Millis,
}

/// Most keys remembered; past it, keys that are neither locked nor recent are dropped.
const MAX_KEYS: usize = 100_000;

/// The limiter.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    policy: Policy,
    keys: Mutex<HashMap<Key, Entry>>,
}

/// An attempt refused: how long until the next one is taken, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    /// Wait, ms.
    pub retry_after_ms: Millis,
}

impl LoginLimiter {
    /// A limiter with this policy.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // A panic elsewhere while holding the lock leaves counts that are still usable.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn user_key(name: &str) -> Key {
        Key::User(name.trim().to_ascii_lowercase())
    }

    /// Whether an attempt for `name` from `address` may be checked now.
    pub fn check(&self, name: &str, address: IpAddr, now: Millis) -> Result<(), Locked> {
        let keys = self.keys();
        let wait = [Self::user_key(name), Key::Address(address)]
            .iter()
            .filter_map(|k| keys.get(k))
            .map(|e| e.locked_until - now)
            .max()
            .unwrap_or(0);
        if wait > 0 {
            Err(Locked {
                retry_after_ms: wait,
            })
        } else {
            Ok(())
        }
    }

    /// Counts a failed attempt.
    pub fn failed(&self, name: &str, address: IpAddr, now: Millis) {
        let p = self.policy;
        let mut keys = self.keys();
        if keys.len() >= MAX_KEYS {
            keys.retain(|_, e| e.locked_until > now || now - e.last_failure < p.forget_ms);
            if keys.len() >= MAX_KEYS {
                keys.retain(|_, e| e.locked_until > now);
            }
        }
        for (key, free) in [
            (Self::user_key(name), p.per_user),
            (Key::Address(address), p.per_address),
        ] {
            let e = keys.entry(key).or_default();
            if e.failures > 0 && now - e.last_failure >= p.forget_ms {
                *e = Entry::default();
            }
            e.failures = e.failures.saturating_add(1);
            e.last_failure = now;
            if e.failures >= free {
                let doublings = (e.failures - free).min(20);
                let lock = p
                    .first_lock_ms
                    .saturating_mul(1 << doublings)
                    .min(p.max_lock_ms);
                e.locked_until = now + lock;
            }
        }
    }

    /// A successful login clears the user name's failures.
    pub fn succeeded(&self, name: &str) {
        self.keys().remove(&Self::user_key(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn five_failures_lock_the_name_for_a_doubling_time() {
        let l = LoginLimiter::new(Policy::default());
        for i in 0..4 {
            l.failed("alice", A, i);
            assert!(l.check("alice", A, i).is_ok(), "after {} failures", i + 1);
        }
        l.failed("Alice", A, 4);
        assert_eq!(
            l.check("alice", B, 4),
            Err(Locked {
                retry_after_ms: 15_000
            })
        );
        assert!(l.check("bob", B, 4).is_ok(), "another name is not locked");
        assert!(l.check("alice", A, 4 + 15_000).is_ok());
        l.failed("alice", A, 20_000);
        assert_eq!(
            l.check("alice", A, 20_000),
            Err(Locked {
                retry_after_ms: 30_000
            })
        );
        for i in 0..30 {
            l.failed("alice", A, 100_000 + i);
        }
        assert_eq!(
            l.check("alice", B, 200_000),
            Err(Locked {
                retry_after_ms: 15 * 60_000 - (200_000 - 100_029)
            })
        );
    }

    #[test]
    fn an_address_is_locked_after_twenty_failures_over_any_names() {
        let l = LoginLimiter::new(Policy::default());
        for i in 0..19 {
            l.failed(&format!("user{i}"), A, 0);
        }
        assert!(l.check("someone", A, 0).is_ok());
        l.failed("user19", A, 0);
        assert!(l.check("someone", A, 0).is_err());
        assert!(l.check("someone", B, 0).is_ok());
    }

    #[test]
    fn success_clears_the_name_and_old_failures_are_forgotten() {
        let l = LoginLimiter::new(Policy::default());
        for i in 0..4 {
            l.failed("carol", A, i);
        }
        l.succeeded("carol");
        l.failed("carol", A, 10);
        assert!(l.check("carol", A, 10).is_ok());
        for i in 0..3 {
            l.failed("dave", B, i);
        }
        let day = Policy::default().forget_ms;
        for i in 0..4 {
            l.failed("dave", B, day + 10 + i);
        }
        assert!(
            l.check("dave", B, day + 14).is_ok(),
            "the old three were forgotten"
        );
    }
}
