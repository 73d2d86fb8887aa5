//! Local search over feasible timetables only. A state places each student in a room *kind*
//! (identical rooms are interchangeable; PROBLEM.md §9) at a teacher, weekday and start, or
//! leaves a waitlisted student out. Every move keeps every hard constraint and the move
//! budget; the objective is kept incrementally (only the touched teacher-days, the student and
//! their family are rescored). Simulated annealing on a fixed iteration budget decides, with a
//! seeded ChaCha generator, so a run is reproducible.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::model::{Lesson, Model, Place, inside};

pub struct State<'m> {
    m: &'m Model,
    pub pos: Vec<Option<Place>>,
    /// Per teacher and weekday: (start, end, student), sorted by start.
    days: Vec<[Vec<(u16, u16, u32)>; 7]>,
    taught: Vec<[u16; 7]>,
    /// Per kind: lessons at each grid unit of the week.
    occupancy: Vec<Vec<u8>>,
    units_per_day: usize,
    moved: usize,
    budget: Option<usize>,
    pub objective: i64,
}

impl<'m> State<'m> {
    /// The current timetable (rooms as their kinds), waitlisted students out.
    pub fn from_current(m: &'m Model, budget: Option<usize>) -> Self {
        let current: Vec<Option<Place>> = m
            .current
            .iter()
            .map(|c| {
                c.map(|l| Place { teacher: l.teacher as u16, kind: m.room_kind[l.room], day: l.day, start: l.start })
            })
            .collect();
        Self::with_places(m, &current, budget)
    }

    /// A state holding exactly `places`.
    pub fn with_places(m: &'m Model, places: &[Option<Place>], budget: Option<usize>) -> Self {
        let units_per_day = 1440 / usize::from(m.grid);
        let mut state = Self {
            m,
            pos: vec![None; m.students.len()],
            days: vec![Default::default(); m.teachers.len()],
            taught: vec![[0; 7]; m.teachers.len()],
            occupancy: vec![vec![0; units_per_day * 7]; m.kinds.len()],
            units_per_day,
            moved: 0,
            budget,
            objective: 0,
        };
        for (i, place) in places.iter().enumerate() {
            if let Some(p) = place {
                state.insert(i, *p);
            }
        }
        state.objective = state.full_objective();
        state
    }

    fn end(&self, i: usize, p: &Place) -> u16 {
        p.start + self.m.students[i].minutes
    }

    fn units(&self, i: usize, p: &Place) -> std::ops::Range<usize> {
        let g = usize::from(self.m.grid);
        let base = usize::from(p.day) * self.units_per_day;
        base + usize::from(p.start) / g..base + usize::from(self.end(i, p)) / g
    }

    fn insert(&mut self, i: usize, p: Place) {
        let end = self.end(i, &p);
        let day = &mut self.days[usize::from(p.teacher)][usize::from(p.day)];
        let at = day.partition_point(|&(s, _, _)| s < p.start);
        day.insert(at, (p.start, end, i as u32));
        self.taught[usize::from(p.teacher)][usize::from(p.day)] += self.m.students[i].minutes;
        for u in self.units(i, &p) {
            self.occupancy[usize::from(p.kind)][u] += 1;
        }
        if self.is_moved(i, Some(p)) {
            self.moved += 1;
        }
        self.pos[i] = Some(p);
    }

    fn remove(&mut self, i: usize) -> Option<Place> {
        let p = self.pos[i].take()?;
        let day = &mut self.days[usize::from(p.teacher)][usize::from(p.day)];
        if let Some(at) = day.iter().position(|&(_, _, s)| s as usize == i) {
            day.remove(at);
        }
        self.taught[usize::from(p.teacher)][usize::from(p.day)] -= self.m.students[i].minutes;
        for u in self.units(i, &p) {
            self.occupancy[usize::from(p.kind)][u] -= 1;
        }
        if self.is_moved(i, Some(p)) {
            self.moved -= 1;
        }
        Some(p)
    }

    /// An active student whose weekday, start or teacher differs from the current timetable.
    fn is_moved(&self, i: usize, p: Option<Place>) -> bool {
        match (&self.m.current[i], p) {
            (Some(c), Some(p)) => (c.day, c.start, c.teacher) != (p.day, p.start, usize::from(p.teacher)),
            _ => false,
        }
    }

