//! `/v1/threads`: conversations between a family and the school (its teachers and office),
//! optionally about a student. Participants only (404 for anyone else); admins see all.
//! New messages are announced by email in one digest per recipient per
//! `CEDAR_MESSAGE_DIGEST_MINUTES`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::outbox::{self, Email};
use crate::app::AppState;
use crate::auth::{CurrentUser, Role};
use crate::config::Settings;
use crate::db::{CommitMark, Tx};
use crate::error::{ApiError, ApiResult};
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::Errors;
use crate::http::{Json, Query};
use crate::jobs::queue::{self, Job, NewJob};
use crate::jobs::worker::JobError;
use crate::{on_db, on_tx};

pub const DIGEST: &str = "messages.digest";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_threads, create_thread))
        .routes(routes!(get_thread))
        .routes(routes!(list_messages, post_message))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Thread {
    id: Uuid,
    subject: String,
    family_id: Option<Uuid>,
    student_id: Option<Uuid>,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    last_message_at: DateTime<Utc>,
    /// Messages from others you have not read.
    unread_count: i64,
    /// Single reads only.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    participants: Option<Vec<Participant>>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Participant {
    user_id: Uuid,
    email: String,
    display_name: Option<String>,
    role: String,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Message {
    id: Uuid,
    thread_id: Uuid,
    author_id: Option<Uuid>,
    body: String,
    created_at: DateTime<Utc>,
}

/// Threads user `$1` may read (`$2`: an admin reads all). A participant stops reading a
/// family's thread once they no longer belong to the family (a removed guardian), and a
/// student's thread once they no longer teach the student (a former teacher).
const SELECT: &str = "SELECT t.id, t.subject, t.family_id, t.student_id, t.created_by, t.created_at, t.last_message_at, \
    (SELECT COUNT(*) FROM messages m WHERE m.thread_id = t.id AND (m.author_id IS NULL OR m.author_id <> $1) \
      AND (p.last_read_at IS NULL OR m.created_at > p.last_read_at)) AS unread_count \
    FROM threads t LEFT JOIN thread_participants p ON p.thread_id = t.id AND p.user_id = $1 \
    WHERE ($2 OR (p.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = $1 AND ( \
      (u.role = 'parent' AND t.family_id IS NOT NULL AND (u.family_id IS NULL OR u.family_id <> t.family_id)) \
      OR (u.role = 'teacher' AND t.student_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM students s \
        WHERE s.id = t.student_id AND (s.teacher_id = u.teacher_id OR EXISTS (SELECT 1 FROM lessons l \
        WHERE l.student_id = s.id AND l.teacher_id = u.teacher_id AND l.status = 'scheduled' \
        AND l.attendance IS NULL))))))))";

async fn find_visible(tx: &mut Tx, user: &CurrentUser, id: Uuid) -> ApiResult<Thread> {
    let sql = sqlx::AssertSqlSafe(format!("{SELECT} AND t.id = $3"));
    let thread = on_tx!(tx, conn => sqlx::query_as::<_, Thread>(sql).bind(user.id).bind(user.is_admin()).bind(id)
        .fetch_optional(&mut **conn).await)?;
    thread.ok_or(ApiError::NotFound)
}

async fn participants(tx: &mut Tx, thread: Uuid) -> ApiResult<Vec<Participant>> {
    const SQL: &str = "SELECT u.id AS user_id, u.email, u.display_name, u.role FROM thread_participants p \
        JOIN users u ON u.id = p.user_id WHERE p.thread_id = $1 ORDER BY u.id";
    Ok(on_tx!(tx, conn => sqlx::query_as(SQL).bind(thread).fetch_all(&mut **conn).await)?)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThreadFilter {
    family_id: Option<Uuid>,
    student_id: Option<Uuid>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Your threads, newest first, with unread counts (admins: every thread).
#[utoipa::path(get, path = "/v1/threads", tag = "messaging", params(ThreadFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Thread>)), (status = 401)))]
async fn list_threads(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<ThreadFilter>,
) -> ApiResult<Json<Page<Thread>>> {
    let page = PageParams { limit: filter.limit, cursor: filter.cursor.clone() };
    let sql = sqlx::AssertSqlSafe(format!(
        "{SELECT} AND ($3 IS NULL OR t.family_id = $3) AND ($4 IS NULL OR t.student_id = $4) \
         AND ($5 IS NULL OR t.id < $5) ORDER BY t.id DESC LIMIT $6"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, Thread>(sql).bind(user.id).bind(user.is_admin())
        .bind(filter.family_id).bind(filter.student_id).bind(page.after()?).bind(page.fetch_limit()?).fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |t| t.id)?))
}

/// One thread with its participants.
#[utoipa::path(get, path = "/v1/threads/{id}", tag = "messaging", security(("bearer" = [])),
    responses((status = 200, body = Thread), (status = 401), (status = 404)))]
