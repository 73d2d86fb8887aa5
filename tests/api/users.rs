//! Accounts and roles (admin), invitations and resets, disabling, the audit trail.

use serde_json::{Value, json};

use crate::backend_tests;
use crate::common::{
    Backend, TestApp, admin_token, assert_gotrue_error, assert_problem, sign_in, sign_up, spawn_app, user_with_role,
};

async fn get(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.client.get(app.url(path)).bearer_auth(token).send().await.unwrap()
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> reqwest::Response {
    app.client.post(app.url(path)).bearer_auth(token).json(&body).send().await.unwrap()
}

async fn patch(app: &TestApp, path: &str, token: &str, body: Value) -> reqwest::Response {
    app.client.patch(app.url(path)).bearer_auth(token).json(&body).send().await.unwrap()
}

async fn verify(app: &TestApp, kind: &str, token: &str, password: Option<&str>) -> reqwest::Response {
    let mut body = json!({"type": kind, "token_hash": token});
    if let Some(password) = password {
        body["password"] = json!(password);
    }
    app.post_json("/auth/v1/verify", &body).await
}

async fn admin_invites_and_the_invite_works_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin_token(&app).await;
    let response = post(
        &app,
        "/v1/users",
        &admin,
        json!({"email": "Prof.Piano@CedarHeights.ca", "role": "teacher", "display_name": "Élodie Gagné"}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["email"], "prof.piano@cedarheights.ca");
    assert_eq!(created["role"], "teacher");
    assert_eq!(created["status"], "active");
    assert_eq!(created["has_password"], false);
    assert_eq!(created["invite"]["type"], "invite");
    let token = created["invite"]["token"].as_str().unwrap();

    let session = verify(&app, "invite", token, Some("piano-forte-1")).await;
    assert_eq!(session.status(), 200);
    let session: Value = session.json().await.unwrap();
    assert_eq!(session["user"]["app_metadata"]["role"], "teacher");
    sign_in(&app, "prof.piano@cedarheights.ca", "piano-forte-1").await;
    assert_gotrue_error(verify(&app, "invite", token, Some("another-pass")).await, 403, "otp_expired").await;

    // An expired invitation does not work.
    let other: Value = post(&app, "/v1/users", &admin, json!({"email": "late@cedarheights.ca", "role": "parent"}))
        .await
        .json()
        .await
        .unwrap();
    let past = chrono::Utc::now() - chrono::Duration::minutes(1);
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE one_time_tokens SET expires_at = $1 WHERE used_at IS NULL")
        .bind(past).execute(pool).await.map(|_| ()))
    .unwrap();
    let late = verify(&app, "invite", other["invite"]["token"].as_str().unwrap(), Some("late-password")).await;
    assert_gotrue_error(late, 403, "otp_expired").await;
}

