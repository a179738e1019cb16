//! The shared, non-member resources, written first and identical for every seed: our payer and
//! the other payers, provider organizations, labs, pharmacies, a dental office, their Locations,
//! Practitioners (Luhn-valid NPIs), PractitionerRoles, and the Medication catalogue.
//! Members reference these by the ids exposed here.

use serde_json::{Value, json};

use super::sink::Sink;
use super::tables::{self, RXNORM};

/// Identifier systems of our payer (documented in `members.json` and the README).
pub const MEMBER_ID_SYSTEM: &str = "https://pdex.example.org/fhir/sid/member-id";
pub const UMB_SYSTEM: &str = "https://pdex.example.org/fhir/sid/umb";
pub const SUBSCRIBER_ID_SYSTEM: &str = "https://pdex.example.org/fhir/sid/subscriber-id";
pub const CLAIM_ID_SYSTEM: &str = "https://pdex.example.org/fhir/sid/claim-id";
pub const PRIOR_AUTH_ID_SYSTEM: &str = "https://pdex.example.org/fhir/sid/prior-auth-id";
pub const GROUP_ID_SYSTEM: &str = "https://pdex.example.org/fhir/identifier";
pub const NPI_SYSTEM: &str = "http://hl7.org/fhir/sid/us-npi";
pub const NAIC_SYSTEM: &str = "urn:oid:2.16.840.1.113883.6.300";
pub const TIN_SYSTEM: &str = "urn:oid:2.16.840.1.113883.4.4";
/// The member id system of the HRex `$member-match` example ("Old Health Plan").
pub const IG_OLD_PAYER_SYSTEM: &str = "http://example.org/old-payer";

/// Our payer. Name and NPI are those of the "Old Health Plan" in the HRex member-match example,
/// so that the IG's `CoverageToMatch` names us. (That NPI comes from the IG and, unlike every
/// NPI we mint, does not carry a valid Luhn check digit.)
pub const PAYER_ORG: &str = "org-payer";
pub const PAYER_NAME: &str = "Old Health Plan";
pub const PAYER_NPI: &str = "9876543210";
pub const PAYER_NAIC: &str = "98765";

/// Other payers ("new payers" that request data): (id, name, NPI, NAIC).
pub const OTHER_PAYERS: &[(&str, &str, &str, &str)] = &[
    ("org-payer-new", "New Health Plan", "0123456789", "12345"),
    (
        "org-payer-bluelake",
        "Blue Lake Health Insurance",
        "",
        "23456",
    ),
    ("org-payer-prairie", "Prairie Mutual Health", "", "34567"),
    ("org-payer-keystone", "Keystone Care Plan", "", "45678"),
];

/// Provider organizations: (id, name, NUCC specialty code, specialty display, city index).
pub const PROVIDER_ORGS: &[(&str, &str, &str, &str, usize)] = &[
    (
        "org-lakeside",
        "Lakeside Family Medicine",
        "207Q00000X",
        "Family Medicine",
        0,
    ),
    (
        "org-riverside",
        "Riverside Internal Medicine",
        "207R00000X",
        "Internal Medicine",
        1,
    ),
    (
        "org-stmary",
        "St. Mary's Hospital",
        "207P00000X",
        "Emergency Medicine",
        0,
    ),
    (
        "org-northside",
        "Northside Pediatrics",
        "208000000X",
        "Pediatrics",
        2,
    ),
    (
        "org-summit",
        "Summit Orthopedics",
        "207X00000X",
        "Orthopaedic Surgery",
        3,
    ),
    (
        "org-harbor",
        "Harbor Behavioral Health",
        "2084P0800X",
        "Psychiatry",
        4,
    ),
    (
        "org-valley",
        "Valley Women's Health",
        "207V00000X",
        "Obstetrics & Gynecology",
        5,
    ),
    (
        "org-metro",
        "Metro Cardiology",
        "207RC0000X",
        "Cardiovascular Disease",
        6,
    ),
];
pub const ORG_HOSPITAL: usize = 2;
pub const ORG_PEDIATRICS: usize = 3;
pub const ORG_ORTHO: usize = 4;
pub const ORG_BEHAVIORAL: usize = 5;
pub const ORG_WOMEN: usize = 6;
pub const ORG_CARDIO: usize = 7;
/// Primary care organizations for adults (children go to pediatrics).
pub const PCP_ORGS: &[usize] = &[0, 1];

