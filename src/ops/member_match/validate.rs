//! Checking a `$member-match` request against `hrex-parameters-member-match-in` (closed
//! slices, the three resource profiles, us-core-15, hrex-pat-1, mm-6 references) and reading
//! what matching needs. Every failure is the decision flow's "bad bundle format" (422) with
//! a message naming the element.

use crate::consent::ConsentTerms;
use crate::consent::policy::{org_identifier, read_terms};
use crate::identity::OrgIdentifier;
use serde_json::Value;

/// A valid request, ready to match.
#[derive(Debug)]
pub struct MatchRequest {
    pub demographics: Demographics,
    /// `CoverageToMatch.identifier` of type MB: (system, value).
    pub member_ids: Vec<(Option<String>, String)>,
    pub subscriber_id: Option<String>,
    /// `CoverageToMatch.payor` logical identifiers.
    pub payors: Vec<OrgIdentifier>,
    /// The CoverageToLink as received (JSON text).
    pub coverage_to_link: Option<String>,
    /// The Consent as received, with its terms.
    pub consent: Option<(String, ConsentTerms)>,
}

/// The MemberPatient's demographics, normalised for comparison.
#[derive(Debug, Clone)]
pub struct Demographics {
    /// One entry per `name`: (normalised family, normalised given names in order).
    pub names: Vec<(String, Vec<String>)>,
    pub birth_date: String,
    pub gender: Option<String>,
    pub birth_sex: Option<String>,
}

impl Demographics {
    /// A stable key for brute-force tracking (HRex mm-7): the first name and birth date.
    pub fn key(&self) -> String {
        let (family, given) = self.names.first().cloned().unwrap_or_default();
        format!(
            "{family}|{}|{}",
            given.first().cloned().unwrap_or_default(),
            self.birth_date
        )
    }
}