async fn get_thread(State(state): State<AppState>, user: CurrentUser, Path(id): Path<Uuid>) -> ApiResult<Json<Thread>> {
    let mut tx = state.db.begin_read().await?;
    let mut thread = find_visible(&mut tx, &user, id).await?;
    thread.participants = Some(participants(&mut tx, id).await?);
    tx.rollback().await?;
    Ok(Json(thread))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewThread {
    subject: String,
    /// The first message.
    body: String,
    /// The family the conversation is with (parents: always their own).
    family_id: Option<Uuid>,
    /// The student it is about; brings in the student's teacher.
    student_id: Option<Uuid>,
    /// Admins only: further participants (e.g. a teacher).
    #[serde(default)]
    participant_ids: Vec<Uuid>,
}

fn text(errors: &mut Errors, field: &str, value: &str, max: usize) -> String {
    let value = value.trim().to_owned();
    if value.is_empty() || value.chars().count() > max {
        errors.add(field, format!("must be 1 to {max} characters"));
    }
    value
}

/// Starts a conversation. Participants: the family's guardians, the student's teacher (when
/// the thread is about a student), the author, and for admins anyone they add.
#[utoipa::path(post, path = "/v1/threads", tag = "messaging", request_body = NewThread, security(("bearer" = [])),
    responses((status = 201, body = Thread), (status = 401), (status = 404), (status = 422)))]
async fn create_thread(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(input): Json<NewThread>,
) -> ApiResult<(StatusCode, Json<Thread>)> {
    let mut errors = Errors::default();
    let subject = text(&mut errors, "subject", &input.subject, 200);
    let body = text(&mut errors, "body", &input.body, 10_000);
    if !user.is_admin() && !input.participant_ids.is_empty() {
        errors.add("participant_ids", "only the office can add participants");
    }
    // The student decides the family; both must be visible to the caller.
    let student = match input.student_id {
        Some(id) => Some(crate::people::students::find_visible(&state.db, &user, id).await?),
        None => None,
    };
    let family_id = match (&student, input.family_id, user.role) {
        (Some(s), Some(f), _) if s.family_id != f => {
            errors.add("family_id", "is not the student's family");
            Some(f)
        }
        (Some(s), _, _) => Some(s.family_id),
        (None, Some(f), _) => Some(crate::people::families::find_visible(&state.db, &user, f).await?.id),
        (None, None, Role::Parent) => user.family_id,
        (None, None, _) if input.participant_ids.is_empty() => {
            errors.add("family_id", "name the family (or the student) the conversation is with");
            None
        }
        (None, None, _) => None,
    };
    if user.role == Role::Parent && family_id.is_none() {
        errors.add("family_id", "your account is not linked to a family yet");
    }
    errors.into_result()?;

    let mut members: Vec<Uuid> = vec![user.id];
    let mut tx = state.db.begin().await?;
    if let Some(family) = family_id {
        const GUARDIANS: &str = "SELECT id FROM users WHERE family_id = $1 AND role = 'parent' AND status = 'active'";
        members.extend(on_tx!(&mut tx, conn => sqlx::query_scalar::<_, Uuid>(GUARDIANS).bind(family)
            .fetch_all(&mut **conn).await)?);
    }
    if let Some(teacher) = student.as_ref().and_then(|s| s.teacher_id) {
        const TEACHER: &str = "SELECT id FROM users WHERE teacher_id = $1 AND status = 'active'";
        members.extend(on_tx!(&mut tx, conn => sqlx::query_scalar::<_, Uuid>(TEACHER).bind(teacher)
            .fetch_optional(&mut **conn).await)?);
    }
    for id in &input.participant_ids {
        const EXISTS: &str = "SELECT id FROM users WHERE id = $1";
        let found: Option<Uuid> =
            on_tx!(&mut tx, conn => sqlx::query_scalar(EXISTS).bind(id).fetch_optional(&mut **conn).await)?;
        if found.is_none() {
            return Err(ApiError::invalid("participant_ids", format!("no user {id}")));
        }
        members.push(*id);
    }
    members.sort();
    members.dedup();
    let id = Uuid::now_v7();
    let now = Utc::now();
    const THREAD: &str = "INSERT INTO threads (id, subject, family_id, student_id, created_by, created_at, last_message_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $6)";
    on_tx!(&mut tx, conn => sqlx::query(THREAD).bind(id).bind(&subject).bind(family_id).bind(input.student_id)
        .bind(user.id).bind(now).execute(&mut **conn).await.map(|_| ()))?;
    const MEMBER: &str = "INSERT INTO thread_participants (thread_id, user_id) VALUES ($1, $2)";
    for member in &members {
        on_tx!(&mut tx, conn => sqlx::query(MEMBER).bind(id).bind(member).execute(&mut **conn).await.map(|_| ()))?;
    }
    add_message(&mut tx, &state, &user, id, &body).await?;
    let mut thread = find_visible(&mut tx, &user, id).await?;
    thread.participants = Some(participants(&mut tx, id).await?);
    CommitMark::answer_with_json(201, &thread);
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok((StatusCode::CREATED, Json(thread)))
}