    /// Whether student `i` (not placed now) fits at `p` under every hard constraint.
    fn fits(&self, i: usize, p: &Place) -> bool {
        let s = &self.m.students[i];
        let t = &self.m.teachers[usize::from(p.teacher)];
        let end = p.start + s.minutes;
        if !inside(&t.windows, p.day, p.start, end) {
            return false;
        }
        if self.taught[usize::from(p.teacher)][usize::from(p.day)] + s.minutes > t.max_minutes {
            return false;
        }
        if self.days[usize::from(p.teacher)][usize::from(p.day)].iter().any(|&(a, b, _)| a < end && p.start < b) {
            return false;
        }
        let capacity = self.m.kinds[usize::from(p.kind)].rooms.len() as u8;
        if self.units(i, p).any(|u| self.occupancy[usize::from(p.kind)][u] >= capacity) {
            return false;
        }
        if let Some(budget) = self.budget
            && self.is_moved(i, Some(*p))
            && self.moved + 1 > budget
        {
            return false;
        }
        true
    }

    /// The first kind (least versatile first) with room for `i` at teacher/day/start.
    fn with_kind(&self, i: usize, teacher: u16, day: u8, start: u16) -> Option<Place> {
        self.m.students[i].kinds.iter().map(|&kind| Place { teacher, kind, day, start }).find(|p| self.fits(i, p))
    }

    /// Where `i` would fit at teacher/day/start once its own lesson is out of the way (it
    /// stays where it is).
    fn place_lifted(&mut self, i: usize, teacher: u16, day: u8, start: u16) -> Option<Place> {
        let from = self.remove(i);
        let to = self.with_kind(i, teacher, day, start);
        if let Some(p) = from {
            self.insert(i, p);
        }
        to
    }

    fn day_gap(&self, teacher: u16, day: u8) -> i64 {
        let lessons = &self.days[usize::from(teacher)][usize::from(day)];
        match (lessons.first(), lessons.iter().map(|l| l.1).max()) {
            (Some(first), Some(last)) => {
                i64::from(last - first.0) - i64::from(self.taught[usize::from(teacher)][usize::from(day)])
            }
            _ => 0,
        }
    }

    /// Student `i`'s own terms: minutes placed, moves, preference.
    fn own_terms(&self, i: usize) -> i64 {
        let w = &self.m.weights;
        let s = &self.m.students[i];
        let Some(p) = self.pos[i] else { return 0 };
        let mut value = w.placed_minute * i64::from(s.minutes);
        if let Some(c) = &self.m.current[i] {
            if (c.day, c.start) != (p.day, p.start) {
                value -= w.time_move;
            }
            if c.teacher != usize::from(p.teacher) {
                value -= w.teacher_change;
            }
        }
        if inside(&s.preferred, p.day, p.start, p.start + s.minutes) {
            value += w.preferred;
        }
        value
    }

    fn family_pairs(&self, family: usize) -> i64 {
        let members = &self.m.families[family];
        let mut pairs = 0;
        for (k, &a) in members.iter().enumerate() {
            for &b in &members[k + 1..] {
                if let (Some(pa), Some(pb)) = (self.pos[a], self.pos[b])
                    && pa.day == pb.day
                    && (self.end(a, &pa) == pb.start || self.end(b, &pb) == pa.start)
                {
                    pairs += 1;
                }
            }
        }
        pairs
    }

    fn full_objective(&self) -> i64 {
        let w = &self.m.weights;
        let mut value: i64 = (0..self.pos.len()).map(|i| self.own_terms(i)).sum();
        for t in 0..self.m.teachers.len() {
            for d in 0..7u8 {
                value -= w.gap_minute * self.day_gap(t as u16, d);
            }
        }
        for f in 0..self.m.families.len() {
            value += w.sibling_pair * self.family_pairs(f);
        }
        value
    }

    /// The objective terms that moving student `i` between `a` and `b` can change.
    fn local(&self, i: usize, a: Option<Place>, b: Option<Place>) -> i64 {
        let w = &self.m.weights;
        let mut value = self.own_terms(i) + w.sibling_pair * self.family_pairs(self.m.students[i].family);
        let mut days: Vec<(u16, u8)> = [a, b].iter().flatten().map(|p| (p.teacher, p.day)).collect();
        days.dedup();
        for (t, d) in days {
            value -= w.gap_minute * self.day_gap(t, d);
        }
        value
    }

    /// Moves `i` to `to` (which must fit once `i` is lifted) and returns the objective change.
    fn relocate(&mut self, i: usize, to: Option<Place>) -> i64 {
        let from = self.pos[i];
        let before = self.local(i, from, to);
        self.remove(i);
        if let Some(p) = to {
            self.insert(i, p);
        }
        let delta = self.local(i, from, to) - before;
        self.objective += delta;
        delta
    }

