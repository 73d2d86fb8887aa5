//! An HTTP fake of the Stripe endpoints Cedar calls (`/v1/customers`, `/v1/payment_intents`,
//! `/v1/payment_intents/{id}/cancel`, `/v1/refunds`): it insists on the secret key as a bearer token, form-encoded bodies and an
//! `Idempotency-Key`, and, like Stripe, answers a repeated key with the first response.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const STRIPE_KEY: &str = "sk_test_cedar";

#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub idempotency_key: String,
    pub form: HashMap<String, String>,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    by_key: HashMap<String, (HashMap<String, String>, Value)>,
    fail_next: Vec<u16>,
    counter: u32,
    /// PaymentIntent id → status.
    intents: HashMap<String, String>,
    /// Checkout Session id → status (`open`, `complete`, `expired`).
    sessions: HashMap<String, String>,
}

#[derive(Clone, Default)]
pub struct StripeFake {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl StripeFake {
    pub async fn start() -> Self {
        let fake = Self::default();
        let app = Router::new()
            .route("/v1/{object}", post(create))
            .route("/v1/payment_intents/{id}/cancel", post(cancel))
            .route("/v1/checkout/sessions", post(create_session))
            .route("/v1/checkout/sessions/{id}/expire", post(expire_session))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, ..fake }
    }

    /// Calls that reached the handler (after the header checks), in order.
    pub fn calls(&self, path: &str) -> Vec<Call> {
        self.inner.lock().unwrap().calls.iter().filter(|c| c.path == path).cloned().collect()
    }

    /// What the customer did with a PaymentIntent (e.g. `succeeded`: paid in the browser).
    pub fn set_intent_status(&self, id: &str, status: &str) {
        self.inner.lock().unwrap().intents.insert(id.to_owned(), status.to_owned());
    }

    pub fn intent_status(&self, id: &str) -> Option<String> {
        self.inner.lock().unwrap().intents.get(id).cloned()
    }

    pub fn session_status(&self, id: &str) -> Option<String> {
        self.inner.lock().unwrap().sessions.get(id).cloned()
    }

    /// The next calls answer these statuses first.
    pub fn fail_next(&self, statuses: impl IntoIterator<Item = u16>) {
        self.inner.lock().unwrap().fail_next.extend(statuses);
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"type": kind, "message": message}}))).into_response()
}

async fn create(
    State(fake): State<StripeFake>,
    Path(object): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if header("authorization") != Some(format!("Bearer {STRIPE_KEY}")) {
        return error(StatusCode::UNAUTHORIZED, "invalid_request_error", "Invalid API Key provided");
    }
    if header("content-type").as_deref() != Some("application/x-www-form-urlencoded") {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "Stripe expects form-encoded bodies");
    }
    let Some(key) = header("idempotency-key") else {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "this fake insists on an Idempotency-Key");
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let mut inner = fake.inner.lock().unwrap();
    let path = format!("/v1/{object}");
    inner.calls.push(Call { path: path.clone(), idempotency_key: key.clone(), form: form.clone() });
    if !inner.fail_next.is_empty() {
        let status = inner.fail_next.remove(0);
        return error(StatusCode::from_u16(status).unwrap(), "api_error", "scripted failure");
    }
    if let Some(replayed) = replay(&inner, &key, &form) {
        return replayed;
    }
    inner.counter += 1;
    let n = inner.counter;
    let metadata: Value = form
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[").and_then(|k| k.strip_suffix(']')).map(|k| (k.to_owned(), json!(v)))
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    let amount = form.get("amount").and_then(|a| a.parse::<i64>().ok());
    let response = match object.as_str() {
        "customers" => json!({"id": format!("cus_{n}"), "object": "customer", "email": form.get("email"),
            "name": form.get("name"), "metadata": metadata}),
        "payment_intents" => {
            let Some(amount) = amount.filter(|a| *a >= 50) else {
                return error(StatusCode::BAD_REQUEST, "invalid_request_error", "Amount must be at least 50 cents");
            };
            // Confirmed with a saved card (autopay), the fake card is accepted at once.
            let status = if form.get("confirm").map(String::as_str) == Some("true") {
                "succeeded"
            } else {
                "requires_payment_method"
            };
            inner.intents.insert(format!("pi_{n}"), status.to_owned());
            json!({"id": format!("pi_{n}"), "object": "payment_intent", "amount": amount, "currency": form.get("currency"),
                "client_secret": format!("pi_{n}_secret_test"), "status": status,
                "customer": form.get("customer"), "metadata": metadata})
        }
        "refunds" => json!({"id": format!("re_{n}"), "object": "refund", "amount": amount,
            "payment_intent": form.get("payment_intent"), "status": "succeeded", "metadata": metadata}),
        _ => return error(StatusCode::NOT_FOUND, "invalid_request_error", "Unrecognized request URL"),
    };
    inner.by_key.insert(key, (form, response.clone()));
    axum::Json(response).into_response()
}