/// Inserts a message, marks it read for its author, and schedules digests for the others.
async fn add_message(
    tx: &mut Tx,
    state: &AppState,
    user: &CurrentUser,
    thread: Uuid,
    body: &str,
) -> ApiResult<Message> {
    insert_message(tx, &state.settings, Some(user.id), thread, body).await
}

/// Inserts a message by `author` (none: the school itself), and schedules digests for the
/// other participants.
async fn insert_message(
    tx: &mut Tx,
    settings: &Settings,
    author: Option<Uuid>,
    thread: Uuid,
    body: &str,
) -> ApiResult<Message> {
    let now = Utc::now();
    let message =
        Message { id: Uuid::now_v7(), thread_id: thread, author_id: author, body: body.to_owned(), created_at: now };
    const INSERT: &str =
        "INSERT INTO messages (id, thread_id, author_id, body, created_at) VALUES ($1, $2, $3, $4, $5)";
    on_tx!(tx, conn => sqlx::query(INSERT).bind(message.id).bind(thread).bind(author).bind(body).bind(now)
        .execute(&mut **conn).await.map(|_| ()))?;
    const TOUCH: &str = "UPDATE threads SET last_message_at = $2 WHERE id = $1";
    on_tx!(tx, conn => sqlx::query(TOUCH).bind(thread).bind(now).execute(&mut **conn).await.map(|_| ()))?;
    if let Some(author) = author {
        // An admin who writes in a thread joins it.
        const JOIN: &str = "INSERT INTO thread_participants (thread_id, user_id, last_read_at) VALUES ($1, $2, $3) \
            ON CONFLICT (thread_id, user_id) DO UPDATE SET last_read_at = excluded.last_read_at";
        on_tx!(tx, conn => sqlx::query(JOIN).bind(thread).bind(author).bind(now).execute(&mut **conn).await.map(|_| ()))?;
    }
    const OTHERS: &str =
        "SELECT user_id FROM thread_participants WHERE thread_id = $1 AND ($2 IS NULL OR user_id <> $2)";
    let others: Vec<Uuid> =
        on_tx!(tx, conn => sqlx::query_scalar(OTHERS).bind(thread).bind(author).fetch_all(&mut **conn).await)?;
    let window = i64::from(settings.email.digest_minutes) * 60;
    for other in others {
        // One digest job per recipient per window: later messages in the window join it.
        let (run_at, key) = if window == 0 {
            (now, format!("digest:{other}:{}", message.id))
        } else {
            let bucket = now.timestamp() / window;
            (DateTime::from_timestamp((bucket + 1) * window, 0).unwrap_or(now), format!("digest:{other}:{bucket}"))
        };
        let job = NewJob::now(super::QUEUE, DIGEST, json!({"user_id": other})).at(run_at).dedupe(key);
        queue::enqueue(tx, job).await?;
    }
    Ok(message)
}

