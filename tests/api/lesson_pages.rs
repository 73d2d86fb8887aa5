//! The lesson list's kept pages: a page answered before is served again only while the
//! database confirms its rows — changed through the API or by hand, added, deleted, or no
//! longer visible to the caller — are the same; each family and teacher has its own pages.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::backend_tests;
use crate::booking::weekly_series;
use crate::common::{Backend, TestApp, spawn_app};
use crate::helpers::school;

backend_tests!(a_kept_page_is_served_only_while_its_rows_are_unchanged, a_kept_page_follows_what_the_caller_may_see);

/// Runs `sql` on the app's database directly, around the API (and Cedar).
async fn by_hand(app: &TestApp, sql: &'static str, ids: &[Uuid]) {
    let db = &app.state.db;
    cedar::on_db!(db, pool => {
        let mut query = sqlx::query(sql);
        for id in ids {
            query = query.bind(*id);
        }
        assert_eq!(query.execute(pool).await.unwrap().rows_affected(), 1, "{sql}");
    });
}

fn id(value: &Value) -> Uuid {
    Uuid::parse_str(value.as_str().unwrap()).unwrap()
}

async fn a_kept_page_is_served_only_while_its_rows_are_unchanged(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let (_, occurrences) = weekly_series(&app, &s).await;
    let office = app.as_user(&s.admin);
    let pages = &app.state.lesson_pages;
    let path =
        format!("/v1/lessons?teacher_id={}&from=2027-03-01T00:00:00Z&to=2027-03-29T00:00:00Z&limit=4", s.teacher1_id);

    office.get(&format!("{path}&cursor=forged")).await.problem(422);
    assert_eq!(pages.bytes(), 0, "a refused request keeps nothing");

    let first = office.get(&path).await.expect(200);
    assert_eq!(first["items"], json!(occurrences));
    assert_eq!(first["next_cursor"], Value::Null);
    assert_eq!(pages.kept_answers(), 0);
    assert_eq!(office.get(&path).await.expect(200), first);
    assert_eq!(pages.kept_answers(), 1, "the second answer is the kept page");

    // Changed through the API.
    let second = id(&occurrences[1]["id"]);
    office.patch(&format!("/v1/lessons/{second}"), json!({"notes": "bring the Czerny book"})).await.expect(200);
    let noted = office.get(&path).await.expect(200);
    assert_eq!(noted["items"][1]["notes"], "bring the Czerny book");
    assert_eq!(office.get(&path).await.expect(200), noted);
    assert_eq!(pages.kept_answers(), 2, "kept again once read again");

    // Changed by hand, around Cedar: the database numbers every version of a row itself.
    by_hand(&app, "UPDATE lessons SET notes = 'changed by hand' WHERE id = $1", &[second]).await;
    let changed = office.get(&path).await.expect(200);
    assert_eq!(changed["items"][1]["notes"], "changed by hand");
    assert_eq!(changed["items"][1]["id"], occurrences[1]["id"]);
    assert_eq!(pages.kept_answers(), 2);

    // A fifth lesson in the range: the page of four now has a next page.
    let added = office
        .post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher1_id, "student_id": s.students[0],
                "starts_at": "2027-03-03T21:00:00Z", "duration_minutes": 30}),
        )
        .await
        .expect(201);
    let grown = office.get(&path).await.expect(200);
    assert_eq!(grown["items"][1]["id"], added["occurrences"][0]["id"]);
    assert!(grown["next_cursor"].is_string(), "{grown}");
    assert_eq!(office.get(&path).await.expect(200), grown);
    assert_eq!(pages.kept_answers(), 3);

    // Deleted by hand: the page is the four lessons again.
    by_hand(&app, "DELETE FROM lessons WHERE id = $1", &[id(&added["occurrences"][0]["id"])]).await;
    assert_eq!(office.get(&path).await.expect(200), changed);
    assert_eq!(pages.kept_answers(), 3);

    // Every answer matches the lessons one by one.
    for (listed, lesson) in changed["items"].as_array().unwrap().iter().zip(&occurrences) {
        let alone = office.get(&format!("/v1/lessons/{}", lesson["id"].as_str().unwrap())).await.expect(200);
        assert_eq!(listed, &alone);
    }
}

async fn a_kept_page_follows_what_the_caller_may_see(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let (_, occurrences) = weekly_series(&app, &s).await;
    let pages = &app.state.lesson_pages;
    let path = "/v1/lessons?from=2027-03-01T00:00:00Z&to=2027-03-29T00:00:00Z";
    let (parent_a, parent_b) = (app.as_user(&s.parent_a), app.as_user(&s.parent_b));

    let own = parent_a.get(path).await.expect(200);
    assert_eq!(own["items"], json!(occurrences));
    let none = json!({"items": [], "next_cursor": null});
    assert_eq!(parent_b.get(path).await.expect(200), none, "each family has its own page");
    assert_eq!(parent_a.get(path).await.expect(200), own);
    assert_eq!(pages.kept_answers(), 1);

    // Teachers too: Hélène's teacher gets the kept page, the other teacher never does.
    let (teacher1, teacher2) = (app.as_user(&s.teacher1), app.as_user(&s.teacher2));
    assert_eq!(teacher1.get(path).await.expect(200), own);
    assert_eq!(teacher1.get(path).await.expect(200), own);
    assert_eq!(pages.kept_answers(), 2);
    assert_eq!(teacher2.get(path).await.expect(200), none);
    assert_eq!(teacher2.get(path).await.expect(200), none);
    assert_eq!(pages.kept_answers(), 3, "the other teacher's own (empty) page");

    // Hélène moves to family B: no lesson row changed, yet the pages did.
    by_hand(
        &app,
        "UPDATE students SET family_id = $1 WHERE id = $2",
        &[Uuid::parse_str(&s.family_b).unwrap(), Uuid::parse_str(&s.students[0]).unwrap()],
    )
    .await;
    assert_eq!(parent_a.get(path).await.expect(200), none);
    assert_eq!(parent_b.get(path).await.expect(200)["items"], json!(occurrences));
    assert_eq!(pages.kept_answers(), 3);
}
