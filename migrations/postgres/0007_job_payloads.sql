-- A job's large, write-once parts, apart from its small, often-updated state (PostgreSQL
-- dialect, kept in step with ../sqlite/0007_job_payloads.sql).
--
-- A `$bulk-member-match` request is tens of megabytes and a Group export's member list
-- hundreds of kilobytes. In `jobs` they were read back by every status poll and, on SQLite,
-- copied by every heartbeat, checkpoint and poll stamp, which rewrite the whole row. Here
-- they are written at kick-off (`params`) and once when the job first runs (`members`,
-- `errors`), and read only by the job's runner.
CREATE TABLE job_payloads (
    job_id  TEXT PRIMARY KEY,                      -- jobs.id
    params  TEXT NOT NULL,                         -- the validated request, JSON
    members TEXT,                                  -- JSON member ids of a Patient/Group export, fixed when it first runs
    errors  TEXT                                   -- JSON OperationOutcomes for the error file
);
INSERT INTO job_payloads (job_id, params, members, errors)
    SELECT id, params, members, errors FROM jobs;
ALTER TABLE jobs DROP COLUMN params;
ALTER TABLE jobs DROP COLUMN members;
ALTER TABLE jobs DROP COLUMN errors;
