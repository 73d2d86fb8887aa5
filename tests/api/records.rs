//! Families, students, teachers, rooms and progress notes: ownership, search, validation.

use serde_json::{Value, json};

use crate::backend_tests;
use crate::common::{Backend, assert_problem, sign_up, spawn_app};
use crate::helpers::{json_ok, school, send};

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

async fn each_role_sees_only_its_students(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let [helene, zoe, liam] = s.students.clone();
    let visible = |token: &str| {
        let token = token.to_owned();
        let app = &app;
        async move { ids(&json_ok(send(app, "GET", "/v1/students", &token, None).await, 200).await) }
    };
    assert_eq!(visible(&s.admin).await, [helene.clone(), zoe.clone(), liam.clone()]);
    assert_eq!(visible(&s.parent_a).await, [helene.clone()]);
    assert_eq!(visible(&s.parent_b).await, [zoe.clone(), liam.clone()]);
    assert_eq!(visible(&s.teacher1).await, [helene.clone()]);
    assert_eq!(visible(&s.teacher2).await, [zoe.clone()]);
    // Single reads agree with the lists: not visible is 404, never 403.
    for (token, id) in [(&s.parent_a, &zoe), (&s.parent_b, &helene), (&s.teacher1, &zoe), (&s.teacher2, &liam)] {
        assert_problem(send(&app, "GET", &format!("/v1/students/{id}"), token, None).await, 404).await;
    }
    // Filters cannot widen a scope.
    let sneaky =
        json_ok(send(&app, "GET", &format!("/v1/students?family_id={}", s.family_b), &s.parent_a, None).await, 200)
            .await;
    assert!(sneaky["items"].as_array().unwrap().is_empty());
    // A parent without a family sees nothing.
    let lonely = sign_up(&app, "lonely@example.ca", "password-1").await["access_token"].as_str().unwrap().to_owned();
    assert!(ids(&json_ok(send(&app, "GET", "/v1/students", &lonely, None).await, 200).await).is_empty());
    assert_problem(send(&app, "GET", &format!("/v1/students/{helene}"), &lonely, None).await, 404).await;
    // Only admins write students.
    for token in [&s.parent_a, &s.teacher1] {
        assert_problem(
            send(&app, "PATCH", &format!("/v1/students/{helene}"), token, Some(json!({"level": "grade 2"}))).await,
            403,
        )
        .await;
        assert_problem(
            send(
                &app,
                "POST",
                "/v1/students",
                token,
                Some(json!({"family_id": s.family_a, "first_name": "X",
            "last_name": "Y", "instrument": "piano"})),
            )
            .await,
            403,
        )
        .await;
    }
}

async fn search_ignores_case_and_accents(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let [helene, zoe, liam] = s.students.clone();
    let search = |q: &str| {
        let path = format!("/v1/students?q={}", urlencode(q));
        let app = &app;
        let admin = s.admin.clone();
        async move { ids(&json_ok(send(app, "GET", &path, &admin, None).await, 200).await) }
    };
    assert_eq!(search("helene").await, [helene.clone()]);
    assert_eq!(search("cote").await, [helene.clone()]);
    assert_eq!(search("CÔTÉ").await, [helene.clone()]);
    assert_eq!(search("zoe").await, [zoe.clone()]);
    assert_eq!(search("tremblay zoe").await, [zoe.clone()]);
    assert_eq!(search("o'brien").await, [liam.clone()]);
    // Family names match too.
    assert_eq!(search("smith").await, [zoe.clone(), liam.clone()]);
    assert!(search("nobody").await.is_empty());
    assert!(search("%").await.is_empty(), "wildcards are literal");
    // Renaming a family keeps search in step.
    json_ok(
        send(&app, "PATCH", &format!("/v1/families/{}", s.family_b), &s.admin, Some(json!({"name": "Lévesque"}))).await,
        200,
    )
    .await;
    assert_eq!(search("levesque").await, [zoe, liam]);
}

