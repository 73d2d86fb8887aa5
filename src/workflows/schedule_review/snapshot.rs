//! The optimizer's instance (`PROBLEM.md` §6) built from Cedar's data for the weeks from
//! `week_of`: each weekly series is a lesson of the current timetable, each waitlisted student
//! or waitlisted enrollment request an optional one.
//!
//! Cedar's data is messier than the generator's, and the optimizer only accepts a current
//! timetable that is itself feasible, so what the template week cannot express is *fixed*
//! rather than dropped: a lesson without a room, in a room not equipped for it, or with a
//! teacher who does not list its instrument gets a private instrument token that only its
//! teacher and its room (a virtual room when it has none) carry — it may move in time, never
//! to another teacher or room. A lesson that cannot move at all (a one-off, a series meeting
//! twice a week, a student with two series, a booking outside the teacher's availability) is
//! *pinned*: its own windows are its current slot. Either way it still occupies its teacher
//! and room, so nothing is proposed on top of it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use crate::app::AppState;
use crate::on_tx;
use crate::optimize::model::{AssignmentOut, FORMAT, InstanceFile, RoomIn, StudentIn, TeacherIn, WindowIn, hhmm};
use crate::time::WeeklyWindow;

/// One lesson (or would-be lesson) of the template week, as the review tracks it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// The optimizer's student id for it.
    pub key: String,
    pub student_id: Option<Uuid>,
    /// A waitlisted request seated by the proposal is approved on apply.
    pub enrollment_id: Option<Uuid>,
    pub family_id: Uuid,
    pub series_id: Option<Uuid>,
    /// First (or preferred) name, for the report.
    pub student: String,
    pub instrument: String,
    pub minutes: i64,
    pub waitlisted: bool,
    /// Why the lesson keeps its slot, when it does.
    pub pinned: Option<String>,
}

/// What the snapshot step stores: the instance and what its ids stand for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub week_of: NaiveDate,
    pub instance: InstanceFile,
    pub items: Vec<Item>,
    /// Teacher id → name; room id → name (virtual rooms are absent).
    pub teacher_names: BTreeMap<String, String>,
    pub room_names: BTreeMap<String, String>,
    /// Lessons the template week cannot hold (e.g. alternate-week series sharing a slot).
    pub left_out: Vec<serde_json::Value>,
}

impl Snapshot {
    pub fn item(&self, key: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.key == key)
    }
}

/// The prefix of virtual rooms (lessons without a room keep having none).
pub const NO_ROOM: &str = "none:";

type TeacherRow = (Uuid, String, String, SqlJson<Vec<String>>);
type LessonRow =
    (Uuid, Option<Uuid>, Uuid, Uuid, Option<Uuid>, DateTime<Utc>, DateTime<Utc>, bool, Uuid, String, String);
type WaitlistRow =
    (Uuid, Uuid, Option<Uuid>, String, i32, SqlJson<Vec<WeeklyWindow>>, Option<SqlJson<serde_json::Value>>);

/// A lesson of the template week: local weekday (1–7), start minute and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    weekday: i64,
    start: i64,
    minutes: i64,
}

impl Slot {
    fn of(tz: chrono_tz::Tz, starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) -> Option<Self> {
        let local = starts_at.with_timezone(&tz);
        let minutes = (ends_at - starts_at).num_minutes();
        let start = i64::from(local.hour() * 60 + local.minute());
        (start + minutes <= 1440).then_some(Self {
            weekday: i64::from(local.weekday().number_from_monday()),
            start,
            minutes,
        })
    }

    fn window(&self) -> WindowIn {
        window(self.weekday, self.start, self.start + self.minutes)
    }

    fn overlaps(&self, other: &Slot) -> bool {
        self.weekday == other.weekday
            && self.start < other.start + other.minutes
            && other.start < self.start + self.minutes
    }

    fn inside(&self, windows: &[WindowIn]) -> bool {
        windows.iter().any(|w| {
            w.weekday == self.weekday
                && minutes_of(&w.start_time).is_some_and(|a| a <= self.start)
                && minutes_of(&w.end_time).is_some_and(|b| self.start + self.minutes <= b)
        })
    }
}

fn window(weekday: i64, start: i64, end: i64) -> WindowIn {
    WindowIn { weekday, start_time: hhmm(start as u16), end_time: hhmm(end as u16) }
}

