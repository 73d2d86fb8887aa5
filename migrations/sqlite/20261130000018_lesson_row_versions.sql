-- Every version of a lesson row gets a number never handed out before: a counter (SQLite has
-- one writer, so it is not contended) taken by triggers after every INSERT and every UPDATE,
-- whatever it changes. A page of the lesson list is a function of its rows, so the same query
-- selecting only these numbers tells whether a page answered before is still the answer
-- (scheduling::lesson_pages). `cedar restore` moves the counter past any number handed out
-- before the restore.
CREATE TABLE lesson_row_versions (last INTEGER NOT NULL);
ALTER TABLE lessons ADD COLUMN row_version INTEGER NOT NULL DEFAULT 0;
UPDATE lessons SET row_version = rowid;
INSERT INTO lesson_row_versions (last) SELECT coalesce(max(rowid), 0) FROM lessons;

-- The UPDATE inside a trigger fires the update trigger once more, which its WHEN skips (the
-- number has just changed).
CREATE TRIGGER lessons_row_version_insert AFTER INSERT ON lessons
BEGIN
    UPDATE lesson_row_versions SET last = last + 1;
    UPDATE lessons SET row_version = (SELECT last FROM lesson_row_versions) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER lessons_row_version_update AFTER UPDATE ON lessons
WHEN NEW.row_version = OLD.row_version
BEGIN
    UPDATE lesson_row_versions SET last = last + 1;
    UPDATE lessons SET row_version = (SELECT last FROM lesson_row_versions) WHERE rowid = NEW.rowid;
END;

-- A teacher's week checked from the index alone: the range, the order and the numbers.
DROP INDEX lessons_teacher_time_idx;
CREATE INDEX lessons_teacher_time_idx ON lessons (teacher_id, starts_at, id, ends_at, row_version);
