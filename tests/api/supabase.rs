//! Supabase mode: tokens from Supabase Auth verified with the project's JWKS (ES256, RS256,
//! two keys for rotation) or the legacy HS256 secret.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Backend, TestApp, assert_gotrue_error, assert_problem, spawn_app_with};

const EC1: &str = include_str!("../fixtures/ec1.key.pem");
const EC2: &str = include_str!("../fixtures/ec2.key.pem");
const RSA: &str = include_str!("../fixtures/rsa.key.pem");
const RSA_PUBLIC: &str = include_str!("../fixtures/rsa.pub.pem");
const HS_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";

/// A stand-in for a Supabase project: serves its JWKS and counts the fetches.
struct FakeSupabase {
    url: String,
    fetches: Arc<AtomicUsize>,
}

fn public_jwk(private_pem: &str, alg: Algorithm, kid: &str) -> Jwk {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
    };
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

async fn fake_supabase() -> FakeSupabase {
    // Two current keys (mid-rotation) plus an RSA one.
    let set = JwkSet {
        keys: vec![
            public_jwk(EC1, Algorithm::ES256, "ec-key-1"),
            public_jwk(EC2, Algorithm::ES256, "ec-key-2"),
            public_jwk(RSA, Algorithm::RS256, "rsa-key-1"),
        ],
    };
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let app = Router::new().route(
        "/auth/v1/.well-known/jwks.json",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let set = set.clone();
            async move { axum::Json(set) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeSupabase { url, fetches }
}

async fn supabase_app(backend: Backend, fake: &FakeSupabase, invite_only: bool) -> TestApp {
    let url = fake.url.clone();
    spawn_app_with(backend, Router::new(), move |s| {
        s.supabase = Some(cedar::config::SupabaseAuth {
            url: Some(url),
            jwt_secret: Some(cedar::config::Secret::new(HS_SECRET)),
        });
        if invite_only {
            s.signup = cedar::config::SignupPolicy::Invite;
        }
    })
    .await
}

/// Claims as Supabase Auth issues them.
fn claims(fake: &FakeSupabase, sub: Uuid, email: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": format!("{}/auth/v1", fake.url),
        "aud": "authenticated",
        "sub": sub.to_string(),
        "email": email,
        "phone": "",
        "exp": now + 3600,
        "iat": now,
        "role": "authenticated",
        "aal": "aal1",
        "session_id": Uuid::new_v4().to_string(),
        "is_anonymous": false,
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {"email": email},
    })
}

fn sign(claims: &Value, alg: Algorithm, kid: Option<&str>) -> String {
    let key = match alg {
        Algorithm::ES256 if kid == Some("ec-key-2") => EncodingKey::from_ec_pem(EC2.as_bytes()).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC1.as_bytes()).unwrap(),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(RSA.as_bytes()).unwrap(),
        _ => EncodingKey::from_secret(HS_SECRET.as_bytes()),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.client.get(app.url("/v1/me")).bearer_auth(token).send().await.unwrap()
}

