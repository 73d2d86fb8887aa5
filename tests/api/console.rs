//! The owner console over HTTP, as a browser sees it: cookies, CSRF, redirects, the review
//! inbox acting through the API (once per form), role scoping, language, session renewal.
//! (tests/browser/console.mjs drives the same pages in a real chromium.)

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::backend_tests;
use crate::common::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, spawn_app_with_workflows};
use crate::helpers::{School, school, start_worker, stop_worker};

backend_tests!(
    signing_in_sets_a_staff_session_and_refuses_everyone_else,
    an_enrolment_is_approved_from_the_page_with_the_second_option_once,
    tasks_and_dead_emails_are_handled_through_the_api_with_csrf,
    the_language_follows_the_users_choice,
    the_day_shows_lessons_by_room_and_teacher_and_takes_attendance,
    rejecting_needs_a_reason_and_declines_the_request,
    an_expired_access_token_is_renewed_and_sign_out_ends_the_session,
);

/// A browser without JavaScript: it keeps cookies and does not follow redirects.
pub struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
}

fn encode(form: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish()
}

fn form_post(client: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> reqwest::RequestBuilder {
    client.post(url).header("content-type", "application/x-www-form-urlencoded").body(encode(form))
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub csp: Option<String>,
    pub body: String,
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { app, client, cookies: BTreeMap::new() }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.client.get(self.app.url(path));
        self.send(request).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = form_post(&self.client, &self.app.url(path), form);
        self.send(request).await
    }

    /// Posts a console form with this browser's CSRF value and a fresh nonce.
    pub async fn submit(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.cookies.get("cedar_csrf").cloned().expect("a page set the CSRF cookie");
        let nonce = uuid::Uuid::now_v7().simple().to_string();
        self.submit_once(path, fields, &csrf, &nonce).await
    }

    pub async fn submit_once(&mut self, path: &str, fields: &[(&str, &str)], csrf: &str, nonce: &str) -> Page {
        let mut form = vec![("csrf", csrf), ("nonce", nonce)];
        form.extend_from_slice(fields);
        self.post(path, &form).await
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let request = if cookie.is_empty() { request } else { request.header("cookie", cookie) };
        let response = request.send().await.unwrap();
        let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        let (location, csp) = (header("location"), header("content-security-policy"));
        let set_cookies: Vec<String> =
            response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        for cookie in &set_cookies {
            let pair = cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || cookie.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = response.status().as_u16();
        Page { status, location, set_cookies, csp, body: response.text().await.unwrap() }
    }

    pub async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        self.get("/console/sign-in").await;
        let csrf = self.cookies["cedar_csrf"].clone();
        self.post(
            "/console/sign-in",
            &[("csrf", &csrf), ("email", email), ("password", password), ("next", "/console")],
        )
        .await
    }
}

async fn signing_in_sets_a_staff_session_and_refuses_everyone_else(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let s = school(&app).await;
    let mut browser = Browser::new(&app);

    let page = browser.get("/console/reviews/01a229d5-0000-7000-8000-000000000000").await;
    assert_eq!(page.status, 303);
    assert_eq!(
        page.location.as_deref(),
        Some("/console/sign-in?next=%2Fconsole%2Freviews%2F01a229d5-0000-7000-8000-000000000000")
    );

    let page = browser.sign_in(ADMIN_EMAIL, "not-the-password").await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("do not match an account"), "{}", page.body);
    assert!(!browser.cookies.contains_key("cedar_session"));

    // A form without the CSRF value, or from another site, is refused before any password check.
    let page = browser.post("/console/sign-in", &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)]).await;
    assert_eq!(page.status, 403);
    let csrf = browser.cookies["cedar_csrf"].clone();
    let forged = browser
        .client
        .post(app.url("/console/sign-in"))
        .header("cookie", format!("cedar_csrf={csrf}"))
        .header("origin", "https://elsewhere.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("csrf", csrf.as_str()), ("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)]))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // Parents have no console: no session cookie, and the fresh session is ended.
    let page = browser.sign_in("a@example.ca", "password-1").await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("for the school"));
    assert!(!browser.cookies.contains_key("cedar_session"));

    let page = browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/console"));
    let session = page.set_cookies.iter().find(|c| c.starts_with("cedar_session=")).expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/console", "Max-Age=3600"] {
        assert!(session.contains(attribute), "{session} lacks {attribute}");
    }
    assert!(!session.contains("Secure"), "plain HTTP on loopback: no Secure attribute");

    let page = browser.get("/console").await;
    assert_eq!(page.status, 200);
    let csp = page.csp.unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("form-action 'self'") && !csp.contains("unsafe-inline"));
    for section in ["id=\"inbox\"", "id=\"today\"", "id=\"tasks\"", "id=\"money\"", "id=\"health\""] {
        assert!(page.body.contains(section), "the admin's morning shows {section}");
    }
    let asset = browser.get("/console/static/console.js").await;
    assert_eq!(asset.status, 200);
    assert!(asset.body.contains("keydown"));
    assert_eq!(browser.get("/console/nothing-here").await.status, 404);

    // Behind an HTTPS proxy the cookies are Secure.
    let mut secure = Browser::new(&app);
    secure.get("/console/sign-in").await;
    let csrf = secure.cookies["cedar_csrf"].clone();
    let response = secure
        .client
        .post(app.url("/console/sign-in"))
        .header("cookie", format!("cedar_csrf={csrf}"))
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("csrf", csrf.as_str()), ("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)]))
        .send()
        .await
        .unwrap();
    let cookies: Vec<String> =
        response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert!(cookies.iter().any(|c| c.starts_with("cedar_session=") && c.contains("; Secure")), "{cookies:?}");
    let _ = s;
}

