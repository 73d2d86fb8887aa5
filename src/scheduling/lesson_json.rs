//! The lesson list's JSON, written directly. A teacher's week is 100 lessons, 54 KB; through
//! serde_json a quarter of the request's CPU went to writing it — every key escaped
//! byte by byte, every id and instant formatted through the generic machinery, the buffer
//! regrown a dozen times. Here keys are constants, ids and instants are written straight
//! into a buffer sized once, and only free text goes through serde_json's escaping.
//! The output is byte for byte what `Lesson`'s derived `Serialize` writes (the test below
//! holds the two together); everything else still serializes lessons through serde.

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::lesson_list::LessonPage;
use super::lessons::Lesson;

/// Bytes per lesson, a little over the usual (no notes): the buffer is allocated once.
const LESSON_BYTES: usize = 560;

/// `{"items":[…],"next_cursor":…}` of a page of lessons, as an `application/json` response.
pub struct LessonPageJson(Bytes);

impl LessonPageJson {
    pub fn new(page: &LessonPage) -> Self {
        let mut out = Vec::with_capacity(64 + page.items.len() * LESSON_BYTES);
        out.extend_from_slice(b"{\"items\":[");
        for (i, lesson) in page.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            lesson.write_json(&mut out);
        }
        out.extend_from_slice(b"],\"next_cursor\":");
        optional(&mut out, page.next_cursor.as_deref(), text);
        out.push(b'}');
        Self(out.into())
    }

    /// The body (shared, not copied: kept pages hand out the same bytes).
    pub fn body(&self) -> &Bytes {
        &self.0
    }
}

impl From<Bytes> for LessonPageJson {
    fn from(body: Bytes) -> Self {
        Self(body)
    }
}

impl IntoResponse for LessonPageJson {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], self.0).into_response()
    }
}

impl Lesson {
    /// Appends this lesson's JSON object, fields in declaration order as serde writes them.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        id(out, &self.id);
        out.extend_from_slice(b",\"series_id\":");
        optional(out, self.series_id.as_ref(), id);
        out.extend_from_slice(b",\"teacher_id\":");
        id(out, &self.teacher_id);
        out.extend_from_slice(b",\"student_id\":");
        id(out, &self.student_id);
        out.extend_from_slice(b",\"room_id\":");
        optional(out, self.room_id.as_ref(), id);
        out.extend_from_slice(b",\"starts_at\":");
        instant(out, &self.starts_at);
        out.extend_from_slice(b",\"ends_at\":");
        instant(out, &self.ends_at);
        out.extend_from_slice(b",\"status\":");
        word(out, self.status.as_str());
        out.extend_from_slice(b",\"attendance\":");
        optional(out, self.attendance.map(|a| a.as_str()), word);
        out.extend_from_slice(b",\"attendance_note\":");
        optional(out, self.attendance_note.as_deref(), text);
        out.extend_from_slice(b",\"is_makeup\":");
        boolean(out, self.is_makeup);
        out.extend_from_slice(b",\"availability_override\":");
        boolean(out, self.availability_override);
        out.extend_from_slice(b",\"notes\":");
        optional(out, self.notes.as_deref(), text);
        out.extend_from_slice(b",\"substitute_for\":");
        optional(out, self.substitute_for.as_ref(), id);
        out.extend_from_slice(b",\"created_at\":");
        instant(out, &self.created_at);
        out.extend_from_slice(b",\"updated_at\":");
        instant(out, &self.updated_at);
        out.push(b'}');
    }
}

fn optional<T>(out: &mut Vec<u8>, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(value) => write(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

fn id(out: &mut Vec<u8>, id: &Uuid) {
    let mut buffer = Uuid::encode_buffer();
    word(out, id.hyphenated().encode_lower(&mut buffer));
}

fn instant(out: &mut Vec<u8>, at: &DateTime<Utc>) {
    let mut buffer = [0u8; 32];
    match crate::time::rfc3339_into(at, &mut buffer) {
        Some(formatted) => word(out, formatted),
        None => serde_json::to_writer(out, at).expect("a Vec<u8> takes any write"),
    }
}

/// A string that needs no escaping (ids, instants, enum names): quoted as it is.
fn word(out: &mut Vec<u8>, word: &str) {
    out.push(b'"');
    out.extend_from_slice(word.as_bytes());
    out.push(b'"');
}

/// Free text, escaped by serde_json itself.
fn text(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("a Vec<u8> takes any write");
}

fn boolean(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::scheduling::{Attendance, LessonStatus};

    fn lesson(i: u32) -> Lesson {
        let at = Utc.with_ymd_and_hms(2027, 1, 11, 15, 0, 0).unwrap() + chrono::Duration::minutes(i64::from(i) * 37);
        let some = |n: u32| i.is_multiple_of(n).then(Uuid::now_v7);
        Lesson {
            id: Uuid::now_v7(),
            series_id: some(2),
            teacher_id: Uuid::now_v7(),
            student_id: Uuid::now_v7(),
            room_id: some(3),
            starts_at: at,
            ends_at: at + chrono::Duration::minutes(30),
            status: if i.is_multiple_of(5) { LessonStatus::Cancelled } else { LessonStatus::Scheduled },
            attendance: [None, Some(Attendance::Present), Some(Attendance::CancelledByTeacher)][i as usize % 3],
            attendance_note: i.is_multiple_of(4).then(|| "late \"again\"\n\u{1}\u{7f} — é 🎻 </script>".to_owned()),
            is_makeup: i % 2 == 1,
            availability_override: i.is_multiple_of(7),
            notes: (i % 3 == 1).then(|| format!("bring book {i}\\\t")),
            substitute_for: some(4),
            // Microseconds, milliseconds, whole seconds and a far year: every formatting path.
            created_at: at + chrono::Duration::microseconds(i64::from(i) * 1_234_567),
            updated_at: [
                at,
                at + chrono::Duration::milliseconds(250),
                Utc.with_ymd_and_hms(12_000, 1, 1, 0, 0, 0).unwrap(),
            ][i as usize % 3],
        }
    }

    #[test]
    fn writes_exactly_what_serde_writes() {
        let items: Vec<Lesson> = (0..60).map(lesson).collect();
        for (items, cursor) in
            [(&items[..], None), (&items[..], Some("MjAyNy0wMS0xMVQxNTowMDowMFp8YQ")), (&[][..], None)]
        {
            let page = LessonPage { items: items.to_vec(), next_cursor: cursor.map(str::to_owned) };
            let written = LessonPageJson::new(&page).0.to_vec();
            assert_eq!(String::from_utf8(written).unwrap(), serde_json::to_string(&page).unwrap());
        }
    }
}