async fn es256_rs256_and_hs256_tokens_are_accepted(backend: Backend) {
    let fake = fake_supabase().await;
    let app = supabase_app(backend, &fake, false).await;
    for (alg, kid, email) in [
        (Algorithm::ES256, Some("ec-key-1"), "es1@example.ca"),
        (Algorithm::ES256, Some("ec-key-2"), "es2@example.ca"),
        (Algorithm::RS256, Some("rsa-key-1"), "rs@example.ca"),
        (Algorithm::HS256, None, "hs@example.ca"),
    ] {
        let sub = Uuid::new_v4();
        let response = me(&app, &sign(&claims(&fake, sub, email), alg, kid)).await;
        assert_eq!(response.status(), 200, "{alg:?} {kid:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["id"], sub.to_string());
        assert_eq!(body["role"], "parent", "a new Supabase user becomes a parent");
        assert_eq!(body["email"], email);
    }
    // The JWKS was fetched once and cached for all of them.
    assert_eq!(fake.fetches.load(Ordering::SeqCst), 1);
    // An audience given as an array is fine when it includes "authenticated".
    let mut c = claims(&fake, Uuid::new_v4(), "array@example.ca");
    c["aud"] = json!(["authenticated", "other"]);
    assert_eq!(me(&app, &sign(&c, Algorithm::ES256, Some("ec-key-1"))).await.status(), 200);
}

async fn the_role_comes_from_cedar_not_the_token(backend: Backend) {
    let fake = fake_supabase().await;
    let app = supabase_app(backend, &fake, false).await;
    let sub = Uuid::new_v4();
    let mut c = claims(&fake, sub, "climber@example.ca");
    c["app_metadata"]["role"] = json!("admin");
    c["user_metadata"]["role"] = json!("admin");
    c["role"] = json!("service_role");
    let token = sign(&c, Algorithm::ES256, Some("ec-key-1"));
    let body: Value = me(&app, &token).await.json().await.unwrap();
    assert_eq!(body["role"], "parent");
    assert_problem(app.client.get(app.url("/v1/users")).bearer_auth(&token).send().await.unwrap(), 403).await;

    // A user the school set up as a teacher is a teacher.
    let teacher = Uuid::new_v4();
    cedar::on_db!(&app.state.db, pool => sqlx::query("INSERT INTO users (id, email, role, status, user_metadata, created_at, updated_at) \
        VALUES ($1, 'teacher@example.ca', 'teacher', 'active', '{}', $2, $2)")
        .bind(teacher).bind(chrono::Utc::now()).execute(pool).await.map(|_| ()))
    .unwrap();
    let body: Value =
        me(&app, &sign(&claims(&fake, teacher, "teacher@example.ca"), Algorithm::RS256, Some("rsa-key-1")))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(body["role"], "teacher");
}

async fn invite_only_refuses_unknown_users_with_403(backend: Backend) {
    let fake = fake_supabase().await;
    let app = supabase_app(backend, &fake, true).await;
    let token = sign(&claims(&fake, Uuid::new_v4(), "stranger@example.ca"), Algorithm::ES256, Some("ec-key-1"));
    assert_problem(me(&app, &token).await, 403).await;
}

async fn invalid_supabase_tokens_are_401(backend: Backend) {
    let fake = fake_supabase().await;
    let app = supabase_app(backend, &fake, false).await;
    let base = claims(&fake, Uuid::new_v4(), "target@example.ca");
    let with = |changes: Value| {
        let mut c = base.clone();
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let now = chrono::Utc::now().timestamp();
    let alg_none = {
        use base64::Engine;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&base))
    };
    // HS256 "signed" with the project's RSA public key: the classic algorithm confusion.
    let confusion = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-key-1".into());
        jsonwebtoken::encode(&header, &base, &EncodingKey::from_secret(RSA_PUBLIC.as_bytes())).unwrap()
    };
    let cases = [
        ("expired", sign(&with(json!({"exp": now - 300})), Algorithm::ES256, Some("ec-key-1"))),
        ("not yet valid", sign(&with(json!({"nbf": now + 600})), Algorithm::ES256, Some("ec-key-1"))),
        ("wrong aud", sign(&with(json!({"aud": "anon"})), Algorithm::ES256, Some("ec-key-1"))),
        ("aud array without authenticated", sign(&with(json!({"aud": ["anon"]})), Algorithm::ES256, Some("ec-key-1"))),
        (
            "wrong iss",
            sign(&with(json!({"iss": "https://evil.supabase.co/auth/v1"})), Algorithm::ES256, Some("ec-key-1")),
        ),
        ("alg none", alg_none),
        ("HS256 with the RSA public key", confusion),
        ("signed by key 2, labelled key 1", {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some("ec-key-1".into());
            jsonwebtoken::encode(&header, &base, &EncodingKey::from_ec_pem(EC2.as_bytes()).unwrap()).unwrap()
        }),
        ("RS256 under an EC kid", sign(&base, Algorithm::RS256, Some("ec-key-1"))),
        ("unknown kid", sign(&base, Algorithm::ES256, Some("retired-key"))),
        ("no kid", sign(&base, Algorithm::ES256, None)),
        ("HS256 with a wrong secret", {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &base,
                &EncodingKey::from_secret(b"wrong-secret-wrong-secret-wrong-secret"),
            )
            .unwrap()
        }),
        ("sub not a uuid", sign(&with(json!({"sub": "admin"})), Algorithm::ES256, Some("ec-key-1"))),
    ];
    for (name, token) in cases {
        let response = me(&app, &token).await;
        assert_eq!(response.status(), 401, "{name} was not refused");
        assert_problem(response, 401).await;
    }
    // Unknown kids do not make Cedar hammer the JWKS endpoint: one fetch, then at most one a minute.
    let unknown = sign(&base, Algorithm::ES256, Some("another-unknown"));
    assert_eq!(me(&app, &unknown).await.status(), 401);
    assert_eq!(fake.fetches.load(Ordering::SeqCst), 1);
}

