//! Views of stored ExplanationOfBenefit JSON for requesters who may not see all of it, as
//! pure functions on the stored text (so `$everything`, searches and the bulk export all
//! apply the same rules):
//!
//! - [`non_financial_eob`]: the CARIN BB "Basis" view CMS-0057 requires for payers and
//!   providers (PDex "Data Retrieval Methods": "a non-financial view of those claims and
//!   encounters"): adjudication amounts, payment, totals and benefit balances removed;
//! - [`prior_auth_releasable`]: the prior-authorization rule — a PA is exchanged while it is
//!   active (pending, or approved for a period that has not ended) and for a year after its
//!   status last changed (CMS-0057; ig-digest §13.12).
//!
//! Only the members named are rewritten; every other member keeps its bytes (decimals intact).

use indexmap::IndexMap;
use serde_json::Value;
use serde_json::value::RawValue;

type Members = IndexMap<String, Box<RawValue>>;

/// Header and line members that carry money (C4BB Basis profiles constrain them to 0..0).
const FINANCIAL_HEADER: &[&str] = &["adjudication", "total", "payment", "benefitBalance"];
/// Line-level money: amounts per line, detail and sub-detail.
const FINANCIAL_LINE: &[&str] = &["adjudication", "unitPrice", "net", "factor"];

/// Is this EOB a prior authorization (`use` = `preauthorization`, pdex-priorauthorization)?
pub fn is_prior_authorization(eob: &str) -> bool {
    top_level_string(eob, "use").as_deref() == Some("preauthorization")
}

/// The non-financial view of a claim EOB. A PA keeps its adjudication (its decision and
/// authorized units are the point of it) and is returned unchanged; so is text that is not
/// a JSON object.
pub fn non_financial_eob(eob: &str) -> String {
    let Ok(mut members) = serde_json::from_str::<Members>(eob) else {
        return eob.to_owned();
    };
    if members
        .get("use")
        .is_some_and(|u| u.get() == "\"preauthorization\"")
    {
        return eob.to_owned();
    }
    for name in FINANCIAL_HEADER {
        members.shift_remove(*name);
    }
    for list in ["item", "addItem"] {
        if let Some(raw) = members.get(list)
            && let Some(rewritten) = strip_lines(raw.get())
        {
            members.insert(list.to_owned(), rewritten);
        }
    }
    // The financial profiles become their Basis counterparts.
    if let Some(raw) = members.get("meta")
        && let Ok(mut meta) = serde_json::from_str::<serde_json::Map<String, Value>>(raw.get())
    {
        if let Some(Value::Array(profiles)) = meta.get_mut("profile") {
            for p in profiles.iter_mut() {
                if let Some(s) = p.as_str()
                    && s.starts_with("http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-ExplanationOfBenefit-")
                    && !s.ends_with("-Basis")
                {
                    *p = Value::String(format!("{s}-Basis"));
                }
            }
        }
        if let Ok(raw) = RawValue::from_string(Value::Object(meta).to_string()) {
            members.insert("meta".into(), raw);
        }
    }
    serde_json::to_string(&members).unwrap_or_else(|_| eob.to_owned())
}

/// `item` / `addItem` (and their `detail` / `subDetail`) without line money.
fn strip_lines(json: &str) -> Option<Box<RawValue>> {
    let mut lines: Vec<Members> = serde_json::from_str(json).ok()?;
    for line in &mut lines {
        for name in FINANCIAL_LINE {
            line.shift_remove(*name);
        }
        for nested in ["detail", "subDetail"] {
            if let Some(raw) = line.get(nested)
                && let Some(rewritten) = strip_lines(raw.get())
            {
                line.insert(nested.to_owned(), rewritten);
            }
        }
    }
    RawValue::from_string(serde_json::to_string(&lines).ok()?).ok()
}

const MS_PER_YEAR: i64 = 365 * 86_400_000;
const WHEN_ADJUDICATED: &str =
    "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/base-ext-when-adjudicated";

/// May this prior authorization be exchanged at `now_ms`? Non-PA EOBs are not subject to
/// the rule. See [`prior_auth_release_until`].
pub fn prior_auth_releasable(eob: &str, now_ms: i64) -> bool {
    prior_auth_release_until(eob).is_none_or(|until| now_ms <= until)
}

