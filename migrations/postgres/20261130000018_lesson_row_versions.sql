-- Every version of a lesson row gets a number never handed out before: inserts take the next
-- value of a sequence (no lock, nothing to contend on), and every UPDATE takes a new one by
-- trigger, whatever it changes. A page of the lesson list is a function of its rows, so the
-- same query selecting only these numbers tells whether a page answered before is still the
-- answer (scheduling::lesson_pages). `cedar restore` moves the sequence past any number
-- handed out before the restore.
CREATE SEQUENCE lesson_row_versions;
ALTER TABLE lessons ADD COLUMN row_version BIGINT NOT NULL DEFAULT nextval('lesson_row_versions');
ALTER SEQUENCE lesson_row_versions OWNED BY lessons.row_version;

CREATE FUNCTION lessons_next_row_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.row_version := nextval('lesson_row_versions');
    RETURN NEW;
END
$$;
CREATE TRIGGER lessons_row_version BEFORE UPDATE ON lessons
    FOR EACH ROW EXECUTE FUNCTION lessons_next_row_version();

-- A teacher's week checked from the index alone (an index-only scan): the range, the order
-- and the numbers.
DROP INDEX lessons_teacher_time_idx;
CREATE INDEX lessons_teacher_time_idx ON lessons (teacher_id, starts_at, id) INCLUDE (ends_at, row_version);
