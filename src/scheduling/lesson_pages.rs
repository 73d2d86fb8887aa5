//! Pages of the lesson list kept to be answered again — but only after the database has said,
//! in that request, that they still are the answer.
//!
//! A teacher's week is 100 lessons, 54 KB of JSON: reading, sending, decoding and writing them
//! was nearly all that the week view cost, on both sides of the connection. Every version of
//! a lesson row carries a number never handed out before (`row_version`: a sequence and an
//! update trigger on PostgreSQL, a counter and triggers on SQLite). A page is a function of
//! its rows, so the page's own query selecting only those numbers — an index-only scan —
//! tells whether a kept page is still exact: the same numbers in the same order give the same
//! bytes. Nothing is served without that check, so a kept page never outlives its validity,
//! whoever changed the rows (another process, a workflow, SQL by hand).
//!
//! Bounded: at most [`MAX_BYTES`] in 512 pages, the least recently used dropped first, and a page
//! nobody asked for in [`IDLE`] is dropped by the once-a-second upkeep (`app::memory`), so the
//! memory goes back after a busy spell.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::LessonStatus;
use crate::db::Db;

/// All kept pages together, bodies and numbers: 70 teachers' weeks.
const MAX_BYTES: usize = 4 << 20;
/// At most this many pages (making room scans them all).
const MAX_PAGES: usize = 512;
/// A page larger than this is not kept (a 500-lesson page with long notes).
const MAX_PAGE_BYTES: usize = MAX_BYTES / 8;
/// A page not asked for in this long is dropped.
const IDLE: Duration = Duration::from_secs(10);

/// Everything a page depends on besides its rows: the caller's scope and the query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageQuery {
    /// A parent's family, a teacher's own id: the rows the caller may see.
    pub family: Option<Uuid>,
    pub teacher: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub teacher_id: Option<Uuid>,
    pub student_id: Option<Uuid>,
    pub room_id: Option<Uuid>,
    pub status: Option<LessonStatus>,
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: u32,
}

/// A page as answered: its rows' numbers in page order (one more row than the page when there
/// is a next one) and the response body.
#[derive(Debug, Clone)]
pub struct KeptPage {
    pub versions: Arc<[i64]>,
    pub body: Bytes,
}

impl KeptPage {
    fn bytes(&self) -> usize {
        self.body.len() + self.versions.len() * size_of::<i64>() + size_of::<PageQuery>()
    }
}

struct Entry {
    page: KeptPage,
    used: Instant,
}

#[derive(Default)]
pub struct LessonPages {
    inner: Mutex<Pages>,
    /// Requests answered with a kept page (also counted in `lesson_pages_total`).
    kept_answers: AtomicU64,
}

/// How a request for a page was answered.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// The kept page: its rows are unchanged.
    Kept,
    /// The rows again: they changed since the page was kept.
    Changed,
    /// The rows: no page was kept for the query.
    Read,
}

#[derive(Default)]
struct Pages {
    entries: HashMap<PageQuery, Entry>,
    bytes: usize,
}

impl Pages {
    fn remove(&mut self, key: &PageQuery) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes -= entry.page.bytes();
        }
    }
}

impl LessonPages {
    /// The page kept for `key`, to be checked against the rows before it is served.
    pub fn get(&self, key: &PageQuery, now: Instant) -> Option<KeptPage> {
        let mut pages = self.lock();
        let entry = pages.entries.get_mut(key)?;
        entry.used = now;
        Some(entry.page.clone())
    }

    /// Keeps `page` for `key` (replacing what was kept), making room by dropping the least
    /// recently used pages.
    pub fn keep(&self, key: PageQuery, page: KeptPage, now: Instant) {
        let size = page.bytes();
        let mut pages = self.lock();
        pages.remove(&key);
        if size > MAX_PAGE_BYTES {
            return;
        }
        while pages.bytes + size > MAX_BYTES || pages.entries.len() >= MAX_PAGES {
            let oldest = pages.entries.iter().min_by_key(|(_, entry)| entry.used).map(|(key, _)| key.clone());
            match oldest {
                Some(oldest) => pages.remove(&oldest),
                None => break,
            }
        }
        pages.bytes += size;
        pages.entries.insert(key, Entry { page, used: now });
    }

    /// Drops the pages not asked for in [`IDLE`]; how many were dropped.
    pub fn forget_idle(&self, now: Instant) -> usize {
        let mut pages = self.lock();
        let idle: Vec<PageQuery> = pages
            .entries
            .iter()
            .filter(|(_, entry)| now.saturating_duration_since(entry.used) >= IDLE)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &idle {
            pages.remove(key);
        }
        idle.len()
    }

    /// Counts an answer (here and in the `lesson_pages_total` metric).
    pub fn answered(&self, answer: Answer) {
        let label = match answer {
            Answer::Kept => {
                self.kept_answers.fetch_add(1, Ordering::Relaxed);
                "kept"
            }
            Answer::Changed => "changed",
            Answer::Read => "read",
        };
        metrics::counter!("lesson_pages_total", "answer" => label).increment(1);
    }

