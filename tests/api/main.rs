//! Integration tests: the whole application over HTTP, on both backends.

mod common;

mod auth;
mod cli;
mod enrollments;
mod http_stack;
mod idempotency;
mod ops;
mod records;
mod supabase;
mod users;
