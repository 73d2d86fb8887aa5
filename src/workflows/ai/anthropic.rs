//! Anthropic Messages API; structured output through one forced tool whose input schema is the
//! task's schema.

use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use super::{AiError, AiReply, AiRequest, Provider, http_error, transport_error};
use crate::config::ProviderAccount;

pub const API_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    http: reqwest::Client,
    url: String,
    key: String,
    model: String,
}

impl Anthropic {
    pub fn new(http: reqwest::Client, account: &ProviderAccount) -> Self {
        Self {
            http,
            url: format!("{}/v1/messages", account.base_url),
            key: account.api_key.as_ref().map(|k| k.expose().to_owned()).unwrap_or_default(),
            model: account.model.clone(),
        }
    }
}

impl Provider for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn complete<'a>(&'a self, request: &'a AiRequest<'a>) -> BoxFuture<'a, Result<AiReply, AiError>> {
        Box::pin(async move {
            let task = request.task;
            let body = json!({
                "model": self.model,
                "max_tokens": task.max_tokens,
                "system": task.instructions,
                "messages": [{"role": "user", "content": request.prompt}],
                "tools": [{
                    "name": task.name,
                    "description": "Record the answer in exactly this structure.",
                    "input_schema": (task.schema)(),
                }],
                "tool_choice": {"type": "tool", "name": task.name},
            });
            let response = self
                .http
                .post(&self.url)
                .header("x-api-key", &self.key)
                .header("anthropic-version", API_VERSION)
                .json(&body)
                .send()
                .await
                .map_err(transport_error)?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response.text().await.map_err(transport_error)?;
            if !(200..300).contains(&status) {
                return Err(http_error(status, &headers, &text));
            }
            let reply: Value = serde_json::from_str(&text).map_err(|e| AiError::Rejected {
                status: Some(status),
                message: format!("response is not JSON: {e}"),
            })?;
            let usage = &reply["usage"];
            let input_tokens = usage["input_tokens"].as_i64().unwrap_or(0);
            let output_tokens = usage["output_tokens"].as_i64().unwrap_or(0);
            let model = reply["model"].as_str().unwrap_or(&self.model).to_owned();
            let tool_use = reply["content"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|block| block["type"] == "tool_use" && block["name"] == task.name);
            let (raw, output) = match tool_use {
                Some(block) => (block["input"].to_string(), Ok(block["input"].clone())),
                None => (text.chars().take(2_000).collect(), Err(format!("no {} tool call in the answer", task.name))),
            };
            Ok(AiReply { output, raw, model, input_tokens, output_tokens })
        })
    }
}