    /// Requests answered with a kept page so far.
    pub fn kept_answers(&self) -> u64 {
        self.kept_answers.load(Ordering::Relaxed)
    }

    /// Bytes held by the kept pages.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, Pages> {
        // A panic while holding the lock leaves the map consistent (no await, no partial update).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The last version number handed out, where the database has lesson rows at all (read by
/// `cedar restore` before it replaces them).
pub async fn last_row_version(db: &Db) -> sqlx::Result<Option<i64>> {
    match db {
        Db::Sqlite(pool) => {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lesson_row_versions')",
            )
            .fetch_one(pool)
            .await?;
            if !exists {
                return Ok(None);
            }
            sqlx::query_scalar("SELECT max(last) FROM lesson_row_versions").fetch_one(pool).await
        }
        Db::Postgres(pool) => {
            let exists: bool =
                sqlx::query_scalar("SELECT to_regclass('lesson_row_versions') IS NOT NULL").fetch_one(pool).await?;
            if !exists {
                return Ok(None);
            }
            sqlx::query_scalar("SELECT last_value FROM lesson_row_versions").fetch_one(pool).await.map(Some)
        }
    }
}

/// After a restore: the next version numbers come after `handed_out` (what the replaced
/// database had handed out), not after the backup's — a running Cedar may keep pages checked
/// against numbers handed out since the backup, and a number must never mean two rows.
pub async fn continue_row_versions_after(db: &Db, handed_out: i64) -> sqlx::Result<()> {
    match db {
        Db::Sqlite(pool) => {
            sqlx::query("UPDATE lesson_row_versions SET last = max(last, ?1)").bind(handed_out).execute(pool).await?;
        }
        Db::Postgres(pool) => {
            sqlx::query("SELECT setval('lesson_row_versions', greatest(last_value, $1)) FROM lesson_row_versions")
                .bind(handed_out)
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(limit: u32) -> PageQuery {
        PageQuery {
            family: None,
            teacher: None,
            from: None,
            to: None,
            teacher_id: Some(Uuid::nil()),
            student_id: None,
            room_id: None,
            status: None,
            after: None,
            limit,
        }
    }

    fn page(body_bytes: usize, versions: &[i64]) -> KeptPage {
        KeptPage { versions: versions.into(), body: Bytes::from(vec![b'x'; body_bytes]) }
    }

    #[test]
    fn a_kept_page_is_returned_for_its_key_only() {
        let pages = LessonPages::default();
        let now = Instant::now();
        pages.keep(key(1), page(10, &[1, 2]), now);
        assert_eq!(&*pages.get(&key(1), now).expect("kept").versions, &[1, 2]);
        assert!(pages.get(&key(2), now).is_none());
        pages.keep(key(1), page(20, &[3]), now);
        assert_eq!(&*pages.get(&key(1), now).expect("replaced").versions, &[3]);
        assert_eq!(pages.bytes(), page(20, &[3]).bytes());
    }

    #[test]
    fn the_least_recently_used_page_makes_room() {
        let pages = LessonPages::default();
        let start = Instant::now();
        // Eight of these fill the space.
        let eighth = MAX_PAGE_BYTES - 200;
        for n in 0..8 {
            pages.keep(key(n), page(eighth, &[n.into()]), start + Duration::from_secs(n.into()));
        }
        for n in 0..8 {
            assert!(pages.get(&key(n), start + Duration::from_secs(n.into())).is_some(), "page {n}");
        }
        // Page 0 was asked for last: page 1 is the one to go.
        pages.get(&key(0), start + Duration::from_secs(10));
        pages.keep(key(9), page(eighth, &[9]), start + Duration::from_secs(11));
        assert!(pages.get(&key(1), start).is_none());
        for n in [0, 2, 3, 4, 5, 6, 7, 9] {
            assert!(pages.get(&key(n), start).is_some(), "page {n}");
        }
        assert!(pages.bytes() <= MAX_BYTES);
        // Many small pages: the count is bounded too.
        for n in 100..100 + MAX_PAGES as u32 {
            pages.keep(key(n), page(1, &[]), start + Duration::from_secs(20));
        }
        assert_eq!(pages.lock().entries.len(), MAX_PAGES);
        // Too large to keep at all.
        pages.keep(key(20), page(MAX_PAGE_BYTES + 1, &[]), start);
        assert!(pages.get(&key(20), start).is_none());
    }

    #[test]
    fn pages_nobody_asks_for_are_dropped() {
        let pages = LessonPages::default();
        let start = Instant::now();
        pages.keep(key(1), page(10, &[1]), start);
        pages.keep(key(2), page(10, &[2]), start);
        pages.get(&key(2), start + IDLE / 2);
        assert_eq!(pages.forget_idle(start + IDLE), 1);
        assert!(pages.get(&key(1), start + IDLE).is_none());
        assert!(pages.get(&key(2), start + IDLE).is_some());
        assert_eq!(pages.bytes(), page(10, &[2]).bytes());
    }
}
