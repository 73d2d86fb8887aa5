//! The console acts through Cedar's own API, in process: every approval, attendance mark or
//! retry runs the same handler, role check, validation, audit entry and idempotency record as
//! the JSON API does, so the console can never do what the signed-in user's token may not.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

/// The API router (with its middleware) the console sends its calls to.
#[derive(Clone)]
pub struct InternalApi(pub Router);

/// What an API call answered: the status and the JSON body (`Null` when there was none).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// A problem's `detail` (or `title`), with its field errors, or GoTrue's `msg`.
    pub fn message(&self) -> String {
        let body = &self.body;
        let main = ["detail", "title", "msg", "error_description"]
            .iter()
            .find_map(|k| body[*k].as_str())
            .unwrap_or("The request failed")
            .to_owned();
        let fields: Vec<String> = body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| format!("{}: {}", e["field"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("")))
            .collect();
        if fields.is_empty() { main } else { format!("{main} ({})", fields.join("; ")) }
    }
}

/// One call: who the browser is (peer address, forwarding headers, request id) travels along,
/// so rate limits, audit entries and logs name the real client.
pub struct Call<'a> {
    pub method: Method,
    pub path: String,
    pub token: Option<&'a str>,
    pub body: Option<Value>,
    pub idempotency_key: Option<String>,
}

impl<'a> Call<'a> {
    pub fn get(path: impl Into<String>, token: &'a str) -> Self {
        Self { method: Method::GET, path: path.into(), token: Some(token), body: None, idempotency_key: None }
    }

    pub fn send(method: Method, path: impl Into<String>, token: Option<&'a str>, body: Value) -> Self {
        Self { method, path: path.into(), token, body: Some(body), idempotency_key: None }
    }

    /// A form's one-time nonce: a double-submitted form acts once (the second answer is the
    /// first one replayed).
    pub fn once(mut self, nonce: Option<&str>) -> Self {
        self.idempotency_key = nonce.filter(|n| !n.is_empty() && n.len() <= 64).map(|n| format!("console:{n}"));
        self
    }
}

impl InternalApi {
    pub async fn call(&self, browser: &HeaderMap, peer: Option<SocketAddr>, call: Call<'_>) -> Answer {
        let mut request = Request::builder().method(call.method).uri(&call.path);
        let headers = request.headers_mut().expect("a fresh builder has headers");
        for name in ["x-forwarded-for", "x-real-ip", "user-agent", "x-request-id"] {
            if let Some(value) = browser.get(name) {
                headers.insert(name, value.clone());
            }
        }
        if let Some(token) = call.token
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            headers.insert(header::AUTHORIZATION, value);
        }
        if let Some(key) = call.idempotency_key.as_deref().and_then(|k| HeaderValue::from_str(k).ok()) {
            headers.insert("idempotency-key", key);
        }
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let body = match call.body {
            Some(json) => {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let mut request = match request.body(body) {
            Ok(request) => request,
            Err(error) => return failure(format!("bad internal request: {error}")),
        };
        if let Some(peer) = peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let response = match self.0.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        match axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024).await {
            Ok(bytes) if bytes.is_empty() => Answer { status, body: Value::Null },
            Ok(bytes) => Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) },
            Err(error) => failure(format!("unreadable internal answer: {error}")),
        }
    }
}

fn failure(detail: String) -> Answer {
    tracing::error!(%detail, "console call failed");
    Answer { status: StatusCode::INTERNAL_SERVER_ERROR, body: serde_json::json!({"detail": detail}) }
}
