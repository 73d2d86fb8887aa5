//! The weekly-timetable optimizer of `../shared/schedule-opt/PROBLEM.md`: instance in,
//! solution out, no database and no I/O. `cedar optimize` wraps it for files; the schedule
//! review workflow builds a [`Model`] from Cedar's data. See `docs/optimizer.md`.
//!
//! Every solution it returns is feasible (checked by [`check::evaluate`], which mirrors
//! `evaluate.py`); when a search is cut short it returns the best feasible state it met,
//! which is never worse than the current timetable.

pub mod check;
pub mod model;
mod search;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use check::Report;
pub use model::{AssignmentOut, BadInstance, Model, SOLUTION_FORMAT};

#[derive(Debug, Clone)]
pub struct Options {
    /// Wall-clock cap; the iteration budget decides first on a fast machine.
    pub time_limit: Duration,
    pub seed: u64,
    /// Most active students whose weekday, start or teacher may change.
    pub max_moves: Option<usize>,
    /// Independent searches run side by side (one core each); the best wins.
    pub threads: usize,
    /// Search steps per thread (the reproducible budget); `None`: [`default_iterations`].
    pub iterations: Option<u64>,
}

/// Steps that reach CP-SAT's 300 s quality on the reference instances: they grow faster
/// than the school (180 × students^2.5: about 5 million, 1 s, for 60 students; the cap of
/// 140 million, about 26 s on one core of a small server, from 250 students on).
pub fn default_iterations(model: &Model) -> u64 {
    let n = model.students.len() as f64;
    (180.0 * n.powf(2.5)).clamp(2_000_000.0, 140_000_000.0) as u64
}

impl Default for Options {
    fn default() -> Self {
        Self { time_limit: Duration::from_secs(30), seed: 1, max_moves: None, threads: 2, iterations: None }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SolutionFile {
    pub format: &'static str,
    pub instance: String,
    pub solver: serde_json::Value,
    pub assignments: Vec<AssignmentOut>,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub solution: SolutionFile,
    pub before: Report,
    pub after: Report,
    pub wall: Duration,
}

/// Improves the model's current timetable within `options`; stops early when `cancel` turns
/// true, returning the best feasible timetable found so far.
pub fn optimize(model: &Model, options: &Options, cancel: &AtomicBool) -> Outcome {
    let started = Instant::now();
    let current: Vec<model::Lesson> = model.current.iter().flatten().copied().collect();
    let before = check::evaluate(model, &current, false);
    let iterations = options.iterations.unwrap_or_else(|| default_iterations(model));
    let limits =
        search::Limits { iterations, deadline: Some(started + options.time_limit), max_moves: options.max_moves };
    let threads = options.threads.max(1);
    let results: Vec<(Vec<Option<model::Place>>, i64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                let limits = &limits;
                let seed = options.seed.wrapping_mul(1_000_003).wrapping_add(k as u64);
                scope.spawn(move || search::search(model, seed, limits, cancel))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a search thread panicked")).collect()
    });
    // The best objective; on a tie the lowest thread, so the answer does not depend on timing.
    let (best, _) = results
        .into_iter()
        .enumerate()
        .max_by_key(|(k, (_, objective))| (*objective, -(*k as i64)))
        .map(|(_, r)| r)
        .expect("one thread at least");
    let lessons = search::State::with_places(model, &best, options.max_moves).lessons();
    let mut after = check::evaluate(model, &lessons, true);
    let within_budget = options.max_moves.is_none_or(|budget| after.moved <= budget);
    let lessons = if after.feasible() && within_budget {
        lessons
    } else {
        // Never an infeasible answer: the current timetable is feasible by construction.
        tracing::error!(
            violations = after.violations.len(),
            "optimizer produced an infeasible timetable; keeping the current one"
        );
        after = check::evaluate(model, &current, true);
        current
    };
    // No wall time in the file: the same seed and limits give byte-identical solutions.
    let wall = started.elapsed();
    let solution = SolutionFile {
        format: SOLUTION_FORMAT,
        instance: model.name.clone(),
        solver: serde_json::json!({
            "name": "cedar-optimize", "seed": options.seed, "threads": threads, "iterations": iterations,
            "time_limit_secs": options.time_limit.as_secs_f64(), "max_moves": options.max_moves,
            "objective": after.objective,
        }),
        assignments: model.to_assignments(&lessons),
    };
    Outcome { solution, before, after, wall }
}
