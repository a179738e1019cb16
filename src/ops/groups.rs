//! The result Groups of `$bulk-member-match` (ig-digest §3.3–3.6): `MatchedMembers`
//! (`pdex-member-match-group`, always emitted, even empty), `NonMatchedMembers` and
//! `ConsentConstrainedMembers` (both `pdex-member-no-match-group`, only when non-empty), the
//! optional `pdex-parameters-multi-member-match-bundle-out` envelope (PDex 2.1.0 clients,
//! §pdex-138a), and storing the Matched Group as the requester's own ([`save_owned_group`],
//! read back through `store::access`).
//!
//! Rules implemented here:
//! - `Group.code` and `characteristic.code` from `PdexMultiMemberMatchResultCS`
//!   (`match | nomatch | consentconstraint`); `type = person`, `actual = true`.
//! - Each submitted Patient is contained exactly as submitted — same id, identifiers and
//!   demographics — minus `meta.versionId`, `meta.lastUpdated`, `meta.security` and nested
//!   `contained` (§pdex-150/151/151a). A Patient submitted twice identically is contained
//!   once. Two *different* Patients sent with the same id cannot both keep it (contained ids
//!   must be unique); the second becomes `{id}-2` (and so on). A Patient without an id gets
//!   `member-{n}` (its MemberBundle's position).
//! - The same Patient submitted with different CoverageToMatch: its Coverage is contained
//!   too and referenced by `matchedCoverage` / `nonMatchedCoverage` (§pdex-153).
//! - Matched: `member.entity` = our `Patient/{id}` (with the member's UMB as its identifier
//!   when we have one), `matchedMember` → the contained submitted Patient. NonMatched and
//!   ConsentConstrained: `member.entity` = the contained Patient itself (`#id`), never our id,
//!   and nothing about why consent failed (§pdex-154c).
//! - `characteristic`: code = the Group's result code, `valueReference` = the requesting
//!   payer (logical identifier reference), `exclude = false`, `period.start` = the match date.
//!   The Group's validity: `period.end` = the last day any member's consent covers; each
//!   matched member's own `member.period` runs from the match date to its consent's end.
//! - `managingEntity` = our organization (logical identifier reference); `identifier` = the
//!   requesting payer's identifier (as in the IG example).
//!
//! Depends on `store` (writing the Group, `Store::record_group_owner`), `auth` (types), `fhir`.

use super::bulk_member_match::{MatchedMember, MemberBundle, MemberOutcome};
use crate::fhir::FhirError;
use crate::identity::{AccessContext, OrgIdentifier};
use crate::store::{IdRule, Store, WriteKind, WriteOp, WriteResult};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};

pub const RESULT_SYSTEM: &str =
    "http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PdexMultiMemberMatchResultCS";
pub const MATCH_GROUP_PROFILE: &str =
    "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-member-match-group";
pub const NO_MATCH_GROUP_PROFILE: &str =
    "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-member-no-match-group";
pub const RESPONSE_PROFILE: &str = "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-parameters-multi-member-match-bundle-out";
/// `matchedMember` / `nonMatchedMember`: the submitted Patient.
pub const EXT_MATCH_PARAMETERS: &str =
    "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/base-ext-match-parameters";
/// `matchedCoverage` / `nonMatchedCoverage`: the submitted Coverage.
pub const EXT_MATCH_COVERAGE: &str =
    "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/base-ext-match-coverage";

/// The Group profiles and result codes one multi-member operation answers with: a second
/// multi-member operation (Provider Access `$provider-member-match`) plugs in its own table
/// and its `MemberEvaluator`, and reuses the rest of the pipeline (request reading,
/// per-member evaluation in batches, Group building, storing the owned Group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupProfiles {
    /// The CodeSystem of `Group.code` and `characteristic.code` (match, nomatch, …).
    pub result_system: &'static str,
    /// The Matched Group's profile.
    pub matched: &'static str,
    /// The profile of the Groups of members not returned (non-matched, consent-constrained).
    pub not_returned: &'static str,
    /// The profile of the optional response envelope (`Parameters`).
    pub envelope: &'static str,
}

