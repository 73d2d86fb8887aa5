//! Where email goes: `.eml` files (the default), SMTP (lettre), or the Brevo and SendGrid
//! HTTP APIs. Each answers with the transport's acceptance (a file name, the SMTP reply, the
//! provider's message id), which the outbox records.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::EmailTransport;

/// An email ready to leave.
pub struct Outgoing {
    /// The RFC 5322 message (files and SMTP).
    pub message: lettre::Message,
    pub from: Mailbox,
    pub reply_to: Mailbox,
    pub to: Mailbox,
    pub subject: String,
    pub body: String,
    pub message_id: String,
    pub list_unsubscribe: Option<String>,
    pub outbox_id: Uuid,
}

#[derive(Debug)]
pub enum DeliveryError {
    /// Worth retrying (connection refused, 4xx SMTP reply, HTTP 429/5xx).
    Transient(String),
    /// Will not work (5xx SMTP reply, HTTP 4xx): the email is dead until an admin retries it.
    Permanent(String),
}

pub enum Mailer {
    File(std::path::PathBuf),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Brevo { http: reqwest::Client, url: String, key: String },
    SendGrid { http: reqwest::Client, url: String, key: String },
}

impl Mailer {
    pub fn new(transport: &EmailTransport) -> anyhow::Result<Self> {
        let http = || reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build();
        Ok(match transport {
            EmailTransport::File(dir) => Self::File(dir.clone()),
            EmailTransport::Smtp { url } => Self::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|e| anyhow::anyhow!("CEDAR_SMTP_URL: {e}"))?
                    .timeout(Some(std::time::Duration::from_secs(30)))
                    .build(),
            ),
            EmailTransport::Brevo { api_key, base_url } => {
                Self::Brevo { http: http()?, url: format!("{base_url}/v3/smtp/email"), key: api_key.expose().into() }
            }
            EmailTransport::SendGrid { api_key, base_url } => {
                Self::SendGrid { http: http()?, url: format!("{base_url}/v3/mail/send"), key: api_key.expose().into() }
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::Smtp(_) => "smtp",
            Self::Brevo { .. } => "brevo",
            Self::SendGrid { .. } => "sendgrid",
        }
    }

    /// Hands the email over; returns the transport's acceptance.
    pub async fn send(&self, email: &Outgoing) -> Result<String, DeliveryError> {
        match self {
            Self::File(dir) => {
                let name = format!("{}-{}.eml", chrono::Utc::now().format("%Y%m%dT%H%M%S"), email.outbox_id);
                let write = async {
                    tokio::fs::create_dir_all(dir).await?;
                    tokio::fs::write(dir.join(&name), email.message.formatted()).await
                };
                write.await.map_err(|e| DeliveryError::Transient(format!("writing {}: {e}", dir.display())))?;
                Ok(name)
            }
            Self::Smtp(transport) => match transport.send(email.message.clone()).await {
                Ok(response) => Ok(format!("{} {}", response.code(), response.message().collect::<Vec<_>>().join(" "))),
                Err(e) if e.is_permanent() => Err(DeliveryError::Permanent(format!("SMTP: {e}"))),
                Err(e) => Err(DeliveryError::Transient(format!("SMTP: {e}"))),
            },
            Self::Brevo { http, url, key } => {
                let mut headers = json!({"X-Cedar-Outbox-Id": email.outbox_id.to_string()});
                if let Some(unsubscribe) = &email.list_unsubscribe {
                    headers["List-Unsubscribe"] = json!(unsubscribe);
                    headers["List-Unsubscribe-Post"] = json!("List-Unsubscribe=One-Click");
                }
                let body = json!({
                    "sender": mailbox(&email.from),
                    "to": [mailbox(&email.to)],
                    "replyTo": mailbox(&email.reply_to),
                    "subject": email.subject,
                    "textContent": email.body,
                    "headers": headers,
                });
                let request = http.post(url).header("api-key", key).header("accept", "application/json").json(&body);
                let (status, _headers, reply) = call(request).await?;
                Ok(reply["messageId"].as_str().map(str::to_owned).unwrap_or_else(|| format!("HTTP {status}")))
            }
            Self::SendGrid { http, url, key } => {
                let mut headers = json!({"X-Cedar-Outbox-Id": email.outbox_id.to_string()});
                if let Some(unsubscribe) = &email.list_unsubscribe {
                    headers["List-Unsubscribe"] = json!(unsubscribe);
                    headers["List-Unsubscribe-Post"] = json!("List-Unsubscribe=One-Click");
                }
                let body = json!({
                    "personalizations": [{"to": [mailbox(&email.to)]}],
                    "from": mailbox(&email.from),
                    "reply_to": mailbox(&email.reply_to),
                    "subject": email.subject,
                    "content": [{"type": "text/plain", "value": email.body}],
                    "headers": headers,
                    "custom_args": {"outbox_id": email.outbox_id.to_string()},
                });
                let (status, headers, _) = call(http.post(url).bearer_auth(key).json(&body)).await?;
                Ok(headers.unwrap_or_else(|| format!("HTTP {status}")))
            }
        }
    }
}

fn mailbox(m: &Mailbox) -> Value {
    match &m.name {
        Some(name) => json!({"email": m.email.to_string(), "name": name}),
        None => json!({"email": m.email.to_string()}),
    }
}

/// Sends an HTTP API request; 2xx → (status, `X-Message-Id`, JSON body).
async fn call(request: reqwest::RequestBuilder) -> Result<(u16, Option<String>, Value), DeliveryError> {
    let response = request.send().await.map_err(|e| DeliveryError::Transient(format!("request failed: {e}")))?;
    let status = response.status().as_u16();
    let message_id = response.headers().get("x-message-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = response.text().await.unwrap_or_default();
    if (200..300).contains(&status) {
        return Ok((status, message_id, serde_json::from_str(&text).unwrap_or(Value::Null)));
    }
    let detail = format!("HTTP {status}: {}", text.chars().take(300).collect::<String>());
    if status == 429 || status >= 500 {
        Err(DeliveryError::Transient(detail))
    } else {
        Err(DeliveryError::Permanent(detail))
    }
}