const SLICES: [&str; 4] = [
    "MemberPatient",
    "CoverageToMatch",
    "CoverageToLink",
    "Consent",
];
const BIRTH_SEX: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex";
const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// Reads and checks the request Parameters.
pub fn read_request(params: &Value) -> Result<MatchRequest, String> {
    if params["resourceType"] != "Parameters" {
        return Err(
            "the body must be a Parameters resource (hrex-parameters-member-match-in)".into(),
        );
    }
    let list = params["parameter"]
        .as_array()
        .ok_or("Parameters.parameter is required")?;
    let mut found: [Option<&Value>; 4] = [None; 4];
    for p in list {
        let name = p["name"].as_str().unwrap_or_default();
        let Some(slot) = SLICES.iter().position(|s| *s == name) else {
            return Err(format!(
                "parameter {name:?} is not allowed: the slicing is closed to MemberPatient, CoverageToMatch, CoverageToLink and Consent"
            ));
        };
        if found[slot].is_some() {
            return Err(format!("parameter {name} appears more than once (max 1)"));
        }
        if p.as_object()
            .is_some_and(|o| o.keys().any(|k| k.starts_with("value") || k == "part"))
        {
            return Err(format!(
                "parameter {name} must carry a resource, not a value or parts"
            ));
        }
        let resource = p
            .get("resource")
            .ok_or(format!("parameter {name} has no resource"))?;
        let expected = if name == "MemberPatient" {
            "Patient"
        } else if name == "Consent" {
            "Consent"
        } else {
            "Coverage"
        };
        if resource["resourceType"] != expected {
            return Err(format!("parameter {name} must hold a {expected}"));
        }
        found[slot] = Some(resource);
    }
    let patient = found[0].ok_or("parameter MemberPatient is required (1..1)")?;
    let coverage = found[1].ok_or("parameter CoverageToMatch is required (1..1)")?;
    let patient_id = patient["id"].as_str();
    let demographics = read_patient(patient)?;
    read_coverage(coverage, "CoverageToMatch", patient_id)?;
    if let Some(link) = found[2] {
        read_coverage(link, "CoverageToLink", patient_id)?;
    }
    let consent = match found[3] {
        Some(c) => {
            check_member_reference(&c["patient"], "Consent.patient", patient_id)?;
            Some((c.to_string(), read_terms(c)?))
        }
        None => None,
    };
    let member_ids = coverage["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| has_code(&i["type"], V2_0203, "MB"))
        .filter_map(|i| {
            Some((
                i["system"].as_str().map(str::to_owned),
                i["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let payors = coverage["payor"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(org_identifier)
        .collect();
    Ok(MatchRequest {
        demographics,
        member_ids,
        subscriber_id: coverage["subscriberId"].as_str().map(str::to_owned),
        payors,
        coverage_to_link: found[2].map(Value::to_string),
        consent,
    })
}

/// `hrex-patient-demographics`: name (family, given) 1..*, birthDate 1..1, hrex-pat-1.
fn read_patient(p: &Value) -> Result<Demographics, String> {
    let mut names = Vec::new();
    for n in p["name"].as_array().into_iter().flatten() {
        let family = n["family"]
            .as_str()
            .ok_or("MemberPatient.name.family is required (hrex-patient-demographics)")?;
        let given: Vec<String> = n["given"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .flat_map(name_tokens)
            .collect();
        if given.is_empty() {
            return Err("MemberPatient.name.given is required (hrex-patient-demographics)".into());
        }
        names.push((normalize_family(family), given));
    }
    if names.is_empty() {
        return Err("MemberPatient.name is required (hrex-patient-demographics)".into());
    }
    let birth_date = p["birthDate"]
        .as_str()
        .ok_or("MemberPatient.birthDate is required (hrex-patient-demographics)")?;
    if birth_date.len() != 10 || crate::fhir::datetime::parse(birth_date).is_none() {
        return Err("MemberPatient.birthDate must be a full date (YYYY-MM-DD) to match on".into());
    }
    let gender = p["gender"].as_str().map(str::to_owned);
    if let Some(g) = &gender
        && !matches!(g.as_str(), "male" | "female" | "other" | "unknown")
    {
        return Err(format!(
            "MemberPatient.gender {g:?} is not an administrative-gender code"
        ));
    }
    let birth_sex = birth_sex(p);
    if gender.is_none() && birth_sex.is_none() {
        return Err(
            "hrex-pat-1: MemberPatient needs gender or the us-core-birthsex extension".into(),
        );
    }
    Ok(Demographics {
        names,
        birth_date: birth_date.to_owned(),
        gender,
        birth_sex,
    })
}

/// The `us-core-birthsex` code of a Patient.
pub fn birth_sex(p: &Value) -> Option<String> {
    p["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"] == BIRTH_SEX)
        .and_then(|e| e["valueCode"].as_str())
        .map(str::to_owned)
}

/// `hrex-coverage`: us-core-15, beneficiary → MemberPatient (mm-6), relationship, payor.
fn read_coverage(c: &Value, slot: &str, patient_id: Option<&str>) -> Result<(), String> {
    let member_id = c["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|i| has_code(&i["type"], V2_0203, "MB") && i["value"].is_string());
    if !member_id && !c["subscriberId"].is_string() {
        return Err(format!(
            "us-core-15: {slot} needs a member id (identifier of type MB) or a subscriberId"
        ));
    }
    if !c["status"].is_string() {
        return Err(format!("{slot}.status is required"));
    }
    check_member_reference(
        &c["beneficiary"],
        &format!("{slot}.beneficiary"),
        patient_id,
    )?;
    if !c["relationship"].is_object() {
        return Err(format!("{slot}.relationship is required (hrex-coverage)"));
    }
    if c["payor"].as_array().is_none_or(|p| p.is_empty()) {
        return Err(format!("{slot}.payor is required (hrex-coverage)"));
    }
    Ok(())
}

/// HRex mm-6: references to the member SHALL be local and resolve to MemberPatient by id.
/// A local `Patient/{id}` must name MemberPatient's id. Absolute Patient URLs — which the
/// HRex examples themselves use (ig-digest §15.13) — are accepted: the resource they stand for
/// travels in the same Parameters and cannot mean anyone else.
fn check_member_reference(r: &Value, at: &str, patient_id: Option<&str>) -> Result<(), String> {
    let reference = r["reference"]
        .as_str()
        .ok_or(format!("{at} must reference the MemberPatient"))?;
    if reference.starts_with("http://") || reference.starts_with("https://") {
        if reference.contains("/Patient/") {
            return Ok(());
        }
        return Err(format!("{at} {reference:?} does not reference a Patient"));
    }
    match reference.split_once('/') {
        Some(("Patient", id)) if Some(id) == patient_id => Ok(()),
        Some(("Patient", id)) => Err(format!(
            "mm-6: {at} references Patient/{id}, which is not the MemberPatient ({})",
            patient_id.map_or("which has no id".to_owned(), |p| format!("Patient/{p}"))
        )),
        _ => Err(format!(
            "mm-6: {at} {reference:?} must be a local reference to the MemberPatient"
        )),
    }
}

fn has_code(concept: &Value, system: &str, code: &str) -> bool {
    concept["coding"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["system"] == system && c["code"] == code)
    })
}

/// Name suffixes dropped before comparing (they are often typed into family or given).
const SUFFIXES: &[&str] = &[
    "jr", "sr", "ii", "iii", "iv", "v", "2nd", "3rd", "md", "phd", "esq",
];

/// A family name for comparison: case, accents and punctuation folded
/// (`fhir::text::normalize`), trailing suffixes dropped, spaces removed ("Müller-Ramírez" =
/// "muller ramirez" = "MULLERRAMIREZ").
pub fn normalize_family(family: &str) -> String {
    let norm = crate::fhir::text::normalize(family);
    let mut tokens: Vec<&str> = norm.split(' ').filter(|t| !t.is_empty()).collect();
    while tokens.len() > 1 && tokens.last().is_some_and(|t| SUFFIXES.contains(t)) {
        tokens.pop();
    }
    tokens.concat()
}

/// Given names as comparison tokens: "Anne-Marie" is one name ("annemarie"), "Patricia Ann"
/// typed into one `given` is two; suffixes dropped.
pub fn name_tokens(given: &str) -> Vec<String> {
    // Hyphens join a name; spaces separate names.
    let joined = given.replace(['-', '\u{2010}', '\u{2011}'], "");
    crate::fhir::text::normalize(&joined)
        .split(' ')
        .filter(|t| !t.is_empty() && !SUFFIXES.contains(t))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn example() -> Value {
        serde_json::from_str(include_str!("../../../tests/fixtures/member-match-in.json")).unwrap()
    }

    #[test]
    fn the_hrex_example_is_valid() {
        let r = read_request(&example()).unwrap();
        assert_eq!(
            r.member_ids,
            vec![(
                Some("http://example.org/old-payer".into()),
                "DH10001235".into()
            )]
        );
        assert_eq!(
            r.demographics.names[0],
            ("person".into(), vec!["patricia".into(), "ann".into()])
        );
        assert!(r.consent.is_some());
        assert!(r.coverage_to_link.is_some());
        assert_eq!(r.payors[0].value, "9876543210");
    }

    #[test]
    fn profile_violations_name_the_element() {
        let mut p = example();
        p["parameter"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "Extra", "valueString": "x"}));
        assert!(read_request(&p).unwrap_err().contains("closed"));

        let mut p = example();
        p["parameter"].as_array_mut().unwrap().remove(1);
        assert!(
            read_request(&p)
                .unwrap_err()
                .contains("CoverageToMatch is required")
        );

        let mut p = example();
        let cov = &mut p["parameter"][1]["resource"];
        cov.as_object_mut().unwrap().remove("identifier");
        assert!(read_request(&p).unwrap_err().contains("us-core-15"));

        let mut p = example();
        p["parameter"][0]["resource"]
            .as_object_mut()
            .unwrap()
            .remove("gender");
        assert!(read_request(&p).unwrap_err().contains("hrex-pat-1"));

        let mut p = example();
        p["parameter"][1]["resource"]["beneficiary"] = json!({"reference": "Patient/2"});
        assert!(read_request(&p).unwrap_err().contains("mm-6"));

        let mut p = example();
        p["parameter"][0]["resource"]
            .as_object_mut()
            .unwrap()
            .remove("birthDate");
        assert!(read_request(&p).unwrap_err().contains("birthDate"));

        let mut p = example();
        p["parameter"][3]["resource"]["policy"] = json!([{"uri": "http://x/y"}]);
        assert!(read_request(&p).unwrap_err().contains("value set"));
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(normalize_family("Müller-Ramírez"), "mullerramirez");
        assert_eq!(normalize_family("MULLER RAMIREZ"), "mullerramirez");
        assert_eq!(normalize_family("O'Brien Jr."), "obrien");
        assert_eq!(name_tokens("Anne-Marie"), vec!["annemarie"]);
        assert_eq!(name_tokens("José Luis"), vec!["jose", "luis"]);
        assert_eq!(name_tokens("Zoë"), vec!["zoe"]);
    }
}
