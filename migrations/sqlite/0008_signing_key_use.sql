-- How long each server signing key must stay published and accepted: the latest `exp` of
-- any token it signed (epoch milliseconds, rounded up; NULL: no token recorded yet). A
-- retired key is kept until then, whatever the token lifetime of the process checking it
-- (the demo's 8-hour token, another instance's longer lifetime).
ALTER TABLE auth_signing_keys ADD COLUMN signed_until INTEGER;