async fn only_admins_manage_users(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin_token(&app).await;
    let parent = sign_up(&app, "parent@example.ca", "password-1").await["access_token"].as_str().unwrap().to_owned();
    let (teacher_id, teacher) = user_with_role(&app, &admin, "teacher@example.ca", "teacher").await;
    for token in [&parent, &teacher] {
        assert_problem(get(&app, "/v1/users", token).await, 403).await;
        assert_problem(get(&app, &format!("/v1/users/{teacher_id}"), token).await, 403).await;
        assert_problem(post(&app, "/v1/users", token, json!({"email": "x@example.ca", "role": "admin"})).await, 403)
            .await;
        assert_problem(patch(&app, &format!("/v1/users/{teacher_id}"), token, json!({"role": "admin"})).await, 403)
            .await;
        assert_problem(get(&app, "/v1/audit-log", token).await, 403).await;
    }
    assert_problem(app.get("/v1/users").await, 401).await;
    // The role a parent might write into their own metadata changes nothing.
    let sneaky = app
        .client
        .put(app.url("/auth/v1/user"))
        .bearer_auth(&parent)
        .json(&json!({"data": {"role": "admin"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(sneaky.status(), 200);
    let me: Value = get(&app, "/v1/me", &parent).await.json().await.unwrap();
    assert_eq!(me["role"], "parent");
    assert_problem(get(&app, "/v1/users", &parent).await, 403).await;
}

async fn create_user_validates_and_maps_duplicates(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin_token(&app).await;
    let bad = post(&app, "/v1/users", &admin, json!({"email": "nope", "role": "wizard", "password": "short"})).await;
    let body = assert_problem(bad, 422).await;
    let fields: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["email", "role", "password"]);
    let first = post(&app, "/v1/users", &admin, json!({"email": "same@example.ca", "role": "parent"})).await;
    assert_eq!(first.status(), 201);
    let dup = post(&app, "/v1/users", &admin, json!({"email": "SAME@example.ca", "role": "teacher"})).await;
    let body = assert_problem(dup, 409).await;
    assert_eq!(body["detail"], "An account with this email address already exists");
    let unknown_field =
        post(&app, "/v1/users", &admin, json!({"email": "u@example.ca", "role": "parent", "is_root": true})).await;
    assert_problem(unknown_field, 422).await;
}

async fn disabling_a_user_ends_their_access_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin_token(&app).await;
    let session = sign_up(&app, "leaving@example.ca", "password-1").await;
    let token = session["access_token"].as_str().unwrap();
    let id = session["user"]["id"].as_str().unwrap();
    assert_eq!(get(&app, "/v1/me", token).await.status(), 200);

    let disabled = patch(&app, &format!("/v1/users/{id}"), &admin, json!({"status": "disabled"})).await;
    assert_eq!(disabled.status(), 200);
    assert_problem(get(&app, "/v1/me", token).await, 401).await;
    let refresh = app
        .post_json("/auth/v1/token?grant_type=refresh_token", &json!({"refresh_token": session["refresh_token"]}))
        .await;
    assert_eq!(refresh.status(), 400);
    let again = app
        .post_json(
            "/auth/v1/token?grant_type=password",
            &json!({"email": "leaving@example.ca", "password": "password-1"}),
        )
        .await;
    assert_gotrue_error(again, 400, "invalid_credentials").await;

    let log: Value =
        get(&app, &format!("/v1/audit-log?subject_id={id}&action=user.disabled"), &admin).await.json().await.unwrap();
    assert_eq!(log["items"].as_array().unwrap().len(), 1);
    assert_eq!(log["items"][0]["actor_role"], "admin");

    patch(&app, &format!("/v1/users/{id}"), &admin, json!({"status": "active"})).await;
    sign_in(&app, "leaving@example.ca", "password-1").await;
}

async fn role_changes_apply_at_once_and_are_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin_token(&app).await;
    let (id, token) = user_with_role(&app, &admin, "promoted@example.ca", "teacher").await;
    assert_problem(get(&app, "/v1/users", &token).await, 403).await;
    let response = patch(&app, &format!("/v1/users/{id}"), &admin, json!({"role": "admin"})).await;
    assert_eq!(response.status(), 200);
    // The same token now carries admin rights: the role lives in Cedar's table, not the token.
    assert_eq!(get(&app, "/v1/users", &token).await.status(), 200);
    let log: Value = get(&app, "/v1/audit-log?action=user.role_changed", &admin).await.json().await.unwrap();
    assert_eq!(log["items"][0]["details"], json!({"from": "teacher", "to": "admin"}));

    // Admins cannot lock themselves out.
    let me: Value = get(&app, "/v1/me", &admin).await.json().await.unwrap();
    let own =
        patch(&app, &format!("/v1/users/{}", me["id"].as_str().unwrap()), &admin, json!({"role": "parent"})).await;
    assert_problem(own, 409).await;
    let delete_self = app
        .client
        .delete(app.url(&format!("/v1/users/{}", me["id"].as_str().unwrap())))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(delete_self, 409).await;
}

async fn patch_can_clear_and_set_links(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin_token(&app).await;
    let family: Value = post(&app, "/v1/families", &admin, json!({"name": "Côté"})).await.json().await.unwrap();
    let family = family["id"].as_str().unwrap().to_owned();
    let (id, _) = user_with_role(&app, &admin, "linked@example.ca", "parent").await;
    let unknown = patch(&app, &format!("/v1/users/{id}"), &admin, json!({"family_id": uuid::Uuid::now_v7()})).await;
    assert_problem(unknown, 422).await;
    let set: Value =
        patch(&app, &format!("/v1/users/{id}"), &admin, json!({"family_id": family, "display_name": "Jean Côté"}))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(set["family_id"], family);
    assert_eq!(set["display_name"], "Jean Côté");
    let cleared: Value =
        patch(&app, &format!("/v1/users/{id}"), &admin, json!({"family_id": null})).await.json().await.unwrap();
    assert!(cleared["family_id"].is_null());
    assert_eq!(cleared["display_name"], "Jean Côté", "absent fields are left alone");
    let missing = patch(&app, &format!("/v1/users/{}", uuid::Uuid::now_v7()), &admin, json!({"role": "parent"})).await;
    assert_problem(missing, 404).await;
}

async fn users_list_pages_and_filters(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin_token(&app).await;
    for i in 0..5 {
        let role = if i % 2 == 0 { "parent" } else { "teacher" };
        post(
            &app,
            "/v1/users",
            &admin,
            json!({"email": format!("user{i}@example.ca"), "role": role, "display_name": format!("Person {i}")}),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/users?limit=2&cursor={c}"),
            None => "/v1/users?limit=2".to_owned(),
        };
        let page: Value = get(&app, &path, &admin).await.json().await.unwrap();
        seen.extend(page["items"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6);

    let teachers: Value = get(&app, "/v1/users?role=teacher", &admin).await.json().await.unwrap();
    assert_eq!(teachers["items"].as_array().unwrap().len(), 2);
    let q: Value = get(&app, "/v1/users?q=PERSON%203", &admin).await.json().await.unwrap();
    assert_eq!(q["items"].as_array().unwrap().len(), 1);
    let wildcard: Value = get(&app, "/v1/users?q=%25", &admin).await.json().await.unwrap();
    assert_eq!(wildcard["items"].as_array().unwrap().len(), 0, "a % in q is literal");
    assert_problem(get(&app, "/v1/users?limit=0", &admin).await, 422).await;
    assert_problem(get(&app, "/v1/users?cursor=garbage!", &admin).await, 422).await;
    assert_problem(get(&app, "/v1/users?role=wizard", &admin).await, 422).await;
}

async fn admin_password_reset_works_once_and_ends_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin_token(&app).await;
    let session = sign_up(&app, "forgetful@example.ca", "old-password").await;
    let id = session["user"]["id"].as_str().unwrap();
    let reset = post(&app, &format!("/v1/users/{id}/password-reset"), &admin, json!({})).await;
    assert_eq!(reset.status(), 201);
    let reset: Value = reset.json().await.unwrap();
    assert_eq!(reset["type"], "recovery");
    let token = reset["token"].as_str().unwrap();
    assert_eq!(verify(&app, "recovery", token, Some("new-password")).await.status(), 200);
    assert_problem(get(&app, "/v1/me", session["access_token"].as_str().unwrap()).await, 401).await;
    sign_in(&app, "forgetful@example.ca", "new-password").await;
    assert_gotrue_error(verify(&app, "recovery", token, Some("third-password")).await, 403, "otp_expired").await;
    // An invite token is not a recovery token.
    let missing = post(&app, &format!("/v1/users/{}/password-reset", uuid::Uuid::now_v7()), &admin, json!({})).await;
    assert_problem(missing, 404).await;
}

async fn deleting_a_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin_token(&app).await;
    let session = sign_up(&app, "gone@example.ca", "password-1").await;
    let id = session["user"]["id"].as_str().unwrap();
    let deleted = app.client.delete(app.url(&format!("/v1/users/{id}"))).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_problem(get(&app, &format!("/v1/users/{id}"), &admin).await, 404).await;
    assert_problem(get(&app, "/v1/me", session["access_token"].as_str().unwrap()).await, 401).await;
    let again = app.client.delete(app.url(&format!("/v1/users/{id}"))).bearer_auth(&admin).send().await.unwrap();
    assert_problem(again, 404).await;
    // The audit trail outlives the account.
    let log: Value = get(&app, &format!("/v1/audit-log?subject_id={id}"), &admin).await.json().await.unwrap();
    let actions: Vec<&str> = log["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"user.deleted") && actions.contains(&"user.created"), "{actions:?}");
}

async fn audit_log_filters_and_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin_token(&app).await;
    for i in 0..3 {
        sign_up(&app, &format!("a{i}@example.ca"), "password-1").await;
    }
    let all: Value = get(&app, "/v1/audit-log?action=auth.sign_in&limit=2", &admin).await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let next = all["next_cursor"].as_str().unwrap();
    let rest: Value = get(&app, &format!("/v1/audit-log?action=auth.sign_in&limit=2&cursor={next}"), &admin)
        .await
        .json()
        .await
        .unwrap();
    // 3 sign-ups + the admin's sign-in = 4 sign-ins, newest first.
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert!(rest["next_cursor"].is_null());
    let first_time = all["items"][0]["occurred_at"].as_str().unwrap();
    let last_time = rest["items"][1]["occurred_at"].as_str().unwrap();
    assert!(first_time >= last_time);
    assert!(all["items"][0]["request_id"].is_string());
    assert!(all["items"][0]["ip"].as_str().unwrap().starts_with("127.0.0.1"));

    let me: Value = get(&app, "/v1/me", &admin).await.json().await.unwrap();
    let mine: Value = get(&app, &format!("/v1/audit-log?actor_id={}", me["id"].as_str().unwrap()), &admin)
        .await
        .json()
        .await
        .unwrap();
    assert!(mine["items"].as_array().unwrap().iter().all(|e| e["actor_id"] == me["id"]));
    let future: Value = get(&app, "/v1/audit-log?from=2100-01-01T00:00:00Z", &admin).await.json().await.unwrap();
    assert_eq!(future["items"].as_array().unwrap().len(), 0);
    assert_problem(get(&app, "/v1/audit-log?from=yesterday", &admin).await, 400).await;
}

async fn idempotent_user_creation(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin_token(&app).await;
    let create = || {
        app.client
            .post(app.url("/v1/users"))
            .bearer_auth(&admin)
            .header("idempotency-key", "create-teacher-1")
            .json(&json!({"email": "once@example.ca", "role": "teacher"}))
            .send()
    };
    let first = create().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let second = create().await.unwrap();
    assert_eq!(second.status(), 201, "a retry returns the first response, not a 409");
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    let users: Value = get(&app, "/v1/users?q=once@", &admin).await.json().await.unwrap();
    assert_eq!(users["items"].as_array().unwrap().len(), 1);
}

backend_tests!(
    admin_invites_and_the_invite_works_once,
    only_admins_manage_users,
    create_user_validates_and_maps_duplicates,
    disabling_a_user_ends_their_access_at_once,
    role_changes_apply_at_once_and_are_audited,
    patch_can_clear_and_set_links,
    users_list_pages_and_filters,
    admin_password_reset_works_once_and_ends_sessions,
    deleting_a_user,
    audit_log_filters_and_pages,
    idempotent_user_creation,
);
