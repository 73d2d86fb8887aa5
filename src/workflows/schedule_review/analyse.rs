//! What is wrong with the timetable now, independent of optimizing: conflicts over the four
//! weeks from `week_of`, and the template week's metrics (utilization, idle gaps per
//! teacher-day, room use).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{Value, json};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use super::snapshot::{NO_ROOM, Snapshot};
use crate::app::AppState;
use crate::on_tx;
use crate::optimize::model::minutes;
use crate::scheduling::booking::Exceptions;

type Row = (Uuid, Option<Uuid>, Uuid, Uuid, Option<Uuid>, DateTime<Utc>, DateTime<Utc>, String, Option<Uuid>, String);

/// Every conflict found, each `{kind, detail, lesson_ids, starts_at?, teacher_id?, student_id?}`.
pub async fn conflicts(state: &AppState, week_of: NaiveDate) -> anyhow::Result<Vec<Value>> {
    let tz = state.settings.timezone;
    let until = week_of + Duration::weeks(4);
    let from = crate::time::at_local(tz, week_of, chrono::NaiveTime::MIN);
    let to = crate::time::at_local(tz, until, chrono::NaiveTime::MIN);
    // Lessons of the horizon with their student's instrument, main teacher and name.
    const LESSONS: &str = "SELECT l.id, l.series_id, l.teacher_id, l.student_id, l.room_id, l.starts_at, l.ends_at, \
        s.instrument, s.teacher_id, COALESCE(s.preferred_name, s.first_name) FROM lessons l \
        JOIN students s ON s.id = l.student_id WHERE l.status = 'scheduled' AND l.starts_at >= $1 AND l.starts_at < $2 \
        ORDER BY l.starts_at, l.id";
    const ROOMS: &str = "SELECT id, name, instruments FROM rooms";
    const TEACHERS: &str = "SELECT id, first_name || ' ' || last_name FROM teachers";
    // Each active student's last scheduled lesson of a series, when it falls before the horizon.
    const ENDING: &str = "SELECT s.id, COALESCE(s.preferred_name, s.first_name), MAX(l.starts_at) FROM students s \
        JOIN lessons l ON l.student_id = s.id AND l.series_id IS NOT NULL AND l.status = 'scheduled' \
        WHERE s.status = 'active' GROUP BY s.id, s.preferred_name, s.first_name HAVING MAX(l.starts_at) >= $1 \
        AND MAX(l.starts_at) < $2 ORDER BY s.id";

    let mut tx = state.db.begin_read().await?;
    let lessons: Vec<Row> =
        on_tx!(&mut tx, conn => sqlx::query_as(LESSONS).bind(from).bind(to).fetch_all(&mut **conn).await)?;
    let rooms: Vec<(Uuid, String, SqlJson<Vec<String>>)> =
        on_tx!(&mut tx, conn => sqlx::query_as(ROOMS).fetch_all(&mut **conn).await)?;
    let teachers: BTreeMap<Uuid, String> =
        on_tx!(&mut tx, conn => sqlx::query_as(TEACHERS).fetch_all(&mut **conn).await)?.into_iter().collect();
    let requests = super::snapshot::latest_requests(&mut tx).await?;
    let now = Utc::now().max(from);
    let ending: Vec<(Uuid, String, DateTime<Utc>)> =
        on_tx!(&mut tx, conn => sqlx::query_as(ENDING).bind(now).bind(to).fetch_all(&mut **conn).await)?;
    let exceptions = Exceptions::load(&mut tx, week_of, until).await?;
    tx.rollback().await?;

    let teacher = |id: &Uuid| teachers.get(id).cloned().unwrap_or_default();
    let local = |at: DateTime<Utc>| at.with_timezone(&tz).format("%a %Y-%m-%d %H:%M").to_string();
    let mut out = Vec::new();

    // Double bookings the database should have refused (data imported around the checks, a
    // substitute put on a lesson by hand): the same teacher, student or room twice at once.
    for (i, a) in lessons.iter().enumerate() {
        for b in lessons[i + 1..].iter().take_while(|b| b.5 < a.6) {
            for (kind, hit) in [("teacher", a.2 == b.2), ("student", a.3 == b.3), ("room", a.4.is_some() && a.4 == b.4)]
            {
                if hit {
                    let substitute = [a, b].iter().any(|l| l.8.is_some_and(|main| main != l.2));
                    out.push(json!({
                        "kind": "double_booking",
                        "resource": kind,
                        "substitute": substitute,
                        "lesson_ids": [a.0, b.0],
                        "starts_at": a.5,
                        "detail": format!("{} {}: two lessons at once{}", kind, local(a.5).as_str(),
                            if substitute { " (a substitute is teaching one of them)" } else { "" }),
                    }));
                }
            }
        }
    }
    // Lessons on closures, outside terms, in the teacher's time off.
    for l in &lessons {
        let date = crate::time::local_date(tz, l.5);
        if let Some(name) = exceptions.closure(date) {
            out.push(json!({"kind": "closure", "lesson_ids": [l.0], "starts_at": l.5, "student_id": l.3,
                "detail": format!("{} with {} on {} — the school is closed ({name})", l.9, teacher(&l.2), local(l.5))}));
        }
        if exceptions.outside_terms(date) {
            out.push(json!({"kind": "outside_term", "lesson_ids": [l.0], "starts_at": l.5, "student_id": l.3,
                "detail": format!("{} with {} on {} — no term covers this date", l.9, teacher(&l.2), local(l.5))}));
        }
        if exceptions.time_off(l.2, date) {
            out.push(json!({"kind": "time_off", "lesson_ids": [l.0], "starts_at": l.5, "teacher_id": l.2,
                "detail": format!("{} with {} on {} — the teacher is away", l.9, teacher(&l.2), local(l.5))}));
        }
    }
    // Teachers over their daily maximum.
    let max = i64::from(state.settings.schedule_review.teacher_max_minutes_per_day);
    let mut daily: BTreeMap<(Uuid, NaiveDate), (i64, Vec<Uuid>)> = BTreeMap::new();
    for l in &lessons {
        let entry = daily.entry((l.2, crate::time::local_date(tz, l.5))).or_default();
        entry.0 += (l.6 - l.5).num_minutes();
        entry.1.push(l.0);
    }
    for ((id, date), (taught, ids)) in daily {
        if taught > max {
            out.push(json!({"kind": "over_daily_maximum", "teacher_id": id, "date": date, "lesson_ids": ids,
                "detail": format!("{} teaches {taught} minutes on {date} (maximum {max})", teacher(&id))}));
        }
    }
    // Rooms not equipped for the instrument.
    let equipment: BTreeMap<Uuid, (String, Vec<String>)> = rooms
        .into_iter()
        .map(|(id, name, list)| (id, (name, list.0.iter().map(|i| i.trim().to_lowercase()).collect())))
        .collect();
    for l in &lessons {
        if let Some((name, list)) = l.4.and_then(|r| equipment.get(&r))
            && !list.is_empty()
            && !list.contains(&l.7.trim().to_lowercase())
        {
            out.push(json!({"kind": "room_not_equipped", "lesson_ids": [l.0], "starts_at": l.5, "student_id": l.3,
                "detail": format!("{} ({}) on {} is in {name}, which is not equipped for it", l.9, l.7, local(l.5))}));
        }
    }
    // Lessons outside the family's windows (the preferred times of the student's request).
    for l in &lessons {
        let Some(list) = requests.get(&l.3).map(|r| &r.windows).filter(|w| !w.is_empty()) else { continue };
        let (start, end) = (crate::time::local_naive(tz, l.5), crate::time::local_naive(tz, l.6));
        let weekday = chrono::Datelike::weekday(&start.date()).number_from_monday() as u8;
        let as_minutes = |t: chrono::NaiveTime| (chrono::Timelike::hour(&t) * 60 + chrono::Timelike::minute(&t)) as u16;
        let (a, b) = (as_minutes(start.time()), as_minutes(end.time()));
        let inside = list.iter().any(|w| {
            w.weekday == weekday
                && minutes(&w.start_time).is_some_and(|ws| ws <= a)
                && minutes(&w.end_time).is_some_and(|we| b <= we && a < b)
        });
        if !inside {
            out.push(
                json!({"kind": "outside_family_windows", "lesson_ids": [l.0], "starts_at": l.5, "student_id": l.3,
                "detail": format!("{} on {} is outside the times the family gave", l.9, local(l.5))}),
            );
        }
    }
    // Series ending soon with nothing after them.
    for (student, name, last) in ending {
        out.push(json!({"kind": "series_ending", "student_id": student, "starts_at": last,
            "detail": format!("{name}'s weekly lessons end on {} with no renewal", local(last))}));
    }
    Ok(out)
}

