-- A lesson lasts at most four hours (the API has always refused longer ones). Queries for
-- "lessons overlapping [from, to)" rely on it to bound their index range from below
-- (starts_at > from - 4 hours). SQLite cannot add a CHECK to a table: triggers instead.
CREATE TRIGGER lessons_length_insert BEFORE INSERT ON lessons
WHEN julianday(NEW.ends_at) - julianday(NEW.starts_at) > 4.0 / 24 + 1e-9
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: lessons_length');
END;
CREATE TRIGGER lessons_length_update BEFORE UPDATE OF starts_at, ends_at ON lessons
WHEN julianday(NEW.ends_at) - julianday(NEW.starts_at) > 4.0 / 24 + 1e-9
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: lessons_length');
END;
