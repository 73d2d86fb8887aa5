//! HTTP fakes of the OpenAI Chat Completions and Anthropic Messages APIs, on 127.0.0.1:0.
//! They check what a real client must send (auth headers, API version, structured-output
//! request shape) and answer in the documented response shapes, from a script of replies.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const OPENAI_KEY: &str = "sk-test-openai-key";
pub const ANTHROPIC_KEY: &str = "sk-ant-test-key";

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A successful answer whose structured output is this value.
    Answer(Value),
    /// An error status in the provider's error shape; `retry_after_ms` sets the header.
    Status(u16, Option<u64>),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub provider: &'static str,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct Script {
    openai: VecDeque<Reply>,
    anthropic: VecDeque<Reply>,
    log: Vec<Request>,
}

/// Both fakes on one server. Without a scripted reply they answer `default_answer`.
#[derive(Clone)]
pub struct AiFake {
    pub base: String,
    script: Arc<Mutex<Script>>,
    default_answer: Value,
}

impl AiFake {
    pub async fn start(default_answer: Value) -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let fake = Self { base: String::new(), script, default_answer };
        let app = Router::new()
            .route("/openai/v1/chat/completions", post(openai))
            .route("/anthropic/v1/messages", post(anthropic))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, ..fake }
    }

    pub fn openai_url(&self) -> String {
        format!("{}/openai/v1", self.base)
    }

    pub fn anthropic_url(&self) -> String {
        format!("{}/anthropic", self.base)
    }

    pub fn script_openai(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().openai.extend(replies);
    }

    pub fn script_anthropic(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().anthropic.extend(replies);
    }

    pub fn requests(&self, provider: &str) -> Vec<Request> {
        self.script.lock().unwrap().log.iter().filter(|r| r.provider == provider).cloned().collect()
    }

    fn next(&self, provider: &'static str, headers: HeaderMap, body: Value) -> Reply {
        let mut script = self.script.lock().unwrap();
        script.log.push(Request { provider, headers, body });
        let queue = if provider == "openai" { &mut script.openai } else { &mut script.anthropic };
        queue.pop_front().unwrap_or_else(|| Reply::Answer(self.default_answer.clone()))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn openai_error(status: u16, kind: &str, message: &str, retry_after_ms: Option<u64>) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"error": {"message": message, "type": kind, "param": null, "code": null}})),
    )
        .into_response();
    if let Some(ms) = retry_after_ms {
        response.headers_mut().insert("retry-after-ms", ms.to_string().parse().unwrap());
    }
    response
}

async fn openai(State(fake): State<AiFake>, headers: HeaderMap, body: String) -> Response {
    if header(&headers, "authorization") != Some(&format!("Bearer {OPENAI_KEY}")) {
        return openai_error(401, "invalid_request_error", "Incorrect API key provided", None);
    }
    if !header(&headers, "content-type").is_some_and(|c| c.starts_with("application/json")) {
        return openai_error(400, "invalid_request_error", "content-type must be application/json", None);
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return openai_error(400, "invalid_request_error", "We could not parse the JSON body", None);
    };
    let format = &body["response_format"];
    let shape_ok = body["model"].is_string()
        && body["messages"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["role"].is_string() && m["content"].is_string()))
        && format["type"] == "json_schema"
        && format["json_schema"]["name"].is_string()
        && format["json_schema"]["strict"] == true
        && format["json_schema"]["schema"]["type"] == "object";
    if !shape_ok {
        return openai_error(400, "invalid_request_error", "Invalid request shape", None);
    }
    match fake.next("openai", headers, body.clone()) {
        Reply::Status(status, retry) => openai_error(status, "server_error", "scripted failure", retry),
        Reply::Answer(answer) => axum::Json(json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1_790_000_000,
            "model": body["model"],
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer.to_string(), "refusal": null},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 420, "completion_tokens": 180, "total_tokens": 600}
        }))
        .into_response(),
    }
}

fn anthropic_error(status: u16, kind: &str, message: &str, retry_after_ms: Option<u64>) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response();
    if let Some(ms) = retry_after_ms {
        response.headers_mut().insert("retry-after", (ms / 1000).to_string().parse().unwrap());
    }
    response
}

async fn anthropic(State(fake): State<AiFake>, headers: HeaderMap, body: String) -> Response {
    if header(&headers, "x-api-key") != Some(ANTHROPIC_KEY) {
        return anthropic_error(401, "authentication_error", "invalid x-api-key", None);
    }
    if header(&headers, "anthropic-version") != Some("2023-06-01") {
        return anthropic_error(400, "invalid_request_error", "anthropic-version header is required", None);
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return anthropic_error(400, "invalid_request_error", "invalid JSON", None);
    };
    let tool = body["tool_choice"]["name"].as_str().unwrap_or_default().to_owned();
    let shape_ok = body["model"].is_string()
        && body["max_tokens"].as_u64().is_some()
        && body["messages"][0]["role"] == "user"
        && body["tool_choice"]["type"] == "tool"
        && body["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == tool.as_str() && t["input_schema"]["type"] == "object"));
    if !shape_ok {
        return anthropic_error(400, "invalid_request_error", "Invalid request shape", None);
    }
    match fake.next("anthropic", headers, body.clone()) {
        Reply::Status(status, retry) => anthropic_error(status, "overloaded_error", "scripted failure", retry),
        Reply::Answer(answer) => axum::Json(json!({
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "tool_use", "id": "toolu_test", "name": tool, "input": answer}],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {"input_tokens": 510, "output_tokens": 150}
        }))
        .into_response(),
    }
}