/// The latest messages of a family's billing thread, oldest first: (written by the family,
/// body, when).
pub async fn billing_messages(
    db: &crate::db::Db,
    family: Uuid,
    limit: i64,
) -> ApiResult<Vec<(bool, String, DateTime<Utc>)>> {
    const SQL: &str = "SELECT COALESCE(u.family_id = t.family_id, FALSE), m.body, m.created_at FROM messages m \
        JOIN threads t ON t.id = m.thread_id LEFT JOIN users u ON u.id = m.author_id \
        WHERE t.family_id = $1 AND t.subject = $2 ORDER BY m.id DESC LIMIT $3";
    let mut rows: Vec<(bool, String, DateTime<Utc>)> = crate::on_db!(db, pool => sqlx::query_as(SQL).bind(family)
        .bind(BILLING_SUBJECT).bind(limit).fetch_all(pool).await)?;
    rows.reverse();
    Ok(rows)
}

/// Subject of the thread billing conversations with a family happen in.
pub const BILLING_SUBJECT: &str = "Billing";

/// Posts `body` by `author` (none: the school) in the family's billing thread, creating the
/// thread with the family's guardians the first time. Returns the thread's id.
pub async fn post_to_billing_thread(
    tx: &mut Tx,
    settings: &Settings,
    family: Uuid,
    author: Option<Uuid>,
    body: &str,
) -> ApiResult<Uuid> {
    const FIND: &str =
        "SELECT id FROM threads WHERE family_id = $1 AND subject = $2 AND student_id IS NULL ORDER BY id LIMIT 1";
    let existing: Option<Uuid> = on_tx!(tx, conn => sqlx::query_scalar(FIND).bind(family).bind(BILLING_SUBJECT).fetch_optional(&mut **conn).await)?;
    let thread = match existing {
        Some(id) => id,
        None => {
            let id = Uuid::now_v7();
            let now = Utc::now();
            const THREAD: &str = "INSERT INTO threads (id, subject, family_id, student_id, created_by, created_at, \
                last_message_at) VALUES ($1, $2, $3, NULL, $4, $5, $5)";
            on_tx!(tx, conn => sqlx::query(THREAD).bind(id).bind(BILLING_SUBJECT).bind(family).bind(author).bind(now)
                .execute(&mut **conn).await.map(|_| ()))?;
            const GUARDIANS: &str = "INSERT INTO thread_participants (thread_id, user_id) SELECT $1, id FROM users \
                WHERE family_id = $2 AND role = 'parent' AND status = 'active'";
            on_tx!(tx, conn => sqlx::query(GUARDIANS).bind(id).bind(family).execute(&mut **conn).await.map(|_| ()))?;
            id
        }
    };
    if let Some(author) = author {
        const MEMBER: &str = "INSERT INTO thread_participants (thread_id, user_id) VALUES ($1, $2) ON CONFLICT (thread_id, user_id) DO NOTHING";
        on_tx!(tx, conn => sqlx::query(MEMBER).bind(thread).bind(author).execute(&mut **conn).await.map(|_| ()))?;
    }
    insert_message(tx, settings, author, thread, body).await?;
    Ok(thread)
}

