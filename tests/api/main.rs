//! Integration tests: the whole application over HTTP, on both backends.

mod common;

mod cli;
mod http_stack;
mod idempotency;
mod ops;
