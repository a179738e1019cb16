//! The release rules: what of the rows a requester may see (`access`) it receives, decided
//! per requester kind in this one place and applied by `access::View` on every read path
//! (read, vread, history, search pages and their includes, counts, `$everything`, every
//! export). Their inputs are computed when a resource is written (`care_end`,
//! `release_until`), so the rules are SQL conditions plus one projection of stored bytes:
//!
//! - **ExplanationOfBenefit for payers and providers**: claims as the CARIN BB non-financial
//!   ("Basis") view (CMS-0057; PDex "Data Retrieval Methods"), prior authorizations only while
//!   the PA rule allows (`fhir::projection::prior_auth_release_until`, stored as
//!   `release_until`; a withheld PA is as if absent: 404, not counted, not exported);
//! - **the payer-to-payer window** (PDex 2.1.0, the default; payer-to-payer bulk page: "only
//!   data updated within five years of the transaction request date SHALL be returned"):
//!   resources whose care dates ([`CARE_DATES`]) all lie more than `lookback_years` before
//!   the request are not released. Under PDex 2.2.0 five years is a floor, not a cap, so no
//!   window applies; `lookback_years = 0` turns it off. `meta.lastUpdated` is not used: for a
//!   plan that loads its history it is the import time.
//! - **Patient Access and Provider Access** (member apps and providers): data back to
//!   2016-01-01 (§pdex-303: "Resources in the Patient Access and Provider Access API can
//!   extend back to January 1, 2016"), by the same care dates.
//! - The plan's back office (`admin`) and the operator get everything as stored.

use super::db::SqlValue;
use crate::fhir::projection;
use crate::identity::{AccessContext, ClientKind};
use crate::search::IndexEntries;
use std::borrow::Cow;

/// Server-wide settings of the release rules (from `ExchangeConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseSettings {
    /// Payer-to-payer look-back in calendar years (0: none).
    pub lookback_years: u32,
    /// PDex 2.1.0: the look-back is a cap (applied). PDex 2.2.0: a floor (not applied).
    pub lookback_is_cap: bool,
}

impl Default for ReleaseSettings {
    fn default() -> Self {
        ReleaseSettings {
            lookback_years: 5,
            lookback_is_cap: true,
        }
    }
}

/// 2016-01-01T00:00:00Z, the earliest care date released to members' apps and providers
/// (§pdex-303).
pub const PATIENT_ACCESS_START_MS: i64 = 1_451_606_400_000;

/// Care-date search parameters per type: the dates the look-back window and `$everything`
/// `start`/`end` refer to (when care happened, not when the record changed). Types not
/// listed — longitudinal state such as Patient, Coverage, Condition, AllergyIntolerance,
/// Goal, Device, and Provenance — have no care date and are always in range. Kept in step
/// with `migrations/*/0010_release.sql`, which computed `care_end` for rows written before.
pub const CARE_DATES: &[(&str, &str)] = &[
    ("CarePlan", "date"),
    ("CareTeam", "date"),
    ("Claim", "created"),
    ("DiagnosticReport", "date"),
    ("DocumentReference", "period"),
    ("DocumentReference", "date"),
    ("Encounter", "date"),
    ("ExplanationOfBenefit", "service-date"),
    ("ExplanationOfBenefit", "created"),
    ("Immunization", "date"),
    ("MedicationDispense", "whenhandedover"),
    ("MedicationRequest", "authoredon"),
    ("MedicationStatement", "effective"),
    ("Observation", "date"),
    ("Procedure", "date"),
    ("ServiceRequest", "authored"),
];

/// The latest care date of a resource being written (epoch ms), from its date index rows;
/// `None` when it has none.
pub fn care_end(rtype: &str, index: &IndexEntries) -> Option<i64> {
    index
        .dates
        .iter()
        .filter(|d| CARE_DATES.contains(&(rtype, d.param.as_str())))
        .map(|d| d.high)
        .max()
}

/// The prior-authorization rule's last instant for a resource being written (`None`: not a
/// prior authorization).
pub fn release_until(rtype: &str, content: &str) -> Option<i64> {
    if rtype != "ExplanationOfBenefit" {
        return None;
    }
    projection::prior_auth_release_until(content)
}

