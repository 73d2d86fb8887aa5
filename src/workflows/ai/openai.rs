//! OpenAI Chat Completions with strict JSON-schema structured output. Works with any
//! OpenAI-compatible server (Ollama, vLLM, llama.cpp) through `OPENAI_BASE_URL`.

use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use super::{AiError, AiReply, AiRequest, Provider, http_error, transport_error};
use crate::config::ProviderAccount;

pub struct OpenAi {
    http: reqwest::Client,
    url: String,
    key: String,
    model: String,
}

impl OpenAi {
    pub fn new(http: reqwest::Client, account: &ProviderAccount) -> Self {
        Self {
            http,
            url: format!("{}/chat/completions", account.base_url),
            key: account.api_key.as_ref().map(|k| k.expose().to_owned()).unwrap_or_default(),
            model: account.model.clone(),
        }
    }
}

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn complete<'a>(&'a self, request: &'a AiRequest<'a>) -> BoxFuture<'a, Result<AiReply, AiError>> {
        Box::pin(async move {
            let body = json!({
                "model": self.model,
                "messages": [
                    {"role": "system", "content": request.task.instructions},
                    {"role": "user", "content": request.prompt},
                ],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": request.task.name, "schema": (request.task.schema)(), "strict": true},
                },
                "max_tokens": request.task.max_tokens,
            });
            let response =
                self.http.post(&self.url).bearer_auth(&self.key).json(&body).send().await.map_err(transport_error)?;
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
            let message = &reply["choices"][0]["message"];
            let usage = &reply["usage"];
            let input_tokens = usage["prompt_tokens"].as_i64().unwrap_or(0);
            let output_tokens = usage["completion_tokens"].as_i64().unwrap_or(0);
            let model = reply["model"].as_str().unwrap_or(&self.model).to_owned();
            let (raw, output) = match (message["content"].as_str(), message["refusal"].as_str()) {
                (_, Some(refusal)) => (refusal.to_owned(), Err(format!("the model refused: {refusal}"))),
                (Some(content), None) => (
                    content.to_owned(),
                    serde_json::from_str::<Value>(content).map_err(|e| format!("the answer is not JSON: {e}")),
                ),
                (None, None) => {
                    return Err(AiError::Rejected {
                        status: Some(status),
                        message: "no choices[0].message.content".into(),
                    });
                }
            };
            Ok(AiReply { output, raw, model, input_tokens, output_tokens })
        })
    }
}
