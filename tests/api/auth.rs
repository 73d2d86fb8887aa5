//! Built-in, GoTrue-compatible auth: what supabase-js sends and expects.

use std::time::Duration;

use axum::Router;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::common::{
    Backend, TestApp, admin_token, assert_gotrue_error, assert_problem, jwt_claims, sign_in, sign_up, spawn_app,
    spawn_app_with,
};

const ANON: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoiYW5vbiIsImlzcyI6InN1cGFiYXNlIn0.c2lnbmF0dXJl";

/// The headers supabase-js v2 puts on every auth call; its anon key is a JWT Cedar did not sign.
fn supabase_js(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    supabase_js_as(request, ANON)
}

/// supabase-js's headers on a call made with the user's access token.
fn supabase_js_as(request: reqwest::RequestBuilder, bearer: &str) -> reqwest::RequestBuilder {
    request
        .header("apikey", ANON)
        .header("authorization", format!("Bearer {bearer}"))
        .header("x-client-info", "supabase-js-web/2.49.4")
        .header("x-supabase-api-version", "2024-01-01")
}

async fn me_status(app: &TestApp, token: &str) -> u16 {
    app.client.get(app.url("/v1/me")).bearer_auth(token).send().await.unwrap().status().as_u16()
}

async fn signup_works_as_supabase_js_sends_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = supabase_js(app.client.post(app.url("/auth/v1/signup")))
        .json(&json!({
            "email": "Marie.Tremblay@Example.ca",
            "password": "violon-2026",
            "data": {"full_name": "Marie Tremblay"},
            "gotrue_meta_security": {"captcha_token": null},
            "code_challenge": null,
            "code_challenge_method": null
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let session: Value = response.json().await.unwrap();
    assert_eq!(session["token_type"], "bearer");
    assert_eq!(session["expires_in"], 3600);
    assert!(session["refresh_token"].as_str().unwrap().len() >= 32);
    let user = &session["user"];
    assert!(user["id"].is_string());
    assert_eq!(user["email"], "marie.tremblay@example.ca");
    assert_eq!(user["aud"], "authenticated");
    assert_eq!(user["app_metadata"]["role"], "parent");
    assert_eq!(user["user_metadata"]["full_name"], "Marie Tremblay");

    let token = session["access_token"].as_str().unwrap();
    let claims = jwt_claims(token);
    assert_eq!(claims["iss"], format!("{}/auth/v1", app.state.settings.public_url));
    assert_eq!(claims["aud"], "authenticated");
    assert_eq!(claims["role"], "authenticated");
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(claims["email"], "marie.tremblay@example.ca");
    assert_eq!(claims["aal"], "aal1");
    assert_eq!(claims["app_metadata"]["role"], "parent");
    assert!(claims["session_id"].is_string());
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
    assert_eq!(session["expires_at"], claims["exp"]);

    // The token verifies against the published JWKS, as another service would check it.
    let jwks: jsonwebtoken::jwk::JwkSet = app.get("/auth/v1/.well-known/jwks.json").await.json().await.unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("kid published");
    let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
    validation.set_audience(&["authenticated"]);
    jsonwebtoken::decode::<Value>(token, &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("signature verifies with the JWKS");

    // And it works on the API.
    let me: Value = app.client.get(app.url("/v1/me")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["role"], "parent");
    assert_eq!(me["email"], "marie.tremblay@example.ca");
}

async fn signup_errors_use_gotrue_shape(backend: Backend) {
    let app = spawn_app(backend).await;
    sign_up(&app, "dup@example.ca", "password-1").await;
    let dup = app.post_json("/auth/v1/signup", &json!({"email": "DUP@example.ca", "password": "password-2"})).await;
    assert_gotrue_error(dup, 422, "user_already_exists").await;
    let weak = app.post_json("/auth/v1/signup", &json!({"email": "weak@example.ca", "password": "short"})).await;
    assert_gotrue_error(weak, 422, "weak_password").await;
    let bad_email = app.post_json("/auth/v1/signup", &json!({"email": "not-an-email", "password": "password-3"})).await;
    assert_gotrue_error(bad_email, 400, "validation_failed").await;
    let bad_json = app
        .client
        .post(app.url("/auth/v1/signup"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_gotrue_error(bad_json, 400, "bad_json").await;
    // Nothing was created by the failed attempts.
    let admin = admin_token(&app).await;
    let users: Value =
        app.client.get(app.url("/v1/users")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(users["items"].as_array().unwrap().len(), 2, "{users}");
}

async fn invite_only_refuses_signup(backend: Backend) {
    let app = spawn_app_with(backend, Router::new(), |s| s.signup = cedar::config::SignupPolicy::Invite).await;
    let response = app.post_json("/auth/v1/signup", &json!({"email": "p@example.ca", "password": "password-1"})).await;
    assert_gotrue_error(response, 422, "signup_disabled").await;
}

async fn wrong_password_and_unknown_email_look_the_same(backend: Backend) {
    let app = spawn_app(backend).await;
    sign_up(&app, "known@example.ca", "right-password").await;
    let wrong = supabase_js(app.client.post(app.url("/auth/v1/token?grant_type=password")))
        .json(&json!({"email": "known@example.ca", "password": "wrong-password", "gotrue_meta_security": {}}))
        .send()
        .await
        .unwrap();
    let wrong = assert_gotrue_error(wrong, 400, "invalid_credentials").await;
    let unknown = app
        .post_json(
            "/auth/v1/token?grant_type=password",
            &json!({"email": "nobody@example.ca", "password": "wrong-password"}),
        )
        .await;
    let unknown = assert_gotrue_error(unknown, 400, "invalid_credentials").await;
    assert_eq!(wrong, unknown);
    let ok = sign_in(&app, "KNOWN@example.ca", "right-password").await;
    assert!(ok["access_token"].is_string());

    let admin = admin_token(&app).await;
    let failures: Value = app
        .client
        .get(app.url("/v1/audit-log?action=auth.sign_in_failed"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reasons: Vec<&str> =
        failures["items"].as_array().unwrap().iter().map(|e| e["details"]["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["unknown_account", "wrong_password"]);
}

async fn unsupported_grant_is_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.post_json("/auth/v1/token?grant_type=magic", &json!({})).await;
    assert_gotrue_error(response, 400, "validation_failed").await;
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    supabase_js(app.client.post(app.url("/auth/v1/token?grant_type=refresh_token")))
        .json(&json!({"refresh_token": token}))
        .send()
        .await
        .unwrap()
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = sign_up(&app, "rotate@example.ca", "password-1").await;
    let r1 = first["refresh_token"].as_str().unwrap();

    let second: Value = refresh(&app, r1).await.json().await.unwrap();
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2);
    assert_eq!(
        jwt_claims(second["access_token"].as_str().unwrap())["session_id"],
        jwt_claims(first["access_token"].as_str().unwrap())["session_id"]
    );

    // Within the 10 s grace a spent token still works (two tabs refreshing at once).
    let grace = refresh(&app, r1).await;
    assert_eq!(grace.status(), 200);

    // Outside the grace, reuse revokes the whole session.
    let past = chrono::Utc::now() - chrono::Duration::seconds(30);
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE used_at IS NOT NULL")
        .bind(past).execute(pool).await.map(|_| ()))
    .unwrap();
    assert_gotrue_error(refresh(&app, r1).await, 400, "refresh_token_already_used").await;
    // Every token of that session is dead now, including the newest one and the access token.
    let third = refresh(&app, r2).await;
    assert_eq!(third.status(), 400);
    assert_eq!(me_status(&app, second["access_token"].as_str().unwrap()).await, 401);
    assert_gotrue_error(refresh(&app, "not-a-token").await, 400, "refresh_token_not_found").await;
}

async fn logout_takes_effect_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    sign_up(&app, "leave@example.ca", "password-1").await;
    let a = sign_in(&app, "leave@example.ca", "password-1").await;
    let b = sign_in(&app, "leave@example.ca", "password-1").await;
    let (a_token, b_token) = (a["access_token"].as_str().unwrap(), b["access_token"].as_str().unwrap());
    assert_eq!(me_status(&app, a_token).await, 200);
    assert_eq!(me_status(&app, b_token).await, 200);

    // scope=local ends only this session; supabase-js sends no body.
    let local = supabase_js_as(app.client.post(app.url("/auth/v1/logout?scope=local")), a_token).send().await.unwrap();
    assert_eq!(local.status(), 204);
    assert_eq!(me_status(&app, a_token).await, 401);
    assert_eq!(me_status(&app, b_token).await, 200);
    assert_eq!(refresh(&app, a["refresh_token"].as_str().unwrap()).await.status(), 400);

    // global (the default) ends every session.
    let c = sign_in(&app, "leave@example.ca", "password-1").await;
    let global = app.client.post(app.url("/auth/v1/logout")).bearer_auth(b_token).send().await.unwrap();
    assert_eq!(global.status(), 204);
    assert_eq!(me_status(&app, b_token).await, 401);
    assert_eq!(me_status(&app, c["access_token"].as_str().unwrap()).await, 401);

    let no_token = app.client.post(app.url("/auth/v1/logout")).send().await.unwrap();
    assert_gotrue_error(no_token, 401, "bad_jwt").await;
}

async fn user_endpoint_reads_and_updates(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = sign_up(&app, "update@example.ca", "password-1").await;
    let token = session["access_token"].as_str().unwrap();
    let user: Value =
        app.client.get(app.url("/auth/v1/user")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    assert_eq!(user["email"], "update@example.ca");
    let updated = app
        .client
        .put(app.url("/auth/v1/user"))
        .bearer_auth(token)
        .json(&json!({"password": "new-password-2", "data": {"lang": "fr"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["user_metadata"]["lang"], "fr");
    sign_in(&app, "update@example.ca", "new-password-2").await;
    let weak = app
        .client
        .put(app.url("/auth/v1/user"))
        .bearer_auth(token)
        .json(&json!({"password": "x"}))
        .send()
        .await
        .unwrap();
    assert_gotrue_error(weak, 422, "weak_password").await;
}

/// Tokens that must all be refused with 401.
async fn forged_and_invalid_tokens_are_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = sign_up(&app, "victim@example.ca", "password-1").await;
    let good = session["access_token"].as_str().unwrap().to_owned();
    let claims = jwt_claims(&good);
    let pem = std::fs::read(&app.state.settings.jwt_key_file).unwrap();
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    let kid = jsonwebtoken::decode_header(&good).unwrap().kid;
    let sign = |changes: Value| {
        let mut c = claims.clone();
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.clone();
        jsonwebtoken::encode(&header, &c, &key).unwrap()
    };
    let now = chrono::Utc::now().timestamp();
    assert_eq!(me_status(&app, &sign(json!({}))).await, 200, "re-signed genuine claims are fine");

    let expired = sign(json!({"exp": now - 120, "iat": now - 4000}));
    let not_yet = sign(json!({"nbf": now + 600}));
    let wrong_aud = sign(json!({"aud": "anon"}));
    let wrong_iss = sign(json!({"iss": "https://evil.example/auth/v1"}));
    let other_user = sign(json!({"sub": uuid::Uuid::now_v7().to_string()}));
    let tampered = {
        use base64::Engine;
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut c = claims.clone();
        c["app_metadata"]["role"] = json!("admin");
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        parts.join(".")
    };
    let alg_none = {
        use base64::Engine;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims))
    };
    // Algorithm confusion: HS256 "signed" with the public key as the HMAC secret.
    let confusion = {
        let jwks: Value = app.get("/auth/v1/.well-known/jwks.json").await.json().await.unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.clone();
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(jwks.to_string().as_bytes())).unwrap()
    };
    for (name, token) in [
        ("expired", expired),
        ("not yet valid", not_yet),
        ("wrong aud", wrong_aud),
        ("wrong iss", wrong_iss),
        ("another sub on this session", other_user),
        ("tampered payload", tampered),
        ("alg none", alg_none),
        ("HS256 with the public key", confusion),
        ("garbage", "not.a.jwt".to_owned()),
    ] {
        let response = app.client.get(app.url("/v1/me")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), 401, "{name} was accepted");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_problem(response, 401).await;
    }
    let none = app.get("/v1/me").await;
    assert_problem(none, 401).await;
}

async fn sessions_can_be_listed_and_ended(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = sign_up(&app, "sessions@example.ca", "password-1").await;
    let b = sign_in(&app, "sessions@example.ca", "password-1").await;
    let a_token = a["access_token"].as_str().unwrap();
    let list: Value =
        app.client.get(app.url("/v1/me/sessions")).bearer_auth(a_token).send().await.unwrap().json().await.unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items.iter().filter(|s| s["current"] == true).count(), 1);
    let b_session = jwt_claims(b["access_token"].as_str().unwrap())["session_id"].as_str().unwrap().to_owned();

    // Someone else cannot end it: 404, not 403.
    let other = sign_up(&app, "other@example.ca", "password-1").await;
    let response = app
        .client
        .delete(app.url(&format!("/v1/me/sessions/{b_session}")))
        .bearer_auth(other["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_problem(response, 404).await;

    let response =
        app.client.delete(app.url(&format!("/v1/me/sessions/{b_session}"))).bearer_auth(a_token).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(me_status(&app, b["access_token"].as_str().unwrap()).await, 401);
    assert_eq!(me_status(&app, a_token).await, 200);
}

async fn sign_in_is_rate_limited_per_ip(backend: Backend) {
    let app = spawn_app_with(backend, Router::new(), |s| s.auth_rate_per_ip = 3).await;
    for _ in 0..3 {
        let r = app
            .post_json(
                "/auth/v1/token?grant_type=password",
                &json!({"email": "x@example.ca", "password": "password-1"}),
            )
            .await;
        assert_eq!(r.status(), 400);
    }
    let limited = app
        .post_json("/auth/v1/token?grant_type=password", &json!({"email": "y@example.ca", "password": "password-1"}))
        .await;
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_gotrue_error(limited, 429, "over_request_rate_limit").await;
}

/// Only failed sign-ins count against an account, per client: a guesser is stopped (even
/// with the right password, from their address), the owner signing in from elsewhere is not
/// locked out, and successful sign-ins never use the budget up.
async fn sign_in_is_rate_limited_per_account(backend: Backend) {
    let app = spawn_app_with(backend, Router::new(), |s| {
        s.auth_rate_per_account = 2;
        s.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    sign_up(&app, "target@example.ca", "password-1").await;
    let attempt = |from: &'static str, email: &'static str, password: &'static str| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/auth/v1/token?grant_type=password"))
                .header("x-forwarded-for", from)
                .json(&json!({"email": email, "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..4 {
        assert_eq!(attempt("198.51.100.7", "target@example.ca", "password-1").await.status(), 200);
    }
    for _ in 0..2 {
        assert_eq!(attempt("203.0.113.9", "target@example.ca", "guess-1234").await.status(), 400);
    }
    // The guesser's address waits now, even with the right password.
    let limited = attempt("203.0.113.9", "Target@example.ca", "password-1").await;
    assert_gotrue_error(limited, 429, "over_request_rate_limit").await;
    // The owner, elsewhere, is not locked out; other accounts are unaffected.
    assert_eq!(attempt("198.51.100.7", "target@example.ca", "password-1").await.status(), 200);
    sign_up(&app, "bystander@example.ca", "password-1").await;
    assert_eq!(attempt("203.0.113.9", "bystander@example.ca", "password-1").await.status(), 200);
}

async fn access_token_lifetime_is_configurable(backend: Backend) {
    let app = spawn_app_with(backend, Router::new(), |s| s.access_token_ttl = Duration::from_secs(600)).await;
    let session = sign_up(&app, "short@example.ca", "password-1").await;
    assert_eq!(session["expires_in"], 600);
}

backend_tests!(
    signup_works_as_supabase_js_sends_it,
    signup_errors_use_gotrue_shape,
    invite_only_refuses_signup,
    wrong_password_and_unknown_email_look_the_same,
    unsupported_grant_is_400,
    refresh_tokens_rotate_and_reuse_revokes_the_session,
    logout_takes_effect_at_once,
    user_endpoint_reads_and_updates,
    forged_and_invalid_tokens_are_401,
    sessions_can_be_listed_and_ended,
    sign_in_is_rate_limited_per_ip,
    sign_in_is_rate_limited_per_account,
    access_token_lifetime_is_configurable,
    sign_in_keeps_nothing_unbounded,
    an_old_session_needs_the_current_password_and_a_change_ends_the_others,
    behind_a_trusted_proxy_each_client_has_its_own_limit,
);

/// Behind a trusted reverse proxy every client is limited on its own (not everyone on the
/// proxy's address); a client cannot escape by naming another address in front of its own.
async fn behind_a_trusted_proxy_each_client_has_its_own_limit(backend: Backend) {
    let app = spawn_app_with(backend, Router::new(), |s| {
        s.auth_rate_per_ip = 2;
        s.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let attempt = |forwarded: &'static str| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/auth/v1/token?grant_type=password"))
                .header("x-forwarded-for", forwarded)
                .json(&json!({"email": "x@example.ca", "password": "password-1"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(attempt("203.0.113.1").await, 400);
    assert_eq!(attempt("9.9.9.9, 203.0.113.1").await, 400);
    assert_eq!(attempt("8.8.8.8, 203.0.113.1").await, 429, "the same client, whatever it prepends");
    assert_eq!(attempt("203.0.113.2").await, 400, "another client behind the same proxy");
}

/// Changing the password from a session older than ten minutes needs the current password,
/// and the change signs out every other session.
async fn an_old_session_needs_the_current_password_and_a_change_ends_the_others(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = sign_up(&app, "careful@example.ca", "password-1").await;
    let old = first["access_token"].as_str().unwrap().to_owned();
    let other = sign_in(&app, "careful@example.ca", "password-1").await["access_token"].as_str().unwrap().to_owned();
    // The first session was opened an hour ago.
    let session = jwt_claims(&old)["session_id"].as_str().unwrap().to_owned();
    let id = uuid::Uuid::parse_str(&session).unwrap();
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE auth_sessions SET created_at = $2 WHERE id = $1")
        .bind(id).bind(hour_ago).execute(pool).await.map(|_| ()))
    .unwrap();
    let change = |body: Value| {
        let (app, old) = (&app, old.clone());
        async move { app.client.put(app.url("/auth/v1/user")).bearer_auth(old).json(&body).send().await.unwrap() }
    };
    assert_gotrue_error(change(json!({"password": "new-password-2"})).await, 400, "reauthentication_needed").await;
    let wrong = change(json!({"password": "new-password-2", "current_password": "guess-123"})).await;
    assert_gotrue_error(wrong, 400, "reauthentication_not_valid").await;
    assert_eq!(change(json!({"password": "new-password-2", "current_password": "password-1"})).await.status(), 200);
    // The other session is over; this one goes on; the new password works.
    let me = |token: String| {
        let app = &app;
        async move { app.client.get(app.url("/v1/me")).bearer_auth(token).send().await.unwrap().status() }
    };
    assert_eq!(me(other).await, 401);
    assert_eq!(me(old.clone()).await, 200);
    sign_in(&app, "careful@example.ca", "new-password-2").await;
}

/// An address of a megabyte is not an account: it is refused before it reaches the rate
/// limiter or the audit trail.
async fn sign_in_keeps_nothing_unbounded(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin_token(&app).await;
    let huge = format!("{}@example.ca", "a".repeat(1_000_000 - 20));
    let response = app
        .client
        .post(app.url("/auth/v1/token?grant_type=password"))
        .json(&json!({"email": huge, "password": "whatever-1"}))
        .send()
        .await
        .unwrap();
    assert_gotrue_error(response, 400, "validation_failed").await;
    let failures =
        app.client.get(app.url("/v1/audit-log?action=auth.sign_in_failed")).bearer_auth(&admin).send().await.unwrap();
    let failures: Value = failures.json().await.unwrap();
    assert_eq!(failures["items"], json!([]), "nothing of it was stored");
}
