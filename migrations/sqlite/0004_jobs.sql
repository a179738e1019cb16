-- Asynchronous jobs (Bulk Data `$export`, `$davinci-data-export`, and the async member-match
-- operations), SQLite dialect. Kept in step with ../postgres/0004_jobs.sql.
--
-- A job belongs to the client that started it (`owner_client`, and `owner_cert` when its token
-- was certificate-bound); `access` is the caller's AccessContext as JSON, from which the worker
-- rebuilds the context every read goes through. `lease_owner`/`lease_until` let several server
-- processes share the queue: a job whose lease ran out (its process died) is taken over and
-- resumed from `checkpoint`, which advances only when a finished file part is recorded in
-- `job_files` in the same transaction.
CREATE TABLE jobs (
    id               TEXT    PRIMARY KEY,
    kind             TEXT    NOT NULL,             -- export | davinci-data-export | …
    owner_client     TEXT    NOT NULL,             -- AccessContext.client_id ('' = operator)
    owner_cert       TEXT,                         -- certificate thumbprint the token was bound to
    request_url      TEXT    NOT NULL,             -- the kick-off URL (manifest `request`)
    params           TEXT    NOT NULL,             -- the validated request, JSON
    access           TEXT    NOT NULL,             -- the AccessContext to rebuild, JSON
    state            TEXT    NOT NULL,             -- queued | running | completed | failed | cancelled | expired
    transaction_time INTEGER NOT NULL,             -- epoch ms; nothing modified after it is exported
    created_at       INTEGER NOT NULL,
    not_before       INTEGER NOT NULL,             -- epoch ms before which no worker starts it
    progress         TEXT,
    checkpoint       TEXT,                         -- JSON position after the last recorded part
    members          TEXT,                         -- JSON member ids of a Patient/Group export, fixed when it first runs
    errors           TEXT,                         -- JSON OperationOutcomes for the error file
    failure          TEXT,                         -- why a failed job failed
    lease_owner      TEXT,
    lease_until      INTEGER,
    heartbeat_at     INTEGER,
    completed_at     INTEGER,
    expires_at       INTEGER,
    last_polled_at   INTEGER
);
CREATE INDEX jobs_claim ON jobs (state, not_before);
CREATE INDEX jobs_owner ON jobs (owner_client, state);
CREATE INDEX jobs_expiry ON jobs (expires_at);

-- The finished file parts of a job, in manifest order.
CREATE TABLE job_files (
    job_id   TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    section  TEXT    NOT NULL,                     -- output | deleted | error
    rtype    TEXT    NOT NULL,                     -- manifest `type`
    name     TEXT    NOT NULL,                     -- file name in the storage backend
    count    INTEGER NOT NULL,
    bytes    INTEGER NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE UNIQUE INDEX job_files_name ON job_files (job_id, name);
