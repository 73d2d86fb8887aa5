//! Request extractors whose rejections are problem+json like every other error.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// JSON body in, JSON body out. Syntax errors are 400, well-formed JSON of the wrong shape is
/// 422 (naming the field where serde can tell), a missing JSON content type is 415.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "Expected a request body with Content-Type: application/json".into(),
            ));
        }
        let body = axum::body::Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })?;
        if super::contains_escaped_nul(&body) {
            return Err(ApiError::invalid("body", "must not contain NUL characters"));
        }
        if has_far_date(&body) {
            return Err(ApiError::invalid("body", "dates must have a four-digit year"));
        }
        match axum::Json::<T>::from_bytes(&body) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(content_type) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim().as_bytes();
    let (kind, suffix) = (b"application/".as_slice(), b"+json".as_slice());
    essence.eq_ignore_ascii_case(b"application/json")
        || (essence.len() > kind.len() + suffix.len()
            && essence[..kind.len()].eq_ignore_ascii_case(kind)
            && essence[essence.len() - suffix.len()..].eq_ignore_ascii_case(suffix))
}

/// Dates are for a school's calendar: a year written with five or more digits (chrono
/// accepts ±262,142) is refused before any arithmetic could overflow on it. Looks, in the raw
/// bytes (no copy on the request path), for `YYYYY-MM` (and longer years) standing alone —
/// after a non-alphanumeric byte or a URL-encoded sign `%2B` — and not inside a UUID, whose
/// second group has four characters.
fn has_far_date(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            i += 1;
            continue;
        }
        let encoded_sign = i >= 3 && bytes[i - 3..i].eq_ignore_ascii_case(b"%2b");
        let standalone = i == 0 || !bytes[i - 1].is_ascii_alphanumeric() || encoded_sign;
        let rest = &bytes[i + digits..];
        let month = rest.len() >= 3 && rest[0] == b'-' && rest[1].is_ascii_digit() && rest[2].is_ascii_digit();
        let month_ends = rest.get(3).is_none_or(|b| !b.is_ascii_alphanumeric());
        if digits >= 5 && standalone && month && month_ends {
            return true;
        }
        i += digits;
    }
    false
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            let detail = e.body_text();
            // serde_path_to_error gives "path: message" for nested fields.
            let message = detail.rsplit_once(": ").map_or(detail.as_str(), |(_, m)| m).to_owned();
            let field = detail
                .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                .and_then(|rest| rest.split_once(": "))
                .map(|(path, _)| path.to_owned())
                .filter(|p| !p.contains(' '))
                .unwrap_or_else(|| "body".to_owned());
            ApiError::invalid(field, message)
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(format!("Malformed JSON: {}", e.body_text())),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("Expected a request body with Content-Type: application/json".into())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        other => ApiError::BadRequest(other.body_text()),
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query string parameters; a malformed or mistyped parameter is a 400.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if has_far_date(parts.uri.query().unwrap_or_default().as_bytes()) {
            return Err(ApiError::BadRequest("Dates must have a four-digit year".into()));
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::BadRequest(format!("Invalid query string: {}", e.body_text())))
            }
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}

/// For `Option<Option<T>>` PATCH fields: `Some(None)` when the field is an explicit `null`,
/// `None` when it is absent. Use with `#[serde(default, deserialize_with = "nullable")]`.
pub fn nullable<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::has_far_date;

    #[test]
    fn far_years_are_refused_and_uuids_are_not_dates() {
        for far in ["\"+262142-12-31T23:59:59Z\"", "\"-262143-01-01\"", "month=%2B262142-12", "\"12345-06\""] {
            assert!(has_far_date(far.as_bytes()), "{far}");
        }
        for fine in [
            "\"2027-03-01T21:00:00Z\"",
            "\"01922840-3064-7700-a161-f427be6a9961\"",
            "\"99999999-1234-7000-8000-000000000000\"",
            "\"+1 613-555-0199\"",
            "\"amount_cents\": 123456",
            "\"2027-03\"",
        ] {
            assert!(!has_far_date(fine.as_bytes()), "{fine}");
        }
    }
}