/// `POST /v1/payment_intents/{id}/cancel`: like Stripe, a paid or processing intent cannot be
/// cancelled (400 `payment_intent_unexpected_state`); a repeated key gets the first answer.
async fn cancel(State(fake): State<StripeFake>, Path(id): Path<String>, headers: HeaderMap, body: String) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if header("authorization") != Some(format!("Bearer {STRIPE_KEY}")) {
        return error(StatusCode::UNAUTHORIZED, "invalid_request_error", "Invalid API Key provided");
    }
    let Some(key) = header("idempotency-key") else {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "this fake insists on an Idempotency-Key");
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let mut inner = fake.inner.lock().unwrap();
    let path = format!("/v1/payment_intents/{id}/cancel");
    inner.calls.push(Call { path, idempotency_key: key.clone(), form: form.clone() });
    if let Some((_, response)) = inner.by_key.get(&key) {
        return axum::Json(response.clone()).into_response();
    }
    let Some(status) = inner.intents.get(&id).cloned() else {
        return error(StatusCode::NOT_FOUND, "invalid_request_error", "No such payment_intent");
    };
    if matches!(status.as_str(), "succeeded" | "processing" | "canceled") {
        let message = format!("You cannot cancel this PaymentIntent because it has a status of {status}.");
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"type": "invalid_request_error", "code": "payment_intent_unexpected_state",
                "message": message}})),
        )
            .into_response();
    }
    inner.intents.insert(id.clone(), "canceled".to_owned());
    let response = json!({"id": id, "object": "payment_intent", "status": "canceled",
        "cancellation_reason": form.get("cancellation_reason")});
    inner.by_key.insert(key, (form, response.clone()));
    axum::Json(response).into_response()
}

/// Like Stripe, a repeated idempotency key gets the first answer, or 400 with other parameters.
fn replay(inner: &Inner, key: &str, form: &HashMap<String, String>) -> Option<Response> {
    let (first_form, response) = inner.by_key.get(key)?;
    if first_form != form {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "idempotency_error",
            "Keys for idempotent requests can only be used with the same parameters",
        ));
    }
    Some(axum::Json(response.clone()).into_response())
}

/// Checks what every Stripe call must carry: the key, a form body, an idempotency key.
fn checked(headers: &HeaderMap) -> Result<String, Box<Response>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if header("authorization") != Some(format!("Bearer {STRIPE_KEY}")) {
        return Err(Box::new(error(StatusCode::UNAUTHORIZED, "invalid_request_error", "Invalid API Key provided")));
    }
    if header("content-type").as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Stripe expects form-encoded bodies",
        )));
    }
    header("idempotency-key").ok_or_else(|| {
        Box::new(error(StatusCode::BAD_REQUEST, "invalid_request_error", "this fake insists on an Idempotency-Key"))
    })
}

/// `POST /v1/checkout/sessions` (mode `payment`, one `price_data` line item): like Stripe, it
/// needs `success_url`, answers a `url` on checkout.stripe.com and `expires_at` a day later,
/// and a repeated key gets the first answer.
async fn create_session(State(fake): State<StripeFake>, headers: HeaderMap, body: String) -> Response {
    let key = match checked(&headers) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let mut inner = fake.inner.lock().unwrap();
    inner.calls.push(Call { path: "/v1/checkout/sessions".into(), idempotency_key: key.clone(), form: form.clone() });
    if let Some(replayed) = replay(&inner, &key, &form) {
        return replayed;
    }
    if form.get("mode").map(String::as_str) != Some("payment") || !form.contains_key("success_url") {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "mode=payment and success_url are required");
    }
    let Some(amount) =
        form.get("line_items[0][price_data][unit_amount]").and_then(|a| a.parse::<i64>().ok()).filter(|a| *a >= 50)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "line_items[0][price_data][unit_amount] must be at least 50",
        );
    };
    inner.counter += 1;
    let id = format!("cs_test_{}", inner.counter);
    inner.sessions.insert(id.clone(), "open".into());
    let response = json!({"id": id, "object": "checkout.session", "mode": "payment", "status": "open",
        "payment_status": "unpaid", "amount_total": amount, "currency": form.get("line_items[0][price_data][currency]"),
        "customer": form.get("customer"), "url": format!("https://checkout.stripe.com/c/pay/{id}"),
        "expires_at": chrono::Utc::now().timestamp() + 86_400, "success_url": form.get("success_url")});
    inner.by_key.insert(key, (form, response.clone()));
    axum::Json(response).into_response()
}

/// `POST /v1/checkout/sessions/{id}/expire`: an open session expires; anything else is 400.
async fn expire_session(
    State(fake): State<StripeFake>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let key = match checked(&headers) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    let mut inner = fake.inner.lock().unwrap();
    inner.calls.push(Call {
        path: format!("/v1/checkout/sessions/{id}/expire"),
        idempotency_key: key,
        form: HashMap::new(),
    });
    let _ = body;
    match inner.sessions.get(&id).cloned() {
        Some(status) if status == "open" => {
            inner.sessions.insert(id.clone(), "expired".into());
            axum::Json(json!({"id": id, "object": "checkout.session", "status": "expired"})).into_response()
        }
        Some(status) => error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("Session is {status}; only open sessions can be expired"),
        ),
        None => error(StatusCode::NOT_FOUND, "invalid_request_error", "No such checkout.session"),
    }
}
