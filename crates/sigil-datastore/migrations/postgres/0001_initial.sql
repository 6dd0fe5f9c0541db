-- sigil datastore schema, version 1 (PostgreSQL).
-- Keep in step with ../sqlite/0001_initial.sql: same tables, columns and
-- constraints; only the types and key generation differ.
-- Keys are COLLATE "C" so ordering (and so paging) is by bytes, as in SQLite,
-- whatever the database's default collation.

CREATE TABLE registered_entries (
    entry_id        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    spiffe_id       TEXT    NOT NULL,
    parent_id       TEXT    NOT NULL,
    x509_svid_ttl   INTEGER NOT NULL,
    jwt_svid_ttl    INTEGER NOT NULL,
    admin           BOOLEAN NOT NULL,
    downstream      BOOLEAN NOT NULL,
    expires_at      BIGINT  NOT NULL,
    hint            TEXT    NOT NULL,
    store_svid      BOOLEAN NOT NULL,
    revision_number BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    -- Digest of parent_id, spiffe_id and the selector set: two entries may not
    -- share all three.
    identity_key    TEXT    NOT NULL UNIQUE
);
CREATE INDEX registered_entries_spiffe_id ON registered_entries (spiffe_id);
CREATE INDEX registered_entries_parent_id ON registered_entries (parent_id);
CREATE INDEX registered_entries_hint ON registered_entries (hint);
CREATE INDEX registered_entries_expires_at ON registered_entries (expires_at);

CREATE TABLE entry_selectors (
    entry_id       TEXT COLLATE "C" NOT NULL REFERENCES registered_entries (entry_id) ON DELETE CASCADE,
    position       INTEGER NOT NULL,
    selector_type  TEXT    NOT NULL,
    selector_value TEXT    NOT NULL,
    PRIMARY KEY (entry_id, selector_type, selector_value)
);
CREATE INDEX entry_selectors_by_selector ON entry_selectors (selector_type, selector_value);

CREATE TABLE entry_dns_names (
    entry_id TEXT COLLATE "C" NOT NULL REFERENCES registered_entries (entry_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    dns_name TEXT    NOT NULL,
    PRIMARY KEY (entry_id, dns_name)
);

CREATE TABLE entry_federates_with (
    entry_id     TEXT COLLATE "C" NOT NULL REFERENCES registered_entries (entry_id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    trust_domain TEXT    NOT NULL,
    PRIMARY KEY (entry_id, trust_domain)
);
CREATE INDEX entry_federates_with_by_trust_domain ON entry_federates_with (trust_domain);

CREATE TABLE entry_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id   TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX entry_events_created_at ON entry_events (created_at);

CREATE TABLE attested_nodes (
    spiffe_id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    attestation_data_type  TEXT    NOT NULL,
    cert_serial_number     TEXT    NOT NULL,
    cert_not_after         BIGINT  NOT NULL,
    new_cert_serial_number TEXT    NOT NULL,
    new_cert_not_after     BIGINT  NOT NULL,
    can_reattest           BOOLEAN NOT NULL
);
CREATE INDEX attested_nodes_cert_not_after ON attested_nodes (cert_not_after);
CREATE INDEX attested_nodes_attestation_data_type ON attested_nodes (attestation_data_type);

-- Not a foreign key: selectors may be recorded before the node row exists.
CREATE TABLE node_selectors (
    spiffe_id      TEXT COLLATE "C" NOT NULL,
    position       INTEGER NOT NULL,
    selector_type  TEXT    NOT NULL,
    selector_value TEXT    NOT NULL,
    PRIMARY KEY (spiffe_id, selector_type, selector_value)
);
CREATE INDEX node_selectors_by_selector ON node_selectors (selector_type, selector_value);

CREATE TABLE node_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    spiffe_id  TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX node_events_created_at ON node_events (created_at);

CREATE TABLE join_tokens (
    token      TEXT   NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE bundles (
    trust_domain TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    data         BYTEA NOT NULL
);
