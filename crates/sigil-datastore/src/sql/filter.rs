//! WHERE-clause fragments for the list and count requests, including the four
//! set-match modes, written once for every engine.
//!
//! Each function appends conditions of the form ` AND ...` to a statement whose
//! FROM clause names the outer table with a fixed alias (`e` for entries, `n` for
//! nodes).

use std::collections::HashSet;

use sigil_spiffe::{Selector, TrustDomain};

use super::stmt::Stmt;
use crate::error::DataStoreError;
use crate::model::{ListEntriesRequest, ListNodesRequest, MatchMode};
use crate::validate::invalid;

/// Appends the conditions of an entry list/count request (outer alias `e`).
pub(crate) fn entry_conditions(
    stmt: &mut Stmt,
    req: &ListEntriesRequest,
) -> Result<(), DataStoreError> {
    if let Some(id) = &req.by_spiffe_id {
        stmt.push(" AND e.spiffe_id = ").bind(id.as_str());
    }
    if let Some(id) = &req.by_parent_id {
        stmt.push(" AND e.parent_id = ").bind(id.as_str());
    }
    if let Some(hint) = &req.by_hint {
        stmt.push(" AND e.hint = ").bind(hint.as_str());
    }
    if let Some(downstream) = req.by_downstream {
        stmt.push(" AND e.downstream = ").bind(downstream);
    }
    if let Some((selectors, mode)) = &req.by_selectors {
        if selectors.is_empty() {
            return Err(invalid("cannot filter entries by an empty selector set"));
        }
        set_match(stmt, ENTRY_SELECTORS, &Members::selectors(selectors), *mode);
    }
    if let Some((domains, mode)) = &req.by_federates_with {
        if domains.is_empty() {
            return Err(invalid(
                "cannot filter entries by an empty federated trust domain set",
            ));
        }
        set_match(
            stmt,
            ENTRY_FEDERATES_WITH,
            &Members::trust_domains(domains),
            *mode,
        );
    }
    Ok(())
}

/// Appends the subset condition of `list_entries_by_selector_subset` (outer
/// alias `e`). `selectors` must not be empty.
pub(crate) fn entry_selector_subset(stmt: &mut Stmt, selectors: &[Selector]) {
    set_match(
        stmt,
        ENTRY_SELECTORS,
        &Members::selectors(selectors),
        MatchMode::Subset,
    );
}

/// Appends the conditions of a node list/count request (outer alias `n`).
pub(crate) fn node_conditions(
    stmt: &mut Stmt,
    req: &ListNodesRequest,
) -> Result<(), DataStoreError> {
    match req.by_banned {
        Some(true) => {
            stmt.push(" AND n.cert_serial_number = '' AND n.new_cert_serial_number = ''");
        }
        Some(false) => {
            stmt.push(" AND (n.cert_serial_number <> '' OR n.new_cert_serial_number <> '')");
        }
        None => {}
    }
    if let Some(kind) = &req.by_attestation_type {
        stmt.push(" AND n.attestation_data_type = ")
            .bind(kind.as_str());
    }
    if let Some(before) = req.by_expires_before {
        stmt.push(" AND n.cert_not_after < ").bind(before);
    }
    if let Some(can_reattest) = req.by_can_reattest {
        stmt.push(" AND n.can_reattest = ").bind(can_reattest);
    }
    if let Some((selectors, mode)) = &req.by_selector_match {
        if selectors.is_empty() {
            return Err(invalid("cannot filter nodes by an empty selector set"));
        }
        set_match(stmt, NODE_SELECTORS, &Members::selectors(selectors), *mode);
    }
    Ok(())
}

/// A child table holding one row per set member, and how it joins its owner.
struct SetTable {
    table: &'static str,
    /// Column of `table` naming the owner.
    owner: &'static str,
    /// The owner's key in the outer query.
    outer_key: &'static str,
}

const ENTRY_SELECTORS: SetTable = SetTable {
    table: "entry_selectors",
    owner: "entry_id",
    outer_key: "e.entry_id",
};

const ENTRY_FEDERATES_WITH: SetTable = SetTable {
    table: "entry_federates_with",
    owner: "entry_id",
    outer_key: "e.entry_id",
};

const NODE_SELECTORS: SetTable = SetTable {
    table: "node_selectors",
    owner: "spiffe_id",
    outer_key: "n.spiffe_id",
};

/// The requested set, without duplicates (match counts rely on it).
enum Members {
    Selectors(Vec<(String, String)>),
    TrustDomains(Vec<String>),
}

impl Members {
    fn selectors(selectors: &[Selector]) -> Self {
        let mut seen = HashSet::new();
        Members::Selectors(
            selectors
                .iter()
                .filter(|s| seen.insert(*s))
                .map(|s| (s.kind().to_owned(), s.value().to_owned()))
                .collect(),
        )
    }

    fn trust_domains(domains: &[TrustDomain]) -> Self {
        let mut seen = HashSet::new();
        Members::TrustDomains(
            domains
                .iter()
                .filter(|d| seen.insert(*d))
                .map(|d| d.name().to_owned())
                .collect(),
        )
    }

    fn len(&self) -> usize {
        match self {
            Members::Selectors(v) => v.len(),
            Members::TrustDomains(v) => v.len(),
        }
    }

    /// A condition on the child table's unqualified columns: "this row is a
    /// member of the requested set".
    fn push_is_member(&self, stmt: &mut Stmt) {
        match self {
            Members::Selectors(pairs) => {
                stmt.push("(");
                for (i, (kind, value)) in pairs.iter().enumerate() {
                    if i > 0 {
                        stmt.push(" OR ");
                    }
                    stmt.push("(selector_type = ")
                        .bind(kind.as_str())
                        .push(" AND selector_value = ")
                        .bind(value.as_str())
                        .push(")");
                }
                stmt.push(")");
            }
            Members::TrustDomains(names) => {
                stmt.push("trust_domain IN ")
                    .bind_list(names.iter().map(String::as_str));
            }
        }
    }
}

/// Appends the condition "the owner's set relates to `members` as `mode` says".
///
/// Every mode needs at least one member in common, so candidates come from the
/// member index (`owner IN (SELECT ... WHERE is-member)`); Superset and Exact
/// also need all requested members present (a count, members being unique per
/// owner); Subset and Exact also need no member outside the request (a
/// correlated NOT EXISTS, probing only the candidates' rows).
fn set_match(stmt: &mut Stmt, t: SetTable, members: &Members, mode: MatchMode) {
    let need_all = matches!(mode, MatchMode::Superset | MatchMode::Exact);
    let only_requested = matches!(mode, MatchMode::Subset | MatchMode::Exact);

    stmt.push(&format!(
        " AND {} IN (SELECT {} FROM {} WHERE ",
        t.outer_key, t.owner, t.table
    ));
    members.push_is_member(stmt);
    if need_all {
        stmt.push(&format!(" GROUP BY {} HAVING COUNT(*) = ", t.owner))
            .bind(i64::try_from(members.len()).unwrap_or(i64::MAX));
    }
    stmt.push(")");

    if only_requested {
        stmt.push(&format!(
            " AND NOT EXISTS (SELECT 1 FROM {} x WHERE x.{} = {} AND NOT ",
            t.table, t.owner, t.outer_key
        ));
        members.push_is_member(stmt);
        stmt.push(")");
    }
}
