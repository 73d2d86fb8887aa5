//! Giving freed heap back to the operating system. After a burst of requests glibc's
//! allocator keeps what the connections and responses freed (about 10 MB after 64 busy
//! connections) in its arenas, where it counts as the process's memory for good;
//! `malloc_trim` returns those pages. Every 10 seconds, on a blocking thread: a walk of a few
//! megabytes of heap, well under a millisecond. (`bench/load.sh` reports RSS right after a
//! run and once trimmed.)

use std::time::Duration;

/// Once, now (after start-up built and dropped its large temporary structures).
pub async fn trim_now() {
    let _ = tokio::task::spawn_blocking(trim).await;
}

pub async fn trim_periodically() {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = tokio::task::spawn_blocking(trim).await;
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
