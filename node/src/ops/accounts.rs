//! `montana accounts`: a node's balances, read from its database without
//! disturbing it (docs/SPEC.md 11.6).
//!
//! The accounts are those of the last cemented window c, whose state has
//! windows `1..c-1` paid (window c is paid when c+1 is cemented, 9.8); the
//! state root shown is recomputed from the entries read and equals the one
//! the node stored. Accounts are sorted by balance, highest first, then by
//! node id (ascending, as hex); `limit` keeps the first N (0: all), while
//! `accounts` and `total` always count every account.

use std::path::Path;

use serde::Serialize;

use crate::storage::{read_accounts, AccountsSnapshot, StoreError};

/// The default `--limit`.
pub const DEFAULT_LIMIT: usize = 20;

/// One account in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountRow {
    /// 64 lowercase hex digits.
    pub node_id: String,
    /// The genesis peer's label; null for other nodes.
    pub label: Option<String>,
    pub balance: u64,
}

/// The JSON document of `montana accounts --json` (field names are
/// stable, docs/SPEC.md 11.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountsReport {
    pub network_id: String,
    /// The last cemented window: the balances are the state after it.
    pub cemented: u64,
    /// Windows paid in these balances: 1..=paid_through (cemented - 1, or
    /// 0 before window 2 is cemented).
    pub paid_through: u64,
    /// The window after `cemented`, applied (T verified) but not cemented.
    pub applied: Option<u64>,
    /// 64 lowercase hex digits.
    pub state_root: String,
    /// The number of accounts (all of them, whatever the limit).
    pub accounts: usize,
    /// The sum of every balance (all accounts).
    pub total: u128,
    /// The limit applied to `rows` (0: none).
    pub limit: usize,
    /// Balance descending, then node id ascending; at most `limit`.
    pub rows: Vec<AccountRow>,
}

impl AccountsReport {
    /// Sorts and limits a snapshot.
    pub fn new(s: &AccountsSnapshot, limit: usize) -> Self {
        let mut sorted = s.accounts.clone();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let total = sorted.iter().map(|(_, b)| *b as u128).sum();
        let shown = if limit == 0 {
            sorted.len()
        } else {
            limit.min(sorted.len())
        };
        AccountsReport {
            network_id: hex::encode(s.network_id),
            cemented: s.cemented,
            paid_through: s.cemented.saturating_sub(1),
            applied: s.applied,
            state_root: s.state_root.to_hex(),
            accounts: sorted.len(),
            total,
            limit,
            rows: sorted[..shown]
                .iter()
                .map(|(id, balance)| AccountRow {
                    node_id: id.to_hex(),
                    label: s.labels.get(id).cloned(),
                    balance: *balance,
                })
                .collect(),
        }
    }

    /// Reads `data_dir`'s database (read-only) and builds the report.
    pub fn read(data_dir: &Path, limit: usize) -> Result<Self, StoreError> {
        Ok(Self::new(&read_accounts(data_dir)?, limit))
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "cemented   window {} (windows 1..={} paid){}\nstate root {}\naccounts   {}, total {}\n",
            self.cemented,
            self.paid_through,
            match self.applied {
                Some(w) => format!(", window {w} applied"),
                None => String::new(),
            },
            self.state_root,
            self.accounts,
            self.total
        );
        out += &format!("{:<64}  {:<12} {:>20}\n", "node id", "label", "balance");
        for r in &self.rows {
            out += &format!(
                "{:<64}  {:<12} {:>20}\n",
                r.node_id,
                r.label.as_deref().unwrap_or("-"),
                r.balance
            );
        }
        if self.rows.len() < self.accounts {
            out += &format!(
                "({} more; --limit 0 shows all)\n",
                self.accounts - self.rows.len()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::active::NodeId;
    use montana_vdf::Hash32;

    fn snapshot(accounts: &[(u8, u64)]) -> AccountsSnapshot {
        AccountsSnapshot {
            network_id: [7; 32],
            cemented: 5,
            applied: Some(6),
            state_root: Hash32([9; 32]),
            accounts: accounts
                .iter()
                .map(|(i, b)| (NodeId([*i; 32]), *b))
                .collect(),
            labels: [(NodeId([2; 32]), "node2".to_string())].into(),
        }
    }

    #[test]
    fn sorted_by_balance_then_node_id_and_limited() {
        let s = snapshot(&[(1, 10), (2, 30), (3, 10), (4, 0), (5, u64::MAX)]);
        let r = AccountsReport::new(&s, 3);
        let order: Vec<(String, u64)> = r
            .rows
            .iter()
            .map(|r| (r.node_id[..2].to_string(), r.balance))
            .collect();
        assert_eq!(
            order,
            [
                ("05".into(), u64::MAX),
                ("02".into(), 30),
                ("01".into(), 10)
            ]
        );
        assert_eq!(r.accounts, 5);
        assert_eq!(r.total, u64::MAX as u128 + 50, "no overflow");
        assert_eq!((r.cemented, r.paid_through, r.applied), (5, 4, Some(6)));
        assert_eq!(r.rows[1].label.as_deref(), Some("node2"));
        assert_eq!(r.rows[0].label, None);
        assert!(
            r.table().contains("(2 more; --limit 0 shows all)"),
            "{}",
            r.table()
        );
        let all = AccountsReport::new(&s, 0);
        assert_eq!(all.rows.len(), 5);
        assert_eq!(all.rows[3].node_id[..2], *"03", "ties by node id");
        assert!(!all.table().contains("more;"));
        // The total may pass u64 (it is a u128): still one JSON number.
        let text = serde_json::to_string(&all).unwrap();
        assert!(
            text.contains(&format!("\"total\":{}", u64::MAX as u128 + 50)),
            "{text}"
        );
        let json = serde_json::to_value(AccountsReport::new(&snapshot(&[(1, 10)]), 0)).unwrap();
        for k in [
            "network_id",
            "cemented",
            "paid_through",
            "applied",
            "state_root",
            "accounts",
            "total",
            "limit",
            "rows",
        ] {
            assert!(json.get(k).is_some(), "{k} in {json}");
        }
        assert_eq!(json["rows"][0]["balance"], 10);
        assert_eq!(json["total"], 10);
    }
}
