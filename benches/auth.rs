//! Cost of authentication: verifying a bearer token per request (cached session and cold),
//! and a password sign-in end to end over HTTP.
//!
//! Run: `cargo bench --bench auth` (SQLite in a temp dir), or with
//! `BENCH_DATABASE_URL=postgres://…` against an empty PostgreSQL database.

mod support;

use std::time::{Duration, Instant};

fn report(name: &str, iterations: u32, elapsed: Duration) {
    let per = elapsed / iterations;
    println!("{name:<48} {iterations:>6} runs   {:>10.1} µs/op", per.as_secs_f64() * 1e6);
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let state = support::state(&dir).await;

    let email = format!("bench-{}@example.ca", uuid::Uuid::now_v7().simple());
    let password = "bench-password-1";
    let user = cedar::auth::create_admin_cli(&state.db, &email, password.into(), None).await.unwrap();
    let mut tx = state.db.begin().await.unwrap();
    let (session_id, _) = cedar::auth::store::create_session(&mut tx, user.id, None, None).await.unwrap();
    tx.commit().await.unwrap();
    let (token, _) = state.auth.issue_access_token(&user, session_id).unwrap();

    // Warm up, then the steady state: signature + claims check, session served from the cache.
    state.auth.authenticate(&state.db, &token).await.unwrap();
    let n = 20_000;
    let started = Instant::now();
    for _ in 0..n {
        state.auth.authenticate(&state.db, &token).await.unwrap();
    }
    report("repeat token (verified before, cached session)", n, started.elapsed());

    // First sight of each token: the ECDSA P-256 signature check is paid every time.
    let n = 2_000;
    let tokens: Vec<String> = (0..n).map(|_| state.auth.issue_access_token(&user, session_id).unwrap().0).collect();
    let started = Instant::now();
    for token in &tokens {
        state.auth.authenticate(&state.db, token).await.unwrap();
    }
    report("new token (ES256 signature check, cached session)", n, started.elapsed());

    let n = 5_000;
    let started = Instant::now();
    for _ in 0..n {
        state.auth.forget_sessions(&[session_id]);
        state.auth.authenticate(&state.db, &token).await.unwrap();
    }
    report("repeat token, session read from the db", n, started.elapsed());

    let n = 20;
    let started = Instant::now();
    for _ in 0..n {
        assert!(cedar::auth::password::verify(password.into(), user.password_hash.clone()).await);
    }
    report("argon2id verify (19 MiB, t=2, p=1)", n, started.elapsed());

    // A password sign-in over HTTP: argon2id + session + refresh token + audit + JWT.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = cedar::app::router(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let sign_in = || {
        client
            .post(format!("http://{addr}/auth/v1/token?grant_type=password"))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
    };
    assert_eq!(sign_in().await.unwrap().status(), 200);
    let n = 20;
    let started = Instant::now();
    for _ in 0..n {
        assert_eq!(sign_in().await.unwrap().status(), 200);
    }
    report("password sign-in over HTTP (sequential)", n, started.elapsed());
}
