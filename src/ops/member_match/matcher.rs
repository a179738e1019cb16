//! Deterministic, identifier-first member matching (HRex `$member-match`: "a match on member
//! id or subscriber id at a minimum", never demographics alone). Candidates come from index
//! lookups only, through the store's privileged `lookup::MemberLookup` — `idx_token` by value
//! for the member id (Coverage and Patient `identifier`) and the subscriber id (Coverage
//! `subscriber-id`), then the candidates' Patient rows by primary key — and demographics confirm and disambiguate (dependents under one subscriber
//! id, twins): family and first given name after normalisation, birth date exact, gender and
//! birth sex when both sides have them.

use super::validate::{Demographics, MatchRequest, birth_sex, name_tokens, normalize_family};
use crate::identity::OrgIdentifier;
use crate::store::lookup::MemberKey;
use crate::store::{Store, index_key};
use serde_json::Value;
use std::collections::HashMap;

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
    let mut found = find_members(store, &[req], us).await?;
    Ok(found.pop().expect("one result per request"))
}

/// Finds the member each of `reqs` describes, with the same rules as [`find_member`] applied
/// to each request on its own (one request's candidates never decide another's), but with
/// each lookup made once for all of them: a `$bulk-member-match` of thousands of members
/// reads the index in a few statements instead of three per member.
pub async fn find_members(
    store: &Store,
    reqs: &[&MatchRequest],
    us: &[OrgIdentifier],
) -> anyhow::Result<Vec<MatchResult>> {
    let mut results: Vec<Option<MatchResult>> = reqs
        .iter()
        .map(|req| {
            // The payor, when identified, must be us: otherwise the coverage is not ours to match.
            (!req.payors.is_empty() && !req.payors.iter().any(|p| us.contains(p))).then_some(
                MatchResult::None("no match: CoverageToMatch.payor identifies another health plan"),
            )
        })
        .collect();
    let mut tried_any = vec![false; reqs.len()];
    let mut patients = PatientCache::default();

    // The member id names a person; the subscriber id a household. The member id's
    // candidates are tried first, the subscriber id's when they yield nobody.
    let open: Vec<usize> = (0..reqs.len()).filter(|&i| results[i].is_none()).collect();
    let keys: Vec<String> = open
        .iter()
        .flat_map(|&i| reqs[i].member_ids.iter().map(|(_, v)| index_key(v)))
        .collect();
    let by_code = store
        .member_lookup()
        .owners_by_code(MemberKey::MemberId, keys, MAX_CANDIDATES)
        .await?;
    let mut candidates: Vec<(usize, Vec<String>)> = Vec::new();
    for &i in &open {
        let mut owners = Vec::new();
        for (system, value) in &reqs[i].member_ids {
            for owner in by_code.get(&index_key(value)).into_iter().flatten() {
                // A system on both sides must agree; a card often carries none.
                let agrees = match (system, &owner.system) {
                    (Some(a), Some(b)) => index_key(a) == *b,
                    _ => true,
                };
                if agrees {
                    owners.push(owner.patient_id.clone());
                }
            }
        }
        if !owners.is_empty() {
            tried_any[i] = true;
            candidates.push((i, owners));
        }
    }
    confirm_all(store, reqs, candidates, &mut patients, &mut results).await?;

    let open: Vec<usize> = (0..reqs.len())
        .filter(|&i| results[i].is_none() && reqs[i].subscriber_id.is_some())
        .collect();
    let keys: Vec<String> = open
        .iter()
        .filter_map(|&i| reqs[i].subscriber_id.as_deref().map(index_key))
        .collect();
    let by_code = store
        .member_lookup()
        .owners_by_code(MemberKey::SubscriberId, keys, MAX_CANDIDATES)
        .await?;
    let mut candidates: Vec<(usize, Vec<String>)> = Vec::new();
    for &i in &open {
        let subscriber = reqs[i].subscriber_id.as_deref().map(index_key);
        let owners: Vec<String> = by_code
            .get(subscriber.as_deref().unwrap_or_default())
            .into_iter()
            .flatten()
            .map(|owner| owner.patient_id.clone())
            .collect();
        if !owners.is_empty() {
            tried_any[i] = true;
            candidates.push((i, owners));
        }
    }
    confirm_all(store, reqs, candidates, &mut patients, &mut results).await?;

    Ok(results
        .into_iter()
        .zip(tried_any)
        .map(|(result, tried)| {
            result.unwrap_or(MatchResult::None(if tried {
                "no match: the demographics of MemberPatient do not agree with the member holding that coverage"
            } else {
                "no match: no member holds the member id or subscriber id of CoverageToMatch"
            }))
        })
        .collect())
}

/// Stored Patients read so far (by id; `None`: not on file), each parsed once.
#[derive(Default)]
struct PatientCache(HashMap<String, Option<Value>>);

impl PatientCache {
    /// Reads the Patients of `ids` not read yet, by primary key.
    async fn load(&mut self, store: &Store, ids: &[&String]) -> anyhow::Result<()> {
        let mut missing: Vec<&str> = ids
            .iter()
            .filter(|id| !self.0.contains_key(id.as_str()))
            .map(|id| id.as_str())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let mut found = store.member_lookup().candidate_patients(&missing).await?;
        for id in missing {
            let patient = found.remove(id);
            self.0.insert(id.to_owned(), patient);
        }
        Ok(())
    }
}

/// Decides each `(request, candidates)` whose candidates' Patients agree with the requested
/// demographics: one → that member, several → [`MatchResult::Several`], none → undecided
/// (left `None` in `results` for the next kind of identifier).
async fn confirm_all(
    store: &Store,
    reqs: &[&MatchRequest],
    mut candidates: Vec<(usize, Vec<String>)>,
    patients: &mut PatientCache,
    results: &mut [Option<MatchResult>],
) -> anyhow::Result<()> {
    for (_, ids) in candidates.iter_mut() {
        ids.sort();
        ids.dedup();
        ids.truncate(MAX_CANDIDATES);
    }
    let all: Vec<&String> = candidates.iter().flat_map(|(_, ids)| ids).collect();
    patients.load(store, &all).await?;
    for (i, ids) in candidates {
        let mut matched: Vec<(String, &Value)> = ids
            .into_iter()
            .filter_map(|id| {
                let patient = patients.0.get(&id)?.as_ref()?;
                demographics_agree(&reqs[i].demographics, patient).then_some((id, patient))
            })
            .collect();
        results[i] = match matched.len() {
            0 => None,
            1 => {
                let (patient_id, patient) = matched.pop().expect("one");
                Some(MatchResult::One {
                    patient_id,
                    patient: patient.clone(),
                })
            }
            _ => Some(MatchResult::Several),
        };
    }
    Ok(())
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
