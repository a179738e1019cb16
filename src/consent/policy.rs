//! Reading an HRex Consent (`hrex-consent`) into the terms we evaluate, and the PDex
//! "Can Payer Comply with Consent Request?" decision (§pdex-203/207, the single-member
//! consent decision flow). Pure functions: no database, no clock.

use crate::identity::OrgIdentifier;
use serde_json::Value;

/// HRex consent policy: everything, sensitive data included.
pub const POLICY_SENSITIVE: &str =
    "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition-hrex-consent.html#sensitive";
/// HRex consent policy: only data not considered sensitive under state and federal law.
pub const POLICY_REGULAR: &str =
    "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition-hrex-consent.html#regular";

const ROLE_SOURCE: (&str, &str) = (
    "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
    "performer",
);
const ROLE_RECIPIENT: (&str, &str) = (
    "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
    "IRCP",
);

/// The policy a consent grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `#regular`: non-sensitive data only.
    Regular,
    /// `#sensitive`: all data.
    Sensitive,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Regular => "regular",
            Policy::Sensitive => "sensitive",
        }
    }
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "regular" => Some(Policy::Regular),
            "sensitive" => Some(Policy::Sensitive),
            _ => None,
        }
    }
}

/// What we evaluate from a Consent (PDex "Evaluation of Consent": identity, policy, period,
/// requesting payer).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentTerms {
    pub policy: Policy,
    /// `provision.period`, epoch ms, both ends inclusive (a date covers its whole day).
    pub period_start: i64,
    pub period_end: i64,
    /// `provision.actor` with role `performer`: who releases the data (must include us, HRex mm-1).
    pub sources: Vec<OrgIdentifier>,
    /// `provision.actor` with role `IRCP`: who receives it (must include the requester).
    pub recipients: Vec<OrgIdentifier>,
    /// `sourceReference.reference`: the signed consent document (evidence for audit only).
    pub source_reference: Option<String>,
}

/// Reads the terms of an `hrex-consent`. `Err` says which element breaks the profile (the
/// decision flow's "bad bundle format").
pub fn read_terms(consent: &Value) -> Result<ConsentTerms, String> {
    if consent["status"] != "active" {
        return Err("Consent.status must be 'active' (hrex-consent)".into());
    }
    if !has_coding(
        &consent["scope"],
        "http://terminology.hl7.org/CodeSystem/consentscope",
        "patient-privacy",
    ) {
        return Err("Consent.scope must be consentscope#patient-privacy (hrex-consent)".into());
    }
    let disclosure = consent["category"].as_array().is_some_and(|cats| {
        cats.iter().any(|c| {
            has_coding(
                c,
                "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "IDSCL",
            )
        })
    });
    if !disclosure {
        return Err("Consent.category must include v3-ActCode#IDSCL (hrex-consent)".into());
    }
    if consent["patient"]["reference"].as_str().is_none() {
        return Err("Consent.patient must reference the MemberPatient (hrex-consent)".into());
    }
    if consent["performer"].as_array().is_none_or(|p| p.len() != 1) {
        return Err("Consent.performer must name exactly one party (hrex-consent)".into());
    }
    let source_reference = consent["sourceReference"]["reference"]
        .as_str()
        .map(str::to_owned);
    if consent.get("sourceReference").is_none() {
        return Err(
            "Consent.sourceReference (the signed consent document) is required (hrex-consent)"
                .into(),
        );
    }
    let policies: Vec<&str> = consent["policy"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["uri"].as_str())
        .collect();
    let policy = match policies.as_slice() {
        [POLICY_SENSITIVE] => Policy::Sensitive,
        [POLICY_REGULAR] => Policy::Regular,
        [] => {
            return Err(
                "Consent.policy.uri is required: #regular or #sensitive (hrex-consent)".into(),
            );
        }
        [other] => {
            return Err(format!(
                "Consent.policy.uri {other:?} is not in the hrex-consent-policy value set (#regular, #sensitive)"
            ));
        }
        _ => return Err("Consent.policy must hold exactly one HRex policy".into()),
    };
    let provision = &consent["provision"];
    if provision["type"] != "permit" {
        return Err("Consent.provision.type must be 'permit' (hrex-consent)".into());
    }
    let disclose = provision["action"].as_array().is_some_and(|a| {
        a.iter().any(|c| {
            has_coding(
                c,
                "http://terminology.hl7.org/CodeSystem/consentaction",
                "disclose",
            )
        })
    });
    if !disclose {
        return Err(
            "Consent.provision.action must be consentaction#disclose (hrex-consent)".into(),
        );
    }
    for forbidden in [
        "securityLabel",
        "purpose",
        "class",
        "code",
        "dataPeriod",
        "data",
        "provision",
    ] {
        if provision.get(forbidden).is_some() {
            return Err(format!(
                "Consent.provision.{forbidden} is not allowed: HRex consent rules are expressed solely in policy"
            ));
        }
    }
    let (Some(start), Some(end)) = (
        provision["period"]["start"].as_str(),
        provision["period"]["end"].as_str(),
    ) else {
        return Err("Consent.provision.period needs both start and end (hrex-consent)".into());
    };
    let (Some(start), Some(end)) = (
        crate::fhir::datetime::parse(start),
        crate::fhir::datetime::parse(end),
    ) else {
        return Err("Consent.provision.period start/end are not FHIR dateTimes".into());
    };
    if end.high < start.low {
        return Err("Consent.provision.period ends before it starts".into());
    }
    let mut sources = Vec::new();
    let mut recipients = Vec::new();
    for actor in provision["actor"].as_array().into_iter().flatten() {
        let role = &actor["role"];
        let org = org_identifier(&actor["reference"]);
        if has_coding(role, ROLE_SOURCE.0, ROLE_SOURCE.1) {
            sources.push(org.ok_or("a source actor (performer) must identify its organization by reference.identifier system and value")?);
        } else if has_coding(role, ROLE_RECIPIENT.0, ROLE_RECIPIENT.1) {
            recipients.push(org.ok_or("a recipient actor (IRCP) must identify its organization by reference.identifier system and value")?);
        }
    }
    if sources.is_empty() {
        return Err(
            "Consent.provision.actor needs a source (role performer) (hrex-consent)".into(),
        );
    }
    if recipients.is_empty() {
        return Err("Consent.provision.actor needs a recipient (role IRCP) (hrex-consent)".into());
    }
    Ok(ConsentTerms {
        policy,
        period_start: start.low,
        period_end: end.high,
        sources,
        recipients,
        source_reference,
    })
}

