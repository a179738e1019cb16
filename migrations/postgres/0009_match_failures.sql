-- Failed $member-match attempts (HRex mm-7), kept in the database so that every pdex
-- instance behind a load balancer counts the same failures. One row per failure and key:
-- the key is a SHA-256 (hex) of the requesting client, or of the client together with the
-- demographics it tried (never of the person alone: one payer's failures must not lock the
-- member out for other payers). Rows older than the window are deleted as new ones come.
CREATE TABLE match_failures (
    key  TEXT    NOT NULL,
    at   BIGINT  NOT NULL                        -- epoch milliseconds
);
CREATE INDEX match_failures_key_at ON match_failures (key, at);
CREATE INDEX match_failures_at ON match_failures (at);
