//! The console's session: cookies set from Cedar's own token grant, refreshed with its refresh
//! grant, and a double-submit CSRF token on every form.
//!
//! - `cedar_session`: the access token (a JWT, verified on every request like a bearer token);
//! - `cedar_refresh`: the refresh token, used once the access token has expired;
//! - `cedar_csrf`: a random value every form repeats in a hidden field;
//! - `cedar_lang`: `en` or `fr`, the user's choice (also kept in their `user_metadata.locale`).
//!
//! All are `HttpOnly`, `SameSite=Lax`, `Path=/console`, and `Secure` when Cedar is reached
//! over HTTPS (`CEDAR_PUBLIC_URL` or the proxy's `X-Forwarded-Proto`).

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use serde_json::{Value, json};

use super::api::{Call, InternalApi};
use super::i18n::Lang;
use crate::app::AppState;
use crate::auth::{CurrentUser, Role};

pub const SESSION: &str = "cedar_session";
pub const REFRESH: &str = "cedar_refresh";
pub const CSRF: &str = "cedar_csrf";
pub const LANG: &str = "cedar_lang";

/// How long the browser keeps the refresh token (the server may end the session sooner).
const REFRESH_MAX_AGE_SECS: u64 = 14 * 24 * 3600;

/// The cookie named `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// Whether the browser reached Cedar over HTTPS.
pub fn is_https(state: &AppState, headers: &HeaderMap) -> bool {
    state.settings.public_url.starts_with("https://")
        || headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https")
}

/// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("cedar_invalid=; Max-Age=0"))
}

/// A fresh random token (CSRF values and form nonces).
pub fn random_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    hex::encode(bytes)
}

/// Who is looking at the console, and what the response must carry back.
pub struct Session {
    pub user: CurrentUser,
    pub token: String,
    pub lang: Lang,
    pub csrf: String,
    pub cookies: Vec<HeaderValue>,
    pub headers: HeaderMap,
    pub peer: Option<SocketAddr>,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    pub fn get(&self, path: impl Into<String>) -> Call<'_> {
        Call::get(path, &self.token)
    }

    pub fn send(&self, method: Method, path: impl Into<String>, body: Value) -> Call<'_> {
        Call::send(method, path, Some(&self.token), body)
    }
}

/// Why there is no session: the browser should sign in, or this user may not use the console.
pub enum NoSession {
    SignIn { cookies: Vec<HeaderValue> },
    NotStaff { lang: Lang },
}

/// The browser's language: its cookie, else its `Accept-Language`.
pub fn language(headers: &HeaderMap) -> Lang {
    if let Some(lang) = cookie(headers, LANG).and_then(Lang::parse) {
        return lang;
    }
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.trim_start().to_ascii_lowercase().starts_with("fr") { Lang::Fr } else { Lang::En }
}

/// The CSRF value the browser holds, or a new one (with the cookie that sets it).
pub fn csrf_of(state: &AppState, headers: &HeaderMap, cookies: &mut Vec<HeaderValue>) -> String {
    match cookie(headers, CSRF).filter(|v| v.len() == 48 && v.bytes().all(|b| b.is_ascii_hexdigit())) {
        Some(value) => value.to_owned(),
        None => {
            let value = random_token();
            cookies.push(set_cookie(CSRF, &value, None, is_https(state, headers)));
            value
        }
    }
}

/// Whether a form post is the console's own: the hidden field repeats the cookie, and the
/// browser does not say it came from another site.
pub fn csrf_ok(headers: &HeaderMap, submitted: Option<&str>) -> bool {
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        return false;
    }
    if let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if origin != "null" && origin_host != host {
            return false;
        }
    }
    match (cookie(headers, CSRF), submitted) {
        (Some(expected), Some(given)) => crate::http::constant_time_eq(expected.as_bytes(), given.as_bytes()),
        _ => false,
    }
}

