//! The reference scorer in Rust: every hard constraint and the objective of PROBLEM.md, defined
//! as `../shared/schedule-opt/evaluate.py` defines them (tests compare the two). The optimizer
//! runs it on every solution before returning one.

use std::collections::BTreeMap;

use serde::Serialize;

use super::model::{Lesson, Model, hhmm, inside};

#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    pub kind: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub placed_students: usize,
    pub placed_minutes: i64,
    pub waitlisted_placed: usize,
    pub span_minutes: i64,
    pub gap_minutes: i64,
    pub utilization_pct: f64,
    pub moved: usize,
    pub time_moves: usize,
    pub teacher_changes: usize,
    pub room_changes: usize,
    pub sibling_adjacent_pairs: usize,
    pub preferred_met: usize,
    pub objective: i64,
}

impl Report {
    pub fn feasible(&self) -> bool {
        self.violations.is_empty()
    }
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Scores `lessons`; with `against_current`, moves are counted against the current timetable.
pub fn evaluate(model: &Model, lessons: &[Lesson], against_current: bool) -> Report {
    let mut violations = Vec::new();
    let mut bad = |kind: &'static str, message: String| violations.push(Violation { kind, message });
    let mut per_student = vec![0usize; model.students.len()];
    for l in lessons {
        let s = &model.students[l.student];
        let t = &model.teachers[l.teacher];
        let end = l.start + s.minutes;
        let at = format!("{} {} {}-{}", s.id, DAYS[usize::from(l.day)], hhmm(l.start), hhmm(end));
        per_student[l.student] += 1;
        if l.start % model.grid != 0 {
            bad("off_grid", format!("{at}: start is not on the {}-minute grid", model.grid));
        }
        if t.instruments.binary_search(&s.instrument).is_err() {
            bad("teacher_instrument", format!("{at}: {} does not teach the instrument", t.id));
        }
        let kind = &model.kinds[usize::from(model.room_kind[l.room])];
        if kind.instruments.binary_search(&s.instrument).is_err() {
            bad("room_instrument", format!("{at}: {} is not equipped for the instrument", model.rooms[l.room].id));
        }
        if !inside(&model.open, l.day, l.start, end) {
            bad("open_hours", format!("{at}: outside the school's open hours"));
        }
        if !inside(&t.windows, l.day, l.start, end) {
            bad("teacher_availability", format!("{at}: outside {}'s availability", t.id));
        }
        if !inside(&s.windows, l.day, l.start, end) {
            bad("student_availability", format!("{at}: outside the student's availability"));
        }
    }
    for (i, s) in model.students.iter().enumerate() {
        if per_student[i] > 1 {
            bad("lessons_per_week", format!("{}: {} lessons, at most 1", s.id, per_student[i]));
        }
        if s.active && per_student[i] == 0 {
            bad("active_unplaced", format!("{} is an active student and has no lesson", s.id));
        }
    }
    let end_of = |l: &Lesson| l.start + model.students[l.student].minutes;
    for (label, key) in [("teacher_overlap", 0), ("room_overlap", 1), ("student_overlap", 2)] {
        let mut groups: BTreeMap<(usize, u8), Vec<&Lesson>> = BTreeMap::new();
        for l in lessons {
            let who = [l.teacher, l.room, l.student][key];
            groups.entry((who, l.day)).or_default().push(l);
        }
        for ((_, day), mut ls) in groups {
            ls.sort_by_key(|l| l.start);
            for pair in ls.windows(2) {
                if pair[1].start < end_of(pair[0]) {
                    bad(
                        label,
                        format!(
                            "{} {}: {} overlaps {}",
                            DAYS[usize::from(day)],
                            hhmm(pair[1].start),
                            model.students[pair[0].student].id,
                            model.students[pair[1].student].id
                        ),
                    );
                }
            }
        }
    }
    let mut teacher_days: BTreeMap<(usize, u8), Vec<&Lesson>> = BTreeMap::new();
    for l in lessons {
        teacher_days.entry((l.teacher, l.day)).or_default().push(l);
    }
    let (mut span, mut gap) = (0i64, 0i64);
    for ((teacher, day), ls) in &teacher_days {
        let taught: i64 = ls.iter().map(|l| i64::from(model.students[l.student].minutes)).sum();
        let cap = i64::from(model.teachers[*teacher].max_minutes);
        if taught > cap {
            bad(
                "teacher_daily_max",
                format!("{} {}: {taught} min taught, max {cap}", model.teachers[*teacher].id, DAYS[usize::from(*day)]),
            );
        }
        let first = ls.iter().map(|l| i64::from(l.start)).min().unwrap_or(0);
        let last = ls.iter().map(|l| i64::from(end_of(l))).max().unwrap_or(0);
        span += last - first;
        gap += (last - first - taught).max(0);
    }
    let mut first: Vec<Option<&Lesson>> = vec![None; model.students.len()];
    for l in lessons {
        first[l.student].get_or_insert(l);
    }
    let placed_minutes: i64 = lessons.iter().map(|l| i64::from(model.students[l.student].minutes)).sum();
    let placed_students = first.iter().filter(|l| l.is_some()).count();
    let waitlisted_placed = first.iter().enumerate().filter(|(i, l)| l.is_some() && !model.students[*i].active).count();
    let (mut time_moves, mut teacher_changes, mut room_changes, mut moved) = (0, 0, 0, 0);
    if against_current {
        for (i, current) in model.current.iter().enumerate() {
            let (Some(cur), Some(l)) = (current, first[i]) else { continue };
            let time = (l.day, l.start) != (cur.day, cur.start);
            let teacher = l.teacher != cur.teacher;
            time_moves += usize::from(time);
            teacher_changes += usize::from(teacher);
            room_changes += usize::from(l.room != cur.room);
            moved += usize::from(time || teacher);
        }
    }
    let mut sibling_adjacent_pairs = 0;
    for members in &model.families {
        for (i, &a) in members.iter().enumerate() {
            for &b in &members[i + 1..] {
                if let (Some(la), Some(lb)) = (first[a], first[b])
                    && la.day == lb.day
                    && (end_of(la) == lb.start || end_of(lb) == la.start)
                {
                    sibling_adjacent_pairs += 1;
                }
            }
        }
    }
    let preferred_met = first
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            l.is_some_and(|l| {
                inside(&model.students[*i].preferred, l.day, l.start, l.start + model.students[*i].minutes)
            })
        })
        .count();
    let w = &model.weights;
    let objective = w.placed_minute * placed_minutes
        - w.gap_minute * gap
        - w.time_move * time_moves as i64
        - w.teacher_change * teacher_changes as i64
        + w.sibling_pair * sibling_adjacent_pairs as i64
        + w.preferred * preferred_met as i64;
    Report {
        violations,
        placed_students,
        placed_minutes,
        waitlisted_placed,
        span_minutes: span,
        gap_minutes: gap,
        utilization_pct: if span > 0 { 100.0 * placed_minutes as f64 / span as f64 } else { 0.0 },
        moved,
        time_moves,
        teacher_changes,
        room_changes,
        sibling_adjacent_pairs,
        preferred_met,
        objective,
    }
}
