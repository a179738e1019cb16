//! The profiles this server serves, per resource type, for the CapabilityStatement's
//! `rest.resource.supportedProfile` (FHIR R4 §5.1 CapabilityStatement; US Core and the PDex
//! kit read it): what `pdex synth` and the operations write in `meta.profile`, and the CARIN
//! Blue Button non-financial ("Basis") views that payers and providers receive.

const US_CORE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/";
const CARIN_BB: &str = "http://hl7.org/fhir/us/carin-bb/StructureDefinition/";
const HREX: &str = "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition/";
const PDEX: &str = "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/";

/// (resource type, [(canonical base, profile name)]).
const PROFILES: &[(&str, &[(&str, &str)])] = &[
    (
        "AllergyIntolerance",
        &[(US_CORE, "us-core-allergyintolerance")],
    ),
    ("CarePlan", &[(US_CORE, "us-core-careplan")]),
    ("CareTeam", &[(US_CORE, "us-core-careteam")]),
    (
        "Condition",
        &[
            (US_CORE, "us-core-condition"),
            (US_CORE, "us-core-condition-encounter-diagnosis"),
            (US_CORE, "us-core-condition-problems-health-concerns"),
        ],
    ),
    (
        "Coverage",
        &[(HREX, "hrex-coverage"), (CARIN_BB, "C4BB-Coverage")],
    ),
    (
        "Device",
        &[
            (US_CORE, "us-core-implantable-device"),
            (PDEX, "pdex-device"),
        ],
    ),
    (
        "DiagnosticReport",
        &[
            (US_CORE, "us-core-diagnosticreport-lab"),
            (US_CORE, "us-core-diagnosticreport-note"),
        ],
    ),
    (
        "DocumentReference",
        &[(US_CORE, "us-core-documentreference")],
    ),
    ("Encounter", &[(US_CORE, "us-core-encounter")]),
    (
        "ExplanationOfBenefit",
        &[
            (
                CARIN_BB,
                "C4BB-ExplanationOfBenefit-Inpatient-Institutional",
            ),
            (
                CARIN_BB,
                "C4BB-ExplanationOfBenefit-Outpatient-Institutional",
            ),
            (
                CARIN_BB,
                "C4BB-ExplanationOfBenefit-Professional-NonClinician",
            ),
            (CARIN_BB, "C4BB-ExplanationOfBenefit-Oral"),
            (CARIN_BB, "C4BB-ExplanationOfBenefit-Pharmacy"),
            (
                CARIN_BB,
                "C4BB-ExplanationOfBenefit-Inpatient-Institutional-Basis",
            ),
            (
                CARIN_BB,
                "C4BB-ExplanationOfBenefit-Outpatient-Institutional-Basis",
            ),
            (
                CARIN_BB,
                "C4BB-ExplanationOfBenefit-Professional-NonClinician-Basis",
            ),
            (CARIN_BB, "C4BB-ExplanationOfBenefit-Oral-Basis"),
            (CARIN_BB, "C4BB-ExplanationOfBenefit-Pharmacy-Basis"),
            (PDEX, "pdex-priorauthorization"),
        ],
    ),
    ("Goal", &[(US_CORE, "us-core-goal")]),
    (
        "Group",
        &[
            (PDEX, "pdex-member-match-group"),
            (PDEX, "pdex-member-no-match-group"),
            (PDEX, "pdex-member-opt-out"),
            (PDEX, "pdex-provider-group"),
            (PDEX, "pdex-treatment-relationship"),
        ],
    ),
    ("Immunization", &[(US_CORE, "us-core-immunization")]),
    ("Location", &[(US_CORE, "us-core-location")]),
    ("Medication", &[(US_CORE, "us-core-medication")]),
    ("MedicationDispense", &[(PDEX, "pdex-medicationdispense")]),
    (
        "MedicationRequest",
        &[(US_CORE, "us-core-medicationrequest")],
    ),
    (
        "Observation",
        &[
            (US_CORE, "us-core-observation-lab"),
            (US_CORE, "us-core-smokingstatus"),
            (US_CORE, "us-core-blood-pressure"),
            (US_CORE, "us-core-body-weight"),
            (US_CORE, "us-core-heart-rate"),
            (US_CORE, "pediatric-bmi-for-age"),
        ],
    ),
    (
        "Organization",
        &[
            (US_CORE, "us-core-organization"),
            (HREX, "hrex-organization"),
        ],
    ),
    (
        "Patient",
        &[
            (US_CORE, "us-core-patient"),
            (HREX, "hrex-patient-demographics"),
        ],
    ),
    ("Practitioner", &[(US_CORE, "us-core-practitioner")]),
    ("PractitionerRole", &[(US_CORE, "us-core-practitionerrole")]),
    ("Procedure", &[(US_CORE, "us-core-procedure")]),
    (
        "Provenance",
        &[(US_CORE, "us-core-provenance"), (PDEX, "pdex-provenance")],
    ),
];

/// The canonical URLs of the profiles served for `rtype` (empty for other types).
pub fn supported_profiles(rtype: &str) -> Vec<String> {
    PROFILES
        .iter()
        .find(|(t, _)| *t == rtype)
        .map(|(_, ps)| {
            ps.iter()
                .map(|(base, name)| format!("{base}{name}"))
                .collect()
        })
        .unwrap_or_default()
}