/// Payer-to-payer `$bulk-member-match` (PDex 2.1/2.2).
pub const PAYER_TO_PAYER: GroupProfiles = GroupProfiles {
    result_system: RESULT_SYSTEM,
    matched: MATCH_GROUP_PROFILE,
    not_returned: NO_MATCH_GROUP_PROFILE,
    envelope: RESPONSE_PROFILE,
};

/// The three result buckets (§pdex-154).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Matched,
    NonMatched,
    ConsentConstrained,
}

impl Bucket {
    /// The `PdexMultiMemberMatchResultCS` code and display.
    pub fn code(self) -> (&'static str, &'static str) {
        match self {
            Bucket::Matched => ("match", "Matched"),
            Bucket::NonMatched => ("nomatch", "Not Matched"),
            Bucket::ConsentConstrained => ("consentconstraint", "Consent Constraint"),
        }
    }
    /// The out parameter name of the response envelope.
    pub fn parameter_name(self) -> &'static str {
        match self {
            Bucket::Matched => "MatchedMembers",
            Bucket::NonMatched => "NonMatchedMembers",
            Bucket::ConsentConstrained => "ConsentConstrainedMembers",
        }
    }
    fn title(self) -> &'static str {
        match self {
            Bucket::Matched => "Matched Members",
            Bucket::NonMatched => "Non-Matched Members",
            Bucket::ConsentConstrained => "Consent Constrained Members",
        }
    }
    fn profile(self, profiles: &GroupProfiles) -> &'static str {
        match self {
            Bucket::Matched => profiles.matched,
            _ => profiles.not_returned,
        }
    }
    fn of(outcome: &MemberOutcome) -> Bucket {
        match outcome {
            MemberOutcome::Matched(_) => Bucket::Matched,
            MemberOutcome::NonMatched | MemberOutcome::NotEvaluated(_) => Bucket::NonMatched,
            MemberOutcome::ConsentConstrained => Bucket::ConsentConstrained,
        }
    }
}

/// Who asked, who answers, and when.
#[derive(Debug, Clone)]
pub struct GroupSettings<'a> {
    /// The Matched Group's id; the other two Groups are `{id}-nomatch` and
    /// `{id}-consentconstraint`.
    pub group_id: &'a str,
    /// The requesting payer (`characteristic.valueReference`, `identifier`).
    pub requester: Option<&'a OrgIdentifier>,
    /// Our organization (`managingEntity`) and its display name.
    pub us: Option<&'a OrgIdentifier>,
    pub us_display: Option<&'a str>,
    /// When the match ran (epoch ms).
    pub match_time_ms: i64,
    /// The operation's Group profiles and result codes.
    pub profiles: &'a GroupProfiles,
}

/// The Groups of one `$bulk-member-match`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultGroups {
    /// The envelope's profile ([`GroupProfiles::envelope`]).
    pub envelope_profile: &'static str,
    pub matched: Value,
    pub non_matched: Option<Value>,
    pub consent_constrained: Option<Value>,
}

impl ResultGroups {
    /// The Groups in output order (the Group NDJSON file, §pdex-138).
    pub fn groups(&self) -> Vec<&Value> {
        std::iter::once(&self.matched)
            .chain(self.non_matched.as_ref())
            .chain(self.consent_constrained.as_ref())
            .collect()
    }

    /// The PDex 2.1.0 response envelope (`pdex-parameters-multi-member-match-bundle-out`):
    /// `MatchedMembers` 1..1, the other two only when present; closed slicing, no `value[x]`.
    pub fn envelope(&self) -> Value {
        let mut parameter = vec![json!({"name": "MatchedMembers", "resource": self.matched})];
        if let Some(g) = &self.non_matched {
            parameter.push(json!({"name": "NonMatchedMembers", "resource": g}));
        }
        if let Some(g) = &self.consent_constrained {
            parameter.push(json!({"name": "ConsentConstrainedMembers", "resource": g}));
        }
        json!({
            "resourceType": "Parameters",
            "meta": {"profile": [self.envelope_profile]},
            "parameter": parameter,
        })
    }
}