    /// Concrete rooms: a sweep by start time per kind hands out rooms, keeping an active
    /// student's current room when it is free (interval graphs: the sweep never fails).
    pub fn lessons(&self) -> Vec<Lesson> {
        let m = self.m;
        let mut out = Vec::new();
        for (k, kind) in m.kinds.iter().enumerate() {
            let mut here: Vec<(u8, u16, usize)> = self
                .pos
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.filter(|p| usize::from(p.kind) == k).map(|p| (p.day, p.start, i)))
                .collect();
            here.sort_unstable();
            // Per room: (day, end) of its last lesson.
            let mut busy_until: Vec<(u8, u16)> = vec![(0, 0); kind.rooms.len()];
            for (day, start, i) in here {
                let end = start + m.students[i].minutes;
                let free = |slot: &(u8, u16)| slot.0 != day || slot.1 <= start;
                let preferred = m.current[i]
                    .and_then(|c| kind.rooms.iter().position(|&r| r == c.room))
                    .filter(|&r| free(&busy_until[r]));
                let room = preferred.or_else(|| busy_until.iter().position(free)).expect("kind capacity holds");
                busy_until[room] = (day, end);
                let p = self.pos[i].expect("placed");
                out.push(Lesson { student: i, teacher: usize::from(p.teacher), room: kind.rooms[room], day, start });
            }
        }
        out.sort_by_key(|l| l.student);
        out
    }
}

/// How long and how hard one search runs.
#[derive(Debug, Clone)]
pub struct Limits {
    pub iterations: u64,
    pub deadline: Option<std::time::Instant>,
    pub max_moves: Option<usize>,
}

/// One seeded search from the current timetable; the best state it met.
pub fn search(
    m: &Model,
    seed: u64,
    limits: &Limits,
    cancel: &std::sync::atomic::AtomicBool,
) -> (Vec<Option<Place>>, i64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut state = State::from_current(m, limits.max_moves);
    seat_waitlist(&mut state);
    let mut best = (state.pos.clone(), state.objective);
    let n = m.students.len();
    if n == 0 {
        return best;
    }
    let (t0, t1) = (40.0f64, 0.3f64);
    let mut temperature = t0;
    let started = std::time::Instant::now();
    for iteration in 0..limits.iterations {
        if iteration % 4096 == 0 {
            let now = std::time::Instant::now();
            if cancel.load(std::sync::atomic::Ordering::Relaxed) || limits.deadline.is_some_and(|d| now >= d) {
                break;
            }
            // Cool along the iteration budget; when the wall-clock cap binds first, along
            // the time instead, so a cut-short search still ends cold (then the result
            // depends on the machine's speed, which only the cap can cause).
            let by_steps = iteration as f64 / limits.iterations as f64;
            let by_time = limits.deadline.map_or(0.0, |d| {
                let total = d.saturating_duration_since(started).as_secs_f64();
                if total > 0.0 { now.duration_since(started).as_secs_f64() / total } else { 1.0 }
            });
            temperature = t0 * (t1 / t0).powf(by_steps.max(by_time).min(1.0));
        }
        let i = rng.random_range(0..n);
        let roll: f64 = rng.random();
        let delta = if roll < 0.4 {
            random_move(&mut state, &mut rng, i)
        } else if roll < 0.6 {
            shift(&mut state, &mut rng, i)
        } else if roll < 0.75 {
            snap(&mut state, &mut rng, i)
        } else if roll < 0.8 {
            close_gap(&mut state, &mut rng, i)
        } else if roll < 0.9 {
            back_home(&mut state, i)
        } else {
            eject(&mut state, &mut rng, i)
        };
        let Some((delta, undo)) = delta else { continue };
        let accept = delta >= 0 || rng.random::<f64>() < (delta as f64 / temperature).exp();
        if !accept {
            for (student, place) in undo.into_iter().rev() {
                state.relocate(student, place);
            }
        } else if state.objective > best.1 {
            best = (state.pos.clone(), state.objective);
        }
    }
    best
}

type Undo = Vec<(usize, Option<Place>)>;

/// Moves `i` to `to`, a place found to fit with `i` lifted; `None` when it is already there.
fn apply(state: &mut State, i: usize, to: Place) -> Option<(i64, Undo)> {
    let from = state.pos[i];
    (from != Some(to)).then(|| (state.relocate(i, Some(to)), vec![(i, from)]))
}

