//! Helpers shared by the test modules: a compact request builder, the sample school most
//! tests start from, polling, and an in-process worker.
//!
//! A typical call fits on a line:
//! `let lesson = app.as_user(&s.admin).post("/v1/lessons", json!({...})).await.expect(201);`

use std::time::Duration;

use cedar::app::AppState;
use cedar::jobs::worker::{self, WorkerOptions};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::common::{TestApp, admin_token, sign_up, user_with_role};

/// Requests made with one bearer token.
pub struct Caller<'a> {
    app: &'a TestApp,
    token: &'a str,
}

/// A response read whole: status, headers and JSON body (`null` when there is none).
pub struct Reply {
    pub status: u16,
    headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The body, after asserting the status.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "{:#}", self.body);
        self.body
    }

    /// The problem body, after asserting the status and the problem+json shape.
    #[track_caller]
    pub fn problem(self, status: u16) -> Value {
        assert_eq!(self.status, status, "{:#}", self.body);
        let content_type = self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(content_type, "application/problem+json");
        for field in ["type", "title", "detail"] {
            assert!(self.body[field].is_string(), "problem lacks {field}: {}", self.body);
        }
        self.body
    }
}

impl TestApp {
    /// Requests as the holder of `token`.
    pub fn as_user<'a>(&'a self, token: &'a str) -> Caller<'a> {
        Caller { app: self, token }
    }
}

impl Caller<'_> {
    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call("POST", path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call("PUT", path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call("PATCH", path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, None).await
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let response = send(self.app, method, path, self.token, body).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        Reply { status, headers, body }
    }
}

/// One request with a bearer token; the raw response.
pub async fn send(app: &TestApp, method: &str, path: &str, token: &str, body: Option<Value>) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// The JSON body, after asserting the status.
pub async fn json_ok(response: reqwest::Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(actual, status, "{body}");
    body
}

/// GETs `path` until `check` holds (up to 30 s under CI load); returns the last body.
pub async fn wait_until(app: &TestApp, token: &str, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..1200 {
        last = app.as_user(token).get(path).await.expect(200);
        if check(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} never reached the expected state: {last:#}");
}

/// The run with this id once it exists (the worker creates it moments after its trigger) and
/// has reached `status`.
pub async fn run_reaching(app: &TestApp, s: &School, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..1200 {
        let reply = app.as_user(&s.admin).get(&format!("/v1/workflow-runs/{id}")).await;
        if reply.status == 200 {
            last = reply.body;
            if last["status"] == status {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("run {id} never became {status}: {last:#}");
}

/// The sample school: an admin, two teachers, two families and three students.
pub struct School {
    pub admin: String,
    pub teacher1: String,
    pub teacher1_id: String,
    pub teacher2: String,
    pub teacher2_id: String,
    pub parent_a: String,
    pub family_a: String,
    pub parent_b: String,
    pub family_b: String,
    /// Hélène Côté (family A, teacher 1), Zoë Tremblay (family B, teacher 2), Liam O'Brien (family B, no teacher).
    pub students: [String; 3],
}

pub async fn school(app: &TestApp) -> School {
    let admin = admin_token(app).await;
    let office = app.as_user(&admin);
    let (teacher1_user, teacher1) = user_with_role(app, &admin, "t1@cedarheights.ca", "teacher").await;
    let t1 = office
        .post(
            "/v1/teachers",
            json!({"first_name": "Élodie", "last_name": "Gagné", "email": "t1@cedarheights.ca",
        "instruments": ["Piano", "voice"], "pay_rate_cents": 5500, "user_id": teacher1_user}),
        )
        .await
        .expect(201);
    let (teacher2_user, teacher2) = user_with_role(app, &admin, "t2@cedarheights.ca", "teacher").await;
    let t2 = office
        .post(
            "/v1/teachers",
            json!({"first_name": "Sam", "last_name": "Wilson", "email": "t2@cedarheights.ca",
        "instruments": ["violin"], "user_id": teacher2_user}),
        )
        .await
        .expect(201);

    // Parent A signs up and creates their own family.
    let parent_a = sign_up(app, "a@example.ca", "password-1").await["access_token"].as_str().unwrap().to_owned();
    let family_a = app
        .as_user(&parent_a)
        .post("/v1/families", json!({"name": "Famille Côté", "preferred_language": "fr"}))
        .await
        .expect(201);
    // Parent B's family is set up by the office.
    let b = sign_up(app, "b@example.ca", "password-1").await;
    crate::common::confirm_email(app, "b@example.ca").await;
    let parent_b = b["access_token"].as_str().unwrap().to_owned();
    let family_b = office
        .post(
            "/v1/families",
            json!({"name": "Tremblay-Smith", "email": "b@example.ca",
        "phone": "+1 613-555-0199", "guardian_ids": [b["user"]["id"]]}),
        )
        .await
        .expect(201);
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    let (fa, fb, t1, t2) = (id(&family_a), id(&family_b), id(&t1), id(&t2));
    let mut students = Vec::new();
    for body in [
        json!({"family_id": fa, "first_name": "Hélène", "last_name": "Côté", "instrument": "piano", "teacher_id": t1}),
        json!({"family_id": fb, "first_name": "Zoë", "last_name": "Tremblay", "instrument": "violin", "teacher_id": t2}),
        json!({"family_id": fb, "first_name": "Liam", "last_name": "O'Brien", "instrument": "guitar", "status": "waitlisted"}),
    ] {
        students.push(id(&office.post("/v1/students", body).await.expect(201)));
    }
    forget_signup_confirmations(app).await;
    School {
        admin,
        teacher1,
        teacher1_id: t1,
        teacher2,
        teacher2_id: t2,
        parent_a,
        family_a: fa,
        parent_b,
        family_b: fb,
        students: students.try_into().unwrap(),
    }
}

/// The sample school's parents signed up, which queued confirmation emails; tests count the
/// emails they cause, so these are taken out of the outbox before any worker sends them.
/// (`auth::a_signup_is_confirmed_through_the_emailed_link` covers them.)
async fn forget_signup_confirmations(app: &TestApp) {
    let db = &app.state.db;
    let ids: Vec<uuid::Uuid> = cedar::on_db!(db, pool => sqlx::query_scalar(
        "SELECT id FROM outbox WHERE template = 'confirm_signup' AND status = 'queued'").fetch_all(pool).await)
    .unwrap();
    for id in ids {
        cedar::on_db!(db, pool => sqlx::query("DELETE FROM jobs WHERE dedupe_key = $1")
            .bind(format!("outbox:{id}")).execute(pool).await.map(|_| ()))
        .unwrap();
        cedar::on_db!(db, pool => sqlx::query("DELETE FROM outbox WHERE id = $1").bind(id).execute(pool).await.map(|_| ()))
            .unwrap();
    }
}

/// A worker in this process, running every registered job kind.
pub type Worker = (watch::Sender<bool>, tokio::task::JoinHandle<anyhow::Result<()>>);

pub fn start_worker(state: &AppState, lease: Duration) -> Worker {
    let options = WorkerOptions {
        poll_interval: Duration::from_millis(50),
        lease: chrono::Duration::from_std(lease).unwrap(),
        shutdown_grace: Duration::from_secs(2),
        ..WorkerOptions::default()
    };
    let (stop, stopped) = watch::channel(false);
    (stop, tokio::spawn(worker::run(state.clone(), cedar::app::jobs::registry(), options, stopped)))
}

pub async fn stop_worker((stop, handle): Worker) {
    let _ = stop.send(true);
    handle.await.unwrap().unwrap();
}
