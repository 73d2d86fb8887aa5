//! The instance format of `../shared/schedule-opt/PROBLEM.md` §6, read, validated and
//! compiled into indices the search can use (no strings, no maps in the hot path).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "cedar-schedule-opt/1";
pub const SOLUTION_FORMAT: &str = "cedar-schedule-opt-solution/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowIn {
    pub weekday: i64,
    pub start_time: String,
    pub end_time: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Weights {
    pub placed_minute: i64,
    pub gap_minute: i64,
    pub time_move: i64,
    pub teacher_change: i64,
    pub sibling_pair: i64,
    pub preferred: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Self { placed_minute: 100, gap_minute: 1, time_move: 20, teacher_change: 1000, sibling_pair: 10, preferred: 5 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeacherIn {
    pub id: String,
    pub instruments: Vec<String>,
    pub max_minutes_per_day: i64,
    pub availability: Vec<WindowIn>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomIn {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub instruments: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudentIn {
    pub id: String,
    pub family_id: String,
    pub instrument: String,
    pub lesson_minutes: i64,
    #[serde(default = "one")]
    pub lessons_per_week: i64,
    pub status: String,
    pub teacher_id: Option<String>,
    pub availability: Vec<WindowIn>,
    #[serde(default)]
    pub preferred_times: Vec<WindowIn>,
}

fn one() -> i64 {
    1
}

/// One lesson of the week, as the formats write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentOut {
    pub student_id: String,
    pub teacher_id: String,
    pub room_id: String,
    pub weekday: i64,
    pub start_time: String,
}

/// An instance file (format v1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceFile {
    pub format: String,
    pub name: String,
    pub grid_minutes: i64,
    pub open_hours: Vec<WindowIn>,
    #[serde(default)]
    pub weights: Weights,
    pub teachers: Vec<TeacherIn>,
    pub rooms: Vec<RoomIn>,
    pub students: Vec<StudentIn>,
    pub current: Vec<AssignmentOut>,
}

/// Windows per weekday (index 0 = Monday), minutes since midnight, sorted.
pub type DayWindows = [Vec<(u16, u16)>; 7];

#[derive(Debug, Clone)]
pub struct Teacher {
    pub id: String,
    pub instruments: Vec<u16>,
    pub max_minutes: u16,
    pub windows: DayWindows,
}

/// Rooms with the same equipment are interchangeable: the search places lessons in a kind.
#[derive(Debug, Clone)]
pub struct RoomKind {
    pub instruments: Vec<u16>,
    pub rooms: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Student {
    pub id: String,
    pub family: usize,
    pub instrument: u16,
    pub minutes: u16,
    pub active: bool,
    pub windows: DayWindows,
    pub preferred: DayWindows,
    /// Teachers of the instrument.
    pub teachers: Vec<u16>,
    /// Room kinds equipped for the instrument, the least versatile first.
    pub kinds: Vec<u16>,
    /// Every (weekday index, start minute) inside the student's windows and the open hours.
    pub slots: Vec<(u8, u16)>,
}

/// A lesson's place as the search sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub teacher: u16,
    pub kind: u16,
    pub day: u8,
    pub start: u16,
}

/// A lesson's place with its concrete room (what the formats carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lesson {
    pub student: usize,
    pub teacher: usize,
    pub room: usize,
    pub day: u8,
    pub start: u16,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub grid: u16,
    pub weights: Weights,
    pub open: DayWindows,
    pub teachers: Vec<Teacher>,
    pub rooms: Vec<RoomIn>,
    pub room_kind: Vec<u16>,
    pub kinds: Vec<RoomKind>,
    pub students: Vec<Student>,
    pub families: Vec<Vec<usize>>,
    /// The current lesson of each active student.
    pub current: Vec<Option<Lesson>>,
}

/// What is wrong with an instance, in words that name the problem.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInstance(pub String);

fn bad(message: impl Into<String>) -> BadInstance {
    BadInstance(message.into())
}

/// `"HH:MM"` → minutes since midnight (`24:00` allowed).
pub fn minutes(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    if h > 24 || m >= 60 || (h == 24 && m > 0) {
        return None;
    }
    Some(h * 60 + m)
}

pub fn hhmm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

pub fn inside(windows: &DayWindows, day: u8, start: u16, end: u16) -> bool {
    windows[usize::from(day)].iter().any(|&(a, b)| a <= start && end <= b)
}

impl Model {
    /// Reads and checks an instance; the current timetable must itself be feasible.
    pub fn from_json(text: &str) -> Result<Self, BadInstance> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("the instance is not JSON: {e}")))?;
        let format = value.get("format").and_then(|f| f.as_str()).unwrap_or("");
        if format != FORMAT {
            return Err(bad(format!("the instance format is {format:?}; this optimizer reads {FORMAT:?}")));
        }
        let file: InstanceFile =
            serde_json::from_value(value).map_err(|e| bad(format!("the instance does not follow {FORMAT}: {e}")))?;
        Self::from_instance(&file)
    }

    /// Builds a model from an instance assembled in memory (the schedule review fills one from
    /// Cedar's own teachers, rooms, students and weekly series); validated like a file.
    pub fn from_instance(file: &InstanceFile) -> Result<Self, BadInstance> {
        if file.format != FORMAT {
            return Err(bad(format!("the instance format is {:?}; this optimizer reads {FORMAT:?}", file.format)));
        }
        let model = Self::compile(file)?;
        let current: Vec<Lesson> = model.current.iter().flatten().copied().collect();
        let report = super::check::evaluate(&model, &current, false);
        if let Some(first) = report.violations.first() {
            return Err(bad(format!(
                "the current timetable is itself infeasible ({} violation(s)); first: {} — {}",
                report.violations.len(),
                first.kind,
                first.message
            )));
        }
        Ok(model)
    }

    fn compile(file: &InstanceFile) -> Result<Self, BadInstance> {
        if !(1..=60).contains(&file.grid_minutes) || 1440 % file.grid_minutes != 0 {
            return Err(bad(format!("grid_minutes {} must divide a day (e.g. 15)", file.grid_minutes)));
        }
        let grid = file.grid_minutes as u16;
        let windows = |list: &[WindowIn], what: &str| -> Result<DayWindows, BadInstance> {
            let mut out: DayWindows = Default::default();
            for w in list {
                if !(1..=7).contains(&w.weekday) {
                    return Err(bad(format!("{what}: weekday {} is not 1–7", w.weekday)));
                }
                let (Some(a), Some(b)) = (minutes(&w.start_time), minutes(&w.end_time)) else {
                    return Err(bad(format!("{what}: {}–{} is not a pair of HH:MM times", w.start_time, w.end_time)));
                };
                if a >= b {
                    return Err(bad(format!("{what}: window {}–{} is empty", w.start_time, w.end_time)));
                }
                if a % grid != 0 || b % grid != 0 {
                    return Err(bad(format!(
                        "{what}: window {}–{} is off the {grid}-minute grid",
                        w.start_time, w.end_time
                    )));
                }
                out[(w.weekday - 1) as usize].push((a, b));
            }
            for day in &mut out {
                day.sort_unstable();
            }
            Ok(out)
        };
        let open = windows(&file.open_hours, "open_hours")?;

        let mut instrument_ids: BTreeMap<String, u16> = BTreeMap::new();
        let mut instrument = |name: &str| -> u16 {
            let next = instrument_ids.len() as u16;
            *instrument_ids.entry(name.to_owned()).or_insert(next)
        };
        let mut teacher_index = BTreeMap::new();
        let mut teachers = Vec::with_capacity(file.teachers.len());
        for (i, t) in file.teachers.iter().enumerate() {
            if teacher_index.insert(t.id.clone(), i).is_some() {
                return Err(bad(format!("teacher id {:?} appears twice", t.id)));
            }
            if !(0..=1440).contains(&t.max_minutes_per_day) {
                return Err(bad(format!(
                    "teacher {}: max_minutes_per_day {} is not 0–1440",
                    t.id, t.max_minutes_per_day
                )));
            }
            let mut instruments: Vec<u16> = t.instruments.iter().map(|n| instrument(n)).collect();
            instruments.sort_unstable();
            teachers.push(Teacher {
                id: t.id.clone(),
                instruments,
                max_minutes: t.max_minutes_per_day as u16,
                windows: windows(&t.availability, &format!("teacher {}", t.id))?,
            });
        }
        let mut room_index = BTreeMap::new();
        let mut kind_of: BTreeMap<Vec<u16>, u16> = BTreeMap::new();
        let mut kinds: Vec<RoomKind> = Vec::new();
        let mut room_kind = Vec::with_capacity(file.rooms.len());
        for (i, r) in file.rooms.iter().enumerate() {
            if room_index.insert(r.id.clone(), i).is_some() {
                return Err(bad(format!("room id {:?} appears twice", r.id)));
            }
            let mut equipment: Vec<u16> = r.instruments.iter().map(|n| instrument(n)).collect();
            equipment.sort_unstable();
            equipment.dedup();
            let kind = *kind_of.entry(equipment.clone()).or_insert_with(|| {
                kinds.push(RoomKind { instruments: equipment, rooms: Vec::new() });
                (kinds.len() - 1) as u16
            });
            kinds[usize::from(kind)].rooms.push(i);
            room_kind.push(kind);
        }

        let mut family_index: BTreeMap<String, usize> = BTreeMap::new();
        let mut families: Vec<Vec<usize>> = Vec::new();
        let mut student_index = BTreeMap::new();
        let mut students = Vec::with_capacity(file.students.len());
        for (i, s) in file.students.iter().enumerate() {
            if student_index.insert(s.id.clone(), i).is_some() {
                return Err(bad(format!("student id {:?} appears twice", s.id)));
            }
            let active = match s.status.as_str() {
                "active" => true,
                "waitlisted" => false,
                other => return Err(bad(format!("student {}: status {other:?} is not active or waitlisted", s.id))),
            };
            if s.lessons_per_week != 1 {
                return Err(bad(format!("student {}: lessons_per_week must be 1 in format v1", s.id)));
            }
            if s.lesson_minutes <= 0 || s.lesson_minutes > 600 || s.lesson_minutes % i64::from(grid) != 0 {
                return Err(bad(format!(
                    "student {}: lesson_minutes {} is not a positive multiple of the {grid}-minute grid",
                    s.id, s.lesson_minutes
                )));
            }
            if let Some(teacher) = &s.teacher_id
                && !teacher_index.contains_key(teacher)
            {
                return Err(bad(format!("student {}: unknown teacher {teacher:?}", s.id)));
            }
            let family = *family_index.entry(s.family_id.clone()).or_insert_with(|| {
                families.push(Vec::new());
                families.len() - 1
            });
            families[family].push(i);
            let instrument = instrument(&s.instrument);
            let minutes_ = s.lesson_minutes as u16;
            let own = windows(&s.availability, &format!("student {}", s.id))?;
            let preferred = windows(&s.preferred_times, &format!("student {} preferred_times", s.id))?;
            let teachers_of: Vec<u16> = teachers
                .iter()
                .enumerate()
                .filter(|(_, t)| t.instruments.binary_search(&instrument).is_ok())
                .map(|(i, _)| i as u16)
                .collect();
            let mut kinds_of: Vec<u16> = kinds
                .iter()
                .enumerate()
                .filter(|(_, k)| k.instruments.binary_search(&instrument).is_ok())
                .map(|(i, _)| i as u16)
                .collect();
            // Least versatile first: a guitar goes to a studio before it takes a piano room.
            kinds_of.sort_by_key(|&k| (kinds[usize::from(k)].instruments.len(), k));
            let mut slots = Vec::new();
            for day in 0..7u8 {
                for &(a, b) in &own[usize::from(day)] {
                    let mut start = a;
                    while start + minutes_ <= b {
                        if inside(&open, day, start, start + minutes_) && !slots.contains(&(day, start)) {
                            slots.push((day, start));
                        }
                        start += grid;
                    }
                }
            }
            slots.sort_unstable();
            students.push(Student {
                id: s.id.clone(),
                family,
                instrument,
                minutes: minutes_,
                active,
                windows: own,
                preferred,
                teachers: teachers_of,
                kinds: kinds_of,
                slots,
            });
        }

        let mut current = vec![None; students.len()];
        for a in &file.current {
            let Some(&student) = student_index.get(&a.student_id) else {
                return Err(bad(format!("current: unknown student {:?}", a.student_id)));
            };
            let Some(&teacher) = teacher_index.get(&a.teacher_id) else {
                return Err(bad(format!("current: unknown teacher {:?}", a.teacher_id)));
            };
            let Some(&room) = room_index.get(&a.room_id) else {
                return Err(bad(format!("current: unknown room {:?}", a.room_id)));
            };
            if !(1..=7).contains(&a.weekday) {
                return Err(bad(format!("current: {} has weekday {}", a.student_id, a.weekday)));
            }
            let Some(start) = minutes(&a.start_time) else {
                return Err(bad(format!("current: {} starts at {:?}", a.student_id, a.start_time)));
            };
            if current[student].is_some() {
                return Err(bad(format!("current: {} has two lessons", a.student_id)));
            }
            if !students[student].active {
                return Err(bad(format!("current: {} is waitlisted but has a lesson", a.student_id)));
            }
            current[student] = Some(Lesson { student, teacher, room, day: (a.weekday - 1) as u8, start });
        }
        Ok(Self {
            name: file.name.clone(),
            grid,
            weights: file.weights.clone(),
            open,
            teachers,
            rooms: file.rooms.clone(),
            room_kind,
            kinds,
            students,
            families,
            current,
        })
    }

    pub fn to_assignments(&self, lessons: &[Lesson]) -> Vec<AssignmentOut> {
        lessons
            .iter()
            .map(|l| AssignmentOut {
                student_id: self.students[l.student].id.clone(),
                teacher_id: self.teachers[l.teacher].id.clone(),
                room_id: self.rooms[l.room].id.clone(),
                weekday: i64::from(l.day) + 1,
                start_time: hhmm(l.start),
            })
            .collect()
    }
}