/// The last instant (epoch ms) at which this prior authorization may be exchanged, or `None`
/// when the EOB is not a prior authorization (the rule does not apply). A PA is exchanged
/// while it is active — `status` active and either still pending (`outcome` queued or
/// partial: no end) or approved for a period (`preAuthRefPeriod`, else `billablePeriod`, else
/// the item's `servicedPeriod`) that has not ended (its end; no end: none) — and for a year
/// after its status last changed (the latest adjudication date `base-ext-when-adjudicated`,
/// else `created`) (CMS-0057; ig-digest §13.12). Depends on the resource alone, so it is
/// computed when the resource is written (`store::release`). Text that is not a JSON object
/// claiming to be a PA is never released: `i64::MIN`.
pub fn prior_auth_release_until(eob: &str) -> Option<i64> {
    let Ok(v) = serde_json::from_str::<Value>(eob) else {
        return Some(i64::MIN);
    };
    if v["use"] != "preauthorization" {
        return None;
    }
    let date = |s: &Value| s.as_str().and_then(super::datetime::parse);
    let mut until = i64::MIN;
    if v["status"] == "active" {
        let pending = matches!(v["outcome"].as_str(), Some("queued") | Some("partial"));
        let period_end = [
            &v["preAuthRefPeriod"],
            &v["billablePeriod"],
            &v["item"][0]["servicedPeriod"],
        ]
        .into_iter()
        .find(|p| p.is_object())
        .map(|p| date(&p["end"]).map(|d| d.high));
        match period_end {
            _ if pending => return Some(i64::MAX),
            // a period without an end has not ended
            Some(None) => return Some(i64::MAX),
            Some(Some(end)) => until = end,
            None => {}
        }
    }
    let mut last_change = date(&v["created"]).map(|d| d.high);
    let mut visit = |adjudications: &Value| {
        for a in adjudications.as_array().into_iter().flatten() {
            for e in a["extension"].as_array().into_iter().flatten() {
                if e["url"] == WHEN_ADJUDICATED
                    && let Some(d) = date(&e["valueDateTime"])
                {
                    last_change = Some(last_change.map_or(d.high, |l| l.max(d.high)));
                }
            }
        }
    };
    visit(&v["adjudication"]);
    for item in v["item"].as_array().into_iter().flatten() {
        visit(&item["adjudication"]);
    }
    if let Some(t) = last_change {
        until = until.max(t.saturating_add(MS_PER_YEAR));
    }
    Some(until)
}

fn top_level_string(json: &str, name: &str) -> Option<String> {
    let members: Members = serde_json::from_str(json).ok()?;
    serde_json::from_str(members.get(name)?.get()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn day(s: &str) -> i64 {
        crate::fhir::datetime::parse(s).unwrap().low
    }

    #[test]
    fn claims_lose_their_money_and_keep_everything_else_byte_exact() {
        let eob = r#"{"resourceType":"ExplanationOfBenefit","id":"e1","meta":{"profile":["http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-ExplanationOfBenefit-Professional-NonClinician"]},"use":"claim","item":[{"sequence":1,"quantity":{"value":1.50},"net":{"value":10.00},"adjudication":[{"amount":{"value":83.90}}],"detail":[{"sequence":1,"net":{"value":2.0},"subDetail":[{"sequence":1,"adjudication":[{"amount":{"value":1}}]}]}]}],"adjudication":[{"amount":{"value":1}}],"total":[{"amount":{"value":189.14}}],"payment":{"amount":{"value":83.9}},"benefitBalance":[{"category":{"text":"x"}}]}"#;
        let out = non_financial_eob(eob);
        let v: Value = serde_json::from_str(&out).unwrap();
        for gone in ["total", "payment", "adjudication", "benefitBalance"] {
            assert!(v.get(gone).is_none(), "{gone} in {out}");
        }
        assert!(v["item"][0].get("adjudication").is_none());
        assert!(v["item"][0].get("net").is_none());
        assert!(v["item"][0]["detail"][0].get("net").is_none());
        assert!(
            v["item"][0]["detail"][0]["subDetail"][0]
                .get("adjudication")
                .is_none()
        );
        assert!(out.contains(r#""quantity":{"value":1.50}"#), "{out}");
        assert_eq!(
            v["meta"]["profile"][0],
            "http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-ExplanationOfBenefit-Professional-NonClinician-Basis"
        );
        assert!(!out.contains("83.90") && !out.contains("189.14"));
    }

    #[test]
    fn prior_authorizations_keep_their_adjudication() {
        let pa = r#"{"resourceType":"ExplanationOfBenefit","use":"preauthorization","adjudication":[{"amount":{"value":1}}]}"#;
        assert_eq!(non_financial_eob(pa), pa);
        assert!(is_prior_authorization(pa));
        assert!(!is_prior_authorization(r#"{"use":"claim"}"#));
    }

    #[test]
    fn the_prior_authorization_rule() {
        let now = day("2026-06-01");
        let pa = |v: Value| {
            let mut base = json!({"resourceType": "ExplanationOfBenefit", "use": "preauthorization", "status": "active", "created": "2020-01-01"});
            base.as_object_mut()
                .unwrap()
                .extend(v.as_object().unwrap().clone());
            prior_auth_releasable(&base.to_string(), now)
        };
        // pending
        assert!(pa(json!({"outcome": "queued"})));
        // approved, period still running
        assert!(pa(
            json!({"outcome": "complete", "billablePeriod": {"start": "2026-01-01", "end": "2026-12-31"}})
        ));
        // approved long ago, period over, no change in the last year
        assert!(!pa(
            json!({"outcome": "complete", "billablePeriod": {"start": "2020-01-01", "end": "2020-06-30"}})
        ));
        // decided (denied) within the last year
        assert!(pa(
            json!({"outcome": "complete", "billablePeriod": {"end": "2020-06-30"},
            "adjudication": [{"extension": [{"url": WHEN_ADJUDICATED, "valueDateTime": "2025-09-01T10:00:00Z"}]}]})
        ));
        // decided 13 months ago
        assert!(!pa(
            json!({"outcome": "complete", "billablePeriod": {"end": "2020-06-30"},
            "item": [{"adjudication": [{"extension": [{"url": WHEN_ADJUDICATED, "valueDateTime": "2025-05-01T10:00:00Z"}]}]}]})
        ));
        // cancelled long ago
        assert!(!pa(json!({"status": "cancelled", "outcome": "queued"})));
        // claims are not subject to the rule
        assert!(prior_auth_releasable(r#"{"use":"claim"}"#, now));
    }
}
