//! The records the datastore keeps (registration entries, attested nodes, join
//! tokens, bundles, federation relationships) and the requests that filter and page through them.
//!
//! These are plain values: identifiers are already parsed (`SpiffeId`,
//! `TrustDomain`, `Selector`), so the store never re-checks strings it was handed.
//! Cross-field rules (non-empty selectors, entry ID characters, ...) are checked by
//! the store on write and reported as [`crate::DataStoreError::InvalidArgument`].

use sigil_spiffe::{Selector, SpiffeId, TrustDomain};

/// A registration entry: which workloads (selectors) under which parent get which
/// SPIFFE ID, and how their SVIDs are minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationEntry {
    /// Entry ID. Empty on create means "generate a UUID v4"; a caller may supply
    /// its own (at most 255 characters of `[A-Za-z0-9._-]`, as SPIRE allows).
    pub id: String,
    /// The SPIFFE ID issued to matching workloads.
    pub spiffe_id: SpiffeId,
    /// The agent (or node alias) under which the entry applies.
    pub parent_id: SpiffeId,
    /// The workload must carry all of these; never empty.
    pub selectors: Vec<Selector>,
    /// X509-SVID lifetime in seconds; 0 means the server default.
    pub x509_svid_ttl: i32,
    /// JWT-SVID lifetime in seconds; 0 means the server default.
    pub jwt_svid_ttl: i32,
    /// DNS SANs for the X509-SVID, in order (the first also becomes the CN).
    pub dns_names: Vec<String>,
    /// Foreign trust domains whose bundles the workload receives.
    pub federates_with: Vec<TrustDomain>,
    /// The workload may call the server's admin APIs.
    pub admin: bool,
    /// The entry is for a downstream SPIRE/sigil server (it may mint SVIDs).
    pub downstream: bool,
    /// Unix seconds after which the entry is void; 0 means never.
    pub expires_at: i64,
    /// Free-form hint telling a workload which of its identities this is.
    pub hint: String,
    /// The SVID is stored through an SVIDStore plugin rather than served.
    pub store_svid: bool,
    /// Bumped by the store on every update; set to 0 on create.
    pub revision_number: i64,
    /// Unix seconds of creation; the store fills it when the caller leaves 0.
    pub created_at: i64,
}

/// Which fields of a [`RegistrationEntry`] an update replaces. Fields whose flag
/// is false keep their stored value. `id`, `revision_number` and `created_at` are
/// never taken from the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryMask {
    /// Replace `spiffe_id`.
    pub spiffe_id: bool,
    /// Replace `parent_id`.
    pub parent_id: bool,
    /// Replace `selectors`.
    pub selectors: bool,
    /// Replace `x509_svid_ttl`.
    pub x509_svid_ttl: bool,
    /// Replace `jwt_svid_ttl`.
    pub jwt_svid_ttl: bool,
    /// Replace `dns_names`.
    pub dns_names: bool,
    /// Replace `federates_with`.
    pub federates_with: bool,
    /// Replace `admin`.
    pub admin: bool,
    /// Replace `downstream`.
    pub downstream: bool,
    /// Replace `expires_at`.
    pub expires_at: bool,
    /// Replace `hint`.
    pub hint: bool,
    /// Replace `store_svid`.
    pub store_svid: bool,
}

impl EntryMask {
    /// A mask that replaces every updatable field.
    pub fn all() -> Self {
        EntryMask {
            spiffe_id: true,
            parent_id: true,
            selectors: true,
            x509_svid_ttl: true,
            jwt_svid_ttl: true,
            dns_names: true,
            federates_with: true,
            admin: true,
            downstream: true,
            expires_at: true,
            hint: true,
            store_svid: true,
        }
    }
}

/// An agent that has attested to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedNode {
    /// The agent's SPIFFE ID (primary key).
    pub spiffe_id: SpiffeId,
    /// The node attestor that admitted it (`join_token`, `x509pop`, ...).
    pub attestation_data_type: String,
    /// Serial number of the agent's current SVID.
    pub cert_serial_number: String,
    /// Expiry (unix seconds) of the agent's current SVID.
    pub cert_not_after: i64,
    /// Serial number of an SVID issued but not yet used by the agent.
    pub new_cert_serial_number: String,
    /// Expiry (unix seconds) of that new SVID.
    pub new_cert_not_after: i64,
    /// The agent may re-attest instead of renewing.
    pub can_reattest: bool,
    /// Selectors the node attestor produced; stored in their own table, and
    /// replaced with [`crate::DataStore::set_node_selectors`].
    pub selectors: Vec<Selector>,
}

impl AttestedNode {
    /// A banned agent has neither a current nor a pending SVID serial number
    /// (SPIRE's convention): it can neither renew nor use a pending SVID.
    pub fn is_banned(&self) -> bool {
        self.cert_serial_number.is_empty() && self.new_cert_serial_number.is_empty()
    }
}

/// The serial numbers of an [`AttestedNode`] as a caller read them: what a
/// conditional update ([`crate::DataStore::update_attested_node_if`]) expects
/// to find still stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSerials {
    /// The expected `cert_serial_number`.
    pub cert_serial_number: String,
    /// The expected `new_cert_serial_number`.
    pub new_cert_serial_number: String,
}

impl NodeSerials {
    /// The serial numbers of `node`.
    pub fn of(node: &AttestedNode) -> Self {
        NodeSerials {
            cert_serial_number: node.cert_serial_number.clone(),
            new_cert_serial_number: node.new_cert_serial_number.clone(),
        }
    }
}

