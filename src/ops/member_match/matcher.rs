//! Deterministic, identifier-first member matching (HRex `$member-match`: "a match on member
//! id or subscriber id at a minimum", never demographics alone). Candidates come from index
//! lookups only — `idx_token` by value for the member id (Coverage and Patient `identifier`)
//! and the subscriber id (Coverage `subscriber-id`), then the candidates' Patient rows by
//! primary key — and demographics confirm and disambiguate (dependents under one subscriber
//! id, twins): family and first given name after normalisation, birth date exact, gender and
//! birth sex when both sides have them.

use super::validate::{Demographics, MatchRequest, birth_sex, name_tokens, normalize_family};
use crate::auth::OrgIdentifier;
use crate::store::{SqlValue, Store, index_key, placeholders};
use serde_json::Value;

/// Most candidates one identifier may yield before we stop reading (a subscriber id covers a
/// household; anything larger is not a person identifier).
const MAX_CANDIDATES: usize = 64;

/// The outcome of matching.
#[derive(Debug)]
pub enum MatchResult {
    /// Exactly one member: their Patient id and stored Patient JSON.
    One { patient_id: String, patient: Value },
    /// Nobody (with why, for the OperationOutcome).
    None(&'static str),
    /// More than one member fits.
    Several,
}

/// Finds the member `req` describes.
pub async fn find_member(
    store: &Store,
    req: &MatchRequest,
    us: &[OrgIdentifier],
) -> anyhow::Result<MatchResult> {
    // The payor, when identified, must be us: otherwise the coverage is not ours to match.
    if !req.payors.is_empty() && !req.payors.iter().any(|p| us.contains(p)) {
        return Ok(MatchResult::None(
            "no match: CoverageToMatch.payor identifies another health plan",
        ));
    }
    // The member id names a person; the subscriber id a household. The member id's
    // candidates are tried first, the subscriber id's when they yield nobody.
    let by_member_id = member_id_candidates(store, req).await?;
    let mut tried_any = !by_member_id.is_empty();
    if tried_any {
        match confirm(store, req, by_member_id).await? {
            MatchResult::None(_) => {}
            decided => return Ok(decided),
        }
    }
    if let Some(subscriber) = &req.subscriber_id {
        let rows = store
            .db
            .fetch(
                "SELECT t.patient_id FROM idx_token t \
                 WHERE t.rtype = 'Coverage' AND t.param = 'subscriber-id' AND t.code = ? LIMIT ?",
                &[index_key(subscriber).into(), (MAX_CANDIDATES as i64).into()],
            )
            .await?;
        let by_subscriber: Vec<String> = rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().and_then(SqlValue::into_string))
            .collect();
        if !by_subscriber.is_empty() {
            tried_any = true;
            match confirm(store, req, by_subscriber).await? {
                MatchResult::None(_) => {}
                decided => return Ok(decided),
            }
        }
    }
    Ok(MatchResult::None(if tried_any {
        "no match: the demographics of MemberPatient do not agree with the member holding that coverage"
    } else {
        "no match: no member holds the member id or subscriber id of CoverageToMatch"
    }))
}

/// Owners of coverages (and Patients) carrying one of the request's member ids.
async fn member_id_candidates(store: &Store, req: &MatchRequest) -> anyhow::Result<Vec<String>> {
    let mut candidates = Vec::new();
    for (system, value) in &req.member_ids {
        let rows = store
            .db
            .fetch(
                "SELECT t.patient_id, t.system FROM idx_token t \
                 WHERE t.rtype IN ('Coverage', 'Patient') AND t.param = 'identifier' AND t.code = ? LIMIT ?",
                &[index_key(value).into(), (MAX_CANDIDATES as i64).into()],
            )
            .await?;
        for row in rows {
            let mut it = row.into_iter();
            let owner = it.next().and_then(SqlValue::into_string);
            let stored_system = it.next().and_then(SqlValue::into_string);
            // A system on both sides must agree; a card often carries none.
            let agrees = match (system, &stored_system) {
                (Some(a), Some(b)) => index_key(a) == *b,
                _ => true,
            };
            if agrees && let Some(owner) = owner {
                candidates.push(owner);
            }
        }
    }
    Ok(candidates)
}

