//! Cursor pagination: `?limit=50&cursor=…` → `{"items": [...], "next_cursor": "…" | null}`.
//!
//! Lists are ordered by their UUIDv7 id (time-ordered, unique), and the cursor is the last id
//! seen, so every row is returned exactly once even while rows are being inserted.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch_limit(&self) -> Result<i64, ApiError> {
        Ok(i64::from(self.limit()?) + 1)
    }

    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::invalid("limit", format!("must be between 1 and {MAX_LIMIT}"))),
        }
    }

    /// The id after which this page starts.
    pub fn after(&self) -> Result<Option<Uuid>, ApiError> {
        let Some(cursor) = self.cursor.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| Uuid::from_slice(&bytes).ok())
            .map(Some)
            .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor returned by this list"))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in list order.
    pub fn from_rows(mut rows: Vec<T>, params: &PageParams, id_of: impl Fn(&T) -> Uuid) -> Result<Self, ApiError> {
        let limit = params.limit()? as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| URL_SAFE_NO_PAD.encode(id_of(last).as_bytes()))
        } else {
            None
        };
        Ok(Self { items: rows, next_cursor })
    }
}
