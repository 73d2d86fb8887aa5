//! `cedar demo`: a realistic small school to explore the API with: 8 teachers, 6 rooms,
//! 120 families and 180 students with English and French names, some waitlisted, plus a few
//! open enrollment requests. Deterministic and idempotent (a second run changes nothing).

use chrono::{NaiveDate, Utc};
use serde_json::json;
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use super::new_calendar_token;
use super::students::{NewStudent, insert_student};
use crate::auth::Role;
use crate::auth::store::{self, NewUser};
use crate::db::Db;
use crate::jobs::queue::{self, NewJob};
use crate::on_tx;

pub const ADMIN_EMAIL: &str = "admin@demo.cedarheights.ca";
pub const PASSWORD: &str = "cedar-demo-2026";

const FIRST_NAMES: &[&str] = &[
    "Hélène",
    "Émile",
    "Chloé",
    "Léa",
    "Noémie",
    "Zoé",
    "Gabriel",
    "Raphaël",
    "Joël",
    "Anaïs",
    "Maëlle",
    "Benoît",
    "François",
    "Amélie",
    "Olivia",
    "Liam",
    "Noah",
    "Emma",
    "Ethan",
    "Charlotte",
    "Lucas",
    "Ava",
    "Mia",
    "Jacob",
    "Sophie",
    "Thomas",
    "Isabelle",
    "William",
    "Félix",
    "Océane",
    "Jérémie",
    "Mathéo",
    "Inès",
    "Grace",
    "Owen",
    "Nora",
];
const LAST_NAMES: &[&str] = &[
    "Côté",
    "Gagné",
    "Bélanger",
    "Lévesque",
    "Bédard",
    "Pelletier",
    "Tremblay",
    "Gauthier",
    "Ouellet",
    "Fréchette",
    "Dubé",
    "Thériault",
    "Smith",
    "Brown",
    "Wilson",
    "MacDonald",
    "Campbell",
    "Anderson",
    "Taylor",
    "Patel",
    "Nguyen",
    "Chen",
    "O'Brien",
    "Lefèvre",
    "Bouchard",
    "Roy",
    "Morin",
    "Lavoie",
    "Fortin",
    "Girard",
];
const INSTRUMENTS: &[&str] = &["piano", "violin", "guitar", "voice", "cello", "flute", "drums", "saxophone"];
const CITIES: &[&str] = &["Ottawa", "Gatineau", "Kanata", "Orléans", "Nepean"];

/// Deterministic pseudo-random numbers, so every run builds the same school.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % bound as u64) as usize
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.next(items.len())]
    }
}

async fn insert_user(
    tx: &mut crate::db::Tx,
    email: &str,
    role: Role,
    name: &str,
    hash: &str,
) -> Result<store::UserRecord, sqlx::Error> {
    let new = NewUser {
        id: Uuid::now_v7(),
        email,
        role,
        display_name: Some(name),
        family_id: None,
        teacher_id: None,
        password_hash: Some(hash),
        user_metadata: json!({"demo": true}),
        email_confirmed: true,
    };
    store::insert_user(tx, &new).await
}

pub struct DemoSummary {
    pub created: bool,
    pub logins: Vec<(String, String)>,
}

