//! `/console`: the owner's morning in one page, served by Cedar itself. Server-rendered HTML
//! (minijinja templates compiled into the binary), a few lines of vendored JavaScript, no
//! build step and nothing from a CDN.
//!
//! Reads are page-shaped queries (`views`) or the API's own answers; every change goes
//! through the API in process (`api`), with the signed-in user's token, so the console is
//! held to exactly the rules, audit trail and idempotency of the JSON API. See
//! docs/console.md.

pub mod api;
mod forms;
mod i18n;
mod pages;
mod reviews;
mod session;
mod views;

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{FromRef, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use serde_json::{Value, json};

use crate::app::AppState;
use api::InternalApi;
pub use i18n::Lang;
use session::{NoSession, Session};

/// The console's routes; `api` is the JSON API (with its middleware) they act through.
pub fn router(api: Router) -> Router<AppState> {
    Router::new()
        .route("/console", get(pages::morning))
        .route("/console/sign-in", get(pages::sign_in_page).post(pages::sign_in))
        .route("/console/sign-out", post(pages::sign_out))
        .route("/console/language", post(pages::set_language))
        .route("/console/reviews/{id}", get(pages::review))
        .route("/console/reviews/{id}/approve", post(pages::approve))
        .route("/console/reviews/{id}/reject", post(pages::reject))
        .route("/console/tasks/{id}/done", post(pages::task_done))
        .route("/console/lessons/{id}/attendance", post(pages::attendance))
        .route("/console/jobs/{id}/retry", post(pages::retry_job))
        .route("/console/emails/{id}/retry", post(pages::retry_email))
        .route("/console/static/{file}", get(asset))
        .route("/console/{*rest}", get(not_found))
        .layer(axum::Extension(InternalApi(api)))
}

/// A signed-in admin or teacher; anyone else is sent to sign in (or told the console is for
/// staff).
pub struct Staff(pub Session);

impl<S> FromRequestParts<S> for Staff
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let api = parts.extensions.get::<InternalApi>().cloned().expect("the console router adds the API");
        match session::current(&app, &api, parts).await {
            Ok(session) => Ok(Self(session)),
            Err(NoSession::SignIn { cookies }) => {
                let next = parts.uri.path_and_query().map_or("/console", |p| p.as_str());
                let target = format!(
                    "/console/sign-in?next={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                );
                Err(redirect(&target, cookies))
            }
            Err(NoSession::NotStaff { lang }) => {
                let context = json!({"t": lang.labels(), "lang": lang.code(), "title": lang.labels()["staff_only"]});
                Err(page(StatusCode::FORBIDDEN, "error.html", &context, Vec::new()))
            }
        }
    }
}

/// What every page's content security policy allows: its own stylesheet and script only.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An HTML page with the session's cookies.
pub fn html(status: StatusCode, body: String, cookies: Vec<HeaderValue>) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

/// 303 See Other to `target` (always a console path).
pub fn redirect(target: &str, cookies: Vec<HeaderValue>) -> Response {
    let target = if safe_target(target) { target } else { "/console" };
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_str(target).unwrap_or(HeaderValue::from_static("/console")));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

/// Only the console's own pages may be a redirect's target (no open redirects).
fn safe_target(target: &str) -> bool {
    target.starts_with("/console")
        && !target.starts_with("//")
        && !target.contains("\\")
        && !target.chars().any(char::is_control)
}

/// The template environment: every template is compiled into the binary; `.html` files are
/// auto-escaped.
fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for (name, source) in [
            ("base.html", include_str!("templates/base.html")),
            ("sign_in.html", include_str!("templates/sign_in.html")),
            ("morning.html", include_str!("templates/morning.html")),
            ("review.html", include_str!("templates/review.html")),
            ("error.html", include_str!("templates/error.html")),
        ] {
            env.add_template(name, source).expect("console templates compile");
        }
        env.add_function("nonce", session::random_token);
        env
    })
}

/// Renders template `name` with `context` into a page with the session's cookies; a template
/// error is a 500 (and a log line), never a half-drawn page.
pub fn page(status: StatusCode, name: &str, context: &Value, cookies: Vec<HeaderValue>) -> Response {
    match templates().get_template(name).and_then(|t| t.render(context)) {
        Ok(body) => html(status, body, cookies),
        Err(error) => {
            tracing::error!(template = name, error = %format!("{error:#}"), "console template failed");
            let body =
                "<!doctype html><title>Cedar</title><p>This page could not be drawn; the error is in the log.</p>";
            html(StatusCode::INTERNAL_SERVER_ERROR, body.into(), cookies)
        }
    }
}

/// The fields every page shares: labels, language, the CSRF value and who is signed in.
pub fn base_context(session: &Session) -> serde_json::Map<String, Value> {
    let mut context = serde_json::Map::new();
    context.insert("t".into(), json!(session.lang.labels()));
    context.insert("lang".into(), json!(session.lang.code()));
    context.insert("other_lang".into(), json!(if session.lang == Lang::En { "fr" } else { "en" }));
    context.insert("csrf".into(), json!(session.csrf));
    context.insert(
        "user".into(),
        json!({"email": session.user.email, "role": session.user.role.as_str(),
        "admin": session.is_admin()}),
    );
    context
}

/// The vendored stylesheet and script, cached for a day.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (include_str!("static/console.css"), "text/css; charset=utf-8"),
        "console.js" => (include_str!("static/console.js"), "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    response
}

async fn not_found(headers: HeaderMap) -> Response {
    let lang = session::language(&headers);
    let context = json!({"t": lang.labels(), "lang": lang.code(), "title": lang.labels()["not_found"]});
    page(StatusCode::NOT_FOUND, "error.html", &context, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_inside_the_console() {
        assert!(safe_target("/console/reviews/1?done=approved"));
        assert!(!safe_target("//evil.example/console"));
        assert!(!safe_target("https://evil.example"));
        assert!(!safe_target("/console\\@evil"));
    }

    #[test]
    fn every_template_compiles() {
        for name in ["base.html", "sign_in.html", "morning.html", "review.html", "error.html"] {
            templates().get_template(name).unwrap();
        }
    }
}
