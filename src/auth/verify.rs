//! Turning a bearer token into a [`CurrentUser`]: Cedar's own ES256 tokens, or Supabase Auth
//! tokens (ES256/RS256 via the project's JWKS, or legacy HS256 with the project secret).
//!
//! Algorithms are pinned per key: `alg: none` never parses, an HS256 token is only checked
//! against the configured secret (never against a public key), and an asymmetric token only
//! against a key of its own family. `iss`, `aud` (string or array), `exp` and `nbf` are checked.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use uuid::Uuid;

use crate::config::SupabaseAuth;

/// A fetched JWKS is refreshed once it is this old (its keys serve meanwhile, see `key_for`).
const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// Least time between two JWKS fetches triggered by unknown `kid`s.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(60);
/// How long keys are still honoured while the JWKS host cannot be reached.
const JWKS_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
const JWKS_FIRST_BACKOFF: Duration = Duration::from_secs(5);
const JWKS_MAX_BACKOFF: Duration = Duration::from_secs(300);
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    /// Supabase puts `email_verified` here once the address is confirmed.
    #[serde(default)]
    pub user_metadata: Option<serde_json::Value>,
}

impl Claims {
    /// Whether the issuer says the address was confirmed (Supabase: `user_metadata.email_verified`).
    pub fn email_verified(&self) -> bool {
        self.user_metadata.as_ref().and_then(|m| m.get("email_verified")).and_then(serde_json::Value::as_bool)
            == Some(true)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signing algorithm is not accepted")]
    Algorithm,
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's signature or claims are invalid")]
    Invalid,
    #[error("the token's subject is not a user id")]
    Subject,
}

fn validation(alg: Algorithm, issuer: &str) -> Validation {
    let mut validation = Validation::new(alg);
    validation.set_audience(&["authenticated"]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECS;
    validation
}

fn decode(token: &str, key: &DecodingKey, alg: Algorithm, issuer: &str) -> Result<(Uuid, Claims), TokenError> {
    use jsonwebtoken::errors::ErrorKind;
    let data = jsonwebtoken::decode::<Claims>(token, key, &validation(alg, issuer)).map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
        _ => TokenError::Invalid,
    })?;
    let id = Uuid::parse_str(&data.claims.sub).map_err(|_| TokenError::Subject)?;
    Ok((id, data.claims))
}

fn header(token: &str) -> Result<jsonwebtoken::Header, TokenError> {
    // An unknown `alg` (including "none") fails to parse here.
    jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)
}

/// Verifies tokens Cedar issued itself.
pub fn verify_builtin(token: &str, kid: &str, key: &DecodingKey, issuer: &str) -> Result<(Uuid, Claims), TokenError> {
    let header = header(token)?;
    if header.alg != Algorithm::ES256 {
        return Err(TokenError::Algorithm);
    }
    if header.kid.as_deref() != Some(kid) {
        return Err(TokenError::UnknownKey);
    }
    decode(token, key, Algorithm::ES256, issuer)
}

struct JwksState {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched_at: Option<Instant>,
    /// No fetch before this instant: a minute after a success (unknown `kid`s), and after a
    /// failure an exponential backoff (5 s, 10 s, … 5 min).
    next_attempt: Option<Instant>,
    failures: u32,
}

impl JwksState {
    fn may_fetch(&self) -> bool {
        self.next_attempt.is_none_or(|at| Instant::now() >= at)
    }
}

/// Verifies Supabase Auth tokens.
pub struct SupabaseVerifier {
    issuer: String,
    jwks_url: Option<String>,
    hs256: Option<DecodingKey>,
    http: reqwest::Client,
    jwks: std::sync::Mutex<JwksState>,
    /// Held only while fetching, so one request fetches and the others keep verifying.
    fetching: tokio::sync::Mutex<()>,
    min_refetch: Duration,
}