/// The candidates whose Patient agrees with the requested demographics (by primary key).
async fn confirm(
    store: &Store,
    req: &MatchRequest,
    mut candidates: Vec<String>,
) -> anyhow::Result<MatchResult> {
    candidates.sort();
    candidates.dedup();
    candidates.truncate(MAX_CANDIDATES);
    let params: Vec<SqlValue> = candidates.iter().map(SqlValue::from).collect();
    let rows = store
        .db
        .fetch(
            &format!(
                "SELECT r.id, r.content FROM resources r WHERE r.rtype = 'Patient' AND r.deleted = 0 AND r.id IN ({})",
                placeholders(params.len())
            ),
            &params,
        )
        .await?;
    let mut matched = Vec::new();
    for row in rows {
        let mut it = row.into_iter();
        let (Some(id), Some(content)) = (
            it.next().and_then(SqlValue::into_string),
            it.next().and_then(SqlValue::into_string),
        ) else {
            continue;
        };
        let Ok(patient) = serde_json::from_str::<Value>(&content) else {
            continue;
        };
        if demographics_agree(&req.demographics, &patient) {
            matched.push((id, patient));
        }
    }
    Ok(match matched.len() {
        0 => MatchResult::None("no match"),
        1 => {
            let (patient_id, patient) = matched.pop().expect("one");
            MatchResult::One {
                patient_id,
                patient,
            }
        }
        _ => MatchResult::Several,
    })
}

/// Do the requested demographics describe this stored Patient?
pub fn demographics_agree(d: &Demographics, stored: &Value) -> bool {
    if stored["birthDate"].as_str() != Some(d.birth_date.as_str()) {
        return false;
    }
    if let (Some(want), Some(have)) = (&d.gender, stored["gender"].as_str())
        && want != have
    {
        return false;
    }
    if let (Some(want), Some(have)) = (&d.birth_sex, birth_sex(stored))
        && *want != have
    {
        return false;
    }
    let stored_names: Vec<(String, Vec<String>)> = stored["name"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            let family = normalize_family(n["family"].as_str()?);
            let given = n["given"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .flat_map(name_tokens)
                .collect();
            Some((family, given))
        })
        .collect();
    // Some requested name must agree with some stored name on family and first given name.
    d.names.iter().any(|(family, given)| {
        stored_names
            .iter()
            .any(|(f, g)| f == family && !g.is_empty() && g.first() == given.first())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(family: &str, given: &[&str], birth: &str, gender: Option<&str>) -> Demographics {
        Demographics {
            names: vec![(
                normalize_family(family),
                given.iter().flat_map(|g| name_tokens(g)).collect(),
            )],
            birth_date: birth.into(),
            gender: gender.map(str::to_owned),
            birth_sex: None,
        }
    }

    #[test]
    fn demographics_confirm_and_disambiguate() {
        let jose = json!({"resourceType": "Patient", "name": [{"family": "Anderson", "given": ["José", "Luis"], "suffix": ["Jr."]}], "birthDate": "1947-10-30", "gender": "male"});
        assert!(demographics_agree(
            &d("ANDERSON", &["Jose"], "1947-10-30", Some("male")),
            &jose
        ));
        assert!(demographics_agree(
            &d("Anderson Jr.", &["jose luis"], "1947-10-30", None),
            &jose
        ));
        assert!(!demographics_agree(
            &d("Anderson", &["Luis"], "1947-10-30", None),
            &jose
        ));
        assert!(!demographics_agree(
            &d("Anderson", &["Jose"], "1947-10-31", None),
            &jose
        ));
        assert!(!demographics_agree(
            &d("Anderson", &["Jose"], "1947-10-30", Some("female")),
            &jose
        ));
        let zoe = json!({"name": [{"family": "Müller-Ramírez", "given": ["Zoë", "Anne-Marie"]}], "birthDate": "2001-02-03"});
        assert!(demographics_agree(
            &d("Muller Ramirez", &["Zoe"], "2001-02-03", None),
            &zoe
        ));
    }
}