/// The signed-in staff member behind the request's cookies, refreshing an expired access
/// token once with the refresh cookie.
pub async fn current(state: &AppState, api: &InternalApi, parts: &Parts) -> Result<Session, NoSession> {
    let headers = &parts.headers;
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let mut cookies = Vec::new();
    let csrf = csrf_of(state, headers, &mut cookies);
    let lang = language(headers);
    let mut token = cookie(headers, SESSION).map(str::to_owned);
    let mut user = match &token {
        Some(t) => state.auth.authenticate(&state.db, t).await.ok(),
        None => None,
    };
    if user.is_none()
        && let Some(refresh) = cookie(headers, REFRESH)
    {
        let call = Call::send(
            Method::POST,
            "/auth/v1/token?grant_type=refresh_token",
            None,
            json!({"refresh_token": refresh}),
        );
        let answer = api.call(headers, peer, call).await;
        if answer.ok()
            && let Some(access) = answer.body["access_token"].as_str()
        {
            user = state.auth.authenticate(&state.db, access).await.ok();
            cookies.extend(grant_cookies(state, headers, &answer.body));
            token = Some(access.to_owned());
        }
    }
    let (Some(user), Some(token)) = (user, token) else {
        if cookie(headers, SESSION).is_some() || cookie(headers, REFRESH).is_some() {
            cookies.extend(clear_cookies(state, headers));
        }
        return Err(NoSession::SignIn { cookies });
    };
    if user.role == Role::Parent {
        return Err(NoSession::NotStaff { lang });
    }
    Ok(Session { user, token, lang, csrf, cookies, headers: headers.clone(), peer })
}

/// The cookies a token grant's answer sets.
pub fn grant_cookies(state: &AppState, headers: &HeaderMap, grant: &Value) -> Vec<HeaderValue> {
    let secure = is_https(state, headers);
    let mut cookies = Vec::new();
    if let Some(access) = grant["access_token"].as_str() {
        let age = grant["expires_in"].as_u64().unwrap_or(3600);
        cookies.push(set_cookie(SESSION, access, Some(age), secure));
    }
    if let Some(refresh) = grant["refresh_token"].as_str() {
        cookies.push(set_cookie(REFRESH, refresh, Some(REFRESH_MAX_AGE_SECS), secure));
    }
    if let Some(lang) = grant["user"]["user_metadata"]["locale"].as_str().and_then(Lang::parse) {
        cookies.push(set_cookie(LANG, lang.code(), Some(365 * 24 * 3600), secure));
    }
    cookies
}

/// Cookies that end the session in the browser.
pub fn clear_cookies(state: &AppState, headers: &HeaderMap) -> Vec<HeaderValue> {
    let secure = is_https(state, headers);
    vec![set_cookie(SESSION, "", Some(0), secure), set_cookie(REFRESH, "", Some(0), secure)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn finds_a_cookie_among_several() {
        let h = headers(&[("cookie", "a=1; cedar_csrf=abc"), ("cookie", "cedar_lang=fr")]);
        assert_eq!(cookie(&h, CSRF), Some("abc"));
        assert_eq!(cookie(&h, LANG), Some("fr"));
        assert_eq!(cookie(&h, SESSION), None);
    }

    #[test]
    fn csrf_needs_the_matching_field_and_a_same_site_origin() {
        let h =
            headers(&[("cookie", "cedar_csrf=abc"), ("host", "school.example"), ("origin", "https://school.example")]);
        assert!(csrf_ok(&h, Some("abc")));
        assert!(!csrf_ok(&h, Some("abd")));
        assert!(!csrf_ok(&h, None));
        let foreign =
            headers(&[("cookie", "cedar_csrf=abc"), ("host", "school.example"), ("origin", "https://evil.example")]);
        assert!(!csrf_ok(&foreign, Some("abc")));
        let cross = headers(&[("cookie", "cedar_csrf=abc"), ("sec-fetch-site", "cross-site")]);
        assert!(!csrf_ok(&cross, Some("abc")));
    }

    #[test]
    fn language_from_cookie_then_accept_language() {
        assert_eq!(language(&headers(&[("accept-language", "fr-CA,fr;q=0.9")])), Lang::Fr);
        assert_eq!(language(&headers(&[("accept-language", "fr-CA"), ("cookie", "cedar_lang=en")])), Lang::En);
        assert_eq!(language(&HeaderMap::new()), Lang::En);
    }
}