fn pick_teacher(state: &State, rng: &mut ChaCha8Rng, i: usize) -> Option<u16> {
    let s = &state.m.students[i];
    let own = state.pos[i].map(|p| p.teacher).or(state.m.current[i].map(|c| c.teacher as u16));
    match own {
        // Teacher changes cost as much as 17 idle hours: rarely worth trying.
        Some(t) if rng.random::<f64>() < 0.97 => Some(t),
        _ if s.teachers.is_empty() => None,
        _ => Some(s.teachers[rng.random_range(0..s.teachers.len())]),
    }
}

fn random_move(state: &mut State, rng: &mut ChaCha8Rng, i: usize) -> Option<(i64, Undo)> {
    let s = &state.m.students[i];
    if s.slots.is_empty() {
        return None;
    }
    let (day, start) = s.slots[rng.random_range(0..s.slots.len())];
    let teacher = pick_teacher(state, rng, i)?;
    let to = state.place_lifted(i, teacher, day, start)?;
    apply(state, i, to)
}

/// Slides a lesson a little within its teacher's day (closes gaps), or changes only its room
/// kind (free, frees the versatile rooms).
fn shift(state: &mut State, rng: &mut ChaCha8Rng, i: usize) -> Option<(i64, Undo)> {
    let p = state.pos[i]?;
    let g = state.m.grid as i32;
    let step = [-4, -3, -2, -1, 1, 2, 3, 4, 0][rng.random_range(0..9)];
    let start = i32::from(p.start) + step * g;
    if start < 0 {
        return None;
    }
    let start = start as u16;
    if state.m.students[i].slots.binary_search(&(p.day, start)).is_err() {
        return None;
    }
    state.remove(i);
    let to = if step == 0 {
        let kinds = &state.m.students[i].kinds;
        let kind = kinds[rng.random_range(0..kinds.len())];
        Some(Place { kind, ..p }).filter(|q| state.fits(i, q))
    } else {
        state.with_kind(i, p.teacher, p.day, start)
    };
    state.insert(i, p);
    apply(state, i, to?)
}

/// Puts the lesson right before or after another lesson of its teacher (any day they teach),
/// or right after a sibling's: what closes a gap or lines siblings up.
fn snap(state: &mut State, rng: &mut ChaCha8Rng, i: usize) -> Option<(i64, Undo)> {
    let m = state.m;
    let teacher = state.pos[i].map(|p| p.teacher).or(m.current[i].map(|c| c.teacher as u16))?;
    let minutes = m.students[i].minutes;
    let family = &m.families[m.students[i].family];
    let (day, start) = if family.len() > 1 && rng.random::<f64>() < 0.3 {
        let sibling = family[rng.random_range(0..family.len())];
        let p = state.pos[sibling].filter(|_| sibling != i)?;
        let end = p.start + m.students[sibling].minutes;
        if rng.random::<bool>() { (p.day, end) } else { (p.day, p.start.checked_sub(minutes)?) }
    } else {
        let day = match state.pos[i] {
            Some(p) if rng.random::<f64>() < 0.7 => p.day,
            _ => rng.random_range(0..7u8),
        };
        let lessons = &state.days[usize::from(teacher)][usize::from(day)];
        let others: Vec<&(u16, u16, u32)> = lessons.iter().filter(|l| l.2 as usize != i).collect();
        if others.is_empty() {
            return None;
        }
        let &&(a, b, _) = others.get(rng.random_range(0..others.len()))?;
        if rng.random::<bool>() { (day, b) } else { (day, a.checked_sub(minutes)?) }
    };
    if m.students[i].slots.binary_search(&(day, start)).is_err() {
        return None;
    }
    let to = state.place_lifted(i, teacher, day, start)?;
    apply(state, i, to)
}

