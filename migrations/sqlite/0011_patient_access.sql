-- Patient Access (SMART App Launch, PDex member-authorized exchange), SQLite dialect. Kept in
-- step with ../postgres/0011_patient_access.sql. No PHI: usernames are the plan's login names,
-- secrets (passwords, codes, refresh tokens, browser cookies) are stored as hashes only.

-- Member logins (`pdex member set-login`): a username, the argon2id hash of its password, and
-- whom it signs in as (`fhir_user`, e.g. `Patient/123`; `patient_id` the member it acts for).
CREATE TABLE member_logins (
    username       TEXT    PRIMARY KEY,
    fhir_user      TEXT    NOT NULL,
    patient_id     TEXT    NOT NULL,
    password_hash  TEXT    NOT NULL,                 -- argon2id PHC string
    disabled       INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,                 -- epoch milliseconds
    updated_at     INTEGER NOT NULL
);
CREATE INDEX member_logins_patient ON member_logins (patient_id);

-- Authorization requests in progress: a browser between `/oauth/authorize` and the member's
-- decision. Bound to the browser by a cookie (its SHA-256 here) and to the forms by a CSRF
-- token; short-lived, deleted when decided.
CREATE TABLE auth_requests (
    id              TEXT    PRIMARY KEY,
    browser_hash    TEXT    NOT NULL,
    csrf            TEXT    NOT NULL,
    client_id       TEXT    NOT NULL,
    redirect_uri    TEXT    NOT NULL,
    scopes          TEXT    NOT NULL,                -- negotiated, space-separated
    state           TEXT    NOT NULL,
    code_challenge  TEXT    NOT NULL,                -- PKCE S256
    nonce           TEXT,                            -- OpenID Connect
    username        TEXT,                            -- set once the member has signed in
    expires_at      INTEGER NOT NULL                 -- epoch milliseconds
);
CREATE INDEX auth_requests_expiry ON auth_requests (expires_at);

-- What a member authorized: one row per approval (client, member, scopes, the sensitive-data
-- choice). Access tokens, the authorization code and refresh tokens issued on it stand on it:
-- revoking it (a reused code, a replayed refresh token, the member's account page) ends them.
CREATE TABLE member_authorizations (
    id               TEXT    PRIMARY KEY,
    client_id        TEXT    NOT NULL,
    username         TEXT    NOT NULL,
    fhir_user        TEXT    NOT NULL,
    patient_id       TEXT    NOT NULL,
    scopes           TEXT    NOT NULL,
    allow_sensitive  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    revoked_at       INTEGER
);
CREATE INDEX member_authorizations_username ON member_authorizations (username);

-- Authorization codes (single use, bound to client, redirect URI and PKCE challenge).
CREATE TABLE auth_codes (
    code_hash       TEXT    PRIMARY KEY,
    authorization_id        TEXT    NOT NULL,
    client_id       TEXT    NOT NULL,
    redirect_uri    TEXT    NOT NULL,
    code_challenge  TEXT    NOT NULL,
    nonce           TEXT,
    expires_at      INTEGER NOT NULL,                -- epoch milliseconds
    used_at         INTEGER
);
CREATE INDEX auth_codes_expiry ON auth_codes (expires_at);

-- Refresh tokens, rotated on every use (`used_at` set on the old one).
CREATE TABLE refresh_tokens (
    token_hash   TEXT    PRIMARY KEY,
    authorization_id     TEXT    NOT NULL,
    client_id    TEXT    NOT NULL,
    scopes       TEXT    NOT NULL,
    expires_at   INTEGER NOT NULL,                   -- epoch milliseconds
    used_at      INTEGER
);
CREATE INDEX refresh_tokens_authorization ON refresh_tokens (authorization_id);

-- Signed-in sessions of the member's account page (`/oauth/account`): a cookie (its SHA-256
-- here), the form token, and the login once signed in. Short-lived.
CREATE TABLE member_sessions (
    id_hash     TEXT    PRIMARY KEY,
    csrf        TEXT    NOT NULL,
    username    TEXT,
    expires_at  INTEGER NOT NULL                     -- epoch milliseconds
);
CREATE INDEX member_sessions_expiry ON member_sessions (expires_at);