fn minutes_of(text: &str) -> Option<i64> {
    crate::optimize::model::minutes(text).map(i64::from)
}

/// Windows on the grid (shrunk inwards: a window from 16:10 starts at 16:15); empty ones go.
fn on_grid(windows: &[WeeklyWindow], grid: i64) -> Vec<WindowIn> {
    windows
        .iter()
        .filter_map(|w| {
            let (a, b) = (minutes_of(&w.start_time)?, minutes_of(&w.end_time)?);
            let (a, b) = ((a + grid - 1) / grid * grid, b / grid * grid);
            (a < b && (1..=7).contains(&w.weekday)).then(|| window(i64::from(w.weekday), a, b))
        })
        .collect()
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

/// What a student's enrollment requests say: the windows of the latest one that gives any (the
/// family's times) and the length the latest one asks for.
#[derive(Debug, Default)]
pub struct Requested {
    pub windows: Vec<WeeklyWindow>,
    pub minutes: i64,
}

pub async fn latest_requests(tx: &mut crate::db::Tx) -> sqlx::Result<BTreeMap<Uuid, Requested>> {
    const SQL: &str = "SELECT student_id, preferred_times, lesson_minutes FROM enrollments \
        WHERE student_id IS NOT NULL ORDER BY created_at, id";
    let rows: Vec<(Uuid, SqlJson<Vec<WeeklyWindow>>, i32)> =
        on_tx!(tx, conn => sqlx::query_as(SQL).fetch_all(&mut **conn).await)?;
    let mut out: BTreeMap<Uuid, Requested> = BTreeMap::new();
    for (student, windows, minutes) in rows {
        let entry = out.entry(student).or_default();
        entry.minutes = i64::from(minutes);
        if !windows.0.is_empty() {
            entry.windows = windows.0;
        }
    }
    Ok(out)
}

/// Reads Cedar's teachers, rooms, weekly series and waitlist for the four weeks from
/// `week_of` (a Monday) and builds the instance.
pub async fn build(state: &AppState, week_of: NaiveDate) -> anyhow::Result<Snapshot> {
    let tz = state.settings.timezone;
    let review = &state.settings.schedule_review;
    let from = crate::time::at_local(tz, week_of, chrono::NaiveTime::MIN);
    let horizon = crate::time::at_local(tz, week_of + Duration::weeks(4), chrono::NaiveTime::MIN);
    let week_end = crate::time::at_local(tz, week_of + Duration::weeks(1), chrono::NaiveTime::MIN);

    const TEACHERS: &str = "SELECT id, first_name, last_name, instruments FROM teachers WHERE active ORDER BY id";
    const AVAILABILITY: &str = "SELECT teacher_id, weekday, start_time, end_time FROM teacher_availability ORDER BY teacher_id, weekday, start_time";
    const ROOMS: &str = "SELECT id, name, instruments FROM rooms ORDER BY name, id";
    const LESSONS: &str = "SELECT l.id, l.series_id, l.teacher_id, l.student_id, l.room_id, l.starts_at, l.ends_at, \
        l.availability_override, s.family_id, s.instrument, COALESCE(s.preferred_name, s.first_name) FROM lessons l \
        JOIN students s ON s.id = l.student_id WHERE l.status = 'scheduled' AND l.starts_at >= $1 AND l.starts_at < $2 \
        ORDER BY l.starts_at, l.id";
    const WAITLISTED_REQUESTS: &str = "SELECT id, family_id, student_id, instrument, lesson_minutes, preferred_times, \
        student FROM enrollments WHERE status = 'waitlisted' ORDER BY created_at, id";
    const WAITLISTED_STUDENTS: &str = "SELECT id, family_id, instrument, COALESCE(preferred_name, first_name) \
        FROM students WHERE status = 'waitlisted' ORDER BY created_at, id";

    let mut tx = state.db.begin_read().await?;
    let teachers: Vec<TeacherRow> = on_tx!(&mut tx, conn => sqlx::query_as(TEACHERS).fetch_all(&mut **conn).await)?;
    let availability: Vec<(Uuid, i32, String, String)> =
        on_tx!(&mut tx, conn => sqlx::query_as(AVAILABILITY).fetch_all(&mut **conn).await)?;
    let rooms: Vec<(Uuid, String, SqlJson<Vec<String>>)> =
        on_tx!(&mut tx, conn => sqlx::query_as(ROOMS).fetch_all(&mut **conn).await)?;
    let lessons: Vec<LessonRow> =
        on_tx!(&mut tx, conn => sqlx::query_as(LESSONS).bind(from).bind(horizon).fetch_all(&mut **conn).await)?;
    let requests_of = latest_requests(&mut tx).await?;
    let requests: Vec<WaitlistRow> =
        on_tx!(&mut tx, conn => sqlx::query_as(WAITLISTED_REQUESTS).fetch_all(&mut **conn).await)?;
    let waitlisted: Vec<(Uuid, Uuid, String, String)> =
        on_tx!(&mut tx, conn => sqlx::query_as(WAITLISTED_STUDENTS).fetch_all(&mut **conn).await)?;
    tx.rollback().await?;

    // The grid: 15 minutes unless lessons start or last off the quarter hour.
    let mut grid = 15;
    for (_, _, _, _, _, starts_at, ends_at, ..) in &lessons {
        if let Some(slot) = Slot::of(tz, *starts_at, *ends_at) {
            grid = gcd(gcd(grid, slot.start), slot.minutes);
        }
    }
    for request in &requests {
        grid = gcd(grid, i64::from(request.4));
    }
    let grid = grid.max(1);
    let school_hours = on_grid(&review.school_hours, grid);
    let all_day: Vec<WindowIn> = (1..=7).map(|d| window(d, 0, 1440)).collect();

    // The current timetable: per series, its occurrences in the week of its first one from
    // `week_of` on (a series skipping this week for a closure still holds its slot); one-off
    // lessons of this week only.
    let mut by_series: BTreeMap<Uuid, Vec<&LessonRow>> = BTreeMap::new();
    let mut one_offs = Vec::new();
    for lesson in &lessons {
        match lesson.1 {
            Some(series) => by_series.entry(series).or_default().push(lesson),
            None if lesson.5 < week_end => one_offs.push(lesson),
            None => {}
        }
    }
    let mut current: Vec<(&LessonRow, Slot, Option<&'static str>)> = Vec::new();
    let mut left_out = Vec::new();
    for rows in by_series.values() {
        let first = rows[0].5;
        let week: Vec<&&LessonRow> = rows.iter().filter(|r| r.5 < first + Duration::days(7)).collect();
        let pinned = (week.len() > 1).then_some("the series meets more than once a week");
        for row in week {
            match Slot::of(tz, row.5, row.6) {
                Some(slot) => current.push((row, slot, pinned)),
                None => {
                    left_out.push(serde_json::json!({"lesson_id": row.0, "reason": "the lesson runs past midnight"}))
                }
            }
        }
    }
    for row in one_offs {
        if let Some(slot) = Slot::of(tz, row.5, row.6) {
            current.push((row, slot, Some("a one-off lesson")));
        }
    }
    current.sort_by_key(|(row, slot, _)| (slot.weekday, slot.start, row.0));
    let mut per_student: BTreeMap<Uuid, usize> = BTreeMap::new();
    for (row, ..) in &current {
        *per_student.entry(row.3).or_default() += 1;
    }

    let lower = |s: &str| s.trim().to_lowercase();
    let mut teacher_windows: BTreeMap<Uuid, Vec<WindowIn>> = BTreeMap::new();
    for (teacher, weekday, start, end) in &availability {
        let w = WeeklyWindow { weekday: *weekday as u8, start_time: start.clone(), end_time: end.clone() };
        teacher_windows.entry(*teacher).or_default().extend(on_grid(&[w], grid));
    }
    let mut teacher_in: BTreeMap<Uuid, TeacherIn> = BTreeMap::new();
    let mut teacher_names = BTreeMap::new();
    for (id, first, last, instruments) in &teachers {
        let windows = teacher_windows.remove(id).unwrap_or_else(|| all_day.clone());
        teacher_in.insert(
            *id,
            TeacherIn {
                id: id.to_string(),
                instruments: instruments.0.iter().map(|i| lower(i)).collect(),
                max_minutes_per_day: i64::from(review.teacher_max_minutes_per_day),
                availability: windows,
            },
        );
        teacher_names.insert(id.to_string(), format!("{first} {last}"));
    }
    let mut every_instrument: BTreeSet<String> = teacher_in.values().flat_map(|t| t.instruments.clone()).collect();
    every_instrument.extend(lessons.iter().map(|l| lower(&l.9)));
    every_instrument.extend(requests.iter().map(|r| lower(&r.3)));
    every_instrument.extend(waitlisted.iter().map(|w| lower(&w.2)));
    let mut room_in: BTreeMap<Uuid, RoomIn> = BTreeMap::new();
    let mut room_names = BTreeMap::new();
    for (id, name, instruments) in &rooms {
        // A room that lists no instruments suits every one.
        let list: Vec<String> = if instruments.0.is_empty() {
            every_instrument.iter().cloned().collect()
        } else {
            instruments.0.iter().map(|i| lower(i)).collect()
        };
        room_in.insert(*id, RoomIn { id: id.to_string(), name: name.clone(), instruments: list });
        room_names.insert(id.to_string(), name.clone());
    }
    let preferred: BTreeMap<Uuid, Vec<WindowIn>> = requests_of
        .iter()
        .map(|(student, r)| (*student, on_grid(&r.windows, grid)))
        .filter(|(_, windows)| !windows.is_empty())
        .collect();

    let mut open_hours = school_hours.clone();
    let mut virtual_rooms = Vec::new();
    let mut students = Vec::new();
    let mut assignments = Vec::new();
    let mut items = Vec::new();
    let mut placed: Vec<(Slot, Uuid, Option<Uuid>, Uuid)> = Vec::new();
    let mut daily: BTreeMap<(Uuid, i64), i64> = BTreeMap::new();
    for (row, slot, pinned) in current {
        let (lesson, series, teacher, student, room, .., family, instrument, name) = row;
        let Some(teacher_entry) = teacher_in.get(teacher) else {
            left_out.push(serde_json::json!({"lesson_id": lesson, "reason": "the teacher is not active"}));
            continue;
        };
        // Alternate-week series can share a weekly slot; the template week holds only one.
        if placed.iter().any(|(other, t, r, s)| {
            other.overlaps(&slot) && (t == teacher || (room.is_some() && r == room) || s == student)
        }) {
            left_out.push(serde_json::json!({"lesson_id": lesson, "student_id": student,
                "reason": "another lesson holds the same weekly slot (alternate weeks?)"}));
            continue;
        }
        placed.push((slot, *teacher, *room, *student));
        *daily.entry((*teacher, slot.weekday)).or_default() += slot.minutes;
        let instrument = lower(instrument);
        let key = match series {
            Some(series) if pinned.is_none() => series.to_string(),
            _ => format!("lesson:{lesson}"),
        };
        let outside = !slot.inside(&teacher_entry.availability) || row.7;
        let pinned = pinned
            .or((per_student[student] > 1).then_some("the student has more than one weekly lesson"))
            .or(outside.then_some("booked outside the teacher's availability"));
        let equipped = room.and_then(|r| room_in.get(&r)).is_some_and(|r| r.instruments.contains(&instrument));
        let teaches = teacher_entry.instruments.contains(&instrument);
        let fixed = pinned.is_some() || !equipped || !teaches;
        let (instrument_in, room_id) = if fixed {
            // A private instrument: only this lesson's teacher and room (or a virtual room) carry it.
            let token = format!("fixed:{key}");
            if let Some(t) = teacher_in.get_mut(teacher) {
                t.instruments.push(token.clone());
                if outside {
                    t.availability.push(slot.window());
                }
            }
            let room_id = match room.and_then(|r| room_in.get_mut(&r)) {
                Some(r) => {
                    r.instruments.push(token.clone());
                    r.id.clone()
                }
                None => {
                    let id = format!("{NO_ROOM}{key}");
                    virtual_rooms.push(RoomIn {
                        id: id.clone(),
                        name: String::new(),
                        instruments: vec![token.clone()],
                    });
                    id
                }
            };
            (token, room_id)
        } else {
            (instrument.clone(), room.map(|r| r.to_string()).unwrap_or_default())
        };
        if !slot.inside(&open_hours) {
            open_hours.push(slot.window());
        }
        let mut windows = match pinned {
            Some(_) => vec![],
            None => preferred.get(student).cloned().unwrap_or_else(|| school_hours.clone()),
        };
        if !slot.inside(&windows) {
            windows.push(slot.window());
        }
        students.push(StudentIn {
            id: key.clone(),
            family_id: family.to_string(),
            instrument: instrument_in,
            lesson_minutes: slot.minutes,
            lessons_per_week: 1,
            status: "active".into(),
            teacher_id: Some(teacher.to_string()),
            availability: windows,
            preferred_times: if pinned.is_some() {
                vec![]
            } else {
                preferred.get(student).cloned().unwrap_or_default()
            },
        });
        assignments.push(AssignmentOut {
            student_id: key.clone(),
            teacher_id: teacher.to_string(),
            room_id,
            weekday: slot.weekday,
            start_time: hhmm(slot.start as u16),
        });
        items.push(Item {
            key,
            student_id: Some(*student),
            enrollment_id: None,
            family_id: *family,
            series_id: *series,
            student: name.clone(),
            instrument,
            minutes: slot.minutes,
            waitlisted: false,
            pinned: pinned.map(str::to_owned),
        });
    }
    // A teacher already over the daily maximum keeps that day's load as their limit.
    for ((teacher, _), minutes) in daily {
        if let Some(t) = teacher_in.get_mut(&teacher) {
            t.max_minutes_per_day = t.max_minutes_per_day.max(minutes);
        }
    }

    // The waitlist: waitlisted requests, then waitlisted students without one.
    let mut seen = BTreeSet::new();
    for (id, family, student, instrument, minutes, windows, details) in requests {
        let name = details
            .as_ref()
            .and_then(|d| d.0.get("preferred_name").or(d.0.get("first_name")))
            .and_then(|n| n.as_str())
            .map(str::to_owned);
        if student.is_none() && name.is_none() {
            continue;
        }
        if let Some(s) = student {
            if per_student.contains_key(&s) {
                continue;
            }
            seen.insert(s);
        }
        let windows = on_grid(&windows.0, grid);
        let key = format!("enrollment:{id}");
        students.push(waiting(&key, family, &lower(&instrument), i64::from(minutes), &windows, &school_hours));
        items.push(Item {
            key,
            student_id: student,
            enrollment_id: Some(id),
            family_id: family,
            series_id: None,
            student: name.unwrap_or_default(),
            instrument: lower(&instrument),
            minutes: i64::from(minutes),
            waitlisted: true,
            pinned: None,
        });
    }
    for (id, family, instrument, name) in waitlisted {
        if seen.contains(&id) || per_student.contains_key(&id) {
            continue;
        }
        let windows = preferred.get(&id).cloned().unwrap_or_default();
        // The length their latest request asked for, else the school's default.
        let minutes = requests_of.get(&id).map_or(i64::from(review.waitlist_lesson_minutes), |r| r.minutes);
        let minutes = (minutes + grid - 1) / grid * grid;
        let key = format!("student:{id}");
        students.push(waiting(&key, family, &lower(&instrument), minutes, &windows, &school_hours));
        items.push(Item {
            key,
            student_id: Some(id),
            enrollment_id: None,
            family_id: family,
            series_id: None,
            student: name,
            instrument: lower(&instrument),
            minutes,
            waitlisted: true,
            pinned: None,
        });
    }

    let mut rooms_out: Vec<RoomIn> = room_in.into_values().collect();
    rooms_out.extend(virtual_rooms);
    let instance = InstanceFile {
        format: FORMAT.into(),
        name: format!("cedar-week-of-{week_of}"),
        grid_minutes: grid,
        open_hours,
        weights: Default::default(),
        teachers: teacher_in.into_values().collect(),
        rooms: rooms_out,
        students,
        current: assignments,
    };
    Ok(Snapshot { week_of, instance, items, teacher_names, room_names, left_out })
}

fn waiting(
    key: &str,
    family: Uuid,
    instrument: &str,
    minutes: i64,
    windows: &[WindowIn],
    school_hours: &[WindowIn],
) -> StudentIn {
    StudentIn {
        id: key.to_owned(),
        family_id: family.to_string(),
        instrument: instrument.to_owned(),
        lesson_minutes: minutes,
        lessons_per_week: 1,
        status: "waitlisted".into(),
        teacher_id: None,
        availability: if windows.is_empty() { school_hours.to_vec() } else { windows.to_vec() },
        preferred_times: windows.to_vec(),
    }
}