pub const LABS: &[(&str, &str)] = &[
    ("org-lab-central", "Central Clinical Laboratory"),
    ("org-lab-regional", "Regional Reference Lab"),
];
pub const PHARMACIES: &[(&str, &str)] = &[
    ("org-pharm-corner", "Corner Pharmacy"),
    ("org-pharm-main", "Main Street Drug"),
    ("org-pharm-mail", "HomeDelivery Rx Mail Order Pharmacy"),
];
pub const DENTAL_ORG: (&str, &str) = ("org-dental-bright", "Bright Smile Dental");

/// Practitioners per provider organization.
pub const PRACTITIONERS_PER_ORG: usize = 3;

const PRACTITIONER_NAMES: &[(&str, &str, &str)] = &[
    ("Alvarez", "Elena", "female"),
    ("Brooks", "Samuel", "male"),
    ("Chen", "Lin", "female"),
    ("Dubois", "Marc", "male"),
    ("Evans", "Rachel", "female"),
    ("Fischer", "Jonas", "male"),
    ("Gupta", "Anjali", "female"),
    ("Hughes", "Patrick", "male"),
    ("Ibrahim", "Layla", "female"),
    ("Jensen", "Erik", "male"),
    ("Kowalski", "Anna", "female"),
    ("Lee", "Daniel", "male"),
    ("Moreno", "Lucía", "female"),
    ("Nwosu", "Chidi", "male"),
    ("Olsen", "Ingrid", "female"),
    ("Park", "Min-jun", "male"),
    ("Quinn", "Siobhan", "female"),
    ("Rossi", "Marco", "male"),
    ("Sato", "Haruka", "female"),
    ("Turner", "Marcus", "male"),
    ("Ueda", "Kaori", "female"),
    ("Vargas", "Diego", "male"),
    ("Weiss", "Miriam", "female"),
    ("Young", "Brandon", "male"),
];

