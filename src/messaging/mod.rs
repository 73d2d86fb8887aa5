//! Messaging: threads between families and the school, email templates (en/fr), the email
//! outbox with its transports, email preferences, and the emails other slices trigger
//! (see docs/messaging.md).

mod defaults;
pub mod outbox;
pub mod preferences;
pub mod reminders;
pub mod templates;
pub mod threads;
pub mod transport;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

pub use outbox::Email;
pub use threads::{BILLING_SUBJECT, billing_messages, post_to_billing_thread};

use crate::app::AppState;
use crate::config::Settings;
use crate::db::Tx;
use crate::error::ApiResult;
use crate::jobs::{JobError, Registry, Schedule};
use crate::on_tx;

/// Queue of message digests and reminders (email delivery has its own, `email`).
pub const QUEUE: &str = "messaging";

pub fn router() -> OpenApiRouter<AppState> {
    threads::router().merge(templates::router()).merge(outbox::router()).merge(preferences::router())
}

/// The job handlers of this slice.
pub fn jobs(registry: Registry<AppState>) -> Registry<AppState> {
    registry
        .on(outbox::QUEUE, outbox::SEND, |state: AppState, job| async move { outbox::deliver(&state, &job).await })
        .on(QUEUE, threads::DIGEST, |state: AppState, job| async move { threads::send_digest(&state, &job).await })
        .on(QUEUE, reminders::LESSONS, |state: AppState, _job| async move {
            reminders::lesson_reminders(&state).await.map(|_| ()).map_err(|e| JobError::Retry(format!("{e:#}")))
        })
        .on(QUEUE, reminders::ATTENDANCE, |state: AppState, _job| async move {
            reminders::attendance_nudges(&state).await.map(|_| ()).map_err(|e| JobError::Retry(format!("{e:#}")))
        })
}

/// Lesson reminders every 10 minutes; the teachers' attendance nudge at 19:00.
pub fn schedules() -> Vec<Schedule> {
    vec![
        Schedule::new("lesson-reminders", QUEUE, reminders::LESSONS, "*/10 * * * *"),
        Schedule::new("attendance-nudges", QUEUE, reminders::ATTENDANCE, "0 19 * * *"),
    ]
}

/// Where a user's email goes and in which language; a parent without a display name is
/// greeted by their family's name.
pub struct Recipient {
    pub email: String,
    pub name: Option<String>,
    /// The family's preferred language for parents; English otherwise.
    pub language: String,
}

pub async fn recipient(tx: &mut Tx, user: Uuid) -> ApiResult<Option<Recipient>> {
    const SQL: &str = "SELECT u.email, COALESCE(u.display_name, f.name), COALESCE(f.preferred_language, 'en') FROM users u \
        LEFT JOIN families f ON f.id = u.family_id WHERE u.id = $1 AND u.status = 'active'";
    let row: Option<(String, Option<String>, String)> =
        on_tx!(tx, conn => sqlx::query_as(SQL).bind(user).fetch_optional(&mut **conn).await)?;
    Ok(row.map(|(email, name, language)| Recipient { email, name, language }))
}

/// Emails one user (a sign-in link, a nudge).
pub async fn email_user(
    tx: &mut Tx,
    settings: &Settings,
    user: Uuid,
    template: &'static str,
    vars: Value,
    dedupe_key: Option<String>,
) -> ApiResult<Option<Uuid>> {
    email_one(tx, settings, user, template, vars, dedupe_key, None).await
}

/// Like [`email_user`] for an email whose `{{ link }}` carries a one-time token: the link
/// never rests in the stored body (see [`Email::secret_link`]).
pub async fn email_user_with_link(
    tx: &mut Tx,
    settings: &Settings,
    user: Uuid,
    template: &'static str,
    mut vars: Value,
    link: String,
) -> ApiResult<Option<Uuid>> {
    vars["link"] = Value::from(outbox::SECRET_LINK);
    email_one(tx, settings, user, template, vars, None, Some(link)).await
}

async fn email_one(
    tx: &mut Tx,
    settings: &Settings,
    user: Uuid,
    template: &'static str,
    vars: Value,
    dedupe_key: Option<String>,
    secret_link: Option<String>,
) -> ApiResult<Option<Uuid>> {
    let Some(recipient) = recipient(tx, user).await? else { return Ok(None) };
    let email = Email {
        template,
        to_address: recipient.email,
        to_name: recipient.name,
        user_id: Some(user),
        language: recipient.language,
        vars,
        dedupe_key,
        secret_link,
    };
    outbox::queue(tx, settings, email).await
}

