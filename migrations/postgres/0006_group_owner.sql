-- Who a Group belongs to (PDex §pdex-159..164, payer-to-payer bulk "Groups after the match"):
-- the Matched Group of `$bulk-member-match` (and, later, the provider match Groups) belongs to
-- the requesting client's organization. `store::access` lets payer and provider callers see a
-- Group only through a row here whose `owner` is one of their keys; every other Group stays
-- invisible to them (404, existence not revealed). PostgreSQL dialect, kept in step with
-- ../sqlite/0006_group_owner.sql.
--
-- `owner` is `org:SYSTEM|VALUE` (the requester's organization identifier) or, for a client
-- without an organization, `client:CLIENT_ID`.
CREATE TABLE group_owners (
    group_id   TEXT    NOT NULL PRIMARY KEY,     -- resources.id of the Group (rtype = 'Group')
    owner      TEXT    NOT NULL,
    client_id  TEXT,                             -- the client that created it (audit)
    created_at BIGINT  NOT NULL                  -- epoch ms
);
-- Group searches by a payer probe (group_id, owner) per candidate row.
CREATE INDEX group_owners_owner ON group_owners (owner, group_id);
