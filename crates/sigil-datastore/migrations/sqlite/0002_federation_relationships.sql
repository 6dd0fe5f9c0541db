-- sigil datastore schema, version 2 (SQLite): federation relationships.
-- Keep in step with ../postgres/0002_federation_relationships.sql.
-- The foreign trust domain's bundle is not kept here: it lives in `bundles`,
-- under the same trust domain, whoever wrote it.

CREATE TABLE federation_relationships (
    trust_domain            TEXT NOT NULL PRIMARY KEY,
    bundle_endpoint_url     TEXT NOT NULL,
    bundle_endpoint_profile TEXT NOT NULL
        CHECK (bundle_endpoint_profile IN ('https_web', 'https_spiffe')),
    -- The SPIFFE ID the endpoint's server must present; empty for https_web.
    endpoint_spiffe_id      TEXT NOT NULL
);