/// Emails every guardian of a family in the family's language (`vars` gets the language) (or the family's own address
/// when it has no guardian accounts). `dedupe` keys are suffixed with the recipient.
pub async fn email_family(
    tx: &mut Tx,
    settings: &Settings,
    family: Uuid,
    template: &'static str,
    vars: impl Fn(&str) -> Value,
    dedupe: Option<&str>,
) -> ApiResult<usize> {
    const GUARDIANS: &str = "SELECT u.id, u.email, COALESCE(u.display_name, f.name), f.preferred_language FROM users u \
        JOIN families f ON f.id = u.family_id WHERE u.family_id = $1 AND u.role = 'parent' AND u.status = 'active' ORDER BY u.id";
    const FAMILY: &str = "SELECT email, name, preferred_language FROM families WHERE id = $1";
    let guardians: Vec<(Uuid, String, Option<String>, String)> =
        on_tx!(tx, conn => sqlx::query_as(GUARDIANS).bind(family).fetch_all(&mut **conn).await)?;
    let mut recipients: Vec<(Option<Uuid>, String, Option<String>, String)> =
        guardians.into_iter().map(|(id, email, name, language)| (Some(id), email, name, language)).collect();
    if recipients.is_empty() {
        let row: Option<(Option<String>, String, String)> =
            on_tx!(tx, conn => sqlx::query_as(FAMILY).bind(family).fetch_optional(&mut **conn).await)?;
        if let Some((Some(email), name, language)) = row {
            recipients.push((None, email, Some(name), language));
        }
    }
    let mut queued = 0;
    for (user, address, name, language) in recipients {
        let email = Email {
            template,
            dedupe_key: dedupe.map(|d| format!("{d}:{address}")),
            to_address: address,
            to_name: name,
            user_id: user,
            vars: vars(&language),
            language,
            secret_link: None,
        };
        if outbox::queue(tx, settings, email).await?.is_some() {
            queued += 1;
        }
    }
    Ok(queued)
}

/// "Tuesday 8 September at 16:00" / "mardi 8 septembre à 16 h 00", in the school's zone.
pub fn when(at: DateTime<Utc>, tz: chrono_tz::Tz, language: &str) -> String {
    let local = at.with_timezone(&tz);
    let (day, month) = (local.weekday().num_days_from_monday() as usize, local.month0() as usize);
    if language == "fr" {
        let (day, month) = (crate::time::weekday_name(day, true), crate::time::month_name(month, true));
        format!("{day} {} {month} à {} h {:02}", local.day(), local.hour(), local.minute())
    } else {
        let (day, month) = (crate::time::weekday_name(day, false), crate::time::month_name(month, false));
        format!("{day} {} {month} at {:02}:{:02}", local.day(), local.hour(), local.minute())
    }
}

/// Template variables for a recipient language.
type VarsByLanguage<'a> = Box<dyn Fn(&str) -> Value + Send + Sync + 'a>;

/// What happened to a lesson, for its family.
pub enum LessonNotice {
    Moved { before: DateTime<Utc>, after: DateTime<Utc> },
    Cancelled { at: DateTime<Utc> },
}

/// Emails the family of `student` that a future lesson moved or was cancelled, in `tx`.
/// `following`: the change also applies to the later lessons of the series.
pub async fn lesson_notice(
    tx: &mut Tx,
    settings: &Settings,
    student: Uuid,
    notice: LessonNotice,
    following: bool,
) -> ApiResult<()> {
    let first = match notice {
        LessonNotice::Moved { before, .. } => before,
        LessonNotice::Cancelled { at } => at,
    };
    if first <= Utc::now() {
        return Ok(());
    }
    const SQL: &str = "SELECT family_id, COALESCE(preferred_name, first_name) FROM students WHERE id = $1";
    let Some((family, name)): Option<(Uuid, String)> =
        on_tx!(tx, conn => sqlx::query_as(SQL).bind(student).fetch_optional(&mut **conn).await)?
    else {
        return Ok(());
    };
    let tz = settings.timezone;
    let and_following = |language: &str, text: String| match (following, language) {
        (false, _) => text,
        (true, "fr") => format!("{text} (et les cours suivants)"),
        (true, _) => format!("{text} (and the following lessons)"),
    };
    let (template, vars): (&'static str, VarsByLanguage<'_>) = match notice {
        LessonNotice::Moved { before, after } => (
            "lesson_changed",
            Box::new(move |language: &str| {
                serde_json::json!({"student": name, "before": and_following(language, when(before, tz, language)),
                    "after": when(after, tz, language)})
            }),
        ),
        LessonNotice::Cancelled { at } => (
            "lesson_cancelled",
            Box::new(
                move |language: &str| serde_json::json!({"student": name, "when": and_following(language, when(at, tz, language)), "reason": null}),
            ),
        ),
    };
    email_family(tx, settings, family, template, vars, None).await?;
    Ok(())
}
