//! `application/x-www-form-urlencoded` bodies, keeping repeated fields (a list of checked
//! moves) that a struct-shaped decoder would drop.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;

pub struct FormData(Vec<(String, String)>);

impl FormData {
    pub fn parse(body: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of `key`, if given and not blank.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, v)| k == key && !v.trim().is_empty()).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequest<S> for FormData {
    type Rejection = (StatusCode, &'static str);

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let form = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form {
            return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected a form"));
        }
        let body =
            Bytes::from_request(request, state).await.map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "too large"))?;
        Ok(Self::parse(&body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_repeated_fields_and_decodes() {
        let form = FormData::parse(b"move=a&move=b+c&reason=&csrf=x%26y");
        assert_eq!(form.all("move").collect::<Vec<_>>(), ["a", "b c"]);
        assert_eq!(form.get("csrf"), Some("x&y"));
        assert_eq!(form.get("reason"), None);
    }
}