/// Computes `release_until` for the prior authorizations written before migration 0010
/// (once: `store_backfills` remembers it), in one transaction.
pub async fn backfill(db: &dyn super::Database) -> anyhow::Result<()> {
    const NAME: &str = "0010 release_until";
    let done = db
        .fetch(
            "SELECT 1 FROM store_backfills WHERE name = ?",
            &[NAME.into()],
        )
        .await?;
    if !done.is_empty() {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    let rows = tx
        .fetch(
            "SELECT pk, content FROM resources WHERE rtype = 'ExplanationOfBenefit' \
             AND content LIKE '%preauthorization%'",
            vec![],
        )
        .await?;
    for row in rows {
        let (pk, content) = (row.int(0)?, row.text(1)?);
        if let Some(until) = release_until("ExplanationOfBenefit", &content) {
            tx.execute(
                "UPDATE resources SET release_until = ? WHERE pk = ?",
                vec![SqlValue::Int(until), SqlValue::Int(pk)],
            )
            .await?;
        }
    }
    tx.execute(
        "INSERT INTO store_backfills (name) VALUES (?)",
        vec![NAME.into()],
    )
    .await?;
    tx.commit().await
}

/// The rules for one requester at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Claims EOBs lose adjudication amounts, payment and totals (CMS-0057 non-financial view).
    pub non_financial_eob: bool,
    /// Prior authorizations only while active or changed in the last year.
    pub prior_auth_rule: bool,
    /// Resources whose care dates all end before this instant are not released.
    pub care_since: Option<i64>,
    pub now_ms: i64,
}

impl Release {
    /// The rules for `ctx` at `now_ms` (module comment).
    pub fn for_context(ctx: &AccessContext, settings: &ReleaseSettings, now_ms: i64) -> Release {
        let exchange = matches!(ctx.kind, ClientKind::Payer | ClientKind::Provider);
        let care_since = match ctx.kind {
            ClientKind::Payer if settings.lookback_is_cap && settings.lookback_years > 0 => {
                Some(years_before(now_ms, settings.lookback_years))
            }
            ClientKind::Provider | ClientKind::App => Some(PATIENT_ACCESS_START_MS),
            _ => None,
        };
        Release {
            non_financial_eob: exchange,
            prior_auth_rule: exchange,
            care_since,
            now_ms,
        }
    }

    /// The row conditions on the `resources` (or `resource_history`) alias `alias`, each
    /// starting with ` AND `, with their parameters.
    pub fn conditions(&self, alias: &str, sql: &mut String, params: &mut Vec<SqlValue>) {
        if let Some(since) = self.care_since {
            sql.push_str(&format!(
                " AND ({alias}.care_end IS NULL OR {alias}.care_end >= ?)"
            ));
            params.push(SqlValue::Int(since));
        }
        if self.prior_auth_rule {
            sql.push_str(&format!(
                " AND ({alias}.release_until IS NULL OR {alias}.release_until >= ?)"
            ));
            params.push(SqlValue::Int(self.now_ms));
        }
    }

    /// The stored bytes of a row that passed [`Release::conditions`], as released.
    pub fn content<'a>(&self, rtype: &str, content: &'a str) -> Cow<'a, str> {
        if self.non_financial_eob && rtype == "ExplanationOfBenefit" {
            // a prior authorization comes back unchanged
            Cow::Owned(projection::non_financial_eob(content))
        } else {
            Cow::Borrowed(content)
        }
    }
}

/// The same instant `years` calendar years before `now_ms` (29 February → 28 February).
pub fn years_before(now_ms: i64, years: u32) -> i64 {
    use crate::fhir::datetime::{civil_from_days, days_from_civil};
    let day_ms = 86_400_000;
    let days = now_ms.div_euclid(day_ms);
    let time = now_ms.rem_euclid(day_ms);
    let (y, m, d) = civil_from_days(days);
    let d = if m == 2 && d == 29 { 28 } else { d };
    days_from_civil(y - i64::from(years), m, d) * day_ms + time
}

