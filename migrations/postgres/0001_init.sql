-- pdex schema, PostgreSQL dialect. Kept in step with ../sqlite/0001_init.sql: same tables,
-- same columns, same indexes; only types and key generation differ.

-- Current version of every resource (deleted ones stay as tombstones: Bulk `_since` exports
-- must list them). `patient_id` is the Patient-compartment owner, computed at write time;
-- `shared` marks types outside the compartment, visible to every caller. A compartment type
-- with no known owner (NULL patient_id, shared = 0) is visible to unrestricted callers only.
CREATE TABLE resources (
    pk           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rtype        TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,          -- epoch milliseconds
    deleted      SMALLINT NOT NULL DEFAULT 0,
    patient_id   TEXT,
    shared       SMALLINT NOT NULL DEFAULT 0,          -- outside the Patient compartment (Practitioner, …)
    sensitive    SMALLINT NOT NULL DEFAULT 0,
    source_hash  TEXT,                      -- SHA-256 of the resource as received (idempotent import)
    content      TEXT    NOT NULL,          -- the JSON we serve, bytes as stored
    UNIQUE (rtype, id)
);
CREATE INDEX resources_patient ON resources (patient_id, rtype, pk);
CREATE INDEX resources_type_updated ON resources (rtype, last_updated, pk);
CREATE INDEX resources_updated ON resources (last_updated, pk);

-- Earlier versions (the current one lives in `resources`).
CREATE TABLE resource_history (
    rtype        TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    deleted      SMALLINT NOT NULL,
    patient_id   TEXT,
    shared       SMALLINT NOT NULL,
    sensitive    SMALLINT NOT NULL,
    content      TEXT    NOT NULL,
    PRIMARY KEY (rtype, id, version)
);

-- Search index rows, computed at write time from the search parameter definitions.
-- `res_pk` points at resources.pk; `patient_id` repeats the owner for distribution.
CREATE TABLE idx_token (
    res_pk     BIGINT NOT NULL,
    rtype      TEXT    NOT NULL,
    param      TEXT    NOT NULL,
    system     TEXT,
    code       TEXT    COLLATE "C" NOT NULL,
    text       TEXT,
    patient_id TEXT
);
CREATE INDEX idx_token_code ON idx_token (rtype, param, code, system);
CREATE INDEX idx_token_res ON idx_token (res_pk);

CREATE TABLE idx_string (
    res_pk     BIGINT NOT NULL,
    rtype      TEXT    NOT NULL,
    param      TEXT    NOT NULL,
    normalized TEXT    COLLATE "C" NOT NULL,
    exact      TEXT    NOT NULL,
    patient_id TEXT
);
CREATE INDEX idx_string_value ON idx_string (rtype, param, normalized);
CREATE INDEX idx_string_res ON idx_string (res_pk);

CREATE TABLE idx_date (
    res_pk     BIGINT NOT NULL,
    rtype      TEXT    NOT NULL,
    param      TEXT    NOT NULL,
    low        BIGINT NOT NULL,
    high       BIGINT NOT NULL,
    patient_id TEXT
);
CREATE INDEX idx_date_low ON idx_date (rtype, param, low);
CREATE INDEX idx_date_high ON idx_date (rtype, param, high);
CREATE INDEX idx_date_res ON idx_date (res_pk);

CREATE TABLE idx_quantity (
    res_pk     BIGINT NOT NULL,
    rtype      TEXT    NOT NULL,
    param      TEXT    NOT NULL,
    value      DOUBLE PRECISION    NOT NULL,
    system     TEXT,
    code       TEXT,
    patient_id TEXT
);
CREATE INDEX idx_quantity_value ON idx_quantity (rtype, param, value);
CREATE INDEX idx_quantity_res ON idx_quantity (res_pk);

CREATE TABLE idx_reference (
    res_pk      BIGINT NOT NULL,
    rtype       TEXT    NOT NULL,
    param       TEXT    NOT NULL,
    target_type TEXT,
    target_id   TEXT,
    url         TEXT    NOT NULL,
    patient_id  TEXT
);
-- Serves reference searches, chains and _revinclude (which always name the parameter);
-- searches by a foreign absolute URL filter within (rtype, param).
CREATE INDEX idx_reference_target ON idx_reference (rtype, param, target_id, target_type);
CREATE INDEX idx_reference_res ON idx_reference (res_pk);
