//! Durable background work. For now: the job table and enqueueing inside a business
//! transaction; the worker, workflow engine and AI providers come with the Workflows issue.

pub mod queue;