/// Which fields of an [`AttestedNode`] an update replaces. Selectors are not part
/// of it; they are replaced with [`crate::DataStore::set_node_selectors`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeMask {
    /// Replace `attestation_data_type`.
    pub attestation_data_type: bool,
    /// Replace `cert_serial_number`.
    pub cert_serial_number: bool,
    /// Replace `cert_not_after`.
    pub cert_not_after: bool,
    /// Replace `new_cert_serial_number`.
    pub new_cert_serial_number: bool,
    /// Replace `new_cert_not_after`.
    pub new_cert_not_after: bool,
    /// Replace `can_reattest`.
    pub can_reattest: bool,
}

impl NodeMask {
    /// A mask that replaces every updatable field.
    pub fn all() -> Self {
        NodeMask {
            attestation_data_type: true,
            cert_serial_number: true,
            cert_not_after: true,
            new_cert_serial_number: true,
            new_cert_not_after: true,
            can_reattest: true,
        }
    }
}

/// A single-use join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The secret value (primary key).
    pub token: String,
    /// Unix seconds after which the token is no longer accepted.
    pub expires_at: i64,
}

/// A trust bundle, stored as opaque bytes (the server decides the encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBundle {
    /// The trust domain the bundle belongs to (primary key).
    pub trust_domain: TrustDomain,
    /// The encoded bundle.
    pub data: Vec<u8>,
}

/// A federation relationship: where to fetch a foreign trust domain's bundle
/// and how that endpoint proves who it is. The foreign bundle itself is a
/// [`StoredBundle`] under the same trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationRelationship {
    /// The foreign trust domain (primary key).
    pub trust_domain: TrustDomain,
    /// The URL of its SPIFFE bundle endpoint. Never empty; the server checks
    /// its form (https, a host, no user info) before storing it.
    pub bundle_endpoint_url: String,
    /// How the endpoint authenticates.
    pub profile: BundleEndpointProfile,
}

/// The SPIFFE bundle endpoint profiles (SPIFFE Trust Domain and Bundle spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleEndpointProfile {
    /// `https_web`: the endpoint has a certificate from a public (Web PKI) CA.
    HttpsWeb,
    /// `https_spiffe`: the endpoint presents an X509-SVID with this ID,
    /// verified against the bundle already held for its trust domain.
    HttpsSpiffe {
        /// The SPIFFE ID the endpoint's server must present.
        endpoint_spiffe_id: SpiffeId,
    },
}

impl BundleEndpointProfile {
    /// The profile's name as SPIRE writes it (`https_web`, `https_spiffe`).
    pub fn name(&self) -> &'static str {
        match self {
            BundleEndpointProfile::HttpsWeb => "https_web",
            BundleEndpointProfile::HttpsSpiffe { .. } => "https_spiffe",
        }
    }
}

/// Which fields of a [`FederationRelationship`] an update replaces; the
/// trust domain names the record and is never replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FederationRelationshipMask {
    /// Replace `bundle_endpoint_url`.
    pub bundle_endpoint_url: bool,
    /// Replace `profile` (with its endpoint SPIFFE ID).
    pub profile: bool,
}

impl FederationRelationshipMask {
    /// A mask that replaces every updatable field.
    pub fn all() -> Self {
        FederationRelationshipMask {
            bundle_endpoint_url: true,
            profile: true,
        }
    }
}

/// How a requested set is compared with a record's set (SPIRE's `BySelectors`
/// match behaviours). "Record" is the entry or node, "request" the filter's set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchMode {
    /// The record's set equals the request's set.
    Exact,
    /// The record's set is a non-empty subset of the request's set.
    Subset,
    /// The record's set contains every member of the request's set.
    Superset,
    /// The record's set shares at least one member with the request's set.
    Any,
}

/// Filters and paging for [`crate::DataStore::list_entries`]. Every filter that is
/// set must hold (they are ANDed). [`crate::DataStore::count_entries`] takes the
/// same request and ignores `page_size` and `page_token`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListEntriesRequest {
    /// Only entries with this SPIFFE ID.
    pub by_spiffe_id: Option<SpiffeId>,
    /// Only entries with this parent ID.
    pub by_parent_id: Option<SpiffeId>,
    /// Only entries whose selector set matches; the set must not be empty.
    pub by_selectors: Option<(Vec<Selector>, MatchMode)>,
    /// Only entries whose federated trust domains match; the set must not be empty.
    pub by_federates_with: Option<(Vec<TrustDomain>, MatchMode)>,
    /// Only entries with exactly this hint.
    pub by_hint: Option<String>,
    /// Only entries whose `downstream` flag has this value.
    pub by_downstream: Option<bool>,
    /// Entries per page; 0 returns everything in one page.
    pub page_size: u32,
    /// Empty for the first page, else the `next_page_token` of the previous page.
    pub page_token: String,
}

/// One page of [`crate::DataStore::list_entries`], ordered by entry ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListEntriesResponse {
    /// The entries of this page.
    pub entries: Vec<RegistrationEntry>,
    /// Token for the next page; empty when this is the last page.
    pub next_page_token: String,
}

/// Filters and paging for [`crate::DataStore::list_attested_nodes`] (ANDed).
/// [`crate::DataStore::count_attested_nodes`] ignores `page_size` and `page_token`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListNodesRequest {
    /// Only banned (`true`) or only not banned (`false`) nodes.
    pub by_banned: Option<bool>,
    /// Only nodes admitted by this attestor.
    pub by_attestation_type: Option<String>,
    /// Only nodes whose selector set matches; the set must not be empty.
    pub by_selector_match: Option<(Vec<Selector>, MatchMode)>,
    /// Only nodes whose current SVID expires strictly before this unix time.
    pub by_expires_before: Option<i64>,
    /// Only nodes whose `can_reattest` flag has this value.
    pub by_can_reattest: Option<bool>,
    /// Nodes per page; 0 returns everything in one page.
    pub page_size: u32,
    /// Empty for the first page, else the token returned with the previous page.
    pub page_token: String,
}
