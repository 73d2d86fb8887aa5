//! The console's pages and form actions. Every action checks the form's CSRF field, acts
//! through the API with the user's token and the form's one-time nonce (a double submit acts
//! once), then redirects back; a refusal is shown with the API's own explanation.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use chrono::{NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::api::{Answer, Call, InternalApi};
use super::forms::FormData;
use super::session::{self, Session};
use super::{Staff, base_context, page, redirect, reviews, views};
use crate::app::AppState;
use crate::auth::Role;

#[derive(Debug, Deserialize)]
pub struct MorningQuery {
    day: Option<NaiveDate>,
    done: Option<String>,
}

/// The morning page: the review inbox, the day, tasks, and (admins) money and health.
pub async fn morning(
    State(state): State<AppState>,
    Extension(api): Extension<InternalApi>,
    Staff(session): Staff,
    Query(query): Query<MorningQuery>,
) -> Response {
    let zone = state.settings.timezone;
    let today = crate::time::today(zone);
    let day = query.day.unwrap_or(today);
    let answer = api.call(&session.headers, session.peer, session.get("/v1/reviews?limit=100")).await;
    let now = Utc::now();
    let inbox: Vec<Value> =
        answer.body["items"].as_array().into_iter().flatten().map(|r| reviews::summary(r, session.lang, now)).collect();
    let loaded = async {
        let today_view = views::today(&state, &session.user, day, session.lang).await?;
        let tasks = views::tasks(&state, &session.user, today).await?;
        let (money, health) = if session.is_admin() {
            (views::money(&state, today, session.lang).await?, views::health(&state, session.lang).await?)
        } else {
            (Value::Null, Value::Null)
        };
        anyhow::Ok((today_view, tasks, money, health))
    };
    let (today_view, tasks, money, health) = match loaded.await {
        Ok(parts) => parts,
        Err(error) => return failure_page(&session, StatusCode::INTERNAL_SERVER_ERROR, &format!("{error:#}")),
    };
    let mut context = base_context(&session);
    context.insert("inbox".into(), json!(inbox));
    context.insert("day".into(), today_view);
    context.insert("tasks".into(), tasks);
    context.insert("money".into(), money);
    context.insert("health".into(), health);
    context.insert("done".into(), json!(done_message(&session, query.done.as_deref())));
    context.insert(
        "here".into(),
        json!(match query.day {
            Some(d) => format!("/console?day={d}"),
            None => "/console".to_owned(),
        }),
    );
    let cookies = session.cookies.clone();
    page(StatusCode::OK, "morning.html", &Value::Object(context), cookies)
}

#[derive(Debug, Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

/// One review with its domain context and the forms to decide it.
pub async fn review(
    Extension(api): Extension<InternalApi>,
    Staff(session): Staff,
    Path(id): Path<Uuid>,
    Query(query): Query<DoneQuery>,
) -> Response {
    let answer = api.call(&session.headers, session.peer, session.get(format!("/v1/reviews/{id}"))).await;
    if !answer.ok() {
        return refused(&session, &answer, "/console");
    }
    let review = answer.body;
    let family = match review["subject"]["family_id"].as_str() {
        Some(family) if reviews::kind(&review) == "enrollment" => {
            let found = api.call(&session.headers, session.peer, session.get(format!("/v1/families/{family}"))).await;
            found.ok().then_some(found.body)
        }
        _ => None,
    };
    let mut context = base_context(&session);
    context.insert("summary".into(), reviews::summary(&review, session.lang, Utc::now()));
    context.insert("details".into(), reviews::details(&review, family.as_ref(), session.lang));
    context.insert("pending".into(), json!(review["status"] == "pending"));
    context.insert("review".into(), review);
    context.insert("done".into(), json!(done_message(&session, query.done.as_deref())));
    let cookies = session.cookies.clone();
    page(StatusCode::OK, "review.html", &Value::Object(context), cookies)
}

/// Approves a review with the reviewer's edits (the chosen option, edited text, the moves
/// kept).
pub async fn approve(
    Extension(api): Extension<InternalApi>,
    Staff(session): Staff,
    Path(id): Path<Uuid>,
    form: FormData,
) -> Response {
    if let Some(refusal) = check_csrf(&session, &form) {
        return refusal;
    }
    let here = format!("/console/reviews/{id}");
    let answer = api.call(&session.headers, session.peer, session.get(format!("/v1/reviews/{id}"))).await;
    if !answer.ok() {
        return refused(&session, &answer, "/console");
    }
    let edits = match reviews::edits(&answer.body, &form) {
        Ok(edits) => edits,
        Err(message) => return failure_page(&session, StatusCode::UNPROCESSABLE_ENTITY, &message),
    };
    let body = if edits.as_object().is_some_and(|e| e.is_empty()) { json!({}) } else { json!({"edits": edits}) };
    let call = session.send(Method::POST, format!("/v1/reviews/{id}/approve"), body).once(form.get("nonce"));
    let answer = api.call(&session.headers, session.peer, call).await;
    if !answer.ok() {
        return refused(&session, &answer, &here);
    }
    redirect("/console?done=approved#inbox", session.cookies)
}

