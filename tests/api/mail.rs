//! A real SMTP server on loopback (RFC 5321: EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) that
//! keeps what it receives, and HTTP fakes of Brevo's and SendGrid's send APIs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent (headers and encoded body).
    pub data: String,
}

impl Received {
    /// A header's value, RFC 2047 encoded words decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        let prefix = format!("{}:", name.to_lowercase());
        unfolded.lines().find(|l| l.to_lowercase().starts_with(&prefix)).map(|l| decode_words(l[prefix.len()..].trim()))
    }

    /// The body, transfer encoding (base64 or quoted-printable) undone.
    pub fn body(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        match self.header("Content-Transfer-Encoding").as_deref().map(str::to_lowercase).as_deref() {
            Some("base64") => {
                let clean: String = body.split_whitespace().collect();
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(clean).unwrap()).unwrap()
            }
            Some("quoted-printable") => quoted_printable(body),
            _ => body.to_owned(),
        }
    }
}

fn quoted_printable(text: &str) -> String {
    let mut bytes = Vec::new();
    let raw = text.replace("=\r\n", "");
    let mut chars = raw.as_bytes().iter();
    while let Some(&c) = chars.next() {
        if c == b'=' {
            let hex: Vec<u8> = chars.by_ref().take(2).copied().collect();
            bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
        } else {
            bytes.push(c);
        }
    }
    String::from_utf8(bytes).unwrap()
}

/// Decodes `=?utf-8?b?…?=` and `=?utf-8?q?…?=` words (RFC 2047: the space between two
/// encoded words is not part of the text).
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut previous_encoded = false;
    for (i, word) in value.split(' ').enumerate() {
        let decoded = word.strip_prefix("=?").and_then(|w| w.strip_suffix("?=")).and_then(|w| {
            let mut parts = w.splitn(3, '?');
            let (_charset, encoding, text) = (parts.next()?, parts.next()?, parts.next()?);
            match encoding.to_lowercase().as_str() {
                "b" => String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text).ok()?).ok(),
                "q" => Some(quoted_printable(&text.replace('_', " "))),
                _ => None,
            }
        });
        let encoded = decoded.is_some();
        if i > 0 && !(encoded && previous_encoded) {
            out.push(' ');
        }
        out.push_str(&decoded.unwrap_or_else(|| word.to_owned()));
        previous_encoded = encoded;
    }
    out
}

#[derive(Clone, Default)]
pub struct SmtpServer {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    /// Replies to the next MAIL commands (e.g. 451, 550); 250 when empty.
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl SmtpServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self { port: listener.local_addr().unwrap().port(), ..Self::default() };
        let shared = server.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let server = shared.clone();
                tokio::spawn(async move { server.session(socket).await });
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn fail_next(&self, codes: impl IntoIterator<Item = u16>) {
        self.script.lock().unwrap().extend(codes);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    async fn session(&self, socket: tokio::net::TcpStream) {
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read);
        let _ = write.write_all(b"220 fake.test ESMTP\r\n").await;
        let (mut from, mut to) = (String::new(), Vec::new());
        loop {
            let mut line = String::new();
            if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let command = line.trim_end().to_owned();
            let verb = command.split([' ', ':']).next().unwrap_or_default().to_uppercase();
            let reply: String = match verb.as_str() {
                "EHLO" => "250-fake.test\r\n250 8BITMIME".into(),
                "HELO" => "250 fake.test".into(),
                "MAIL" => {
                    let code = self.script.lock().unwrap().pop_front().unwrap_or(250);
                    if code == 250 {
                        from = command[10..].trim_matches(['<', '>', ' ']).to_owned();
                        to.clear();
                        "250 2.1.0 Ok".into()
                    } else if code >= 500 {
                        format!("{code} 5.7.1 Rejected by policy")
                    } else {
                        format!("{code} 4.3.0 Try again later")
                    }
                }
                "RCPT" => {
                    to.push(command[8..].trim_matches(['<', '>', ' ']).to_owned());
                    "250 2.1.5 Ok".into()
                }
                "DATA" => {
                    let _ = write.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await;
                    let mut data = String::new();
                    loop {
                        let mut line = String::new();
                        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == ".\r\n" {
                            break;
                        }
                        data.push_str(line.strip_prefix('.').filter(|_| line.starts_with("..")).unwrap_or(&line));
                    }
                    let mut received = self.received.lock().unwrap();
                    received.push(Received { from: from.clone(), to: to.clone(), data });
                    format!("250 2.0.0 Ok: queued as Q{}", received.len())
                }
                "RSET" | "NOOP" => "250 2.0.0 Ok".into(),
                "QUIT" => {
                    let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
                    return;
                }
                _ => "502 5.5.2 Command not recognised".into(),
            };
            if write.write_all(format!("{reply}\r\n").as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

pub const BREVO_KEY: &str = "xkeysib-test";
pub const SENDGRID_KEY: &str = "SG.test-key";

/// Brevo (`POST /v3/smtp/email`, `api-key` header) and SendGrid (`POST /v3/mail/send`,
/// bearer key) on one server; each request that passes the checks is kept.
#[derive(Clone, Default)]
pub struct EmailApis {
    pub base: String,
    pub requests: Arc<Mutex<Vec<(String, Value)>>>,
}

impl EmailApis {
    pub async fn start() -> Self {
        let apis = Self::default();
        let app = Router::new()
            .route("/v3/smtp/email", post(brevo))
            .route("/v3/mail/send", post(sendgrid))
            .with_state(apis.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, ..apis }
    }
}

fn json_body(headers: &HeaderMap, body: &str) -> Option<Value> {
    let json =
        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("application/json"));
    if json { serde_json::from_str(body).ok() } else { None }
}

async fn brevo(State(apis): State<EmailApis>, headers: HeaderMap, body: String) -> Response {
    if headers.get("api-key").and_then(|v| v.to_str().ok()) != Some(BREVO_KEY) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"code": "unauthorized", "message": "Key not found"})))
            .into_response();
    }
    let Some(body) = json_body(&headers, &body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"code": "invalid_parameter", "message": "bad JSON"})))
            .into_response();
    };
    let ok = body["sender"]["email"].is_string()
        && body["to"][0]["email"].is_string()
        && body["subject"].is_string()
        && (body["textContent"].is_string() || body["htmlContent"].is_string());
    if !ok {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"code": "missing_parameter", "message": "shape"})))
            .into_response();
    }
    apis.requests.lock().unwrap().push(("brevo".into(), body));
    (StatusCode::CREATED, axum::Json(json!({"messageId": "<202611261200.123456@smtp-relay.mailin.fr>"})))
        .into_response()
}

async fn sendgrid(State(apis): State<EmailApis>, headers: HeaderMap, body: String) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {SENDGRID_KEY}")) {
        let errors = json!({"errors": [{"message": "The provided authorization grant is invalid", "field": null}]});
        return (StatusCode::UNAUTHORIZED, axum::Json(errors)).into_response();
    }
    let Some(body) = json_body(&headers, &body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"errors": [{"message": "bad JSON"}]}))).into_response();
    };
    let ok = body["personalizations"][0]["to"][0]["email"].is_string()
        && body["from"]["email"].is_string()
        && body["subject"].is_string()
        && body["content"][0]["type"] == "text/plain";
    if !ok {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"errors": [{"message": "shape"}]}))).into_response();
    }
    apis.requests.lock().unwrap().push(("sendgrid".into(), body));
    (StatusCode::ACCEPTED, [("x-message-id", "sg-message-1")]).into_response()
}
