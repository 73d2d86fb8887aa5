//! Keeping the process's memory bounded between bursts of requests. Three things grow with
//! traffic and are given back here, once a second:
//! - the metrics histograms' raw samples: the Prometheus recorder keeps one `f64` per recorded
//!   request until an upkeep folds them into the buckets (with an upkeep a minute, a 50,000
//!   req/s burst held 26 MB of them);
//! - the lesson list's kept pages (up to 4 MB): those nobody asked for in 10 s are dropped,
//!   and the heap trimmed right away;
//! - freed heap: glibc keeps what connections and responses freed in its per-thread arenas,
//!   where it counts as the process's memory for good; `malloc_trim` returns those pages.
//!
//! A trim runs a second after a burst ends (no request seen for a whole tick) and every ten
//! seconds in any case: a walk of a few megabytes of heap on a blocking thread, well under a
//! millisecond. (`bench/load.sh` reports RSS right after a run and once trimmed.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::AppState;

/// Requests seen so far (any response); only its changes matter.
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Counts one request (called by the metrics middleware).
pub fn note_request() {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
}

/// Once, now (after start-up built and dropped its large temporary structures).
pub async fn trim_now() {
    let _ = tokio::task::spawn_blocking(trim).await;
}

/// Folds the metrics samples in every second, drops idle kept pages and trims per
/// [`TrimPolicy`]; runs until aborted.
pub async fn keep_bounded(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut policy = TrimPolicy::new(REQUESTS.load(Ordering::Relaxed));
    loop {
        tick.tick().await;
        state.metrics.run_upkeep();
        let dropped_pages = state.lesson_pages.forget_idle(Instant::now()) > 0;
        if policy.due(REQUESTS.load(Ordering::Relaxed)) || dropped_pages {
            trim_now().await;
        }
    }
}

/// When to trim, given the request count once a second: when traffic has just stopped, and at
/// least every [`TrimPolicy::EVERY`] ticks.
struct TrimPolicy {
    last_count: u64,
    busy: bool,
    ticks_since_trim: u32,
}

impl TrimPolicy {
    const EVERY: u32 = 10;

    fn new(count: u64) -> Self {
        Self { last_count: count, busy: false, ticks_since_trim: 0 }
    }

    fn due(&mut self, count: u64) -> bool {
        let busy_now = count != self.last_count;
        let burst_ended = self.busy && !busy_now;
        self.last_count = count;
        self.busy = busy_now;
        self.ticks_since_trim += 1;
        let due = burst_ended || self.ticks_since_trim >= Self::EVERY;
        if due {
            self.ticks_since_trim = 0;
        }
        due
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and only releases memory the allocator holds as
    // free; glibc makes it safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::TrimPolicy;

    #[test]
    fn trims_a_tick_after_a_burst_and_every_ten_ticks() {
        let mut policy = TrimPolicy::new(0);
        // Busy for three ticks: only the ten-tick rule could trim, and it is not due yet.
        assert!(!policy.due(100));
        assert!(!policy.due(250));
        assert!(!policy.due(400));
        // The first quiet tick trims; further quiet ticks do not.
        assert!(policy.due(400));
        assert!(!policy.due(400));
        // Idle or busy, ten ticks after the last trim bring another.
        for _ in 0..8 {
            assert!(!policy.due(400));
        }
        assert!(policy.due(400));
        // Sustained traffic trims every ten ticks.
        let trims = (1..=30u64).filter(|n| policy.due(400 + n * 10)).count();
        assert_eq!(trims, 3);
    }
}
