//! Integration tests: the whole application over HTTP, on both backends.

// `[id.clone()]` reads better than `std::slice::from_ref(&id)` in an expected value.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;
mod helpers;

mod auth;
mod billing;
mod booking;
mod cli;
mod console;
mod enrollment_workflow;
mod enrollments;
mod extremes;
mod fakes;
mod http_stack;
mod idempotency;
mod lesson_pages;
mod mail;
mod messaging;
mod operations;
mod ops;
mod optimizer;
mod payment_issue;
mod privacy;
mod progress_report;
mod queue;
mod records;
mod schedule_review;
mod scheduling;
mod school_year;
mod stripe_fake;
mod supabase;
mod users;
mod workflows;
