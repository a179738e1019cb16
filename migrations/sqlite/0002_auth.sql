-- Authorization server, SQLite dialect. Kept in step with ../postgres/0002_auth.sql.

-- Registered OAuth clients (`pdex client add`, RFC 7591 / UDAP registration). Keys are public
-- only: an inline JWK Set or a `jwks_uri` fetched when needed. `scopes` is the space-separated
-- set the client may ever be granted. Secrets are stored as SHA-256 hashes, never in clear.
CREATE TABLE auth_clients (
    client_id           TEXT    PRIMARY KEY,
    name                TEXT    NOT NULL,
    kind                TEXT    NOT NULL,            -- payer | provider | app | admin
    jwks                TEXT,                        -- inline JWK Set (JSON)
    jwks_uri            TEXT,
    org_system          TEXT,                        -- organization identifier SYSTEM|VALUE
    org_value           TEXT,
    scopes              TEXT    NOT NULL DEFAULT '',
    cert_san_uri        TEXT,                        -- RFC 8705 tls_client_auth_san_uri binding
    cert_thumbprint     TEXT,                        -- x5t#S256 of the registered certificate
    secret_hash         TEXT,                        -- SHA-256 (hex) of the client secret
    redirect_uris       TEXT    NOT NULL DEFAULT '[]', -- JSON array (authorization code grant)
    grant_types         TEXT    NOT NULL DEFAULT '[]', -- JSON array
    external_id         TEXT,                        -- registrant's identity (UDAP: statement iss)
    metadata            TEXT,                        -- registration metadata as received (JSON)
    disabled            INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,            -- epoch milliseconds
    updated_at          INTEGER NOT NULL
);
CREATE INDEX auth_clients_external ON auth_clients (external_id);

-- Client assertion / authorization grant `jti`s seen, kept until the assertion expires, so a
-- replay is refused within its lifetime by every process on this database (SMART §2.3).
CREATE TABLE auth_jti (
    client_id   TEXT    NOT NULL,
    jti         TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL,                    -- epoch seconds
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX auth_jti_expiry ON auth_jti (expires_at);

-- The server's own signing keys (access tokens). The newest key without `retired_at` signs;
-- retired keys stay published and accepted until the tokens they signed have expired.
CREATE TABLE auth_signing_keys (
    kid          TEXT    PRIMARY KEY,
    alg          TEXT    NOT NULL,
    private_key  TEXT    NOT NULL,                   -- PKCS#8 DER, base64
    public_jwk   TEXT    NOT NULL,                   -- JSON
    created_at   INTEGER NOT NULL,                   -- epoch milliseconds
    retired_at   INTEGER
);

-- Revoked access tokens (RFC 7009), by token `jti`, until they would have expired anyway.
CREATE TABLE auth_revoked (
    jti         TEXT    PRIMARY KEY,
    client_id   TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL                     -- epoch seconds
);
CREATE INDEX auth_revoked_expiry ON auth_revoked (expires_at);