/// Rejects a review; the reason is required (it reaches the family or the log).
pub async fn reject(
    Extension(api): Extension<InternalApi>,
    Staff(session): Staff,
    Path(id): Path<Uuid>,
    form: FormData,
) -> Response {
    if let Some(refusal) = check_csrf(&session, &form) {
        return refusal;
    }
    let reason = form.get("reason").unwrap_or("").to_owned();
    let call = session
        .send(Method::POST, format!("/v1/reviews/{id}/reject"), json!({"reason": reason}))
        .once(form.get("nonce"));
    let answer = api.call(&session.headers, session.peer, call).await;
    if !answer.ok() {
        return refused(&session, &answer, &format!("/console/reviews/{id}"));
    }
    redirect("/console?done=rejected#inbox", session.cookies)
}

/// Closes a task.
pub async fn task_done(
    Extension(api): Extension<InternalApi>,
    Staff(session): Staff,
    Path(id): Path<Uuid>,
    form: FormData,
) -> Response {
    let call = session.send(Method::PATCH, format!("/v1/tasks/{id}"), json!({"status": "done"}));
    act(&api, &session, &form, call, "task", "#tasks").await
}

/// Marks a lesson's attendance.
pub async fn attendance(
    Extension(api): Extension<InternalApi>,
    Staff(session): Staff,
    Path(id): Path<Uuid>,
    form: FormData,
) -> Response {
    let status = form.get("status").unwrap_or("").to_owned();
    let call = session.send(Method::POST, format!("/v1/lessons/{id}/attendance"), json!({"status": status}));
    act(&api, &session, &form, call, "attendance", "#today").await
}

/// Puts a dead job back in its queue.
pub async fn retry_job(
    Extension(api): Extension<InternalApi>,
    Staff(session): Staff,
    Path(id): Path<Uuid>,
    form: FormData,
) -> Response {
    let call = session.send(Method::POST, format!("/v1/jobs/{id}/retry"), json!({}));
    act(&api, &session, &form, call, "retry", "#health").await
}

/// Sends a dead email again.
pub async fn retry_email(
    Extension(api): Extension<InternalApi>,
    Staff(session): Staff,
    Path(id): Path<Uuid>,
    form: FormData,
) -> Response {
    let call = session.send(Method::POST, format!("/v1/outbox/{id}/retry"), json!({}));
    act(&api, &session, &form, call, "retry", "#health").await
}

/// The common shape of a small action: CSRF, the call (once per nonce), back to the page.
async fn act(
    api: &InternalApi,
    session: &Session,
    form: &FormData,
    call: Call<'_>,
    done: &str,
    anchor: &str,
) -> Response {
    if let Some(refusal) = check_csrf(session, form) {
        return refusal;
    }
    let back = back_of(form);
    let answer = api.call(&session.headers, session.peer, call.once(form.get("nonce"))).await;
    if !answer.ok() {
        return refused(session, &answer, &back);
    }
    let joiner = if back.contains('?') { '&' } else { '?' };
    redirect(&format!("{back}{joiner}done={done}{anchor}"), session.cookies.clone())
}

/// The page a form came from (its `back` field), if it is a console page.
fn back_of(form: &FormData) -> String {
    form.get("back").filter(|b| b.starts_with("/console") && !b.starts_with("//")).unwrap_or("/console").to_owned()
}

fn check_csrf(session: &Session, form: &FormData) -> Option<Response> {
    if session::csrf_ok(&session.headers, form.get("csrf")) {
        return None;
    }
    Some(failure_page(session, StatusCode::FORBIDDEN, session.lang.labels()["csrf_failed"]))
}

/// The API said no: its status and explanation, with a way back.
fn refused(session: &Session, answer: &Answer, back: &str) -> Response {
    let labels = session.lang.labels();
    let message = match answer.status {
        StatusCode::CONFLICT if back.starts_with("/console/reviews/") => {
            format!("{} {}", labels["already_decided"], answer.message())
        }
        StatusCode::NOT_FOUND => labels["not_found"].to_owned(),
        _ => answer.message(),
    };
    let mut context = base_context(session);
    context.insert("title".into(), json!(labels["error"]));
    context.insert("message".into(), json!(message));
    context.insert("back".into(), json!(back));
    page(answer.status, "error.html", &Value::Object(context), session.cookies.clone())
}

fn failure_page(session: &Session, status: StatusCode, message: &str) -> Response {
    let answer = Answer { status, body: json!({"detail": message}) };
    refused(session, &answer, "/console")
}