/// A Supabase user is adopted with a confirmed address only when Supabase says so
/// (`user_metadata.email_verified`); a later token that says so confirms it.
async fn supabase_addresses_count_as_confirmed_only_when_verified(backend: Backend) {
    let fake = fake_supabase().await;
    let app = supabase_app(backend, &fake, false).await;
    let confirmed = |id: Uuid| {
        let db = app.state.db.clone();
        async move {
            let at: Option<chrono::DateTime<chrono::Utc>> = cedar::on_db!(&db, pool => sqlx::query_scalar(
                "SELECT email_confirmed_at FROM users WHERE id = $1").bind(id).fetch_one(pool).await)
            .unwrap();
            at.is_some()
        }
    };
    let (unverified, verified) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(
        me(&app, &sign(&claims(&fake, unverified, "u@example.ca"), Algorithm::ES256, Some("ec-key-1"))).await.status(),
        200
    );
    assert!(!confirmed(unverified).await);
    let mut c = claims(&fake, verified, "v@example.ca");
    c["user_metadata"]["email_verified"] = json!(true);
    assert_eq!(me(&app, &sign(&c, Algorithm::ES256, Some("ec-key-1"))).await.status(), 200);
    assert!(confirmed(verified).await);

    let mut later = claims(&fake, unverified, "u@example.ca");
    later["user_metadata"]["email_verified"] = json!(true);
    assert_eq!(me(&app, &sign(&later, Algorithm::ES256, Some("ec-key-1"))).await.status(), 200);
    assert!(confirmed(unverified).await);
}

async fn built_in_sign_in_is_off_in_supabase_mode(backend: Backend) {
    let fake = fake_supabase().await;
    let app = supabase_app(backend, &fake, false).await;
    let response = app.post_json("/auth/v1/signup", &json!({"email": "a@example.ca", "password": "password-1"})).await;
    assert_gotrue_error(response, 404, "not_found").await;
    let response = app
        .post_json("/auth/v1/token?grant_type=password", &json!({"email": "a@example.ca", "password": "password-1"}))
        .await;
    assert_gotrue_error(response, 404, "not_found").await;
}

/// `cedar admin create` in Supabase mode pre-registers the owner: the first token from Supabase
/// with that verified address becomes the admin (with Supabase's user id); an unverified one
/// cannot take the account. On PostgreSQL every Cedar table has row-level security.
async fn the_owner_is_preregistered_as_admin_and_tables_have_row_level_security(backend: Backend) {
    let fake = fake_supabase().await;
    let app = supabase_app(backend, &fake, true).await;
    let pending = cedar::auth::create_supabase_admin_cli(&app.state.db, "Owner@CedarHeights.ca", None).await.unwrap();
    assert!(cedar::auth::create_supabase_admin_cli(&app.state.db, "owner@cedarheights.ca", None).await.is_err());
    let sub = Uuid::new_v4();
    let unverified = sign(&claims(&fake, sub, "owner@cedarheights.ca"), Algorithm::ES256, Some("ec-key-1"));
    assert_eq!(me(&app, &unverified).await.status(), 403, "an unverified address claims nothing");
    let mut c = claims(&fake, sub, "owner@cedarheights.ca");
    c["user_metadata"]["email_verified"] = json!(true);
    let response = me(&app, &sign(&c, Algorithm::ES256, Some("ec-key-1"))).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!((body["id"].as_str(), body["role"].as_str()), (Some(sub.to_string().as_str()), Some("admin")));
    assert_ne!(pending.id, sub);
    // A second Supabase user with the same address later gets nothing (invite-only school).
    let mut other = claims(&fake, Uuid::new_v4(), "owner@cedarheights.ca");
    other["user_metadata"]["email_verified"] = json!(true);
    assert_eq!(me(&app, &sign(&other, Algorithm::ES256, Some("ec-key-1"))).await.status(), 403);

    if backend == Backend::Postgres {
        let open: Vec<String> = cedar::on_db!(&app.state.db, pool => sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind = 'r' AND NOT c.relrowsecurity").fetch_all(pool).await)
        .unwrap();
        assert!(open.is_empty(), "tables without row-level security: {open:?}");
        let secured: i64 = cedar::on_db!(&app.state.db, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relrowsecurity").fetch_one(pool).await)
        .unwrap();
        assert!(secured > 40, "{secured}");
    }
}

backend_tests!(
    the_owner_is_preregistered_as_admin_and_tables_have_row_level_security,
    es256_rs256_and_hs256_tokens_are_accepted,
    the_role_comes_from_cedar_not_the_token,
    invite_only_refuses_unknown_users_with_403,
    invalid_supabase_tokens_are_401,
    built_in_sign_in_is_off_in_supabase_mode,
    supabase_addresses_count_as_confirmed_only_when_verified,
);
