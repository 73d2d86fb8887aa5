//! A small in-process fixed-window rate limiter, keyed by any string (an IP, an account).
//!
//! In-process is enough for a single-binary deployment; with several API processes each
//! enforces its own window, which only makes the limit a small multiple looser. Memory is
//! bounded whatever callers send: keys are kept as 64-bit hashes, and at most
//! [`MAX_KEYS`] windows are tracked (expired ones go first, then the oldest).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys tracked at once (about 3 MB).
pub const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    windows: Mutex<HashMap<u64, (Instant, u32)>>,
}

fn hashed(key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window, windows: Mutex::new(HashMap::new()) }
    }

    /// Counts one attempt for `key`. `Err(seconds)` when over the limit: retry after that long.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.with_window(key, true)
    }

    /// Whether `key` is over the limit, without counting (pair with [`Self::count`] to
    /// limit only failures).
    pub fn blocked(&self, key: &str) -> Result<(), u64> {
        self.with_window(key, false)
    }

    /// Counts one event for `key` (e.g. a failed sign-in).
    pub fn count(&self, key: &str) {
        let _ = self.with_window(key, true);
    }

    fn with_window(&self, key: &str, count: bool) -> Result<(), u64> {
        let now = Instant::now();
        let key = hashed(key);
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !count && !windows.contains_key(&key) {
            return Ok(());
        }
        if windows.len() >= MAX_KEYS && !windows.contains_key(&key) {
            let window = self.window;
            windows.retain(|_, (started, _)| now.duration_since(*started) < window);
            if windows.len() >= MAX_KEYS
                && let Some(oldest) = windows.iter().min_by_key(|(_, (started, _))| *started).map(|(k, _)| *k)
            {
                windows.remove(&oldest);
            }
        }
        let entry = windows.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit {
            let left = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs().max(1));
        }
        if count {
            entry.1 += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_the_limit_per_key() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let retry = limiter.check("a").unwrap_err();
        assert!((1..=60).contains(&retry));
        assert!(limiter.check("b").is_ok());
    }

    #[test]
    fn memory_stays_bounded_however_many_keys() {
        let limiter = RateLimiter::new(1, Duration::from_secs(60));
        for i in 0..MAX_KEYS + 500 {
            assert!(limiter.check(&format!("key-{i}")).is_ok());
        }
        assert_eq!(limiter.windows.lock().unwrap().len(), MAX_KEYS);
        // The newest keys are still limited.
        assert!(limiter.check(&format!("key-{}", MAX_KEYS + 499)).is_err());
    }

    #[test]
    fn window_resets() {
        let limiter = RateLimiter::new(1, Duration::from_millis(20));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(limiter.check("a").is_ok());
    }

    #[test]
    fn blocked_peeks_and_count_counts() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        assert!(limiter.blocked("a").is_ok());
        assert!(limiter.blocked("a").is_ok(), "peeking counts nothing");
        limiter.count("a");
        assert!(limiter.blocked("a").is_ok());
        limiter.count("a");
        assert!(limiter.blocked("a").is_err());
        assert!(limiter.blocked("b").is_ok());
    }
}