/// The submitted resource as it may be contained (§pdex-151a): without `meta.versionId`,
/// `meta.lastUpdated`, `meta.security` and nested `contained`; everything else as sent.
pub fn sanitize_submitted(resource: &Value) -> Value {
    let mut r = resource.clone();
    if let Some(obj) = r.as_object_mut() {
        obj.remove("contained");
        let empty_meta = match obj.get_mut("meta").and_then(Value::as_object_mut) {
            Some(meta) => {
                meta.remove("versionId");
                meta.remove("lastUpdated");
                meta.remove("security");
                meta.is_empty()
            }
            None => false,
        };
        if empty_meta {
            obj.remove("meta");
        }
    }
    r
}

/// The contained resources of one Group, with unique ids.
#[derive(Default)]
struct Contained {
    resources: Vec<Value>,
    /// Canonical text of a resource with the id it asked for → the local id it got.
    by_content: HashMap<String, String>,
    /// Local ids in use.
    ids: HashSet<String>,
    /// The last suffix given to each asked-for id, so that many resources asking for the
    /// same id (every MemberPatient sent as `"id": "1"`) cost one probe each, not a walk.
    last_suffix: HashMap<String, usize>,
}

impl Contained {
    /// Contains `resource` (already sanitized) and returns its local id (its own, or
    /// `fallback_id` when it has none; `-2`, `-3`… appended when that is taken); an identical
    /// resource is contained once.
    fn add(&mut self, mut resource: Value, fallback_id: String) -> String {
        let wanted = resource["id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or(fallback_id);
        resource["id"] = Value::String(wanted.clone());
        let canonical = resource.to_string();
        if let Some(id) = self.by_content.get(&canonical) {
            return id.clone();
        }
        let mut id = wanted.clone();
        if self.ids.contains(&id) {
            let n = self.last_suffix.entry(wanted.clone()).or_insert(1);
            loop {
                *n += 1;
                id = format!("{wanted}-{n}");
                if !self.ids.contains(&id) {
                    break;
                }
            }
            resource["id"] = Value::String(id.clone());
        }
        self.ids.insert(id.clone());
        self.by_content.insert(canonical, id.clone());
        self.resources.push(resource);
        id
    }
}

/// Builds the result Groups from each member's outcome. Members are listed in request
/// order; identical entries (the same bundle sent twice) appear once.
pub fn build(results: &[(&MemberBundle, MemberOutcome)], s: &GroupSettings) -> ResultGroups {
    // §pdex-153: which submitted Patients came with more than one CoverageToMatch.
    let mut coverages: HashMap<String, HashSet<String>> = HashMap::new();
    for (m, _) in results {
        let coverage = m
            .coverage_to_match
            .as_ref()
            .map(|c| sanitize_submitted(c).to_string())
            .unwrap_or_default();
        coverages
            .entry(sanitize_submitted(&m.patient).to_string())
            .or_default()
            .insert(coverage);
    }
    let needs_coverage = |m: &MemberBundle| {
        coverages
            .get(&sanitize_submitted(&m.patient).to_string())
            .is_some_and(|set| set.len() > 1)
            && m.coverage_to_match.is_some()
    };

    let mut buckets: HashMap<Bucket, GroupBuilder> = HashMap::new();
    for (m, outcome) in results {
        let bucket = Bucket::of(outcome);
        let b = buckets.entry(bucket).or_default();
        let patient_ref = b.contained.add(
            sanitize_submitted(&m.patient),
            format!("member-{}", m.index + 1),
        );
        let mut extension = vec![json!({
            "url": EXT_MATCH_PARAMETERS,
            "valueReference": {"reference": format!("#{patient_ref}")},
        })];
        if needs_coverage(m)
            && let Some(c) = &m.coverage_to_match
        {
            let coverage_ref = b
                .contained
                .add(sanitize_submitted(c), format!("coverage-{}", m.index + 1));
            extension.push(json!({
                "url": EXT_MATCH_COVERAGE,
                "valueReference": {"reference": format!("#{coverage_ref}")},
            }));
        }
        let mut entity = Map::new();
        entity.insert("extension".into(), Value::Array(extension));
        let mut member = Map::new();
        match outcome {
            MemberOutcome::Matched(MatchedMember {
                patient_id,
                umb,
                consent_end_ms,
                ..
            }) => {
                entity.insert("reference".into(), json!(format!("Patient/{patient_id}")));
                if let Some(umb) = umb {
                    entity.insert("identifier".into(), umb.clone());
                }
                member.insert("entity".into(), Value::Object(entity));
                let mut period = json!({"start": date_of(s.match_time_ms)});
                if let Some(end) = consent_end_ms {
                    period["end"] = json!(date_of(*end));
                    b.valid_until = Some(b.valid_until.map_or(*end, |v: i64| v.max(*end)));
                }
                member.insert("period".into(), period);
            }
            _ => {
                entity.insert("reference".into(), json!(format!("#{patient_ref}")));
                member.insert("entity".into(), Value::Object(entity));
            }
        }
        let member = Value::Object(member);
        if b.seen.insert(member.to_string()) {
            b.members.push(member);
        }
    }

    let mut finish = |bucket: Bucket, id: String| -> Option<Value> {
        let b = buckets.remove(&bucket)?;
        Some(group(bucket, &id, b, s))
    };
    let matched = finish(Bucket::Matched, s.group_id.to_owned())
        .unwrap_or_else(|| group(Bucket::Matched, s.group_id, GroupBuilder::default(), s));
    ResultGroups {
        envelope_profile: s.profiles.envelope,
        matched,
        non_matched: finish(Bucket::NonMatched, format!("{}-nomatch", s.group_id)),
        consent_constrained: finish(
            Bucket::ConsentConstrained,
            format!("{}-consentconstraint", s.group_id),
        ),
    }
}

#[derive(Default)]
struct GroupBuilder {
    contained: Contained,
    members: Vec<Value>,
    seen: HashSet<String>,
    /// The latest consent end among the members (epoch ms).
    valid_until: Option<i64>,
}

fn group(bucket: Bucket, id: &str, b: GroupBuilder, s: &GroupSettings) -> Value {
    let (code, display) = bucket.code();
    let coding =
        json!({"coding": [{"system": s.profiles.result_system, "code": code, "display": display}]});
    let mut g = Map::new();
    g.insert("resourceType".into(), json!("Group"));
    g.insert("id".into(), json!(id));
    g.insert(
        "meta".into(),
        json!({"lastUpdated": crate::fhir::datetime::format_instant(s.match_time_ms), "profile": [bucket.profile(s.profiles)]}),
    );
    if !b.contained.resources.is_empty() {
        g.insert("contained".into(), Value::Array(b.contained.resources));
    }
    if let Some(r) = s.requester {
        g.insert(
            "identifier".into(),
            json!([{"system": r.system, "value": r.value}]),
        );
    }
    g.insert("type".into(), json!("person"));
    g.insert("actual".into(), json!(true));
    g.insert("code".into(), coding.clone());
    g.insert("name".into(), json!(bucket.title()));
    g.insert("quantity".into(), json!(b.members.len()));
    if let Some(us) = s.us {
        let mut reference = json!({"identifier": {"system": us.system, "value": us.value}});
        if let Some(d) = s.us_display {
            reference["display"] = json!(d);
        }
        g.insert("managingEntity".into(), reference);
    }
    // R4 Group.characteristic needs code, value[x] and exclude: without a known requester
    // there is no value, so no characteristic.
    if let Some(r) = s.requester {
        let mut period = json!({"start": date_of(s.match_time_ms)});
        if let Some(end) = b.valid_until {
            period["end"] = json!(date_of(end));
        }
        g.insert(
            "characteristic".into(),
            json!([{
                "code": coding,
                "valueReference": {"identifier": {"system": r.system, "value": r.value}},
                "exclude": false,
                "period": period,
            }]),
        );
    }
    if !b.members.is_empty() {
        g.insert("member".into(), Value::Array(b.members));
    }
    Value::Object(g)
}

/// The UTC calendar date (`YYYY-MM-DD`) of an instant.
fn date_of(ms: i64) -> String {
    let (y, m, d) = crate::fhir::datetime::civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Stores `group` (a new Group) as belonging to `ctx`'s organization (or client): payer and
/// provider callers then see it through `store::access`, nobody else of their kind does.
/// The Group and its ownership row are written in one transaction; writing the same Group
/// again (a resumed job) replaces it and keeps its owner.
pub async fn save_owned_group(
    store: &Store,
    ctx: &AccessContext,
    group: &Value,
) -> Result<WriteResult, FhirError> {
    let prepared = store.prepare(&group.to_string(), Some("Group"), IdRule::FromBody)?;
    let id = prepared.id.clone();
    let mut tx = store.db.begin().await?;
    let mut results = store
        .write_in(
            tx.as_mut(),
            vec![WriteOp::put(WriteKind::Update { if_match: None }, prepared)],
        )
        .await?;
    store.record_group_owner(tx.as_mut(), &id, ctx).await?;
    tx.commit().await?;
    results
        .pop()
        .ok_or_else(|| FhirError::internal("the Group write returned no result"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizing_strips_only_what_pdex_151a_names() {
        let p = json!({"resourceType": "Patient", "id": "1",
            "meta": {"versionId": "3", "lastUpdated": "2024-01-01T00:00:00Z", "security": [{"code": "R"}], "profile": ["p"]},
            "contained": [{"resourceType": "Organization", "id": "o"}],
            "identifier": [{"system": "s", "value": "v"}], "birthDate": "1970-01-01"});
        assert_eq!(
            sanitize_submitted(&p),
            json!({"resourceType": "Patient", "id": "1", "meta": {"profile": ["p"]},
                "identifier": [{"system": "s", "value": "v"}], "birthDate": "1970-01-01"})
        );
        let only_version = json!({"resourceType": "Patient", "meta": {"versionId": "1"}});
        assert_eq!(
            sanitize_submitted(&only_version),
            json!({"resourceType": "Patient"})
        );
    }

    #[test]
    fn contained_ids_stay_unique() {
        let mut c = Contained::default();
        let a = json!({"resourceType": "Patient", "id": "1", "gender": "female"});
        let b = json!({"resourceType": "Patient", "id": "1", "gender": "male"});
        assert_eq!(c.add(a.clone(), "x".into()), "1");
        assert_eq!(c.add(a, "x".into()), "1");
        assert_eq!(c.add(b.clone(), "x".into()), "1-2");
        assert_eq!(c.add(b, "x".into()), "1-2");
        assert_eq!(
            c.add(json!({"resourceType": "Patient"}), "member-7".into()),
            "member-7"
        );
        // a resource asking for an id already given as a suffix, and a third different "1"
        let own = json!({"resourceType": "Patient", "id": "1-2", "gender": "other"});
        assert_eq!(c.add(own, "x".into()), "1-2-2");
        let third = json!({"resourceType": "Patient", "id": "1", "gender": "unknown"});
        assert_eq!(c.add(third, "x".into()), "1-3");
        assert_eq!(c.resources.len(), 5);
        let ids: HashSet<&str> = c
            .resources
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        assert_eq!(ids.len(), 5);
    }

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(1_710_925_200_000), "2024-03-20");
        assert_eq!(date_of(-1), "1969-12-31");
    }
}
