//! Read models of the morning page: the day's lessons with names, open tasks, money and
//! health, each one query shaped for the page (the API's resources carry ids; the page needs
//! names). Scoped like the API: a teacher sees their own lessons and tasks, nothing else.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::{Value, json};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use super::i18n::Lang;
use crate::app::AppState;
use crate::auth::CurrentUser;
use crate::on_db;

type LessonRow =
    (Uuid, DateTime<Utc>, DateTime<Utc>, String, Option<String>, bool, bool, String, String, Option<String>);

/// The day's lessons (a teacher: their own), by room and by teacher, with what is left to mark.
pub async fn today(state: &AppState, user: &CurrentUser, day: NaiveDate, lang: Lang) -> anyhow::Result<Value> {
    const LESSONS: &str = "SELECT l.id, l.starts_at, l.ends_at, l.status, l.attendance, l.is_makeup, \
        l.substitute_for IS NOT NULL, COALESCE(s.preferred_name, s.first_name) || ' ' || s.last_name, \
        t.first_name || ' ' || t.last_name, r.name \
        FROM lessons l JOIN students s ON s.id = l.student_id JOIN teachers t ON t.id = l.teacher_id \
        LEFT JOIN rooms r ON r.id = l.room_id \
        WHERE l.starts_at < $1 AND l.ends_at > $2 AND ($3 IS NULL OR l.teacher_id = $3) \
        ORDER BY l.starts_at, t.last_name, t.first_name";
    let zone = state.settings.timezone;
    let midnight = |d: NaiveDate| crate::time::at_local(zone, d, chrono::NaiveTime::MIN);
    let (from, to) = (midnight(day), midnight(day.succ_opt().unwrap_or(day)));
    // Admins: every teacher; a teacher: their own (an account with no teacher record: none).
    let teacher = user.row_filter().map_or(Some(Uuid::nil()), |(_, teacher)| teacher);
    let rows: Vec<LessonRow> =
        on_db!(&state.db, pool => sqlx::query_as(LESSONS).bind(to).bind(from).bind(teacher).fetch_all(pool).await)?;
    let now = Utc::now();
    let labels = lang.labels();
    let lessons: Vec<Value> = rows
        .into_iter()
        .map(|(id, starts, ends, status, attendance, makeup, substitute, student, teacher, room)| {
            let cancelled = status == "cancelled";
            let absent = cancelled || attendance.as_deref().is_some_and(|a| a != "present");
            let to_take = !cancelled && attendance.is_none() && ends <= now;
            let shown = match (&attendance, cancelled) {
                (Some(a), _) => labels.get(a.as_str()).copied().unwrap_or(a.as_str()).to_owned(),
                (None, true) => labels["cancelled"].to_owned(),
                (None, false) => String::new(),
            };
            json!({
                "id": id,
                "time": format!("{}–{}", starts.with_timezone(&zone).format("%H:%M"), ends.with_timezone(&zone).format("%H:%M")),
                "student": student, "teacher": teacher, "room": room.unwrap_or_else(|| labels["no_room"].to_owned()),
                "status": status, "attendance": attendance, "attendance_label": shown,
                "makeup": makeup, "substitute": substitute, "absent": absent, "to_take": to_take,
            })
        })
        .collect();
    const EXCEPTIONS: &str = "SELECT c.kind, c.name, t.first_name || ' ' || t.last_name, c.starts_on, c.ends_on \
        FROM calendar_exceptions c LEFT JOIN teachers t ON t.id = c.teacher_id \
        WHERE c.kind IN ('closure', 'time_off') AND c.starts_on <= $1 AND c.ends_on >= $1 ORDER BY c.kind, c.name";
    let closures: Vec<(String, String, Option<String>, NaiveDate, NaiveDate)> =
        on_db!(&state.db, pool => sqlx::query_as(EXCEPTIONS).bind(day).fetch_all(pool).await)?;
    let by = |key: &str| -> Vec<Value> {
        let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
        for lesson in &lessons {
            let name = lesson[key].as_str().unwrap_or("").to_owned();
            match groups.iter_mut().find(|(n, _)| *n == name) {
                Some((_, list)) => list.push(lesson.clone()),
                None => groups.push((name, vec![lesson.clone()])),
            }
        }
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        groups.into_iter().map(|(name, lessons)| json!({"name": name, "lessons": lessons})).collect()
    };
    Ok(json!({
        "date": day.to_string(),
        "long_date": lang.long_date(day),
        "previous": day.pred_opt().map(|d| d.to_string()),
        "next": day.succ_opt().map(|d| d.to_string()),
        "is_today": day == crate::time::today(zone),
        "count": lessons.len(),
        "by_room": by("room"),
        "by_teacher": by("teacher"),
        "to_take": lessons.iter().filter(|l| l["to_take"] == true).cloned().collect::<Vec<_>>(),
        "absences": lessons.iter().filter(|l| l["absent"] == true).cloned().collect::<Vec<_>>(),
        "closures": closures.into_iter().map(|(kind, name, teacher, from, to)| json!({
            "kind": kind, "name": name, "teacher": teacher, "from": from.to_string(), "to": to.to_string()}))
            .collect::<Vec<_>>(),
    }))
}