/// Closes the gap before (or after) `i`'s lesson in its teacher's day by sliding the whole
/// block of lessons on that side across it: a day laid back to back in one move.
fn close_gap(state: &mut State, rng: &mut ChaCha8Rng, i: usize) -> Option<(i64, Undo)> {
    let p = state.pos[i]?;
    let lessons = state.days[usize::from(p.teacher)][usize::from(p.day)].clone();
    let k = lessons.iter().position(|l| l.2 as usize == i)?;
    // Later lessons move earlier (ascending), or earlier lessons move later (descending).
    let (block, shift): (Vec<usize>, i32) = if rng.random::<bool>() {
        let gap = i32::from(p.start) - i32::from(lessons.get(k.checked_sub(1)?)?.1);
        (lessons[k..].iter().map(|l| l.2 as usize).collect(), -gap)
    } else {
        let end = state.end(i, &p);
        let gap = i32::from(lessons.get(k + 1)?.0) - i32::from(end);
        (lessons[..=k].iter().rev().map(|l| l.2 as usize).collect(), gap)
    };
    if shift == 0 {
        return None;
    }
    let mut undo: Undo = Vec::with_capacity(block.len());
    let mut delta = 0;
    for &s in &block {
        let from = state.pos[s].expect("in the teacher's day");
        let start = u16::try_from(i32::from(from.start) + shift).ok();
        let to = start.filter(|&st| state.m.students[s].slots.binary_search(&(from.day, st)).is_ok()).and_then(|st| {
            state.remove(s);
            let to = state.with_kind(s, from.teacher, from.day, st);
            state.insert(s, from);
            to
        });
        let Some(to) = to else {
            for (student, place) in undo.into_iter().rev() {
                state.relocate(student, place);
            }
            return None;
        };
        delta += state.relocate(s, Some(to));
        undo.push((s, Some(from)));
    }
    Some((delta, undo))
}

/// Puts a moved active student back where they were (gives back move budget).
fn back_home(state: &mut State, i: usize) -> Option<(i64, Undo)> {
    let current = state.m.current[i]?;
    let to = state.place_lifted(i, current.teacher as u16, current.day, current.start)?;
    apply(state, i, to)
}

/// Ejection: seats `i` (a waitlisted student, placed or not, or any student) at a random slot
/// whose teacher is busy with exactly one lesson `j`, then re-places `j` at its best of a few
/// random slots (a waitlisted `j` may be left out). Both or neither.
fn eject(state: &mut State, rng: &mut ChaCha8Rng, i: usize) -> Option<(i64, Undo)> {
    let m = state.m;
    let s = &m.students[i];
    if s.slots.is_empty() || s.active && state.pos[i].is_some() && rng.random::<f64>() < 0.8 {
        return None;
    }
    let (day, start) = s.slots[rng.random_range(0..s.slots.len())];
    let teacher = pick_teacher(state, rng, i)?;
    let end = start + s.minutes;
    let blockers: Vec<usize> = state.days[usize::from(teacher)][usize::from(day)]
        .iter()
        .filter(|&&(a, b, who)| a < end && start < b && who as usize != i)
        .map(|&(_, _, who)| who as usize)
        .collect();
    let [j] = blockers[..] else { return None };
    let mut undo: Undo = vec![(j, state.pos[j])];
    let mut delta = state.relocate(j, None);
    let from_i = state.pos[i];
    let Some(to) = state.place_lifted(i, teacher, day, start) else {
        state.relocate(j, undo[0].1);
        return None;
    };
    undo.push((i, from_i));
    delta += state.relocate(i, Some(to));
    // Re-place j: its best of a few tries.
    let mut best: Option<(i64, Place)> = None;
    let sj = &m.students[j];
    for _ in 0..24 {
        if sj.slots.is_empty() {
            break;
        }
        let (d, st) = sj.slots[rng.random_range(0..sj.slots.len())];
        let Some(t) = pick_teacher(state, rng, j) else { break };
        if let Some(p) = state.with_kind(j, t, d, st) {
            let gain = state.relocate(j, Some(p));
            state.relocate(j, None);
            if best.is_none_or(|(g, _)| gain > g) {
                best = Some((gain, p));
            }
        }
    }
    match best {
        Some((_, p)) => delta += state.relocate(j, Some(p)),
        None if sj.active => {
            for (student, place) in undo.into_iter().rev() {
                state.relocate(student, place);
            }
            return None;
        }
        None => {}
    }
    Some((delta, undo))
}

/// Greedy first step: each waitlisted student at their best feasible place, if any.
fn seat_waitlist(state: &mut State) {
    let m = state.m;
    for i in 0..m.students.len() {
        if m.students[i].active || state.pos[i].is_some() {
            continue;
        }
        let mut best: Option<(i64, Place)> = None;
        for &(day, start) in &m.students[i].slots {
            for &teacher in &m.students[i].teachers {
                if let Some(p) = state.with_kind(i, teacher, day, start) {
                    let gain = state.relocate(i, Some(p));
                    state.relocate(i, None);
                    if best.is_none_or(|(g, _)| gain > g) {
                        best = Some((gain, p));
                    }
                }
            }
        }
        if let Some((_, p)) = best {
            state.relocate(i, Some(p));
        }
    }
}
