//! Login throttling: how long a user name, or a client address, must wait before its next
//! login attempt. Pure: the caller passes `now`.
//!
//! Each key counts its failed logins. The first few are free (typos); after that each failure
//! doubles the wait before the next attempt (1 s, 2 s, 4 s, ... up to [`MAX_DELAY`]), and an
//! attempt during the wait is refused (429, `Retry-After`) without its password being looked
//! at. An attempt counts as a failure from the moment it is let through until it succeeds, so
//! a burst of parallel guesses cannot all pass before the first failure is recorded. A user
//! name's count starts again at a successful login; an address's count only forgets, after
//! [`FORGET_AFTER`] without a failure, so that one account of one's own does not reset the
//! address's count between guesses at others.
//!
//! The state lives in the memory of the web server process (as Airflow's `auth_rate_limit`,
//! flask-limiter's in-memory store by default): a restart forgets it, and each of several web
//! servers counts on its own. It holds at most [`MAX_KEYS`] keys; past that the one whose last
//! failure is oldest is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The longest wait between two attempts of one key.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// A key without a failure for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// The most keys kept.
pub const MAX_KEYS: usize = 10_000;

/// What a login attempt is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// The user name tried (whether or not such a user exists).
    User(String),
    /// The client's address.
    Address(IpAddr),
}

impl Key {
    /// Failures of this key that cost no wait: a person mistyping a password a few times; an
    /// address, which may be shared by several people (an office), a few more.
    fn free_failures(&self) -> u32 {
        match self {
            Key::User(_) => 3,
            Key::Address(_) => 10,
        }
    }

    /// The wait after `failures` failures: none for the free ones, then 1 s doubling, capped.
    fn delay(&self, failures: u32) -> Duration {
        match failures.checked_sub(self.free_failures()) {
            None => Duration::ZERO,
            Some(past) => Duration::from_secs(1)
                .checked_mul(1 << past.min(20))
                .map_or(MAX_DELAY, |delay| delay.min(MAX_DELAY)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    /// No attempt before this instant.
    blocked_until: Instant,
}

/// The failed logins of each key.
#[derive(Debug, Default)]
pub struct Throttle {
    entries: HashMap<Key, Entry>,
}

impl Throttle {
    /// Lets an attempt against `keys` through, counting it as a failure until
    /// [`Throttle::succeeded`] says otherwise; or refuses it with the wait until the next
    /// attempt may come.
    pub fn attempt(&mut self, keys: &[Key], now: Instant) -> Result<(), Duration> {
        let wait = keys
            .iter()
            .filter_map(|key| self.entries.get(key))
            .filter(|entry| now.duration_since(entry.last_failure) < FORGET_AFTER)
            .map(|entry| entry.blocked_until.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if !wait.is_zero() {
            return Err(wait);
        }
        for key in keys {
            self.make_room(key, now);
            let entry = self.entries.entry(key.clone()).or_insert(Entry {
                failures: 0,
                last_failure: now,
                blocked_until: now,
            });
            if now.duration_since(entry.last_failure) >= FORGET_AFTER {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure = now;
            entry.blocked_until = now + key.delay(entry.failures);
        }
        Ok(())
    }

    /// The attempt [`Throttle::attempt`] let through at `now` succeeded: the user names among
    /// `keys` start again; the other keys take back the failure counted for it.
    pub fn succeeded(&mut self, keys: &[Key], now: Instant) {
        for key in keys {
            match key {
                Key::User(_) => {
                    self.entries.remove(key);
                }
                Key::Address(_) => {
                    if let Some(entry) = self.entries.get_mut(key) {
                        entry.failures = entry.failures.saturating_sub(1);
                        entry.blocked_until = now;
                    }
                }
            }
        }
    }

    /// Before `key` is added: drops the forgotten keys when full, then the stalest one.
    fn make_room(&mut self, key: &Key, now: Instant) {
        if self.entries.len() < MAX_KEYS || self.entries.contains_key(key) {
            return;
        }
        self.entries
            .retain(|_, entry| now.duration_since(entry.last_failure) < FORGET_AFTER);
        if self.entries.len() >= MAX_KEYS
            && let Some(stalest) = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_failure)
                .map(|(key, _)| key.clone())
        {
            self.entries.remove(&stalest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Key {
        Key::User(name.to_owned())
    }

    fn address(last: u8) -> Key {
        Key::Address(IpAddr::from([192, 0, 2, last]))
    }

    fn seconds(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn three_failures_are_free_then_the_wait_doubles_up_to_the_cap() {
        let mut throttle = Throttle::default();
        let keys = [user("ada")];
        let start = Instant::now();
        let mut now = start;
        for _ in 0..3 {
            throttle.attempt(&keys, now).unwrap();
        }
        // The third failure costs 1 s.
        assert_eq!(throttle.attempt(&keys, now), Err(seconds(1)));
        let mut waits = Vec::new();
        for _ in 0..12 {
            let wait = throttle.attempt(&keys, now).unwrap_err();
            waits.push(wait.as_secs());
            now += wait;
            throttle.attempt(&keys, now).unwrap();
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]);
        // Refused attempts did not count: the wait is still the cap, not more.
        assert_eq!(throttle.attempt(&keys, now), Err(MAX_DELAY));
    }

    #[test]
    fn a_success_starts_a_user_again_but_not_the_address() {
        let mut throttle = Throttle::default();
        let now = Instant::now();
        for name in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"] {
            throttle.attempt(&[user(name), address(1)], now).unwrap();
        }
        assert_eq!(
            throttle.attempt(&[user("k"), address(1)], now),
            Err(seconds(1)),
            "the eleventh name from one address waits"
        );
        assert!(throttle.attempt(&[user("k"), address(2)], now).is_ok());
        let later = now + seconds(1);
        throttle.attempt(&[user("k"), address(1)], later).unwrap();
        throttle.succeeded(&[user("k"), address(1)], later);
        assert!(
            throttle.attempt(&[user("k")], later).is_ok(),
            "k starts again"
        );
        // The address took back only the success's count: its next failure waits again.
        throttle.attempt(&[user("l"), address(1)], later).unwrap();
        assert_eq!(
            throttle.attempt(&[user("m"), address(1)], later),
            Err(seconds(2))
        );
    }

    #[test]
    fn a_quiet_key_is_forgotten() {
        let mut throttle = Throttle::default();
        let now = Instant::now();
        for _ in 0..3 {
            throttle.attempt(&[user("ada")], now).unwrap();
        }
        assert!(throttle.attempt(&[user("ada")], now).is_err());
        let later = now + FORGET_AFTER;
        for _ in 0..3 {
            throttle.attempt(&[user("ada")], later).unwrap();
        }
        assert_eq!(throttle.attempt(&[user("ada")], later), Err(seconds(1)));
    }

    #[test]
    fn the_keys_are_bounded() {
        let mut throttle = Throttle::default();
        let now = Instant::now();
        for n in 0..MAX_KEYS + 5 {
            throttle
                .attempt(
                    &[user(&n.to_string())],
                    now + Duration::from_millis(n as u64),
                )
                .unwrap();
        }
        assert_eq!(throttle.entries.len(), MAX_KEYS);
        assert!(
            !throttle.entries.contains_key(&user("0")),
            "the stalest went"
        );
    }
}