/// Loads the demo school. `tz` places its weekly lessons on the school's wall clock.
pub async fn load(db: &Db, tz: chrono_tz::Tz) -> anyhow::Result<DemoSummary> {
    let logins = vec![
        ("admin".to_owned(), ADMIN_EMAIL.to_owned()),
        ("teacher".to_owned(), "teacher1@demo.cedarheights.ca".to_owned()),
        ("parent".to_owned(), "parent1@demo.cedarheights.ca".to_owned()),
    ];
    if store::user_by_email(db, ADMIN_EMAIL).await?.is_some() {
        return Ok(DemoSummary { created: false, logins });
    }
    // One hash for every demo account: they share the published demo password anyway.
    let hash = crate::auth::password::hash(PASSWORD.to_owned()).await?;
    let mut rng = Lcg(2026);
    let now = Utc::now();
    let mut tx = db.begin().await?;
    insert_user(&mut tx, ADMIN_EMAIL, Role::Admin, "Office", &hash).await?;

    const TEACHER: &str = "INSERT INTO teachers (id, first_name, last_name, email, phone, instruments, bio, \
        pay_rate_cents, active, calendar_token, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, TRUE, $9, $10, $10)";
    const LINK_TEACHER: &str = "UPDATE users SET teacher_id = $2 WHERE id = $1";
    let mut teachers: Vec<(Uuid, Vec<String>)> = Vec::new();
    for i in 1..=8 {
        let (first, last) = (rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES));
        let main = INSTRUMENTS[(i - 1) % INSTRUMENTS.len()];
        let second = INSTRUMENTS[(i + 2) % INSTRUMENTS.len()];
        let instruments = vec![main.to_owned(), second.to_owned()];
        let id = Uuid::now_v7();
        let email = format!("teacher{i}@demo.cedarheights.ca");
        on_tx!(&mut tx, conn => sqlx::query(TEACHER)
            .bind(id).bind(first).bind(last).bind(&email).bind(format!("+1 613-555-01{i:02}"))
            .bind(SqlJson(&instruments)).bind(format!("Teaches {main} and {second}.")).bind(4_500_i64 + 250 * i as i64)
            .bind(new_calendar_token()).bind(now)
            .execute(&mut **conn).await.map(|_| ()))?;
        let account = insert_user(&mut tx, &email, Role::Teacher, &format!("{first} {last}"), &hash).await?;
        on_tx!(&mut tx, conn => sqlx::query(LINK_TEACHER).bind(account.id).bind(id).execute(&mut **conn).await.map(|_| ()))?;
        teachers.push((id, instruments));
    }

    const ROOM: &str = "INSERT INTO rooms (id, name, capacity, instruments, notes, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, NULL, $5, $5)";
    let rooms: [(&str, i32, &[&str]); 6] = [
        ("Studio A (Steinway)", 3, &["piano"]),
        ("Studio B (Yamaha)", 3, &["piano", "voice"]),
        ("Strings Room", 4, &["violin", "cello"]),
        ("Percussion Room", 2, &["drums"]),
        ("Winds Room", 3, &["flute", "saxophone"]),
        ("Salle polyvalente", 12, &[]),
    ];
    for (name, capacity, instruments) in rooms {
        on_tx!(&mut tx, conn => sqlx::query(ROOM).bind(Uuid::now_v7()).bind(name).bind(capacity)
            .bind(SqlJson(instruments)).bind(now).execute(&mut **conn).await.map(|_| ()))?;
    }

    const FAMILY: &str = "INSERT INTO families (id, name, email, phone, preferred_language, payee_user_id, \
        address_line1, city, province, postal_code, calendar_token, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'ON', $9, $10, $11, $11)";
    const LINK_FAMILY: &str = "UPDATE users SET family_id = $2 WHERE id = $1";
    let mut students = 0;
    let mut enrolled: Vec<(Uuid, Uuid)> = Vec::new();
    for f in 1..=120 {
        let last = rng.pick(LAST_NAMES);
        let guardian_first = rng.pick(FIRST_NAMES);
        let french = rng.next(3) == 0;
        let email = format!("parent{f}@demo.cedarheights.ca");
        let account = insert_user(&mut tx, &email, Role::Parent, &format!("{guardian_first} {last}"), &hash).await?;
        let family_id = Uuid::now_v7();
        on_tx!(&mut tx, conn => sqlx::query(FAMILY)
            .bind(family_id).bind(format!("Famille {last}")).bind(&email).bind(format!("+1 613-555-{:04}", 1000 + f))
            .bind(if french { "fr" } else { "en" }).bind(account.id)
            .bind(format!("{} rue {}", 10 + rng.next(990), rng.pick(LAST_NAMES))).bind(rng.pick(CITIES))
            .bind(format!("K1{}{} {}A{}", rng.next(10), (b'A' + rng.next(26) as u8) as char, rng.next(10), rng.next(10)))
            .bind(new_calendar_token()).bind(now)
            .execute(&mut **conn).await.map(|_| ()))?;
        on_tx!(&mut tx, conn => sqlx::query(LINK_FAMILY).bind(account.id).bind(family_id).execute(&mut **conn).await.map(|_| ()))?;
        // 120 families, 180 students: every family has one, every other family a second.
        let children = if f % 2 == 0 { 2 } else { 1 };
        for _ in 0..children {
            students += 1;
            let (teacher_id, instruments) = &teachers[rng.next(teachers.len())];
            let instrument = instruments[rng.next(instruments.len())].clone();
            let waitlisted = students % 12 == 0;
            let student = insert_student(
                &mut tx,
                NewStudent {
                    family_id,
                    first_name: rng.pick(FIRST_NAMES).to_owned(),
                    last_name: last.to_owned(),
                    preferred_name: None,
                    birth_date: NaiveDate::from_ymd_opt(
                        2008 + rng.next(14) as i32,
                        1 + rng.next(12) as u32,
                        1 + rng.next(28) as u32,
                    ),
                    instrument,
                    instruments: vec![],
                    level: Some(
                        ["beginner", "intermediate", "advanced", "RCM grade 3", "RCM grade 8"][rng.next(5)].to_owned(),
                    ),
                    status: if waitlisted { "waitlisted" } else { "active" }.to_owned(),
                    teacher_id: if waitlisted { None } else { Some(*teacher_id) },
                    start_date: NaiveDate::from_ymd_opt(2025, 9, 2),
                    notes: None,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo student: {e}"))?;
            if !waitlisted {
                enrolled.push((student, *teacher_id));
            }
        }
        // A few families have an open request for a new child.
        if f % 20 == 0 {
            const ENROLLMENT: &str = "INSERT INTO enrollments (id, family_id, student, instrument, lesson_minutes, \
                preferred_times, experience, status, submitted_by, created_at, updated_at) \
                VALUES ($1, $2, $3, $4, 30, $5, 'None yet', 'submitted', $6, $7, $7)";
            let id = Uuid::now_v7();
            on_tx!(&mut tx, conn => sqlx::query(ENROLLMENT)
                .bind(id).bind(family_id)
                .bind(SqlJson(json!({"first_name": rng.pick(FIRST_NAMES), "last_name": last})))
                .bind(rng.pick(INSTRUMENTS))
                .bind(SqlJson(json!([{"weekday": 1 + rng.next(5), "start_time": "16:00", "end_time": "18:00"}])))
                .bind(account.id).bind(now)
                .execute(&mut **conn).await.map(|_| ()))?;
            queue::enqueue(
                &mut tx,
                NewJob::now(
                    "workflows",
                    "workflow.start",
                    json!({"workflow": "enrollment", "input": {"enrollment_id": id}}),
                )
                .dedupe(format!("enrollment:{id}")),
            )
            .await?;
        }
    }
    timetable(&mut tx, tz, &teachers, &enrolled).await?;
    tx.commit().await?;
    Ok(DemoSummary { created: true, logins })
}

/// Teachers' weekly availability (weekdays 15:00–20:00, Saturdays 09:00–13:00), tuition rates,
/// and a weekly lesson for every enrolled student from this week on, for 16 weeks, in the
/// first free half-hour slots of their teacher's afternoons.
async fn timetable(
    tx: &mut crate::db::Tx,
    tz: chrono_tz::Tz,
    teachers: &[(Uuid, Vec<String>)],
    enrolled: &[(Uuid, Uuid)],
) -> anyhow::Result<()> {
    use chrono::{Datelike, Duration, NaiveTime};
    const WINDOW: &str =
        "INSERT INTO teacher_availability (id, teacher_id, weekday, start_time, end_time) VALUES ($1, $2, $3, $4, $5)";
    for (teacher, _) in teachers {
        for (weekday, start, end) in [
            (1, "15:00", "20:00"),
            (2, "15:00", "20:00"),
            (3, "15:00", "20:00"),
            (4, "15:00", "20:00"),
            (5, "15:00", "20:00"),
            (6, "09:00", "13:00"),
        ] {
            on_tx!(tx, conn => sqlx::query(WINDOW).bind(Uuid::now_v7()).bind(teacher).bind(weekday).bind(start).bind(end)
                .execute(&mut **conn).await.map(|_| ()))?;
        }
    }
    const RATE: &str = "INSERT INTO tuition_rates (id, lesson_minutes, per_lesson_cents, monthly_cents, created_at) \
        VALUES ($1, $2, $3, $4, $5)";
    for (minutes, per_lesson, monthly) in [(30, 3_500_i64, 14_000_i64), (45, 5_000, 20_000), (60, 6_500, 26_000)] {
        on_tx!(tx, conn => sqlx::query(RATE).bind(Uuid::now_v7()).bind(minutes).bind(per_lesson).bind(monthly).bind(Utc::now())
            .execute(&mut **conn).await.map(|_| ()))?;
    }
    const SERIES: &str =
        "INSERT INTO lesson_series (id, rrule, timezone, created_by, created_at) VALUES ($1, $2, $3, NULL, $4)";
    const LESSON: &str = "INSERT INTO lessons (id, series_id, teacher_id, student_id, starts_at, ends_at, status, created_at, \
        updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'scheduled', $7, $7)";
    let today = Utc::now().with_timezone(&tz).date_naive();
    let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
    // Half-hour slots used per teacher: 10 a weekday (15:00–20:00), five weekdays.
    let mut used: std::collections::HashMap<Uuid, u32> = std::collections::HashMap::new();
    for (i, (student, teacher)) in enrolled.iter().enumerate() {
        let minutes: i64 = if i % 5 == 4 { 60 } else { 30 };
        let slots = (minutes / 30) as u32;
        let next = used.entry(*teacher).or_default();
        // A lesson never runs past 20:00: skip to the next day when it would.
        if *next % 10 + slots > 10 {
            *next += 10 - *next % 10;
        }
        if *next + slots > 50 {
            continue;
        }
        let (day, slot) = (*next / 10, *next % 10);
        *next += slots;
        let start_time = NaiveTime::from_hms_opt(15, 0, 0).expect("valid") + Duration::minutes(30 * i64::from(slot));
        let series = Uuid::now_v7();
        on_tx!(tx, conn => sqlx::query(SERIES).bind(series).bind("FREQ=WEEKLY;COUNT=16").bind(tz.name()).bind(Utc::now())
            .execute(&mut **conn).await.map(|_| ()))?;
        for week in 0..16 {
            let date = monday + Duration::days(i64::from(day) + 7 * week);
            let starts = crate::time::resolve_local(tz, date.and_time(start_time));
            on_tx!(tx, conn => sqlx::query(LESSON).bind(Uuid::now_v7()).bind(series).bind(teacher).bind(student).bind(starts)
                .bind(starts + Duration::minutes(minutes)).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
        }
    }
    Ok(())
}
