-- A lesson lasts at most four hours (the API has always refused longer ones). Queries for
-- "lessons overlapping [from, to)" rely on it to bound their index range from below
-- (starts_at > from - 4 hours). NOT VALID: rows written before are not re-checked.
ALTER TABLE lessons ADD CONSTRAINT lessons_length CHECK (ends_at <= starts_at + interval '4 hours') NOT VALID;
