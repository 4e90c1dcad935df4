//! Login attempts rate-limited per user name and per client address, in this gateway's
//! memory (several gateways each count their own).
//!
//! Policy: a user name may fail 5 times, an address 20 times (many people may share one
//! address). From then on each failure locks that key for a time that doubles: 15 s after
//! the 5th (20th) failure, 30 s after the next, up to 15 minutes. While a key is locked,
//! attempts are refused without looking at the password (no hash computed). A success clears
//! the user name's count, not the address's; a key with no failure for a day is forgotten.
//! Attempts under way count too: a key may have only as many at once as it has failures left
//! (one at a time once past its threshold), so parallel guesses cannot outrun the count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

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
    /// Attempts begun and not yet finished.
    pending: u32,
}

impl Entry {
    /// Whether one more attempt may begin now, given `free` failures before a lock.
    fn admits(&self, now: Millis, free: u32) -> bool {
        self.locked_until <= now && (self.pending == 0 || self.failures + self.pending < free)
    }
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

    /// Begins an attempt for `name` from `address`, or says how long to wait. The attempt
    /// must be finished ([`Attempt::failed`], [`Attempt::succeeded`]); dropped unfinished, it
    /// counts as neither.
    pub fn begin(
        self: &Arc<Self>,
        name: &str,
        address: IpAddr,
        now: Millis,
    ) -> Result<Attempt, Locked> {
        let p = self.policy;
        let mut keys = self.keys();
        let user = Self::user_key(name);
        let addr = Key::Address(address);
        let admitted = [(&user, p.per_user), (&addr, p.per_address)]
            .iter()
            .all(|(k, free)| keys.get(*k).is_none_or(|e| e.admits(now, *free)));
        if !admitted {
            let wait = [&user, &addr]
                .iter()
                .filter_map(|k| keys.get(*k))
                .map(|e| e.locked_until - now)
                .max()
                .unwrap_or(0);
            // Refused for attempts under way only: a second later.
            return Err(Locked {
                retry_after_ms: wait.max(1_000),
            });
        }
        if keys.len() >= MAX_KEYS {
            keys.retain(|_, e| {
                e.pending > 0 || e.locked_until > now || now - e.last_failure < p.forget_ms
            });
            if keys.len() >= MAX_KEYS {
                keys.retain(|_, e| e.pending > 0 || e.locked_until > now);
            }
        }
        for k in [&user, &addr] {
            let e = keys.entry(k.clone()).or_default();
            if e.failures > 0 && now - e.last_failure >= p.forget_ms {
                e.failures = 0;
            }
            e.pending += 1;
        }
        Ok(Attempt {
            limiter: self.clone(),
            keys: Some((user, addr)),
        })
    }

    fn end(&self, keys: (Key, Key), failed_at: Option<Millis>) {
        let p = self.policy;
        let mut map = self.keys();
        let (user, addr) = keys;
        for (key, free) in [(&user, p.per_user), (&addr, p.per_address)] {
            let Some(e) = map.get_mut(key) else { continue };
            e.pending = e.pending.saturating_sub(1);
            let Some(now) = failed_at else { continue };
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
        if failed_at.is_none() {
            // A success clears the name (not the address).
            if map.get(&user).is_some_and(|e| e.pending == 0) {
                map.remove(&user);
            } else if let Some(e) = map.get_mut(&user) {
                e.failures = 0;
                e.locked_until = 0;
            }
        }
    }
}

/// One sign-in attempt under way.
#[derive(Debug)]
pub struct Attempt {
    limiter: Arc<LoginLimiter>,
    keys: Option<(Key, Key)>,
}

impl Attempt {
    /// The password was wrong (or the name unknown).
    pub fn failed(mut self, now: Millis) {
        if let Some(k) = self.keys.take() {
            self.limiter.end(k, Some(now));
        }
    }