fn urlencode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn student_filters(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let [helene, zoe, liam] = s.students.clone();
    let get = |path: String| {
        let app = &app;
        let admin = s.admin.clone();
        async move { ids(&json_ok(send(app, "GET", &path, &admin, None).await, 200).await) }
    };
    assert_eq!(get("/v1/students?instrument=Violin".into()).await, [zoe.clone()]);
    assert_eq!(get(format!("/v1/students?teacher_id={}", s.teacher1_id)).await, [helene.clone()]);
    assert_eq!(get(format!("/v1/students?family_id={}", s.family_b)).await, [zoe.clone(), liam.clone()]);
    assert_eq!(get("/v1/students?status=waitlisted".into()).await, [liam.clone()]);
    assert_eq!(get(format!("/v1/students?family_id={}&status=active", s.family_b)).await, [zoe]);
    let bad = send(&app, "GET", "/v1/students?status=sleeping", &s.admin, None).await;
    assert_eq!(assert_problem(bad, 422).await["errors"][0]["field"], "status");
    assert_problem(send(&app, "GET", "/v1/students?teacher_id=not-a-uuid", &s.admin, None).await, 400).await;
}

async fn pagination_returns_each_student_once_while_inserting(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let mut expected: Vec<String> = s.students.to_vec();
    for i in 0..27 {
        let body = json!({"family_id": s.family_a, "first_name": format!("Kid{i}"), "last_name": "Côté", "instrument": "piano"});
        expected.push(
            json_ok(send(&app, "POST", "/v1/students", &s.admin, Some(body)).await, 201).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Another client keeps adding students while we page.
    let writer = {
        let (client, url, admin, family) =
            (app.client.clone(), app.url("/v1/students"), s.admin.clone(), s.family_b.clone());
        tokio::spawn(async move {
            for i in 0..20 {
                let body = json!({"family_id": family, "first_name": format!("New{i}"), "last_name": "Smith", "instrument": "drums"});
                let r = client.post(&url).bearer_auth(&admin).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 201);
            }
        })
    };
    let mut seen = Vec::new();
    let mut path = "/v1/students?limit=7".to_owned();
    loop {
        let page = json_ok(send(&app, "GET", &path, &s.admin, None).await, 200).await;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/students?limit=7&cursor={cursor}"),
            None => break,
        }
    }
    writer.await.unwrap();
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a student was returned twice");
    for id in &expected {
        assert!(seen.contains(id), "student {id} existed before paging started but was skipped");
    }
}