/// Teacher 1 teaches Tuesdays 15:00–19:00; a family asks for Tuesday 16:00–17:00.
async fn pending_enrolment(app: &TestApp, s: &School) -> Value {
    let office = app.as_user(&s.admin);
    let windows = json!({"windows": [{"weekday": 2, "start_time": "15:00", "end_time": "19:00"}]});
    office.put(&format!("/v1/teachers/{}/availability", s.teacher1_id), windows).await.expect(200);
    let body = json!({"family_id": s.family_a, "student": {"first_name": "Anouk", "last_name": "Côté"},
        "instrument": "piano", "lesson_minutes": 30,
        "preferred_times": [{"weekday": 2, "start_time": "16:00", "end_time": "17:00"}]});
    office.post("/v1/enrollments", body).await.expect(201);
    for _ in 0..800 {
        let page = office.get("/v1/reviews?workflow=enrollment").await.expect(200);
        if let Some(review) = page["items"].as_array().unwrap().first() {
            return review.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no enrolment review appeared");
}

async fn an_enrolment_is_approved_from_the_page_with_the_second_option_once(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let s = school(&app).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let review = pending_enrolment(&app, &s).await;
    let id = review["id"].as_str().unwrap();
    let options = review["context"]["options"].as_array().unwrap();
    assert!(options.len() >= 2, "{options:#?}");

    // A teacher does not see the office's enrolment reviews, nor money and health.
    let mut teacher = Browser::new(&app);
    assert_eq!(teacher.sign_in("t1@cedarheights.ca", "a-good-password").await.status, 303);
    let morning = teacher.get("/console").await;
    assert_eq!(morning.status, 200);
    assert!(!morning.body.contains("Anouk") && !morning.body.contains("id=\"money\""));
    assert_eq!(teacher.get(&format!("/console/reviews/{id}")).await.status, 404);

    let mut owner = Browser::new(&app);
    owner.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let morning = owner.get("/console").await;
    assert!(morning.body.contains("Anouk Côté · piano"), "the inbox names the child");
    let page = owner.get(&format!("/console/reviews/{id}")).await;
    assert_eq!(page.status, 200);
    for expected in
        ["Famille Côté", "Options on the week", "name=\"option\" value=\"1\"", "welcome_paragraph", "Élodie Gagné"]
    {
        assert!(page.body.contains(expected), "the review page shows {expected}");
    }

    // Without the CSRF field nothing happens.
    let refused = owner.post(&format!("/console/reviews/{id}/approve"), &[("option", "1")]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(app.as_user(&s.admin).get(&format!("/v1/reviews/{id}")).await.expect(200)["status"], "pending");

    // The same form sent twice (a double click) approves once.
    let csrf = owner.cookies["cedar_csrf"].clone();
    let fields = [("option", "1"), ("decision", "enroll"), ("welcome_paragraph", "Bienvenue, Anouk !")];
    let path = format!("/console/reviews/{id}/approve");
    let first = owner.submit_once(&path, &fields, &csrf, "nonce-1").await;
    assert_eq!((first.status, first.location.as_deref()), (303, Some("/console?done=approved#inbox")));
    let again = owner.submit_once(&path, &fields, &csrf, "nonce-1").await;
    assert_eq!(again.status, 303, "the replayed answer");
    let decided = app.as_user(&s.admin).get(&format!("/v1/reviews/{id}")).await.expect(200);
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["edits"]["option"], 1);
    assert_eq!(decided["edits"]["welcome_paragraph"], "Bienvenue, Anouk !");
    let audit = app.as_user(&s.admin).get(&format!("/v1/audit-log?subject_id={id}")).await.expect(200);
    let approvals = audit["items"].as_array().unwrap().iter().filter(|e| e["action"] == "review.approved").count();
    assert_eq!(approvals, 1, "{audit:#}");

    // A new form on a decided review: the API's 409, explained.
    let late = owner.submit(&path, &fields).await;
    assert_eq!(late.status, 409);
    assert!(late.body.contains("already decided"));

    // The run books the second option.
    let chosen = &options[1];
    let mut booked = Vec::new();
    for _ in 0..800 {
        let from = chosen["first_lesson"].as_str().unwrap();
        let path = format!("/v1/lessons?teacher_id={}&from={}", s.teacher1_id, from.replace('+', "%2B"));
        booked = app.as_user(&s.admin).get(&path).await.expect(200)["items"].as_array().unwrap().clone();
        if !booked.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        booked.first().map(|l| l["starts_at"].as_str().unwrap().to_owned()),
        chosen["first_lesson"].as_str().map(|t| {
            let at: chrono::DateTime<chrono::Utc> = t.parse().unwrap();
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
    );
    stop_worker(worker).await;
}

async fn tasks_and_dead_emails_are_handled_through_the_api_with_csrf(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let s = school(&app).await;
    let office = app.as_user(&s.admin);
    let task =
        office.post("/v1/tasks", json!({"title": "Call the Côté family", "due_on": "2026-01-05"})).await.expect(201);
    let task_id = task["id"].as_str().unwrap();
    // An email that gave up (the browser test bounces a real one off an SMTP server).
    crate::common::sign_up(&app, "new-parent@example.ca", "a-long-password-1").await;
    let email = office.get("/v1/outbox?template=confirm_signup").await.expect(200)["items"][0].clone();
    let email_id = email["id"].as_str().unwrap();
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE outbox SET status = 'dead', last_error = 'SMTP: 550' WHERE id = $1")
        .bind(uuid::Uuid::parse_str(email_id).unwrap()).execute(pool).await.map(|_| ()))
    .unwrap();

    let mut owner = Browser::new(&app);
    owner.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let morning = owner.get("/console").await;
    assert!(morning.body.contains("Call the Côté family") && morning.body.contains("Overdue"));
    assert!(morning.body.contains(&format!("/console/emails/{email_id}/retry")));

    let forged = owner.post(&format!("/console/tasks/{task_id}/done"), &[("csrf", "0123"), ("back", "/console")]).await;
    assert_eq!(forged.status, 403);
    assert_eq!(office.get(&format!("/v1/tasks/{task_id}")).await.expect(200)["status"], "open");

    let done = owner.submit(&format!("/console/tasks/{task_id}/done"), &[("back", "/console?day=2026-12-01")]).await;
    assert_eq!(done.location.as_deref(), Some("/console?day=2026-12-01&done=task#tasks"));
    assert_eq!(office.get(&format!("/v1/tasks/{task_id}")).await.expect(200)["status"], "done");
    let page = owner.get("/console?day=2026-12-01&done=task").await;
    assert!(page.body.contains("Task done.") && !page.body.contains("Call the Côté family"));

    // `back` never leaves the console.
    let retried =
        owner.submit(&format!("/console/emails/{email_id}/retry"), &[("back", "https://evil.example/")]).await;
    assert_eq!(retried.location.as_deref(), Some("/console?done=retry#health"));
    assert_eq!(office.get(&format!("/v1/outbox/{email_id}")).await.expect(200)["status"], "queued");
    // A second retry: the API says it is no longer dead, and the page says so.
    let twice = owner.submit(&format!("/console/emails/{email_id}/retry"), &[]).await;
    assert_eq!(twice.status, 409, "{}", twice.body);

    // A teacher's retry is the API's 403.
    let mut teacher = Browser::new(&app);
    teacher.sign_in("t1@cedarheights.ca", "a-good-password").await;
    let refused = teacher.submit(&format!("/console/emails/{email_id}/retry"), &[]).await;
    assert_eq!(refused.status, 403);
}

async fn the_language_follows_the_users_choice(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let s = school(&app).await;
    let mut owner = Browser::new(&app);
    owner.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert!(owner.get("/console").await.body.contains("<html lang=\"en\">"));
    let switched = owner.submit("/console/language", &[("lang", "fr"), ("back", "/console")]).await;
    assert_eq!(switched.location.as_deref(), Some("/console"));
    let page = owner.get("/console").await;
    assert!(page.body.contains("<html lang=\"fr\">") && page.body.contains("En attente de vous"));
    let me = app.as_user(&s.admin).get("/auth/v1/user").await.expect(200);
    assert_eq!(me["user_metadata"]["locale"], "fr");

    // On another device the preference comes with the sign-in.
    let mut phone = Browser::new(&app);
    phone.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(phone.cookies.get("cedar_lang").map(String::as_str), Some("fr"));
    assert!(phone.get("/console").await.body.contains("Tâches"));
    assert_eq!(owner.submit("/console/language", &[("lang", "de")]).await.status, 422);
}

async fn an_expired_access_token_is_renewed_and_sign_out_ends_the_session(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let _s = school(&app).await;
    let mut owner = Browser::new(&app);
    owner.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let old_access = owner.cookies["cedar_session"].clone();
    let old_refresh = owner.cookies["cedar_refresh"].clone();

    // The browser dropped the expired access cookie: the refresh cookie renews it.
    owner.cookies.remove("cedar_session");
    let page = owner.get("/console").await;
    assert_eq!(page.status, 200);
    assert!(page.set_cookies.iter().any(|c| c.starts_with("cedar_session=")));
    assert_ne!(owner.cookies["cedar_refresh"], old_refresh, "the refresh token rotates");
    assert_ne!(owner.cookies["cedar_session"], old_access);

    // A refresh token the server does not know: back to signing in, cookies cleared.
    let mut stale = Browser::new(&app);
    stale.cookies.insert("cedar_refresh".into(), "not-a-refresh-token".into());
    stale.cookies.insert("cedar_session".into(), "not.a.jwt".into());
    let page = stale.get("/console").await;
    assert_eq!(page.status, 303);
    assert!(page.location.unwrap().starts_with("/console/sign-in"));
    assert!(page.set_cookies.iter().any(|c| c.starts_with("cedar_session=;") && c.contains("Max-Age=0")));
    let _ = (old_access, old_refresh);

    // Signing out ends this session on the server, not only in the browser.
    owner.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let access = owner.cookies["cedar_session"].clone();
    let out = owner.submit("/console/sign-out", &[]).await;
    assert_eq!(out.location.as_deref(), Some("/console/sign-in"));
    assert!(!owner.cookies.contains_key("cedar_session") && !owner.cookies.contains_key("cedar_refresh"));
    let api = app.client.get(app.url("/v1/me")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(api.status(), 401, "the session ended on the server too");
}

async fn the_day_shows_lessons_by_room_and_teacher_and_takes_attendance(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let s = school(&app).await;
    let office = app.as_user(&s.admin);
    let room = office.post("/v1/rooms", json!({"name": "Studio Chopin", "capacity": 2})).await.expect(201);
    let windows = json!({"windows": [{"weekday": 1, "start_time": "09:00", "end_time": "21:00"}]});
    for teacher in [&s.teacher1_id, &s.teacher2_id] {
        office.put(&format!("/v1/teachers/{teacher}/availability"), windows.clone()).await.expect(200);
    }
    // Monday 2 November 2026: Hélène at 16:00 in Studio Chopin, Zoë at 17:00 (absent).
    let helene = office
        .post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher1_id, "student_id": s.students[0], "room_id": room["id"],
            "starts_at": "2026-11-02T21:00:00Z", "duration_minutes": 30}),
        )
        .await
        .expect(201);
    let helene = helene["occurrences"][0]["id"].as_str().or(helene["id"].as_str()).unwrap().to_owned();
    let zoe = office
        .post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher2_id, "student_id": s.students[1],
            "starts_at": "2026-11-02T22:00:00Z", "duration_minutes": 30}),
        )
        .await
        .expect(201);
    let zoe = zoe["occurrences"][0]["id"].as_str().or(zoe["id"].as_str()).unwrap().to_owned();
    office.post(&format!("/v1/lessons/{zoe}/attendance"), json!({"status": "absent"})).await.expect(200);
    office
        .post(
            "/v1/calendar-exceptions",
            json!({"kind": "time_off", "teacher_id": s.teacher2_id, "name": "Dentist",
            "starts_on": "2026-11-02", "ends_on": "2026-11-02"}),
        )
        .await
        .expect(201);

    let mut owner = Browser::new(&app);
    owner.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let page = owner.get("/console?day=2026-11-02").await;
    assert_eq!(page.status, 200);
    let day = &page.body[page.body.find("id=\"today\"").unwrap()..page.body.find("id=\"tasks\"").unwrap()];
    for shown in [
        "Monday 2 November 2026",
        "Dentist",
        "Studio Chopin",
        "16:00–16:30",
        "Élodie Gagné",
        "Hélène Côté",
        "Sam Wilson",
        "Zoë Tremblay",
        "Absent",
        &format!("/console/lessons/{helene}/attendance"),
    ] {
        assert!(day.contains(shown), "the day shows {shown}");
    }
    assert!(!day.contains(&format!("/console/lessons/{zoe}/attendance")), "Zoë's attendance is taken");

    let marked = owner
        .submit(
            &format!("/console/lessons/{helene}/attendance"),
            &[("status", "present"), ("back", "/console?day=2026-11-02")],
        )
        .await;
    assert_eq!(marked.location.as_deref(), Some("/console?day=2026-11-02&done=attendance#today"));
    let lesson = office.get(&format!("/v1/lessons/{helene}")).await.expect(200);
    assert_eq!(lesson["attendance"], "present");
    let page = owner.get("/console?day=2026-11-02&done=attendance").await;
    assert!(page.body.contains("Attendance saved.") && page.body.contains("All attendance is taken."));

    // A teacher's day is their own lessons only.
    let mut teacher = Browser::new(&app);
    teacher.sign_in("t1@cedarheights.ca", "a-good-password").await;
    let page = teacher.get("/console?day=2026-11-02").await;
    assert!(page.body.contains("Hélène Côté") && !page.body.contains("Zoë Tremblay"));
    // Nor can they mark another teacher's lesson (the API's answer).
    let refused = teacher.submit(&format!("/console/lessons/{zoe}/attendance"), &[("status", "present")]).await;
    assert_eq!(refused.status, 404);
}