    /// The password was right.
    pub fn succeeded(mut self) {
        if let Some(k) = self.keys.take() {
            self.limiter.end(k, None);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        // Unfinished (the store failed): it frees its place without counting.
        if let Some((user, addr)) = self.keys.take() {
            let mut map = self.limiter.keys();
            for k in [user, addr] {
                if let Some(e) = map.get_mut(&k) {
                    e.pending = e.pending.saturating_sub(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn limiter() -> Arc<LoginLimiter> {
        Arc::new(LoginLimiter::new(Policy::default()))
    }

    fn fail(l: &Arc<LoginLimiter>, name: &str, a: IpAddr, now: Millis) {
        l.begin(name, a, now).expect("admitted").failed(now);
    }

    fn wait(l: &Arc<LoginLimiter>, name: &str, a: IpAddr, now: Millis) -> Option<Millis> {
        l.begin(name, a, now).err().map(|e| e.retry_after_ms)
    }

    #[test]
    fn five_failures_lock_the_name_for_a_doubling_time() {
        let l = limiter();
        for i in 0..4 {
            fail(&l, "alice", A, i);
            assert_eq!(wait(&l, "alice", A, i), None, "after {} failures", i + 1);
        }
        fail(&l, "Alice", A, 4);
        assert_eq!(wait(&l, "alice", B, 4), Some(15_000));
        assert_eq!(wait(&l, "bob", B, 4), None, "another name is not locked");
        assert_eq!(wait(&l, "alice", A, 4 + 15_000), None);
        fail(&l, "alice", A, 20_000);
        assert_eq!(wait(&l, "alice", B, 20_000), Some(30_000));
        let mut t = 100_000;
        for _ in 0..30 {
            fail(&l, "alice", B, t);
            t += 15 * 60_000;
        }
        // Capped at 15 minutes.
        let last = t - 15 * 60_000;
        assert_eq!(wait(&l, "alice", A, last + 1), Some(15 * 60_000 - 1));
    }

    #[test]
    fn an_address_is_locked_after_twenty_failures_over_any_names() {
        let l = limiter();
        for i in 0..19 {
            fail(&l, &format!("user{i}"), A, 0);
        }
        assert_eq!(wait(&l, "someone", A, 0), None);
        fail(&l, "user19", A, 0);
        assert!(wait(&l, "someone", A, 0).is_some());
        assert_eq!(wait(&l, "someone", B, 0), None);
    }

    #[test]
    fn parallel_attempts_cannot_outrun_the_count() {
        let l = limiter();
        let under_way: Vec<Attempt> = (0..5).map(|_| l.begin("eve", A, 0).unwrap()).collect();
        assert!(l.begin("eve", B, 0).is_err(), "a sixth at once");
        drop(under_way);
        assert!(
            l.begin("eve", B, 0).is_ok(),
            "dropped attempts free their places"
        );
        for _ in 0..5 {
            fail(&l, "eve", A, 0);
        }
        let one = l
            .begin("eve", A, 15_000)
            .expect("after the lock, one attempt");
        assert!(l.begin("eve", A, 15_000).is_err(), "but only one at a time");
        one.succeeded();
        assert_eq!(wait(&l, "eve", A, 15_000), None);
    }

    #[test]
    fn success_clears_the_name_and_old_failures_are_forgotten() {
        let l = limiter();
        for i in 0..4 {
            fail(&l, "carol", A, i);
        }
        l.begin("carol", A, 5).unwrap().succeeded();
        fail(&l, "carol", A, 10);
        assert_eq!(wait(&l, "carol", A, 10), None);
        for i in 0..3 {
            fail(&l, "dave", B, i);
        }
        let day = Policy::default().forget_ms;
        for i in 0..4 {
            fail(&l, "dave", B, day + 10 + i);
        }
        assert_eq!(
            wait(&l, "dave", B, day + 14),
            None,
            "the old three were forgotten"
        );
    }
}