/// Open tasks (a teacher: those assigned to them), overdue first, then by due date.
pub async fn tasks(state: &AppState, user: &CurrentUser, today: NaiveDate) -> anyhow::Result<Value> {
    const SQL: &str = "SELECT id, title, detail, due_on FROM tasks WHERE status = 'open' \
        AND ($1 IS NULL OR assignee_id = $1) \
        ORDER BY CASE WHEN due_on IS NULL THEN 1 ELSE 0 END, due_on, created_at LIMIT 100";
    let assignee = (user.role != crate::auth::Role::Admin).then_some(user.id);
    let rows: Vec<(Uuid, String, Option<String>, Option<NaiveDate>)> =
        on_db!(&state.db, pool => sqlx::query_as(SQL).bind(assignee).fetch_all(pool).await)?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(id, title, detail, due)| {
            let state = match due {
                Some(d) if d < today => "overdue",
                Some(d) if d == today => "due_today",
                Some(_) => "later",
                None => "no_due_date",
            };
            json!({"id": id, "title": title, "detail": detail, "due_on": due.map(|d| d.to_string()), "due_state": state})
        })
        .collect();
    let overdue = items.iter().filter(|t| t["due_state"] == "overdue").count();
    Ok(json!({"items": items, "overdue": overdue}))
}