/// Messages of a thread, oldest first; reading them marks them read.
#[utoipa::path(get, path = "/v1/threads/{id}/messages", tag = "messaging", params(PageParams), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Message>)), (status = 401), (status = 404)))]
async fn list_messages(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<Message>>> {
    let mut tx = state.db.begin().await?;
    find_visible(&mut tx, &user, id).await?;
    const SQL: &str = "SELECT id, thread_id, author_id, body, created_at FROM messages WHERE thread_id = $1 \
        AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3";
    let rows: Vec<Message> = on_tx!(&mut tx, conn => sqlx::query_as(SQL).bind(id).bind(page.after()?)
        .bind(page.fetch_limit()?).fetch_all(&mut **conn).await)?;
    if let Some(last) = rows.iter().map(|m| m.created_at).max() {
        const READ: &str = "UPDATE thread_participants SET last_read_at = $3 WHERE thread_id = $1 AND user_id = $2 \
            AND (last_read_at IS NULL OR last_read_at < $3)";
        on_tx!(&mut tx, conn => sqlx::query(READ).bind(id).bind(user.id).bind(last).execute(&mut **conn).await.map(|_| ()))?;
    }
    tx.commit().await?;
    Ok(Json(Page::from_rows(rows, &page, |m| m.id)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    body: String,
}

/// Writes in a thread (participants and admins).
#[utoipa::path(post, path = "/v1/threads/{id}/messages", tag = "messaging", request_body = NewMessage, security(("bearer" = [])),
    responses((status = 201, body = Message), (status = 401), (status = 404), (status = 422)))]
async fn post_message(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Json(input): Json<NewMessage>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    let mut errors = Errors::default();
    let body = text(&mut errors, "body", &input.body, 10_000);
    let mut tx = state.db.begin().await?;
    find_visible(&mut tx, &user, id).await?;
    errors.into_result()?;
    let message = add_message(&mut tx, &state, &user, id, &body).await?;
    CommitMark::answer_with_json(201, &message);
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok((StatusCode::CREATED, Json(message)))
}

/// The `messages.digest` job: one email listing a user's unread, not yet announced messages.
pub async fn send_digest(state: &AppState, job: &Job) -> Result<(), JobError> {
    let user = job.payload.0["user_id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| JobError::Permanent("payload has no user_id".into()))?;
    let retry = |e: ApiError| JobError::Retry(e.to_string());
    let mut tx = state.db.begin().await.map_err(|e| JobError::Retry(e.to_string()))?;
    const SQL: &str = "SELECT t.subject, m.body, COALESCE(u.display_name, u.email), m.created_at FROM messages m \
        JOIN thread_participants p ON p.thread_id = m.thread_id AND p.user_id = $1 JOIN threads t ON t.id = m.thread_id \
        LEFT JOIN users u ON u.id = m.author_id WHERE (m.author_id IS NULL OR m.author_id <> $1) \
        AND (p.last_read_at IS NULL OR m.created_at > p.last_read_at) AND (p.notified_at IS NULL OR m.created_at > p.notified_at) \
        ORDER BY m.created_at LIMIT 20";
    let unread: Vec<(String, String, Option<String>, DateTime<Utc>)> =
        on_tx!(&mut tx, conn => sqlx::query_as(SQL).bind(user).fetch_all(&mut **conn).await)
            .map_err(|e| JobError::Retry(e.to_string()))?;
    let Some(newest) = unread.iter().map(|m| m.3).max() else { return Ok(()) };
    let Some(recipient) = super::recipient(&mut tx, user).await.map_err(retry)? else { return Ok(()) };
    let messages: Vec<_> = unread
        .iter()
        .map(|(subject, body, author, _)| {
            let excerpt: String = body.chars().take(300).collect();
            json!({"subject": subject, "author": author.clone().unwrap_or_else(|| "Cedar".into()), "excerpt": excerpt})
        })
        .collect();
    let email = Email {
        template: "new_message",
        to_address: recipient.email,
        to_name: recipient.name,
        user_id: Some(user),
        language: recipient.language,
        vars: json!({"count": messages.len(), "messages": messages}),
        dedupe_key: Some(format!("digest:{user}:{}", newest.timestamp_micros())),
        secret_link: None,
    };
    outbox::queue(&mut tx, &state.settings, email).await.map_err(retry)?;
    const NOTIFIED: &str = "UPDATE thread_participants SET notified_at = $2 WHERE user_id = $1";
    on_tx!(&mut tx, conn => sqlx::query(NOTIFIED).bind(user).bind(newest).execute(&mut **conn).await.map(|_| ()))
        .map_err(|e| JobError::Retry(e.to_string()))?;
    tx.commit().await.map_err(|e| JobError::Retry(e.to_string()))?;
    state.job_wakeup.notify_one();
    Ok(())
}