impl SupabaseVerifier {
    pub fn new(config: &SupabaseAuth, fallback_issuer: &str) -> Self {
        let issuer = config.url.as_ref().map_or_else(|| fallback_issuer.to_owned(), |url| format!("{url}/auth/v1"));
        Self {
            jwks_url: config.url.as_ref().map(|url| format!("{url}/auth/v1/.well-known/jwks.json")),
            hs256: config.jwt_secret.as_ref().map(|s| DecodingKey::from_secret(s.expose().as_bytes())),
            issuer,
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("HTTP client builds"),
            jwks: std::sync::Mutex::new(JwksState {
                keys: HashMap::new(),
                fetched_at: None,
                next_attempt: None,
                failures: 0,
            }),
            fetching: tokio::sync::Mutex::new(()),
            min_refetch: JWKS_MIN_REFETCH,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub async fn verify(&self, token: &str) -> Result<(Uuid, Claims), TokenError> {
        let header = header(token)?;
        match header.alg {
            Algorithm::HS256 => {
                let key = self.hs256.as_ref().ok_or(TokenError::Algorithm)?;
                decode(token, key, Algorithm::HS256, &self.issuer)
            }
            Algorithm::ES256 | Algorithm::RS256 => {
                let kid = header.kid.ok_or(TokenError::UnknownKey)?;
                let (key, alg) = self.key_for(&kid).await?;
                if alg != header.alg {
                    return Err(TokenError::Algorithm);
                }
                decode(token, &key, alg, &self.issuer)
            }
            _ => Err(TokenError::Algorithm),
        }
    }

    /// The key for `kid`. Keys younger than 10 min are used as they are. Older ones are still
    /// used (up to a day) while one request refreshes the set — a slow or failing JWKS host
    /// never stalls the others — and failures back off exponentially. An unknown `kid` makes
    /// a request wait for a fetch, at most once a minute.
    async fn key_for(&self, kid: &str) -> Result<(DecodingKey, Algorithm), TokenError> {
        let Some(url) = &self.jwks_url else {
            return Err(TokenError::UnknownKey);
        };
        let (known, fresh, may_fetch) = {
            let state = self.jwks.lock().unwrap_or_else(|p| p.into_inner());
            let age = state.fetched_at.map(|at| at.elapsed());
            let known = state.keys.get(kid).cloned().filter(|_| age.is_some_and(|a| a < JWKS_MAX_STALE));
            (known, age.is_some_and(|a| a < JWKS_MAX_AGE), state.may_fetch())
        };
        match known {
            Some(found) if fresh => Ok(found),
            Some(found) => {
                // Stale: whoever gets the fetch lock first refreshes; the rest go on.
                if may_fetch && let Ok(_guard) = self.fetching.try_lock() {
                    self.refresh(url).await;
                }
                Ok(self.cached(kid).unwrap_or(found))
            }
            None if may_fetch => {
                let _guard = self.fetching.lock().await;
                // Another request may have fetched while this one waited.
                if let Some(found) = self.cached(kid) {
                    return Ok(found);
                }
                if self.jwks.lock().unwrap_or_else(|p| p.into_inner()).may_fetch() {
                    self.refresh(url).await;
                }
                self.cached(kid).ok_or(TokenError::UnknownKey)
            }
            None => Err(TokenError::UnknownKey),
        }
    }

    fn cached(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        let state = self.jwks.lock().unwrap_or_else(|p| p.into_inner());
        state.keys.get(kid).cloned().filter(|_| state.fetched_at.is_some_and(|at| at.elapsed() < JWKS_MAX_STALE))
    }

    async fn refresh(&self, url: &str) {
        let fetched = self.fetch(url).await;
        let mut state = self.jwks.lock().unwrap_or_else(|p| p.into_inner());
        match fetched {
            Ok(keys) => {
                state.keys = keys;
                state.fetched_at = Some(Instant::now());
                state.failures = 0;
                state.next_attempt = Some(Instant::now() + self.min_refetch);
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                let backoff = JWKS_FIRST_BACKOFF.saturating_mul(1 << state.failures.min(10)) / 2;
                state.next_attempt = Some(Instant::now() + backoff.min(JWKS_MAX_BACKOFF));
                tracing::warn!(error = %format!("{error:#}"), failures = state.failures, "fetching the Supabase JWKS failed");
            }
        }
    }

    async fn fetch(&self, url: &str) -> anyhow::Result<HashMap<String, (DecodingKey, Algorithm)>> {
        let set: JwkSet = self.http.get(url).send().await?.error_for_status()?.json().await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = match &jwk.algorithm {
                AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                _ => continue,
            };
            // A key published for another algorithm is not used for this one.
            let declared = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
            if declared.is_some_and(|d| d != format!("{alg:?}")) {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (key, alg));
            }
        }
        tracing::info!(keys = keys.len(), "fetched the Supabase JWKS");
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;
    use crate::config::Secret;

    const EC1: &str = include_str!("../../tests/fixtures/ec1.key.pem");
    const EC2: &str = include_str!("../../tests/fixtures/ec2.key.pem");

    fn jwk(pem: &str, kid: &str) -> Jwk {
        let mut jwk =
            Jwk::from_encoding_key(&EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(), Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk
    }

    fn token(pem: &str, kid: &str, issuer: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({"iss": issuer, "aud": "authenticated", "sub": Uuid::new_v4().to_string(),
            "exp": now + 600, "iat": now});
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap()).unwrap()
    }

    /// Key rotation: a token signed with a newly published key is accepted once the JWKS is
    /// refetched, and unknown kids trigger at most one fetch per interval.
    #[tokio::test]
    async fn unknown_kid_refetches_at_most_once_per_interval() {
        let published = Arc::new(Mutex::new(JwkSet { keys: vec![jwk(EC1, "k1")] }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counter) = (published.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/auth/v1/.well-known/jwks.json",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let set = served.lock().unwrap().clone();
                async move { axum::Json(set) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let config = SupabaseAuth { url: Some(url.clone()), jwt_secret: Some(Secret::new("x".repeat(40))) };
        let mut verifier = SupabaseVerifier::new(&config, "unused");
        verifier.min_refetch = Duration::from_millis(200);
        let issuer = format!("{url}/auth/v1");

        assert!(verifier.verify(&token(EC1, "k1", &issuer)).await.is_ok());
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // k2 is not published yet, and the last fetch was just now: no new fetch.
        assert_eq!(verifier.verify(&token(EC2, "k2", &issuer)).await.unwrap_err(), TokenError::UnknownKey);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        published.lock().unwrap().keys.push(jwk(EC2, "k2"));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(verifier.verify(&token(EC2, "k2", &issuer)).await.is_ok(), "refetched on the unknown kid");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        assert_eq!(verifier.verify(&token(EC2, "k3", &issuer)).await.unwrap_err(), TokenError::UnknownKey);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // Known keys keep working from the cache.
        assert!(verifier.verify(&token(EC1, "k1", &issuer)).await.is_ok());
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    /// A stale JWKS keeps serving while one request refreshes it: a slow host stalls only
    /// that request, a failing one is retried with backoff rather than on every request.
    #[tokio::test]
    async fn a_slow_or_failing_jwks_host_stalls_no_one() {
        let fetches = Arc::new(AtomicUsize::new(0));
        // 0 = answer, 1 = fail with 500, 2 = answer after two seconds.
        let mode = Arc::new(AtomicUsize::new(0));
        let (counter, behaviour) = (fetches.clone(), mode.clone());
        let app = axum::Router::new().route(
            "/auth/v1/.well-known/jwks.json",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let mode = behaviour.load(Ordering::SeqCst);
                async move {
                    if mode == 2 {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    let status = if mode == 1 {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::OK
                    };
                    (status, axum::Json(JwkSet { keys: vec![jwk(EC1, "k1")] }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = SupabaseAuth { url: Some(url.clone()), jwt_secret: None };
        let verifier = Arc::new(SupabaseVerifier::new(&config, "unused"));
        let issuer = format!("{url}/auth/v1");
        let age = |verifier: &SupabaseVerifier| {
            let mut state = verifier.jwks.lock().unwrap();
            state.fetched_at = Instant::now().checked_sub(JWKS_MAX_AGE + Duration::from_secs(1));
            state.next_attempt = None;
        };

        assert!(verifier.verify(&token(EC1, "k1", &issuer)).await.is_ok());
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        // The host fails: every request still verifies; one fetch was tried, then backoff.
        mode.store(1, Ordering::SeqCst);
        age(&verifier);
        for _ in 0..5 {
            assert!(verifier.verify(&token(EC1, "k1", &issuer)).await.is_ok());
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        assert!(verifier.jwks.lock().unwrap().next_attempt.is_some_and(|at| at > Instant::now()));

        // The host is slow: the request that refreshes waits; another one does not.
        mode.store(2, Ordering::SeqCst);
        age(&verifier);
        let refresher = {
            let (verifier, token) = (verifier.clone(), token(EC1, "k1", &issuer));
            tokio::spawn(async move { verifier.verify(&token).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 3, "the refresh is under way");
        assert!(verifier.verify(&token(EC1, "k1", &issuer)).await.is_ok());
        assert!(!refresher.is_finished(), "the other request did not wait for the slow host");
        assert!(refresher.await.unwrap());
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }
}
