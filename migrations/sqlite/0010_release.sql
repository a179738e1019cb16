-- Release rules computed at write time (issue 14), SQLite dialect, kept in step with
-- ../postgres/0010_release.sql.
--
-- `care_end`: the latest care date of the resource (epoch ms; the `high` end of its care-date
-- index rows, `store::release::CARE_DATES`), NULL for records without one. The payer-to-payer
-- look-back window and the Patient/Provider Access 2016-01-01 start are `care_end >= start`.
-- `release_until`: for a prior authorization (ExplanationOfBenefit `use` = preauthorization),
-- the last instant it may be exchanged with payers and providers; NULL for everything else.
ALTER TABLE resources ADD COLUMN care_end BIGINT;
ALTER TABLE resources ADD COLUMN release_until BIGINT;
ALTER TABLE resource_history ADD COLUMN care_end BIGINT;
ALTER TABLE resource_history ADD COLUMN release_until BIGINT;

UPDATE resources SET care_end = (
    SELECT MAX(d.high) FROM idx_date d
    WHERE d.res_pk = resources.pk AND (
        (resources.rtype = 'CarePlan' AND d.param = 'date')
        OR (resources.rtype = 'CareTeam' AND d.param = 'date')
        OR (resources.rtype = 'Claim' AND d.param = 'created')
        OR (resources.rtype = 'DiagnosticReport' AND d.param = 'date')
        OR (resources.rtype = 'DocumentReference' AND d.param IN ('period', 'date'))
        OR (resources.rtype = 'Encounter' AND d.param = 'date')
        OR (resources.rtype = 'ExplanationOfBenefit' AND d.param IN ('service-date', 'created'))
        OR (resources.rtype = 'Immunization' AND d.param = 'date')
        OR (resources.rtype = 'MedicationDispense' AND d.param = 'whenhandedover')
        OR (resources.rtype = 'MedicationRequest' AND d.param = 'authoredon')
        OR (resources.rtype = 'MedicationStatement' AND d.param = 'effective')
        OR (resources.rtype = 'Observation' AND d.param = 'date')
        OR (resources.rtype = 'Procedure' AND d.param = 'date')
        OR (resources.rtype = 'ServiceRequest' AND d.param = 'authored')
    )
);
-- Earlier versions have no index rows; they take the current version's care dates.
UPDATE resource_history SET care_end = (
    SELECT r.care_end FROM resources r
    WHERE r.rtype = resource_history.rtype AND r.id = resource_history.id
);

-- One-off data fixes run by the server after the migrations (prior authorizations'
-- `release_until` needs the resource parsed): a name here means done.
CREATE TABLE store_backfills (
    name TEXT PRIMARY KEY
);