async fn rejecting_needs_a_reason_and_declines_the_request(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let s = school(&app).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let review = pending_enrolment(&app, &s).await;
    let id = review["id"].as_str().unwrap();
    let mut owner = Browser::new(&app);
    // A sign-in asked to go elsewhere afterwards lands on the console.
    owner.get("/console/sign-in").await;
    let csrf = owner.cookies["cedar_csrf"].clone();
    let fields =
        [("csrf", csrf.as_str()), ("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD), ("next", "//evil.example/x")];
    assert_eq!(owner.post("/console/sign-in", &fields).await.location.as_deref(), Some("/console"));

    let path = format!("/console/reviews/{id}/reject");
    let blank = owner.submit(&path, &[("reason", "   ")]).await;
    assert_eq!(blank.status, 422, "the API's answer");
    assert!(blank.body.contains("reason"), "{}", blank.body);
    assert_eq!(app.as_user(&s.admin).get(&format!("/v1/reviews/{id}")).await.expect(200)["status"], "pending");

    let rejected = owner.submit(&path, &[("reason", "No piano teacher on Tuesdays this term")]).await;
    assert_eq!(rejected.location.as_deref(), Some("/console?done=rejected#inbox"));
    let decided = app.as_user(&s.admin).get(&format!("/v1/reviews/{id}")).await.expect(200);
    assert_eq!(
        (decided["status"].as_str(), decided["reason"].as_str()),
        (Some("rejected"), Some("No piano teacher on Tuesdays this term"))
    );
    let run = crate::helpers::run_reaching(&app, &s, review["run_id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(run["context"]["decline"]["declined"], true, "{run:#}");
    assert!(owner.get("/console?done=rejected").await.body.contains("Rejected."));
    stop_worker(worker).await;
}