/// Why we cannot comply with a consent that is well formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constraint {
    NotYetValid,
    Expired,
    /// We are not among the source actors (HRex mm-1).
    NotSource,
    /// The requesting organization is not among the recipients.
    NotRecipient,
    /// `#regular` asks us to hold back sensitive data, the member has some and we cannot
    /// separate it (decision flow: "Sensitive data is NOT tagged").
    CannotSegment,
}

impl Constraint {
    /// The OperationOutcome text (names the constraint, never the member).
    pub fn describe(self) -> &'static str {
        match self {
            Constraint::NotYetValid => {
                "consent constraint: the consent period (Consent.provision.period) has not begun"
            }
            Constraint::Expired => {
                "consent constraint: the consent period (Consent.provision.period) has ended"
            }
            Constraint::NotSource => {
                "consent constraint: this health plan is not a source (performer) actor of the consent"
            }
            Constraint::NotRecipient => {
                "consent constraint: the requesting organization is not a recipient (IRCP) actor of the consent"
            }
            Constraint::CannotSegment => {
                "consent constraint: the #regular (non-sensitive only) policy cannot be complied with because this plan cannot separate the member's sensitive data"
            }
        }
    }
}

/// What we know when deciding whether we can comply.
pub struct ComplianceCheck<'a> {
    pub us: &'a [OrgIdentifier],
    pub requester: &'a OrgIdentifier,
    pub now_ms: i64,
    pub segmentation: bool,
    pub member_has_sensitive: bool,
}

/// The decision flow's "Can Payer Comply with Consent Request?". `Ok(allow_sensitive)`.
pub fn can_comply(terms: &ConsentTerms, check: &ComplianceCheck) -> Result<bool, Constraint> {
    if check.now_ms < terms.period_start {
        return Err(Constraint::NotYetValid);
    }
    if check.now_ms > terms.period_end {
        return Err(Constraint::Expired);
    }
    if !terms.sources.iter().any(|s| check.us.contains(s)) {
        return Err(Constraint::NotSource);
    }
    if !terms.recipients.contains(check.requester) {
        return Err(Constraint::NotRecipient);
    }
    policy_allowance(terms.policy, check.segmentation, check.member_has_sensitive)
}

