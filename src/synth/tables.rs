//! Fixed vocabularies of the generator: names, places, and the clinical, claims and
//! sensitivity codes it draws from. Pure data; changing an entry changes every data set.

pub const FEMALE_GIVEN: &[&str] = &[
    "Mary",
    "Linda",
    "Susan",
    "Karen",
    "Nancy",
    "Lisa",
    "Emily",
    "Olivia",
    "Emma",
    "Ava",
    "Sophia",
    "Mia",
    "Grace",
    "Chloe",
    "Maria",
    "Ana",
    "Aisha",
    "Mei",
    "Priya",
    "Fatima",
    "Zoë",
    "Renée",
    "Chloé",
    "Inés",
    "Anne-Marie",
    "Hannah",
    "Ruth",
    "Keisha",
    "Yuki",
    "Amara",
];
pub const MALE_GIVEN: &[&str] = &[
    "James",
    "John",
    "Robert",
    "Michael",
    "William",
    "David",
    "Richard",
    "Joseph",
    "Thomas",
    "Daniel",
    "Matthew",
    "Anthony",
    "Kevin",
    "Brian",
    "Luis",
    "Carlos",
    "Ahmed",
    "Wei",
    "Raj",
    "Omar",
    "José",
    "André",
    "François",
    "Jean-Luc",
    "Noah",
    "Liam",
    "Ethan",
    "Malik",
    "Kenji",
    "Tomás",
];
pub const FAMILY: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Martin",
    "Jackson",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Nguyen",
    "Kim",
    "Patel",
    "Chen",
    "Garcia",
    "Rodriguez",
    "Martínez",
    "Hernández",
    "López",
    "González",
    "Pérez",
    "O'Brien",
    "McDonald",
    "Müller",
    "Sánchez",
    "Ramírez",
    "Washington",
    "Okafor",
    "Cohen",
    "García-López",
    "Smith-Jones",
    "Van der Berg",
    "St. Clair",
    "Nakamura",
    "Ali",
];
pub const SUFFIXES: &[&str] = &["Jr.", "Sr.", "II", "III"];

pub const STREETS: &[&str] = &[
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Elm St",
    "Pine Rd",
    "Washington Blvd",
    "Lakeview Dr",
    "Park Ave",
    "Hillcrest Rd",
    "Sunset Blvd",
    "River Rd",
];
/// (city, state, zip prefix)
pub const CITIES: &[(&str, &str, &str)] = &[
    ("Columbus", "OH", "432"),
    ("Cleveland", "OH", "441"),
    ("Cincinnati", "OH", "452"),
    ("Indianapolis", "IN", "462"),
    ("Louisville", "KY", "402"),
    ("Pittsburgh", "PA", "152"),
    ("Detroit", "MI", "482"),
    ("Chicago", "IL", "606"),
];