/// A SQL condition (on the `resources` alias `r`) keeping rows with a care date that
/// overlaps `[low, high]`, or with no care date at all (`$everything` `start`/`end`). Binds
/// two values: `low`, `high`. Index probes on `idx_date (res_pk)` only.
pub fn care_date_overlap_condition() -> String {
    let pairs: Vec<String> = CARE_DATES
        .iter()
        .map(|(t, p)| format!("(r.rtype = '{t}' AND d.param = '{p}')"))
        .collect();
    let which = pairs.join(" OR ");
    format!(
        "(NOT EXISTS (SELECT 1 FROM idx_date d WHERE d.res_pk = r.pk AND ({which})) \
         OR EXISTS (SELECT 1 FROM idx_date d WHERE d.res_pk = r.pk AND ({which}) AND d.high >= ? AND d.low <= ?))"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        crate::fhir::datetime::parse(s).unwrap().low
    }

    fn ctx(kind: ClientKind) -> AccessContext {
        let mut c = AccessContext::member("p1", false);
        c.kind = kind;
        c
    }

    #[test]
    fn each_kind_gets_its_rules() {
        let now = ms("2026-06-01");
        let s = ReleaseSettings::default();
        let payer = Release::for_context(&ctx(ClientKind::Payer), &s, now);
        assert!(payer.non_financial_eob && payer.prior_auth_rule);
        assert_eq!(payer.care_since, Some(ms("2021-06-01")));
        let v22 = ReleaseSettings {
            lookback_is_cap: false,
            ..s
        };
        assert_eq!(
            Release::for_context(&ctx(ClientKind::Payer), &v22, now).care_since,
            None
        );
        let off = ReleaseSettings {
            lookback_years: 0,
            ..s
        };
        assert_eq!(
            Release::for_context(&ctx(ClientKind::Payer), &off, now).care_since,
            None
        );
        let app = Release::for_context(&ctx(ClientKind::App), &s, now);
        assert!(!app.non_financial_eob && !app.prior_auth_rule);
        assert_eq!(app.care_since, Some(ms("2016-01-01")));
        let provider = Release::for_context(&ctx(ClientKind::Provider), &s, now);
        assert!(provider.non_financial_eob);
        assert_eq!(provider.care_since, Some(PATIENT_ACCESS_START_MS));
        for k in [ClientKind::Admin, ClientKind::Operator] {
            let r = Release::for_context(&ctx(k), &s, now);
            assert!(!r.non_financial_eob && !r.prior_auth_rule && r.care_since.is_none());
        }
    }

    #[test]
    fn claims_lose_their_money_for_payers_only() {
        let claim = r#"{"resourceType":"ExplanationOfBenefit","use":"claim","total":[{"amount":{"value":1}}]}"#;
        let s = ReleaseSettings::default();
        let payer = Release::for_context(&ctx(ClientKind::Payer), &s, 0);
        assert!(
            !payer
                .content("ExplanationOfBenefit", claim)
                .contains("total")
        );
        let app = Release::for_context(&ctx(ClientKind::App), &s, 0);
        assert_eq!(app.content("ExplanationOfBenefit", claim), claim);
    }

    #[test]
    fn leap_days_and_years() {
        assert_eq!(years_before(ms("2028-02-29"), 5), ms("2023-02-28"));
        assert_eq!(
            years_before(ms("2026-12-02T10:00:00Z"), 5),
            ms("2021-12-02T10:00:00Z")
        );
        assert_eq!(PATIENT_ACCESS_START_MS, ms("2016-01-01T00:00:00Z"));
    }

    #[test]
    fn care_dates_name_registered_date_parameters() {
        let reg = crate::search::Registry::load_builtin().unwrap();
        for (t, p) in CARE_DATES {
            let sp = reg
                .get(t, p)
                .unwrap_or_else(|| panic!("{t}.{p} is not registered"));
            assert_eq!(sp.kind, crate::search::ParamType::Date, "{t}.{p}");
        }
    }

    #[test]
    fn the_migration_lists_the_same_care_dates() {
        for dialect in ["sqlite", "postgres"] {
            let sql = std::fs::read_to_string(format!(
                "{}/migrations/{dialect}/0010_release.sql",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            for (t, p) in CARE_DATES {
                assert!(
                    sql.contains(&format!("resources.rtype = '{t}'"))
                        && sql.contains(&format!("'{p}'")),
                    "{dialect}: {t}.{p}"
                );
            }
        }
    }
}
