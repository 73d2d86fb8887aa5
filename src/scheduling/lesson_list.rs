//! `GET /v1/lessons`: the lessons a caller may see, in time order, a page at a time — a
//! teacher's week being the page a school opens most. Pages answered before are kept and
//! served again once the database confirms their rows are unchanged (`super::lesson_pages`).

use std::time::Instant;

use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::LessonStatus;
use super::lesson_json::LessonPageJson;
use super::lesson_pages::{Answer, KeptPage, PageQuery};
use super::lesson_row::Versioned;
use super::lessons::{COLUMNS, Lesson};
use crate::app::AppState;
use crate::auth::CurrentUser;
use crate::error::ApiResult;
use crate::http::Query;
use crate::http::validate::Errors;
use crate::on_db;

/// Binds a [`PageQuery`] as `$1`–`$12` of [`conditions`]; `$11` asks for one row more than
/// the page, to know whether a next page exists.
macro_rules! bind_query {
    ($sqlx_query:expr, $query:expr) => {
        $sqlx_query
            .bind($query.family)
            .bind($query.teacher)
            .bind($query.from)
            .bind($query.to)
            .bind($query.teacher_id)
            .bind($query.student_id)
            .bind($query.room_id)
            .bind($query.status)
            .bind($query.after.map(|after| after.0))
            .bind($query.after.map(|after| after.1))
            .bind(i64::from($query.limit) + 1)
            .bind($query.from.map(super::running_since))
    };
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LessonFilter {
    /// Lessons ending after this instant.
    from: Option<DateTime<Utc>>,
    /// Lessons starting before this instant.
    to: Option<DateTime<Utc>>,
    teacher_id: Option<Uuid>,
    student_id: Option<Uuid>,
    room_id: Option<Uuid>,
    /// `scheduled` or `cancelled`.
    status: Option<String>,
    /// 1–500 (default 100).
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LessonPage {
    pub(super) items: Vec<Lesson>,
    pub(super) next_cursor: Option<String>,
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (at, id) = raw.split_once('|')?;
    Some((DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc), Uuid::parse_str(id).ok()?))
}

/// Lessons the caller may see, in time order (`from`/`to` select a range).
#[utoipa::path(get, path = "/v1/lessons", tag = "scheduling", params(LessonFilter), security(("bearer" = [])),
    responses((status = 200, body = LessonPage), (status = 401), (status = 422)))]
pub(super) async fn list_lessons(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<LessonFilter>,
) -> ApiResult<LessonPageJson> {
    let mut errors = Errors::default();
    let limit = filter.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        errors.add("limit", "must be between 1 and 500");
    }
    let status = errors.optional_choice::<LessonStatus>("status", filter.status.as_deref());
    let after = match filter.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => {
            let decoded = decode_cursor(c);
            if decoded.is_none() {
                errors.add("cursor", "is not a cursor returned by this list");
            }
            decoded
        }
        None => None,
    };
    errors.into_result()?;
    let Some((family, teacher)) = user.row_filter() else {
        return Ok(LessonPageJson::new(&LessonPage { items: vec![], next_cursor: None }));
    };
    let query = PageQuery {
        family,
        teacher,
        from: filter.from,
        to: filter.to,
        teacher_id: filter.teacher_id,
        student_id: filter.student_id,
        room_id: filter.room_id,
        status,
        after,
        limit,
    };
    let matching = conditions(&query);
    if let Some(kept) = state.lesson_pages.get(&query, Instant::now()) {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT l.row_version FROM lessons l WHERE {matching} ORDER BY l.starts_at, l.id LIMIT $11"
        ));
        let versions: Vec<i64> =
            on_db!(&state.db, pool => bind_query!(sqlx::query_scalar(sql), query).fetch_all(pool).await)?;
        if *versions == *kept.versions {
            state.lesson_pages.answered(Answer::Kept);
            return Ok(LessonPageJson::from(kept.body));
        }
        state.lesson_pages.answered(Answer::Changed);
    } else {
        state.lesson_pages.answered(Answer::Read);
    }
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, l.row_version FROM lessons l WHERE {matching} ORDER BY l.starts_at, l.id LIMIT $11"
    ));
    let rows: Vec<Versioned> =
        on_db!(&state.db, pool => bind_query!(sqlx::query_as(sql), query).fetch_all(pool).await)?;
    let versions: Vec<i64> = rows.iter().map(|row| row.version).collect();
    let mut items: Vec<Lesson> = rows.into_iter().map(|row| row.lesson).collect();
    let next_cursor = (items.len() > limit as usize).then(|| {
        items.truncate(limit as usize);
        let last = items.last().expect("non-empty");
        URL_SAFE_NO_PAD.encode(format!("{}|{}", last.starts_at.to_rfc3339(), last.id))
    });
    let json = LessonPageJson::new(&LessonPage { items, next_cursor });
    state.lesson_pages.keep(query, KeptPage { versions: versions.into(), body: json.body().clone() }, Instant::now());
    Ok(json)
}

/// The page's `WHERE`, numbering the parameters as `bind_query!` binds them. Absent filters
/// become `$n IS NULL` (true), not `($n IS NULL OR col = $n)`: the planner sees the present
/// ones plainly and uses the indexes; the parameters never change.
fn conditions(query: &PageQuery) -> String {
    let when =
        |present: bool, n: u8, condition: &str| if present { condition.to_owned() } else { format!("${n} IS NULL") };
    [
        when(
            query.family.is_some(),
            1,
            "EXISTS (SELECT 1 FROM students s WHERE s.id = l.student_id AND s.family_id = $1)",
        ),
        when(query.teacher.is_some(), 2, "l.teacher_id = $2"),
        // Lessons running at `from` began after `from - MAX_LESSON` ($12): a bounded range.
        if query.from.is_some() {
            "l.ends_at > $3 AND l.starts_at > $12".to_owned()
        } else {
            "$3 IS NULL AND $12 IS NULL".to_owned()
        },
        when(query.to.is_some(), 4, "l.starts_at < $4"),
        when(query.teacher_id.is_some(), 5, "l.teacher_id = $5"),
        when(query.student_id.is_some(), 6, "l.student_id = $6"),
        when(query.room_id.is_some(), 7, "l.room_id = $7"),
        when(query.status.is_some(), 8, "l.status = $8"),
        if query.after.is_some() {
            "(l.starts_at > $9 OR (l.starts_at = $9 AND l.id > $10))".to_owned()
        } else {
            "$9 IS NULL AND $10 IS NULL".to_owned()
        },
    ]
    .join(" AND ")
}