async fn progress_notes_follow_ownership(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let [helene, zoe, _] = s.students.clone();
    let path = |id: &str| format!("/v1/students/{id}/progress-notes");
    let note = json_ok(
        send(
            &app,
            "POST",
            &path(&helene),
            &s.teacher1,
            Some(json!({"text": "Scales in D major are solid.",
            "pieces": ["Clementi Sonatina op. 36 no. 1"], "goals": "Hands together at 80 bpm"})),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(note["teacher_id"], s.teacher1_id);
    assert_eq!(note["pieces"], json!(["Clementi Sonatina op. 36 no. 1"]));
    assert!(note["date"].is_string());
    assert_problem(send(&app, "POST", &path(&zoe), &s.teacher1, Some(json!({"text": "not my student"}))).await, 404)
        .await;
    json_ok(
        send(&app, "POST", &path(&zoe), &s.admin, Some(json!({"text": "Office note", "date": "2026-09-01"}))).await,
        201,
    )
    .await;

    let read = json_ok(send(&app, "GET", &path(&helene), &s.parent_a, None).await, 200).await;
    assert_eq!(read["items"].as_array().unwrap().len(), 1);
    assert_problem(send(&app, "GET", &path(&helene), &s.parent_b, None).await, 404).await;
    assert_problem(send(&app, "POST", &path(&helene), &s.parent_a, Some(json!({"text": "I am a parent"}))).await, 403)
        .await;
    let invalid =
        send(&app, "POST", &path(&helene), &s.teacher1, Some(json!({"text": "  ", "date": "2999-01-01"}))).await;
    let fields: Vec<String> = assert_problem(invalid, 422).await["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["text", "date"]);
}

async fn families_follow_ownership(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let own = json_ok(send(&app, "GET", &format!("/v1/families/{}", s.family_a), &s.parent_a, None).await, 200).await;
    assert_eq!(own["preferred_language"], "fr");
    assert_eq!(own["guardians"].as_array().unwrap().len(), 1);
    assert_eq!(own["payee_user_id"], own["guardians"][0]["id"]);
    assert!(own["calendar_url"].as_str().unwrap().ends_with(".ics"));
    assert_problem(send(&app, "GET", &format!("/v1/families/{}", s.family_b), &s.parent_a, None).await, 404).await;
    assert_eq!(
        ids(&json_ok(send(&app, "GET", "/v1/families", &s.parent_a, None).await, 200).await),
        [s.family_a.clone()]
    );
    // Teachers see the families of their students, read-only, and never their calendar feed
    // (every lesson with every teacher, a secret that does not expire).
    let for_teacher = app.as_user(&s.teacher1).get("/v1/families").await.expect(200);
    assert_eq!(ids(&for_teacher), [s.family_a.clone()]);
    assert!(for_teacher["items"][0]["calendar_url"].is_null());
    let one = app.as_user(&s.teacher1).get(&format!("/v1/families/{}", s.family_a)).await.expect(200);
    assert!(one["calendar_url"].is_null());
    assert_problem(
        send(&app, "PATCH", &format!("/v1/families/{}", s.family_a), &s.teacher1, Some(json!({"phone": "6135550100"})))
            .await,
        403,
    )
    .await;

    // Parents update their own contact details, and only those.
    let updated = json_ok(
        send(
            &app,
            "PATCH",
            &format!("/v1/families/{}", s.family_a),
            &s.parent_a,
            Some(json!({"phone": "+1 819-555-0142", "city": "Gatineau", "email": "cote@example.ca"})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(updated["city"], "Gatineau");
    let admin_only = send(
        &app,
        "PATCH",
        &format!("/v1/families/{}", s.family_a),
        &s.parent_a,
        Some(json!({"name": "Renamed", "notes": "x"})),
    )
    .await;
    assert_eq!(assert_problem(admin_only, 422).await["errors"].as_array().unwrap().len(), 2);
    assert_problem(
        send(&app, "PATCH", &format!("/v1/families/{}", s.family_b), &s.parent_a, Some(json!({"phone": "6135550100"})))
            .await,
        404,
    )
    .await;
    let invalid = send(
        &app,
        "PATCH",
        &format!("/v1/families/{}", s.family_a),
        &s.parent_a,
        Some(json!({"phone": "call me", "email": "nope", "preferred_language": "de"})),
    )
    .await;
    assert_eq!(assert_problem(invalid, 422).await["errors"].as_array().unwrap().len(), 3);
    // Office notes are hidden from parents.
    json_ok(
        send(
            &app,
            "PATCH",
            &format!("/v1/families/{}", s.family_a),
            &s.admin,
            Some(json!({"notes": "pays by cheque"})),
        )
        .await,
        200,
    )
    .await;
    let seen_by_parent =
        json_ok(send(&app, "GET", &format!("/v1/families/{}", s.family_a), &s.parent_a, None).await, 200).await;
    assert!(seen_by_parent.get("notes").is_none());

    // A parent already in a family cannot create another.
    assert_problem(send(&app, "POST", "/v1/families", &s.parent_a, Some(json!({"name": "Second"}))).await, 409).await;
    assert_problem(send(&app, "POST", "/v1/families", &s.teacher1, Some(json!({"name": "Teachers"}))).await, 403).await;
}

/// A guardian removed from a family and a teacher who no longer teaches a student lose what
/// came with it: the family's threads, the student, the family.
async fn removed_guardians_and_former_teachers_lose_access(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let office = app.as_user(&s.admin);
    let (g2, g2_token) = crate::common::user_with_role(&app, &s.admin, "second@example.ca", "parent").await;
    let family = office.get(&format!("/v1/families/{}", s.family_b)).await.expect(200);
    let b_id = family["guardians"][0]["id"].clone();
    office.patch(&format!("/v1/families/{}", s.family_b), json!({"guardian_ids": [b_id, g2]})).await.expect(200);
    let zoe = s.students[1].clone();
    let thread = office
        .post(
            "/v1/threads",
            json!({"subject": "Recital", "body": "Zoë plays on Friday", "family_id": s.family_b,
            "student_id": zoe}),
        )
        .await
        .expect(201);
    let thread_path = format!("/v1/threads/{}", thread["id"].as_str().unwrap());
    let second = app.as_user(&g2_token);
    second.get(&thread_path).await.expect(200);
    second.get(&format!("/v1/students/{zoe}")).await.expect(200);
    let teacher2 = app.as_user(&s.teacher2);
    teacher2.get(&thread_path).await.expect(200);
    teacher2.get(&format!("/v1/students/{zoe}")).await.expect(200);

    // The office removes the second guardian and gives Zoë another teacher.
    office.patch(&format!("/v1/families/{}", s.family_b), json!({"guardian_ids": [b_id]})).await.expect(200);
    office.patch(&format!("/v1/students/{zoe}"), json!({"teacher_id": s.teacher1_id})).await.expect(200);
    second.get(&thread_path).await.expect(404);
    second.get(&format!("/v1/students/{zoe}")).await.expect(404);
    assert_eq!(second.get("/v1/threads").await.expect(200)["items"].as_array().unwrap().len(), 0);
    teacher2.get(&thread_path).await.expect(404);
    teacher2.get(&format!("/v1/students/{zoe}")).await.expect(404);
    teacher2.get(&format!("/v1/families/{}", s.family_b)).await.expect(404);
    // The new teacher and the remaining guardian keep theirs.
    app.as_user(&s.teacher1).get(&format!("/v1/students/{zoe}")).await.expect(200);
    app.as_user(&s.parent_b).get(&thread_path).await.expect(200);
}

async fn admin_manages_families_and_guardians(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let g1 = sign_up(&app, "g1@example.ca", "password-1").await;
    let g2 = sign_up(&app, "g2@example.ca", "password-1").await;
    let (g1_id, g2_id) = (g1["user"]["id"].clone(), g2["user"]["id"].clone());
    assert!(g1["user"]["email_confirmed_at"].is_null(), "an open sign-up has not proved its address");
    // Anyone may sign up with a parent's address: until its owner follows the emailed link, the
    // office cannot link the account to a family (nor through PATCH /v1/users).
    let early =
        send(&app, "POST", "/v1/families", &s.admin, Some(json!({"name": "Nguyen", "guardian_ids": [g1_id]}))).await;
    let problem = assert_problem(early, 422).await;
    assert_eq!(problem["errors"][0]["field"], "guardian_ids[0]");
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("confirmed"), "{problem}");
    let patch = send(
        &app,
        "PATCH",
        &format!("/v1/users/{}", g1_id.as_str().unwrap()),
        &s.admin,
        Some(json!({"family_id": s.family_a})),
    )
    .await;
    assert_eq!(assert_problem(patch, 422).await["errors"][0]["field"], "family_id");
    crate::common::confirm_email(&app, "g1@example.ca").await;
    crate::common::confirm_email(&app, "g2@example.ca").await;
    let user = json_ok(send(&app, "GET", "/auth/v1/user", g1["access_token"].as_str().unwrap(), None).await, 200).await;
    assert!(user["email_confirmed_at"].is_string(), "{user}");
    let family = json_ok(
        send(
            &app,
            "POST",
            "/v1/families",
            &s.admin,
            Some(json!({"name": "Nguyen", "guardian_ids": [g1_id, g2_id], "payee_user_id": g2_id})),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(family["payee_user_id"], g2_id);
    assert_eq!(family["guardians"].as_array().unwrap().len(), 2);
    let me = json_ok(send(&app, "GET", "/v1/me", g1["access_token"].as_str().unwrap(), None).await, 200).await;
    assert_eq!(me["family_id"], family["id"], "linking applies to the guardian's next request");

    let teacher_account = json_ok(send(&app, "GET", "/v1/me", &s.teacher1, None).await, 200).await["id"].clone();
    let bad =
        send(&app, "POST", "/v1/families", &s.admin, Some(json!({"name": "X", "guardian_ids": [teacher_account]})))
            .await;
    assert_eq!(assert_problem(bad, 422).await["errors"][0]["field"], "guardian_ids[0]");
    let bad = send(
        &app,
        "POST",
        "/v1/families",
        &s.admin,
        Some(json!({"name": "X", "guardian_ids": [g1_id], "payee_user_id": g2_id})),
    )
    .await;
    assert_eq!(assert_problem(bad, 422).await["errors"][0]["field"], "payee_user_id");
    let nothing_created = json_ok(send(&app, "GET", "/v1/families", &s.admin, None).await, 200).await;
    assert_eq!(nothing_created["items"].as_array().unwrap().len(), 3);

    // Replacing the guardians unlinks the one left out.
    let id = family["id"].as_str().unwrap();
    let updated = json_ok(
        send(&app, "PATCH", &format!("/v1/families/{id}"), &s.admin, Some(json!({"guardian_ids": [g1_id]}))).await,
        200,
    )
    .await;
    assert_eq!(updated["payee_user_id"], g1_id, "the payee moves to a remaining guardian");
    let me2 = json_ok(send(&app, "GET", "/v1/me", g2["access_token"].as_str().unwrap(), None).await, 200).await;
    assert!(me2["family_id"].is_null());

    assert_problem(send(&app, "DELETE", &format!("/v1/families/{}", s.family_a), &s.admin, None).await, 409).await;
    assert_eq!(send(&app, "DELETE", &format!("/v1/families/{id}"), &s.admin, None).await.status(), 204);
    assert_problem(send(&app, "GET", &format!("/v1/families/{id}"), &s.admin, None).await, 404).await;
    assert_problem(send(&app, "DELETE", &format!("/v1/families/{id}"), &s.parent_a, None).await, 403).await;
}

async fn teachers_roster_and_validation(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let for_parent = json_ok(send(&app, "GET", "/v1/teachers", &s.parent_a, None).await, 200).await;
    assert_eq!(for_parent["items"].as_array().unwrap().len(), 2);
    assert!(for_parent["items"][0].get("pay_rate_cents").is_none(), "pay is for admins");
    assert!(for_parent["items"][0].get("calendar_url").is_none());
    let for_admin =
        json_ok(send(&app, "GET", &format!("/v1/teachers/{}", s.teacher1_id), &s.admin, None).await, 200).await;
    assert_eq!(for_admin["pay_rate_cents"], 5500);
    assert_eq!(for_admin["instruments"], json!(["piano", "voice"]));
    assert!(for_admin["user_id"].is_string());
    let own =
        json_ok(send(&app, "GET", &format!("/v1/teachers/{}", s.teacher1_id), &s.teacher1, None).await, 200).await;
    assert!(own["calendar_url"].is_string());
    let pianists = json_ok(send(&app, "GET", "/v1/teachers?instrument=piano", &s.admin, None).await, 200).await;
    assert_eq!(ids(&pianists), [s.teacher1_id.clone()]);

    let dup = send(
        &app,
        "POST",
        "/v1/teachers",
        &s.admin,
        Some(json!({"first_name": "A", "last_name": "B", "email": "T1@cedarheights.ca", "instruments": ["piano"]})),
    )
    .await;
    assert_eq!(assert_problem(dup, 409).await["detail"], "A teacher with this email address already exists");
    let invalid = send(&app, "POST", "/v1/teachers", &s.admin, Some(json!({"first_name": "", "last_name": "B", "email": "x", "phone": "no", "instruments": [], "pay_rate_cents": -5}))).await;
    let fields: Vec<String> = assert_problem(invalid, 422).await["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["first_name", "email", "phone", "instruments", "pay_rate_cents"]);
    let parent_id = json_ok(send(&app, "GET", "/v1/me", &s.parent_a, None).await, 200).await["id"].clone();
    let link_parent = send(&app, "POST", "/v1/teachers", &s.admin, Some(json!({"first_name": "A", "last_name": "B", "email": "ab@x.ca", "instruments": ["piano"], "user_id": parent_id}))).await;
    assert_eq!(assert_problem(link_parent, 422).await["errors"][0]["field"], "user_id");
    assert_problem(
        send(
            &app,
            "POST",
            "/v1/teachers",
            &s.teacher1,
            Some(json!({"first_name": "A", "last_name": "B", "email": "c@x.ca", "instruments": ["piano"]})),
        )
        .await,
        403,
    )
    .await;

    // Deactivation and deletion.
    let off = json_ok(
        send(&app, "PATCH", &format!("/v1/teachers/{}", s.teacher2_id), &s.admin, Some(json!({"active": false}))).await,
        200,
    )
    .await;
    assert_eq!(off["active"], false);
    let active = json_ok(send(&app, "GET", "/v1/teachers?active=true", &s.admin, None).await, 200).await;
    assert_eq!(ids(&active), [s.teacher1_id.clone()]);
    assert_eq!(send(&app, "DELETE", &format!("/v1/teachers/{}", s.teacher2_id), &s.admin, None).await.status(), 204);
    let zoe = json_ok(send(&app, "GET", &format!("/v1/students/{}", s.students[1]), &s.admin, None).await, 200).await;
    assert!(zoe["teacher_id"].is_null());
    assert_problem(send(&app, "GET", &format!("/v1/teachers/{}", s.teacher2_id), &s.admin, None).await, 404).await;
}

async fn rooms_crud_and_validation(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let (office, teacher, parent) = (app.as_user(&s.admin), app.as_user(&s.teacher1), app.as_user(&s.parent_a));
    let room = office
        .post("/v1/rooms", json!({"name": "Studio A", "capacity": 3, "instruments": ["Piano"]}))
        .await
        .expect(201);
    assert_eq!(room["instruments"], json!(["piano"]));
    let id = room["id"].as_str().unwrap();
    office.post("/v1/rooms", json!({"name": "Studio A", "capacity": 2})).await.problem(409);
    let invalid = office.post("/v1/rooms", json!({"name": " ", "capacity": 0})).await.problem(422);
    assert_eq!(invalid["errors"].as_array().unwrap().len(), 2);
    assert_eq!(teacher.get("/v1/rooms").await.expect(200)["items"].as_array().unwrap().len(), 1);
    parent.get("/v1/rooms").await.problem(403);
    teacher.post("/v1/rooms", json!({"name": "Mine", "capacity": 1})).await.problem(403);
    let patched =
        office.patch(&format!("/v1/rooms/{id}"), json!({"capacity": 4, "notes": "window side"})).await.expect(200);
    assert_eq!(patched["capacity"], 4);
    assert_eq!(patched["name"], "Studio A");
    assert_eq!(office.delete(&format!("/v1/rooms/{id}")).await.status, 204);
    office.get(&format!("/v1/rooms/{id}")).await.problem(404);
}

async fn student_validation_and_unknown_ids(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let invalid = send(
        &app,
        "POST",
        "/v1/students",
        &s.admin,
        Some(json!({"family_id": s.family_a, "first_name": "",
        "last_name": "x".repeat(101), "instrument": "", "status": "graduated", "birth_date": "2999-01-01"})),
    )
    .await;
    let fields: Vec<String> = assert_problem(invalid, 422).await["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["first_name", "last_name", "instrument", "status", "birth_date"]);
    let unknown_family = send(
        &app,
        "POST",
        "/v1/students",
        &s.admin,
        Some(json!({"family_id": uuid::Uuid::now_v7(),
        "first_name": "A", "last_name": "B", "instrument": "piano"})),
    )
    .await;
    assert_eq!(assert_problem(unknown_family, 422).await["errors"][0]["field"], "family_id");
    let unknown_teacher = send(
        &app,
        "POST",
        "/v1/students",
        &s.admin,
        Some(json!({"family_id": s.family_a,
        "first_name": "A", "last_name": "B", "instrument": "piano", "teacher_id": uuid::Uuid::now_v7()})),
    )
    .await;
    assert_problem(unknown_teacher, 422).await;
    let bad_date = send(
        &app,
        "POST",
        "/v1/students",
        &s.admin,
        Some(json!({"family_id": s.family_a,
        "first_name": "A", "last_name": "B", "instrument": "piano", "birth_date": "next tuesday"})),
    )
    .await;
    assert_problem(bad_date, 422).await;
    let missing = uuid::Uuid::now_v7();
    assert_problem(send(&app, "GET", &format!("/v1/students/{missing}"), &s.admin, None).await, 404).await;
    assert_problem(
        send(&app, "PATCH", &format!("/v1/students/{missing}"), &s.admin, Some(json!({"level": "x"}))).await,
        404,
    )
    .await;
    assert_problem(send(&app, "DELETE", &format!("/v1/students/{missing}"), &s.admin, None).await, 404).await;
    assert_problem(send(&app, "GET", "/v1/students/not-a-uuid", &s.admin, None).await, 400).await;

    let patched = json_ok(
        send(
            &app,
            "PATCH",
            &format!("/v1/students/{}", s.students[0]),
            &s.admin,
            Some(json!({"preferred_name": "Lène", "status": "inactive", "instruments": ["voice"]})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(patched["status"], "inactive");
    assert_eq!(patched["instruments"], json!(["piano", "voice"]));
    let by_nickname = json_ok(send(&app, "GET", "/v1/students?q=lene", &s.admin, None).await, 200).await;
    assert_eq!(ids(&by_nickname), [s.students[0].clone()]);
    assert_problem(
        send(&app, "PATCH", &format!("/v1/students/{}", s.students[0]), &s.admin, Some(json!({"status": "gone"})))
            .await,
        422,
    )
    .await;
    assert_eq!(send(&app, "DELETE", &format!("/v1/students/{}", s.students[0]), &s.admin, None).await.status(), 204);
}

async fn demo_school_loads_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = cedar::people::demo::load(&app.state.db, app.state.settings.timezone).await.unwrap();
    assert!(first.created);
    let second = cedar::people::demo::load(&app.state.db, app.state.settings.timezone).await.unwrap();
    assert!(!second.created);
    let admin = crate::common::sign_in(&app, cedar::people::demo::ADMIN_EMAIL, cedar::people::demo::PASSWORD).await;
    let admin = admin["access_token"].as_str().unwrap().to_owned();
    let count = |path: &'static str| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let mut total = 0;
            let mut url = format!("{path}?limit=200");
            loop {
                let page = json_ok(send(app, "GET", &url, &admin, None).await, 200).await;
                total += page["items"].as_array().unwrap().len();
                match page["next_cursor"].as_str() {
                    Some(c) => url = format!("{path}?limit=200&cursor={c}"),
                    None => return total,
                }
            }
        }
    };
    assert_eq!(count("/v1/teachers").await, 8);
    assert_eq!(count("/v1/rooms").await, 6);
    assert_eq!(count("/v1/families").await, 120);
    assert_eq!(count("/v1/students").await, 180);
    let waitlisted =
        json_ok(send(&app, "GET", "/v1/students?status=waitlisted&limit=200", &admin, None).await, 200).await;
    assert!(!waitlisted["items"].as_array().unwrap().is_empty());
    // The demo timetable bills: a run for next month gives every family with an enrolled
    // student one invoice, numbered without gaps.
    let today = chrono::Utc::now().with_timezone(&app.state.settings.timezone).date_naive();
    let start = chrono::Datelike::with_day(&(today + chrono::Months::new(1)), 1).unwrap();
    let end = start + chrono::Months::new(1) - chrono::Duration::days(1);
    let run = json_ok(
        send(&app, "POST", "/v1/billing/runs", &admin, Some(json!({"period_start": start, "period_end": end}))).await,
        201,
    )
    .await;
    let created = run["created"].as_u64().unwrap();
    assert!(created >= 100, "{run}");
    let invoices = json_ok(send(&app, "GET", "/v1/invoices?limit=200", &admin, None).await, 200).await;
    let invoices = invoices["items"].as_array().unwrap();
    assert_eq!(invoices.len() as u64, created);
    assert!(invoices.iter().all(|i| i["total_cents"].as_i64().unwrap() >= 3_500 * 3));
    let mut numbers: Vec<u64> = invoices.iter().map(|i| i["number"].as_str().unwrap()[9..].parse().unwrap()).collect();
    numbers.sort();
    assert_eq!(numbers, (1..=created).collect::<Vec<_>>());
    let accented = json_ok(send(&app, "GET", "/v1/students?q=cote&limit=200", &admin, None).await, 200).await;
    assert!(accented["items"].as_array().unwrap().iter().any(|s| s["last_name"] == "Côté"));
    let parent = crate::common::sign_in(&app, "parent1@demo.cedarheights.ca", cedar::people::demo::PASSWORD).await;
    let mine =
        json_ok(send(&app, "GET", "/v1/students", parent["access_token"].as_str().unwrap(), None).await, 200).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
}

backend_tests!(
    each_role_sees_only_its_students,
    search_ignores_case_and_accents,
    student_filters,
    pagination_returns_each_student_once_while_inserting,
    progress_notes_follow_ownership,
    families_follow_ownership,
    admin_manages_families_and_guardians,
    removed_guardians_and_former_teachers_lose_access,
    teachers_roster_and_validation,
    rooms_crud_and_validation,
    student_validation_and_unknown_ids,
    demo_school_loads_once,
    nul_characters_are_refused,
);

/// PostgreSQL cannot store a NUL character: anywhere in a path, a query or a JSON body it is a
/// 422 that names where, and nothing is written (it used to be a 500 there).
async fn nul_characters_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let office = app.as_user(&s.admin);
    let bad = office.post("/v1/rooms", json!({"name": "Studio\u{0}B", "capacity": 2})).await.problem(422);
    assert_eq!(bad["errors"][0]["field"], "body");
    let bad = office.get("/v1/students?q=a%00b").await.problem(422);
    assert_eq!(bad["errors"][0]["field"], "path");
    let calendar = app.client.get(app.url("/v1/calendars/%00.ics")).send().await.unwrap();
    assert_eq!(calendar.status(), 422);
    assert_eq!(office.get("/v1/rooms").await.expect(200)["items"], json!([]), "nothing was written");
}