/// Open and overdue invoices, this month's failed card payments and billing run (admins).
pub async fn money(state: &AppState, today: NaiveDate, lang: Lang) -> anyhow::Result<Value> {
    const OPEN: &str = "SELECT COUNT(*), CAST(COALESCE(SUM(total_cents - amount_paid_cents), 0) AS BIGINT), \
        COALESCE(SUM(CASE WHEN due_date < $1 THEN 1 ELSE 0 END), 0), \
        CAST(COALESCE(SUM(CASE WHEN due_date < $1 THEN total_cents - amount_paid_cents ELSE 0 END), 0) AS BIGINT) \
        FROM invoices WHERE status IN ('open', 'partially_paid')";
    const OVERDUE: &str = "SELECT i.id, i.number, f.name, i.total_cents - i.amount_paid_cents, i.due_date \
        FROM invoices i JOIN families f ON f.id = i.family_id \
        WHERE i.status IN ('open', 'partially_paid') AND i.due_date < $1 ORDER BY i.due_date, i.number LIMIT 50";
    const FAILED: &str = "SELECT payload, received_at FROM stripe_events \
        WHERE type = 'payment_intent.payment_failed' AND received_at >= $1 ORDER BY received_at DESC LIMIT 20";
    const INVOICE: &str =
        "SELECT i.number, f.name FROM invoices i JOIN families f ON f.id = i.family_id WHERE i.id = $1";
    const RUN: &str = "SELECT r.period_start, r.period_end, r.created_at, \
        (SELECT COUNT(*) FROM invoices i WHERE i.billing_run_id = r.id) \
        FROM billing_runs r WHERE r.period_start <= $2 AND r.period_end >= $1 ORDER BY r.created_at DESC LIMIT 1";
    let zone = state.settings.timezone;
    let (open, open_cents, overdue, overdue_cents): (i64, i64, i64, i64) =
        on_db!(&state.db, pool => sqlx::query_as(OPEN).bind(today).fetch_one(pool).await)?;
    let overdue_rows: Vec<(Uuid, String, String, i64, NaiveDate)> =
        on_db!(&state.db, pool => sqlx::query_as(OVERDUE).bind(today).fetch_all(pool).await)?;
    let month_start = crate::workflows::ai::month_start(Utc::now(), zone);
    let failed_rows: Vec<(SqlJson<Value>, DateTime<Utc>)> =
        on_db!(&state.db, pool => sqlx::query_as(FAILED).bind(month_start).fetch_all(pool).await)?;
    let mut failed = Vec::new();
    for (payload, at) in failed_rows {
        let intent = &payload.0["data"]["object"];
        let invoice = intent["metadata"]["invoice_id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
        let named: Option<(String, String)> = match invoice {
            Some(id) => on_db!(&state.db, pool => sqlx::query_as(INVOICE).bind(id).fetch_optional(pool).await)?,
            None => None,
        };
        let error = &intent["last_payment_error"];
        failed.push(json!({
            "when": at.with_timezone(&zone).format("%Y-%m-%d %H:%M").to_string(),
            "amount": lang.money(intent["amount"].as_i64().unwrap_or(0)),
            "invoice": named.as_ref().map(|n| n.0.clone()), "family": named.map(|n| n.1),
            "reason": error["decline_code"].as_str().or(error["code"].as_str()).unwrap_or("-"),
        }));
    }
    let first = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap_or(today);
    let run: Option<(NaiveDate, NaiveDate, DateTime<Utc>, i64)> =
        on_db!(&state.db, pool => sqlx::query_as(RUN).bind(first).bind(today).fetch_optional(pool).await)?;
    Ok(json!({
        "open": open, "open_amount": lang.money(open_cents),
        "overdue": overdue, "overdue_amount": lang.money(overdue_cents),
        "overdue_items": overdue_rows.into_iter().map(|(id, number, family, balance, due)| json!({
            "id": id, "number": number, "family": family, "balance": lang.money(balance), "due_date": due.to_string(),
            "days_late": (today - due).num_days()})).collect::<Vec<_>>(),
        "failed": failed,
        "run": run.map(|(start, end, at, invoices)| json!({"period": format!("{start} – {end}"),
            "at": at.with_timezone(&zone).format("%Y-%m-%d %H:%M").to_string(), "invoices": invoices})),
    }))
}

/// (id, queue, kind, attempts, last error, when).
type DeadJob = (Uuid, String, String, i32, Option<String>, DateTime<Utc>);
/// (id, template, to, subject, attempts, last error, when).
type DeadEmail = (Uuid, String, String, String, i32, Option<String>, DateTime<Utc>);

/// Dead jobs and emails (with their last error) and the month's AI spend (admins).
pub async fn health(state: &AppState, lang: Lang) -> anyhow::Result<Value> {
    const JOBS: &str = "SELECT id, queue, kind, attempts, last_error, updated_at FROM jobs WHERE status = 'dead' \
        ORDER BY updated_at DESC LIMIT 20";
    const EMAILS: &str = "SELECT id, template, to_address, subject, attempts, last_error, created_at FROM outbox \
        WHERE status = 'dead' ORDER BY created_at DESC LIMIT 20";
    let zone = state.settings.timezone;
    let at = |t: DateTime<Utc>| t.with_timezone(&zone).format("%Y-%m-%d %H:%M").to_string();
    let jobs: Vec<DeadJob> = on_db!(&state.db, pool => sqlx::query_as(JOBS).fetch_all(pool).await)?;
    let emails: Vec<DeadEmail> = on_db!(&state.db, pool => sqlx::query_as(EMAILS).fetch_all(pool).await)?;
    let spent = state.ai.month_spend(state).await?;
    let budget = state.ai.monthly_budget_micros();
    let cents = |micros: i64| micros / 10_000;
    Ok(json!({
        "jobs": jobs.into_iter().map(|(id, queue, kind, attempts, error, updated)| json!({"id": id, "queue": queue,
            "kind": kind, "attempts": attempts, "error": error, "when": at(updated)})).collect::<Vec<_>>(),
        "emails": emails.into_iter().map(|(id, template, to, subject, attempts, error, created)| json!({"id": id,
            "template": template, "to": to, "subject": subject, "attempts": attempts, "error": error, "when": at(created)}))
            .collect::<Vec<_>>(),
        "ai": {
            "spent": lang.money(cents(spent)),
            "budget": (budget > 0).then(|| lang.money(cents(budget))),
            "percent": if budget > 0 { (spent * 100 / budget).min(999) } else { 0 },
        },
    }))
}