fn done_message(session: &Session, done: Option<&str>) -> Option<&'static str> {
    let key = match done? {
        "approved" => "done_approved",
        "rejected" => "done_rejected",
        "task" => "done_task",
        "retry" => "done_retry",
        "attendance" => "done_attendance",
        _ => return None,
    };
    session.lang.labels().get(key).copied()
}

#[derive(Debug, Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
}

/// The sign-in form (sets the CSRF cookie the form repeats).
pub async fn sign_in_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<SignInQuery>,
) -> Response {
    sign_in_form(&state, &headers, query.next.as_deref(), None, StatusCode::OK)
}

fn sign_in_form(
    state: &AppState,
    headers: &HeaderMap,
    next: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let lang = session::language(headers);
    let mut cookies = Vec::new();
    let csrf = session::csrf_of(state, headers, &mut cookies);
    let next = next.filter(|n| n.starts_with("/console") && !n.starts_with("//")).unwrap_or("/console");
    let context = json!({"t": lang.labels(), "lang": lang.code(), "csrf": csrf, "next": next, "error": error});
    page(status, "sign_in.html", &context, cookies)
}

/// Signs in with Cedar's own password grant; only admins and teachers get a console session.
pub async fn sign_in(
    State(state): State<AppState>,
    Extension(api): Extension<InternalApi>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: FormData,
) -> Response {
    let labels = session::language(&headers).labels();
    let next = form.get("next");
    if !session::csrf_ok(&headers, form.get("csrf")) {
        return sign_in_form(&state, &headers, next, Some(labels["csrf_failed"]), StatusCode::FORBIDDEN);
    }
    let credentials = json!({"email": form.get("email").unwrap_or(""), "password": form.get("password").unwrap_or("")});
    let call = Call::send(Method::POST, "/auth/v1/token?grant_type=password", None, credentials);
    let answer = api.call(&headers, Some(peer), call).await;
    if !answer.ok() {
        let message = if answer.status == StatusCode::BAD_REQUEST {
            labels["sign_in_failed"].to_owned()
        } else {
            answer.message()
        };
        return sign_in_form(&state, &headers, next, Some(&message), answer.status);
    }
    let token = answer.body["access_token"].as_str().unwrap_or("");
    match state.auth.authenticate(&state.db, token).await {
        Ok(user) if user.role != Role::Parent => {
            let cookies = session::grant_cookies(&state, &headers, &answer.body);
            redirect(next.unwrap_or("/console"), cookies)
        }
        _ => {
            // A parent's fresh session is ended at once: the console gave it no cookie.
            let logout = Call::send(Method::POST, "/auth/v1/logout?scope=local", Some(token), json!({}));
            api.call(&headers, Some(peer), logout).await;
            sign_in_form(&state, &headers, next, Some(labels["staff_only"]), StatusCode::FORBIDDEN)
        }
    }
}

/// Ends this browser's session (other devices stay signed in).
pub async fn sign_out(
    State(state): State<AppState>,
    Extension(api): Extension<InternalApi>,
    Staff(session): Staff,
    form: FormData,
) -> Response {
    if let Some(refusal) = check_csrf(&session, &form) {
        return refusal;
    }
    let call = session.send(Method::POST, "/auth/v1/logout?scope=local", json!({}));
    api.call(&session.headers, session.peer, call).await;
    redirect("/console/sign-in", session::clear_cookies(&state, &session.headers))
}

/// Switches the console's language and remembers it in the user's profile.
pub async fn set_language(
    State(state): State<AppState>,
    Extension(api): Extension<InternalApi>,
    Staff(session): Staff,
    form: FormData,
) -> Response {
    if let Some(refusal) = check_csrf(&session, &form) {
        return refusal;
    }
    let Some(lang) = form.get("lang").and_then(super::Lang::parse) else {
        return failure_page(&session, StatusCode::UNPROCESSABLE_ENTITY, "lang must be en or fr");
    };
    let current = api.call(&session.headers, session.peer, session.get("/auth/v1/user")).await;
    let mut metadata = current.body["user_metadata"].as_object().cloned().unwrap_or_default();
    metadata.insert("locale".into(), json!(lang.code()));
    let update = session.send(Method::PUT, "/auth/v1/user", json!({"data": metadata}));
    let saved = api.call(&session.headers, session.peer, update).await;
    if !saved.ok() {
        tracing::warn!(status = %saved.status, "console: the language preference was not saved to the profile");
    }
    let mut cookies = session.cookies.clone();
    let secure = session::is_https(&state, &session.headers);
    cookies.push(session::set_cookie(session::LANG, lang.code(), Some(365 * 24 * 3600), secure));
    redirect(&back_of(&form), cookies)
}
