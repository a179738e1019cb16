//! The Patient compartment owner of a resource, computed at write time from the R4 Patient
//! CompartmentDefinition (vendored): the Patient a resource belongs to, through the first of
//! its compartment parameters that references a Patient. A Provenance without one takes the
//! owner of its targets (resolved by the write, which can see the database). `$everything`, exports and
//! patient-scoped access all key on it.

use crate::search::IndexEntries;
use std::collections::HashMap;

/// Compartment parameters per resource type, in the order we look at them.
pub struct Compartment {
    params: HashMap<String, Vec<String>>,
}

/// Parameters that name the member the record is about; looked at before the others
/// (e.g. `performer`, or Coverage's `payor`/`subscriber`) so that the owner is the subject.
const PRIMARY: [&str; 4] = ["patient", "subject", "beneficiary", "individual"];

impl Compartment {
    pub fn load_builtin() -> anyhow::Result<Self> {
        let def: serde_json::Value = serde_json::from_str(include_str!(
            "../../vendor/definitions/compartmentdefinition-patient.json"
        ))?;
        let mut params: HashMap<String, Vec<String>> = HashMap::new();
        for r in def["resource"].as_array().into_iter().flatten() {
            let Some(code) = r["code"].as_str() else {
                continue;
            };
            // Patient is its own owner. A Group lists many members: it stays a compartment
            // type (never shared with members) but has no single owner.
            if code == "Patient" {
                continue;
            }
            let mut list: Vec<String> = r["param"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect();
            list.sort_by_key(|p| PRIMARY.iter().position(|x| x == p).unwrap_or(PRIMARY.len()));
            if code == "Group" {
                list.clear();
            } else if list.is_empty() {
                // listed as "never in this compartment"
                continue;
            }
            params.insert(code.to_owned(), list);
        }
        // R4 leaves Device out of the compartment, but US Core/PDex search Device by
        // patient and `$everything` should return a member's implants.
        params.insert("Device".into(), vec!["patient".into()]);
        Ok(Compartment { params })
    }

    /// Resource types that can belong to a patient (Patient included).
    pub fn member_types(&self) -> impl Iterator<Item = &str> {
        std::iter::once("Patient").chain(self.params.keys().map(String::as_str))
    }

    /// Does `rtype` belong to the Patient compartment? Resources of other types (Practitioner,
    /// Organization, Medication, …) are shared reference data.
    pub fn is_member_type(&self, rtype: &str) -> bool {
        rtype == "Patient" || self.params.contains_key(rtype)
    }

    /// The owner of a resource whose index entries are `index`.
    pub fn owner(&self, rtype: &str, id: &str, index: &IndexEntries) -> Option<String> {
        if rtype == "Patient" {
            return Some(id.to_owned());
        }
        let params = self.params.get(rtype)?;
        params.iter().find_map(|p| {
            index.references.iter().find_map(|r| {
                (r.param == *p && r.target_type.as_deref() == Some("Patient"))
                    .then(|| r.target_id.clone())
                    .flatten()
            })
        })
    }
}