/// A coded concept: (system, code, display).
pub type Code = (&'static str, &'static str, &'static str);

pub const SNOMED: &str = "http://snomed.info/sct";
pub const ICD10: &str = "http://hl7.org/fhir/sid/icd-10-cm";
pub const LOINC: &str = "http://loinc.org";
pub const CPT: &str = "http://www.ama-assn.org/go/cpt";
pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
pub const CVX: &str = "http://hl7.org/fhir/sid/cvx";
pub const NDC: &str = "http://hl7.org/fhir/sid/ndc";
pub const UCUM: &str = "http://unitsofmeasure.org";
pub const ACTCODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
pub const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

/// A condition: (ICD-10-CM code, SNOMED code, display, chronic?)
pub struct Cond {
    pub icd: &'static str,
    pub snomed: &'static str,
    pub display: &'static str,
    pub chronic: bool,
}

pub const CONDITIONS: &[Cond] = &[
    Cond {
        icd: "E11.9",
        snomed: "44054006",
        display: "Type 2 diabetes mellitus",
        chronic: true,
    },
    Cond {
        icd: "I10",
        snomed: "38341003",
        display: "Essential hypertension",
        chronic: true,
    },
    Cond {
        icd: "E78.5",
        snomed: "55822004",
        display: "Hyperlipidemia",
        chronic: true,
    },
    Cond {
        icd: "J45.909",
        snomed: "195967001",
        display: "Asthma",
        chronic: true,
    },
    Cond {
        icd: "M54.50",
        snomed: "279039007",
        display: "Low back pain",
        chronic: false,
    },
    Cond {
        icd: "J06.9",
        snomed: "54150009",
        display: "Upper respiratory infection",
        chronic: false,
    },
    Cond {
        icd: "J02.9",
        snomed: "405737000",
        display: "Pharyngitis",
        chronic: false,
    },
    Cond {
        icd: "N39.0",
        snomed: "68566005",
        display: "Urinary tract infection",
        chronic: false,
    },
    Cond {
        icd: "S93.401A",
        snomed: "44465007",
        display: "Sprain of ankle",
        chronic: false,
    },
    Cond {
        icd: "K21.9",
        snomed: "235595009",
        display: "Gastroesophageal reflux disease",
        chronic: true,
    },
    Cond {
        icd: "H66.90",
        snomed: "65363002",
        display: "Otitis media",
        chronic: false,
    },
    Cond {
        icd: "Z00.00",
        snomed: "185349003",
        display: "Encounter for check up",
        chronic: false,
    },
];

/// Sensitive categories: label code (v3-ActCode), label display, and the episode's coding.
pub struct Sensitive {
    pub label: &'static str,
    pub label_display: &'static str,
    pub cond: Cond,
    /// Medication (RxNorm code, display), if the episode has one.
    pub med: Option<(&'static str, &'static str)>,
    /// Lab (LOINC code, display, unit), if the episode has one.
    pub lab: Option<(&'static str, &'static str, &'static str)>,
}

pub const SENSITIVE: &[Sensitive] = &[
    Sensitive {
        label: "ETH",
        label_display: "substance abuse information sensitivity",
        cond: Cond {
            icd: "F10.20",
            snomed: "7200002",
            display: "Alcohol dependence",
            chronic: true,
        },
        med: Some((
            "1010600",
            "buprenorphine 8 MG / naloxone 2 MG Sublingual Film",
        )),
        lab: None,
    },
    Sensitive {
        label: "PSY",
        label_display: "psychiatry information sensitivity",
        cond: Cond {
            icd: "F32.9",
            snomed: "35489007",
            display: "Depressive disorder",
            chronic: true,
        },
        med: Some(("312938", "sertraline 50 MG Oral Tablet")),
        lab: None,
    },
    Sensitive {
        label: "HIV",
        label_display: "HIV/AIDS information sensitivity",
        cond: Cond {
            icd: "B20",
            snomed: "86406008",
            display: "Human immunodeficiency virus infection",
            chronic: true,
        },
        med: Some((
            "1999667",
            "bictegravir 50 MG / emtricitabine 200 MG / tenofovir alafenamide 25 MG Oral Tablet",
        )),
        lab: Some((
            "20447-9",
            "HIV 1 RNA [#/volume] (viral load) in Serum or Plasma",
            "{copies}/mL",
        )),
    },
    Sensitive {
        label: "SEX",
        label_display: "sexuality and reproductive health information sensitivity",
        cond: Cond {
            icd: "N97.9",
            snomed: "6738008",
            display: "Female infertility",
            chronic: false,
        },
        med: None,
        lab: None,
    },
];
/// The male counterpart of the SEX episode.
pub const SEX_MALE: Cond = Cond {
    icd: "N46.9",
    snomed: "2904007",
    display: "Male infertility",
    chronic: false,
};

/// Shared Medication resources: (RxNorm, display, NDC, chronic condition ICD it treats).
pub const MEDICATIONS: &[(&str, &str, &str)] = &[
    (
        "860975",
        "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
        "00093-7267-01",
    ),
    ("314076", "lisinopril 10 MG Oral Tablet", "68180-0514-01"),
    ("617310", "atorvastatin 20 MG Oral Tablet", "00378-2018-77"),
    (
        "745679",
        "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
        "00173-0682-20",
    ),
    ("197361", "amlodipine 5 MG Oral Tablet", "00093-7167-01"),
    ("308182", "amoxicillin 250 MG Oral Capsule", "00093-3107-01"),
    ("310965", "ibuprofen 200 MG Oral Tablet", "00904-5853-61"),
    (
        "198211",
        "omeprazole 20 MG Delayed Release Oral Capsule",
        "62175-0118-37",
    ),
];
/// Which medication (index in MEDICATIONS) treats which condition (index in CONDITIONS).
pub fn med_for_condition(cond: usize) -> Option<usize> {
    match cond {
        0 => Some(0),
        1 => Some(1),
        2 => Some(2),
        3 => Some(3),
        4 => Some(6),
        6 | 10 => Some(5),
        9 => Some(7),
        _ => None,
    }
}
/// NDCs for the sensitive medications, in SENSITIVE order.
pub const SENSITIVE_NDC: &[&str] = &["12496-1208-03", "16729-0215-10", "61958-2501-01", ""];

/// Labs: (LOINC, display, unit, low, high, decimals)
pub const LABS: &[(&str, &str, &str, f64, f64, u32)] = &[
    (
        "4548-4",
        "Hemoglobin A1c/Hemoglobin.total in Blood",
        "%",
        4.8,
        9.5,
        1,
    ),
    (
        "2345-7",
        "Glucose [Mass/volume] in Serum or Plasma",
        "mg/dL",
        70.0,
        180.0,
        0,
    ),
    (
        "2093-3",
        "Cholesterol [Mass/volume] in Serum or Plasma",
        "mg/dL",
        140.0,
        280.0,
        0,
    ),
    (
        "718-7",
        "Hemoglobin [Mass/volume] in Blood",
        "g/dL",
        11.0,
        17.0,
        1,
    ),
    (
        "2160-0",
        "Creatinine [Mass/volume] in Serum or Plasma",
        "mg/dL",
        0.6,
        1.4,
        2,
    ),
];
pub const LAB_PANEL: Code = (
    LOINC,
    "24323-8",
    "Comprehensive metabolic 2000 panel - Serum or Plasma",
);

/// Immunizations: (CVX, display, pediatric?)
pub const VACCINES: &[(&str, &str, bool)] = &[
    (
        "150",
        "Influenza, injectable, quadrivalent, preservative free",
        false,
    ),
    (
        "208",
        "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose",
        false,
    ),
    ("115", "Tdap", false),
    ("187", "zoster vaccine recombinant", false),
    ("20", "DTaP", true),
    ("03", "MMR", true),
    ("21", "varicella", true),
    ("08", "Hep B, adolescent or pediatric", true),
];

/// Procedures: (CPT, SNOMED, display, charge low, charge high)
pub const PROCEDURES: &[(&str, &str, &str, u64, u64)] = &[
    ("45378", "73761001", "Colonoscopy", 900, 2500),
    ("77067", "71651007", "Screening mammography", 150, 450),
    ("93000", "268400002", "12 lead electrocardiogram", 60, 200),
    (
        "29515",
        "33224003",
        "Application of short leg splint",
        120,
        300,
    ),
    (
        "44970",
        "80146002",
        "Laparoscopic appendectomy",
        8000,
        18000,
    ),
];

/// Office visit codes: (CPT, display)
pub const VISITS: &[(&str, &str)] = &[
    (
        "99213",
        "Office or other outpatient visit, established patient, low complexity",
    ),
    (
        "99214",
        "Office or other outpatient visit, established patient, moderate complexity",
    ),
    (
        "99203",
        "Office or other outpatient visit, new patient, low complexity",
    ),
    ("99283", "Emergency department visit, moderate severity"),
];

pub const ALLERGIES: &[Code] = &[
    (SNOMED, "91936005", "Allergy to penicillin"),
    (SNOMED, "91935009", "Allergy to peanut"),
    (SNOMED, "300913006", "Shellfish allergy"),
    (SNOMED, "418689008", "Allergy to grass pollen"),
];

pub const DEVICES: &[Code] = &[
    (SNOMED, "14106009", "Cardiac pacemaker, device"),
    (SNOMED, "72506001", "Implantable defibrillator, device"),
    (SNOMED, "304120007", "Total hip replacement prosthesis"),
];

/// Dental (oral) services: (CDT code, display)
pub const DENTAL: &[(&str, &str)] = &[
    ("D0120", "Periodic oral evaluation - established patient"),
    ("D1110", "Prophylaxis - adult"),
    ("D2391", "Resin-based composite - one surface, posterior"),
];

/// Prior authorization services: (CPT/HCPCS, display, X12 service type code, display)
pub const PA_SERVICES: &[(&str, &str, &str, &str)] = &[
    (
        "70553",
        "MRI brain without contrast, followed by with contrast",
        "73",
        "Diagnostic Medical",
    ),
    ("27447", "Total knee arthroplasty", "2", "Surgical"),
    ("97110", "Therapeutic exercises", "PT", "Physical Therapy"),
    (
        "E0601",
        "Continuous positive airway pressure (CPAP) device",
        "12",
        "Durable Medical Equipment Purchase",
    ),
    (
        "90837",
        "Psychotherapy, 60 minutes with patient",
        "MH",
        "Mental Health",
    ),
];
