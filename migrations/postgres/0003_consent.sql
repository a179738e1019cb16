-- Payer-to-payer consents captured by `$member-match` (HRex mm-13, PDex §pdex-204): what the
-- authorization server re-checks before it issues a member-scoped token (§pdex-222..224) and
-- what the bulk engine re-checks per member at export time (§pdex-156). Kept in step with
-- ../sqlite/0003_consent.sql.
--
-- `patient_id` is the member (our Patient id), so the table can be distributed by member on
-- Citus like every other member-owned table; the primary key therefore leads with it.
CREATE TABLE member_consents (
    patient_id       TEXT    NOT NULL,
    id               TEXT    NOT NULL,          -- our id for the stored consent (UUID)
    requester_system TEXT    NOT NULL,          -- the requesting organization (recipient), system|value
    requester_value  TEXT    NOT NULL,
    client_id        TEXT,                      -- the OAuth client that ran the match
    policy           TEXT    NOT NULL,          -- 'sensitive' (everything) | 'regular' (non-sensitive only)
    period_start     BIGINT  NOT NULL,          -- epoch ms, first instant covered
    period_end       BIGINT  NOT NULL,          -- epoch ms, last instant covered
    source_reference TEXT,                      -- Consent.sourceReference.reference (signed document, audit only)
    coverage_to_link TEXT,                      -- the requester's CoverageToLink as received (HRex mm-4)
    consent          TEXT    NOT NULL,          -- the Consent as received
    status           TEXT    NOT NULL DEFAULT 'active',   -- 'active' | 'inactive' (revoked at the old payer)
    created          BIGINT  NOT NULL,          -- epoch ms
    PRIMARY KEY (patient_id, id)
);
-- The member-grant lookup: latest active consent of one member for one requesting organization.
CREATE INDEX member_consents_grant
    ON member_consents (patient_id, requester_system, requester_value, status, created);