/// Luhn check digit of an NPI (computed over the `80840` prefix + 9 digits).
pub fn npi_check_digit(nine: &str) -> u32 {
    let digits = format!("80840{nine}");
    let mut sum = 0;
    for (i, c) in digits.chars().rev().enumerate() {
        let mut d = c.to_digit(10).expect("digits only");
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    (10 - sum % 10) % 10
}

/// A valid-format NPI from a number (type 1 starts with 1, type 2 with 2).
pub fn npi(kind: u32, n: u64) -> String {
    let nine = format!("{kind}{:08}", (n * 7_919 + 104_729) % 100_000_000);
    format!("{nine}{}", npi_check_digit(&nine))
}

pub fn practitioner_id(i: usize) -> String {
    format!("pr-{:03}", i + 1)
}
pub fn role_id(i: usize) -> String {
    format!("prrole-{:03}", i + 1)
}
pub fn location_id(org: &str) -> String {
    format!("loc-{}", org.trim_start_matches("org-"))
}
pub fn medication_id(i: usize) -> String {
    format!("med-{}", tables::MEDICATIONS[i].0)
}
/// Organization index of practitioner `i`.
pub fn practitioner_org(i: usize) -> usize {
    i / PRACTITIONERS_PER_ORG
}
pub fn practitioner_display(i: usize) -> String {
    let (f, g, _) = PRACTITIONER_NAMES[i];
    format!("Dr. {g} {f}")
}
pub fn practitioner_npi(i: usize) -> String {
    npi(1, i as u64 + 1)
}
pub fn org_npi(i: usize) -> String {
    npi(2, 1_000 + i as u64)
}
pub fn practitioner_count() -> usize {
    PROVIDER_ORGS.len() * PRACTITIONERS_PER_ORG
}

/// lastUpdated of shared resources (fixed).
const POOL_UPDATED: &str = "2026-01-15T08:00:00Z";

fn meta(profile: &str) -> Value {
    json!({ "lastUpdated": POOL_UPDATED, "profile": [profile] })
}

fn address(city: usize, n: usize) -> Value {
    let (c, st, zip) = tables::CITIES[city % tables::CITIES.len()];
    json!([{ "use": "work", "line": [format!("{} {}", 100 + n * 17, tables::STREETS[n % tables::STREETS.len()])],
        "city": c, "state": st, "postalCode": format!("{zip}{:02}", 10 + n), "country": "US" }])
}

fn phone(n: usize) -> Value {
    json!([{ "system": "phone", "value": format!("555-01{:02}", n % 100), "use": "work" }])
}

fn org_type(code: &str, display: &str) -> Value {
    json!([{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": code, "display": display }] }])
}

fn naic(value: &str) -> Value {
    json!({ "type": { "coding": [{ "system": "http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PDexIdentifierType", "code": "naiccode", "display": "NAIC Code" }] },
        "system": NAIC_SYSTEM, "value": value })
}

fn npi_ident(value: &str) -> Value {
    json!({ "system": NPI_SYSTEM, "value": value })
}

/// Our payer's Organization reference with its display.
pub fn payer_ref() -> Value {
    json!({ "reference": format!("Organization/{PAYER_ORG}"), "display": PAYER_NAME })
}

/// Writes the shared resources.
pub fn write(sink: &mut Sink) -> anyhow::Result<()> {
    let us_core_org = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-organization";
    let mut n = 0usize;
    sink.put("Organization", &json!({
        "resourceType": "Organization", "id": PAYER_ORG,
        "meta": meta("http://hl7.org/fhir/us/davinci-hrex/StructureDefinition/hrex-organization"),
        "identifier": [npi_ident(PAYER_NPI), naic(PAYER_NAIC),
            { "system": TIN_SYSTEM, "value": "91-1234567" }],
        "active": true, "type": org_type("pay", "Payer"), "name": PAYER_NAME,
        "alias": ["OHP"], "telecom": [{ "system": "phone", "value": "800-555-0100", "use": "work" },
            { "system": "url", "value": "https://pdex.example.org" }],
        "address": address(0, 0),
    }))?;
    for (i, (id, name, npi_v, naic_v)) in OTHER_PAYERS.iter().enumerate() {
        n += 1;
        let npi_v = if npi_v.is_empty() {
            npi(2, 9_000 + i as u64)
        } else {
            npi_v.to_string()
        };
        sink.put("Organization", &json!({
            "resourceType": "Organization", "id": id,
            "meta": meta("http://hl7.org/fhir/us/davinci-hrex/StructureDefinition/hrex-organization"),
            "identifier": [npi_ident(&npi_v), naic(naic_v)],
            "active": true, "type": org_type("pay", "Payer"), "name": name,
            "telecom": phone(n), "address": address(i + 3, n),
        }))?;
    }
    for (i, (id, name, _, _, city)) in PROVIDER_ORGS.iter().enumerate() {
        n += 1;
        sink.put("Organization", &json!({
            "resourceType": "Organization", "id": id, "meta": meta(us_core_org),
            "identifier": [npi_ident(&org_npi(i)), { "system": TIN_SYSTEM, "value": format!("{:02}-{:07}", 30 + i, 1_000_000 + i * 4_321) }],
            "active": true, "type": org_type("prov", "Healthcare Provider"), "name": name,
            "telecom": phone(n), "address": address(*city, n),
        }))?;
    }
    let others: Vec<(&str, &str, &str, &str)> = LABS
        .iter()
        .map(|(id, name)| (*id, *name, "other", "Other"))
        .chain(
            PHARMACIES
                .iter()
                .map(|(id, name)| (*id, *name, "prov", "Healthcare Provider")),
        )
        .chain(std::iter::once((
            DENTAL_ORG.0,
            DENTAL_ORG.1,
            "prov",
            "Healthcare Provider",
        )))
        .collect();
    for (i, (id, name, code, display)) in others.iter().enumerate() {
        n += 1;
        sink.put(
            "Organization",
            &json!({
                "resourceType": "Organization", "id": id, "meta": meta(us_core_org),
                "identifier": [npi_ident(&org_npi(100 + i))],
                "active": true, "type": org_type(code, display), "name": name,
                "telecom": phone(n), "address": address(i, n),
            }),
        )?;
    }
    // Locations: one per provider organization, lab, pharmacy and the dental office.
    let loc_orgs: Vec<(&str, &str, usize)> = PROVIDER_ORGS
        .iter()
        .map(|(id, name, _, _, city)| (*id, *name, *city))
        .chain(
            others
                .iter()
                .enumerate()
                .map(|(i, (id, name, _, _))| (*id, *name, i)),
        )
        .collect();
    for (i, (org, name, city)) in loc_orgs.iter().enumerate() {
        sink.put("Location", &json!({
            "resourceType": "Location", "id": location_id(org),
            "meta": meta("http://hl7.org/fhir/us/core/StructureDefinition/us-core-location"),
            "status": "active", "name": format!("{name} - Main Campus"), "mode": "instance",
            "telecom": phone(i + 20), "address": address(*city, i + 20).as_array().expect("array")[0].clone(),
            "managingOrganization": { "reference": format!("Organization/{org}"), "display": name },
        }))?;
    }
    for (i, (family, given, gender)) in PRACTITIONER_NAMES
        .iter()
        .take(practitioner_count())
        .enumerate()
    {
        let org = practitioner_org(i);
        let (org_id, org_name, spec, spec_display, city) = PROVIDER_ORGS[org];
        sink.put("Practitioner", &json!({
            "resourceType": "Practitioner", "id": practitioner_id(i),
            "meta": meta("http://hl7.org/fhir/us/core/StructureDefinition/us-core-practitioner"),
            "identifier": [npi_ident(&practitioner_npi(i))], "active": true,
            "name": [{ "use": "official", "family": family, "given": [given], "prefix": ["Dr."], "suffix": ["MD"] }],
            "telecom": phone(i + 40), "address": address(city, i + 40), "gender": gender,
        }))?;
        sink.put("PractitionerRole", &json!({
            "resourceType": "PractitionerRole", "id": role_id(i),
            "meta": meta("http://hl7.org/fhir/us/core/StructureDefinition/us-core-practitionerrole"),
            "active": true,
            "practitioner": { "reference": format!("Practitioner/{}", practitioner_id(i)), "display": practitioner_display(i) },
            "organization": { "reference": format!("Organization/{org_id}"), "display": org_name },
            "code": [{ "coding": [{ "system": "http://nucc.org/provider-taxonomy", "code": spec, "display": spec_display }] }],
            "specialty": [{ "coding": [{ "system": "http://nucc.org/provider-taxonomy", "code": spec, "display": spec_display }] }],
            "location": [{ "reference": format!("Location/{}", location_id(org_id)) }],
            "telecom": phone(i + 40),
        }))?;
    }
    for (i, (rx, display, ndc)) in tables::MEDICATIONS.iter().enumerate() {
        sink.put(
            "Medication",
            &json!({
                "resourceType": "Medication", "id": medication_id(i),
                "meta": meta("http://hl7.org/fhir/us/core/StructureDefinition/us-core-medication"),
                "code": { "coding": [{ "system": RXNORM, "code": rx, "display": display },
                    { "system": tables::NDC, "code": ndc }], "text": display },
                "status": "active",
            }),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npis_have_valid_luhn_check_digit() {
        // The CMS example NPI 1234567893.
        assert_eq!(npi_check_digit("123456789"), 3);
        for i in 0..practitioner_count() {
            let n = practitioner_npi(i);
            assert_eq!(n.len(), 10);
            assert_eq!(npi_check_digit(&n[..9]), n[9..].parse::<u32>().unwrap());
        }
    }
}
