//! The edge of the HTTP API shared by every slice: extractors whose rejections are
//! problem+json, cursor pagination, validated input types and the field-error collector.
//! Nothing here knows a slice.

pub mod client;
pub mod email;
mod extract;
pub mod pagination;
pub mod request_id;
pub mod validate;

pub use email::Email;
pub use extract::{Json, Query, nullable};