/// Utilization, idle gaps per teacher-day and room use of a template-week timetable.
pub fn metrics(snapshot: &Snapshot, assignments: &[crate::optimize::AssignmentOut]) -> Value {
    let length: BTreeMap<&str, i64> =
        snapshot.instance.students.iter().map(|s| (s.id.as_str(), s.lesson_minutes)).collect();
    let mut days: BTreeMap<(&str, i64), Vec<(i64, i64)>> = BTreeMap::new();
    let mut room_minutes: BTreeMap<&str, i64> = BTreeMap::new();
    for a in assignments {
        let start = i64::from(minutes(&a.start_time).unwrap_or(0));
        let end = start + length.get(a.student_id.as_str()).copied().unwrap_or(0);
        days.entry((a.teacher_id.as_str(), a.weekday)).or_default().push((start, end));
        if !a.room_id.starts_with(NO_ROOM) && !a.room_id.is_empty() {
            *room_minutes.entry(a.room_id.as_str()).or_default() += end - start;
        }
    }
    let (mut taught, mut span) = (0, 0);
    let mut teacher_days = Vec::new();
    for ((teacher, weekday), mut lessons) in days {
        lessons.sort_unstable();
        let minutes: i64 = lessons.iter().map(|(a, b)| b - a).sum();
        let first = lessons.first().map_or(0, |l| l.0);
        let last = lessons.iter().map(|l| l.1).max().unwrap_or(0);
        taught += minutes;
        span += last - first;
        if last - first > minutes {
            teacher_days.push(json!({"teacher_id": teacher,
                "teacher": snapshot.teacher_names.get(teacher), "weekday": weekday,
                "first": crate::optimize::model::hhmm(first as u16), "last": crate::optimize::model::hhmm(last as u16),
                "taught_minutes": minutes, "idle_minutes": last - first - minutes}));
        }
    }
    let open: i64 = snapshot
        .instance
        .open_hours
        .iter()
        .map(|w| i64::from(minutes(&w.end_time).unwrap_or(0)) - i64::from(minutes(&w.start_time).unwrap_or(0)))
        .sum();
    let rooms: Vec<Value> = snapshot
        .room_names
        .iter()
        .map(|(id, name)| {
            let used = room_minutes.get(id.as_str()).copied().unwrap_or(0);
            json!({"room_id": id, "room": name, "minutes": used,
                "use_percent": if open > 0 { (1000 * used / open) as f64 / 10.0 } else { 0.0 }})
        })
        .collect();
    json!({
        "lessons": assignments.len(),
        "taught_minutes": taught,
        "span_minutes": span,
        "gap_minutes": span - taught,
        "utilization_percent": if span > 0 { (1000 * taught / span) as f64 / 10.0 } else { 0.0 },
        "idle_teacher_days": teacher_days,
        "rooms": rooms,
    })
}
