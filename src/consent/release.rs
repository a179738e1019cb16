//! What of a member's record a requester receives, beyond the access layer's row filter
//! (compartment and sensitivity, `store::access`): the per-resource release rules of the
//! payer-to-payer and provider exchanges, shared by `$everything`, searches and the bulk
//! export.
//!
//! - ExplanationOfBenefit for payer and provider clients: claims as the non-financial view,
//!   prior authorizations only while the PA rule allows (`fhir::projection`);
//! - the look-back window for payer-to-payer (5 years by default): resources whose care
//!   dates all lie before it are not released ([`CARE_DATES`], applied in SQL by callers).

use crate::auth::{AccessContext, ClientKind};
use crate::fhir::projection;
use std::borrow::Cow;

/// How a requester's ExplanationOfBenefits are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseRules {
    /// Claims EOBs lose adjudication amounts, payment and totals (CMS-0057 non-financial view).
    pub non_financial_eob: bool,
    /// Prior authorizations only while active or changed in the last year.
    pub prior_auth_rule: bool,
    pub now_ms: i64,
}

impl ReleaseRules {
    /// The rules for a caller: payers and providers get the CMS-0057 view; the member's own
    /// apps, the plan's back office and the operator get EOBs as stored.
    pub fn for_context(ctx: &AccessContext, now_ms: i64) -> ReleaseRules {
        let exchange = matches!(ctx.kind, ClientKind::Payer | ClientKind::Provider);
        ReleaseRules {
            non_financial_eob: exchange,
            prior_auth_rule: exchange,
            now_ms,
        }
    }

    /// Nothing to apply.
    pub fn is_identity(&self) -> bool {
        !self.non_financial_eob && !self.prior_auth_rule
    }

    /// The resource as released, or `None` when it is withheld.
    pub fn apply<'a>(&self, rtype: &str, content: &'a str) -> Option<Cow<'a, str>> {
        if rtype != "ExplanationOfBenefit" || self.is_identity() {
            return Some(Cow::Borrowed(content));
        }
        if projection::is_prior_authorization(content) {
            if self.prior_auth_rule && !projection::prior_auth_releasable(content, self.now_ms) {
                return None;
            }
            return Some(Cow::Borrowed(content));
        }
        if self.non_financial_eob {
            return Some(Cow::Owned(projection::non_financial_eob(content)));
        }
        Some(Cow::Borrowed(content))
    }
}

/// The look-back window's first instant for `ctx` (payer-to-payer only), or `None`.
pub fn lookback_start(ctx: &AccessContext, years: u32, now_ms: i64) -> Option<i64> {
    (ctx.kind == ClientKind::Payer && years > 0)
        .then(|| now_ms - i64::from(years) * 365 * 86_400_000 - i64::from(years / 4) * 86_400_000)
}

/// Care-date search parameters per type (the dates `$everything` `start`/`end` and the
/// look-back window refer to: when care happened, not when the record changed). Types not
/// listed — longitudinal state such as Patient, Coverage, Condition, AllergyIntolerance,
/// Goal, Device, and Provenance — have no care date and are always in range.
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

/// A SQL condition (on the `resources` alias `r`) keeping rows with a care date that
/// overlaps `[low, high]`, or with no care date at all. Binds two values: `low`, `high`.
/// Index probes on `idx_date (res_pk)` only.
pub fn care_date_condition() -> String {
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

    #[test]
    fn payers_get_the_cms_view_and_members_everything() {
        let mut payer = AccessContext::member("p1", false);
        payer.kind = ClientKind::Payer;
        let now = crate::fhir::datetime::parse("2026-06-01").unwrap().low;
        let rules = ReleaseRules::for_context(&payer, now);
        let claim = r#"{"resourceType":"ExplanationOfBenefit","use":"claim","total":[{"amount":{"value":1}}]}"#;
        assert!(
            !rules
                .apply("ExplanationOfBenefit", claim)
                .unwrap()
                .contains("total")
        );
        let old_pa = r#"{"resourceType":"ExplanationOfBenefit","use":"preauthorization","status":"cancelled","created":"1990-01-01"}"#;
        assert!(rules.apply("ExplanationOfBenefit", old_pa).is_none());
        let mut app = AccessContext::member("p1", false);
        app.kind = ClientKind::App;
        let rules = ReleaseRules::for_context(&app, 0);
        assert_eq!(rules.apply("ExplanationOfBenefit", claim).unwrap(), claim);
        assert!(lookback_start(&app, 5, 0).is_none());
        assert!(lookback_start(&payer, 5, 0).unwrap() < -5 * 365 * 86_400_000);
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
}
