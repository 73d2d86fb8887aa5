//! The edge of the HTTP API shared by every slice: extractors whose rejections are
//! problem+json, cursor pagination, validated input types and the field-error collector.
//! Nothing here knows a slice.

pub mod client;
pub mod email;
mod extract;
pub mod pagination;
pub mod request_id;
pub mod signed_links;
pub mod validate;

pub use email::Email;
pub use extract::{Json, Query, nullable};

/// Whether a JSON text holds an escaped NUL (`\u0000`): PostgreSQL cannot store one in text,
/// so it is refused as input rather than failing at the database.
pub fn contains_escaped_nul(json: &[u8]) -> bool {
    json.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000"))
}

/// Whether two secrets are equal, in time that does not depend on where they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Text made safe inside HTML elements and attribute values (the pages Cedar renders itself:
/// email-link pages, printable invoices and reports).
pub fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}
