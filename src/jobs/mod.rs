//! Durable background work, below every slice: the job queue (enqueue in the business
//! transaction, claim with `SKIP LOCKED`, leases, backoff, dead jobs), recurring schedules in
//! school time, the worker, and the admin's jobs API. Slices enqueue with [`queue::enqueue`]
//! and declare their handlers and schedules; `app::jobs` is the one place that gathers them.
//! The machinery is generic over [`JobContext`], so it knows nothing of the slices.

pub mod api;
pub mod cron;
pub mod queue;
pub mod worker;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::db::Db;

pub use worker::{JobError, Registry, Schedule};

/// What the worker needs from the application's state.
pub trait JobContext: Clone + Send + Sync + 'static {
    fn db(&self) -> &Db;
    /// Wakes in-process workers after a commit that enqueued jobs.
    fn job_wakeup(&self) -> Arc<Notify>;
    /// The school's zone, in which schedules fire.
    fn timezone(&self) -> chrono_tz::Tz;
}