/// The sensitivity allowance a policy yields, or why it cannot be honoured.
pub fn policy_allowance(
    policy: Policy,
    segmentation: bool,
    member_has_sensitive: bool,
) -> Result<bool, Constraint> {
    match policy {
        // "Sensitive data is excluded" from nothing: everything may go.
        Policy::Sensitive => Ok(true),
        // Sensitive data is tagged and we filter it, or there is none to filter.
        Policy::Regular if segmentation || !member_has_sensitive => Ok(false),
        Policy::Regular => Err(Constraint::CannotSegment),
    }
}

/// An organization named by a logical reference (`reference.identifier`).
pub fn org_identifier(reference: &Value) -> Option<OrgIdentifier> {
    let id = &reference["identifier"];
    Some(OrgIdentifier {
        system: id["system"].as_str()?.to_owned(),
        value: id["value"].as_str()?.to_owned(),
    })
}

fn has_coding(concept: &Value, system: &str, code: &str) -> bool {
    concept["coding"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["system"] == system && c["code"] == code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn org(v: &str) -> OrgIdentifier {
        OrgIdentifier {
            system: "http://hl7.org/fhir/sid/us-npi".into(),
            value: v.into(),
        }
    }

    fn example() -> Value {
        let text = include_str!("../../tests/fixtures/member-match-in.json");
        let p: Value = serde_json::from_str(text).unwrap();
        p["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Consent")
            .unwrap()["resource"]
            .clone()
    }

    #[test]
    fn reads_the_hrex_example() {
        let t = read_terms(&example()).unwrap();
        assert_eq!(t.policy, Policy::Regular);
        assert_eq!(t.sources, vec![org("9876543210")]);
        assert_eq!(t.recipients, vec![org("0123456789")]);
        assert_eq!(
            t.source_reference.as_deref(),
            Some("http://example.org/DocumentReference/someconsent")
        );
        // 2022-01-31 covers its whole day
        assert_eq!(
            t.period_end,
            crate::fhir::datetime::parse("2022-02-01T00:00:00Z")
                .unwrap()
                .low
                - 1
        );
    }

    #[test]
    fn profile_violations_are_reported() {
        let mut c = example();
        c["policy"] = json!([{"uri": "http://example.org/other"}]);
        assert!(read_terms(&c).unwrap_err().contains("value set"));
        let mut c = example();
        c["provision"]["period"] = json!({"start": "2022-01-01"});
        assert!(read_terms(&c).unwrap_err().contains("start and end"));
        let mut c = example();
        c["status"] = json!("draft");
        assert!(read_terms(&c).is_err());
        let mut c = example();
        c["provision"]["dataPeriod"] = json!({"start": "2020"});
        assert!(read_terms(&c).unwrap_err().contains("dataPeriod"));
    }

    #[test]
    fn the_decision_flow() {
        let t = read_terms(&example()).unwrap();
        let us = [org("9876543210")];
        let requester = org("0123456789");
        let inside = crate::fhir::datetime::parse("2022-01-15").unwrap().low;
        let check = |now_ms, segmentation, member_has_sensitive, requester: &OrgIdentifier| {
            can_comply(
                &t,
                &ComplianceCheck {
                    us: &us,
                    requester,
                    now_ms,
                    segmentation,
                    member_has_sensitive,
                },
            )
        };
        assert_eq!(check(inside, true, true, &requester), Ok(false));
        assert_eq!(check(inside, false, false, &requester), Ok(false));
        assert_eq!(
            check(inside, false, true, &requester),
            Err(Constraint::CannotSegment)
        );
        assert_eq!(
            check(t.period_end + 1, true, false, &requester),
            Err(Constraint::Expired)
        );
        assert_eq!(
            check(t.period_start - 1, true, false, &requester),
            Err(Constraint::NotYetValid)
        );
        assert_eq!(
            check(inside, true, false, &org("1111111111")),
            Err(Constraint::NotRecipient)
        );
        let other_us = [org("5555555555")];
        assert_eq!(
            can_comply(
                &t,
                &ComplianceCheck {
                    us: &other_us,
                    requester: &requester,
                    now_ms: inside,
                    segmentation: true,
                    member_has_sensitive: false
                }
            ),
            Err(Constraint::NotSource)
        );
        assert_eq!(policy_allowance(Policy::Sensitive, false, true), Ok(true));
    }
}
