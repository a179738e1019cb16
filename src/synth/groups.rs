//! Data-set-wide Groups whose member lists grow with N: the PDex Member Opt-Out Group and the
//! ATR / PDex Provider (attribution) Groups of the primary-care organizations. Entries are
//! spooled to temporary files while members stream past, then each Group is written as one
//! NDJSON line, so memory stays flat in N.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::dates::{as_of_day, date, instant};
use super::household::Person;
use super::pool;
use super::sink::Sink;

pub const OPT_OUT_GROUP: &str = "member-opt-out";

/// Attribution lists exist for these organizations (indexes into PROVIDER_ORGS).
pub const ATR_ORGS: &[usize] = &[0, 1, pool::ORG_PEDIATRICS];

pub fn atr_group_id(org: usize) -> String {
    format!(
        "atr-{}",
        pool::PROVIDER_ORGS[org].0.trim_start_matches("org-")
    )
}

struct Spool {
    path: PathBuf,
    w: BufWriter<File>,
    count: u64,
    /// Opted-out members of this attribution list (left out of it, counted).
    opted_out: u64,
}

impl Spool {
    fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let path = dir.join(format!(".{name}.spool"));
        Ok(Spool {
            w: BufWriter::new(File::create(&path)?),
            path,
            count: 0,
            opted_out: 0,
        })
    }

    fn push(&mut self, entry: &Value) -> anyhow::Result<()> {
        if self.count > 0 {
            self.w.write_all(b",")?;
        }
        serde_json::to_writer(&mut self.w, entry)?;
        self.count += 1;
        Ok(())
    }

    /// Writes `header` (a Group without `member`) plus the spooled members as one line.
    fn finish(self, sink: &mut Sink, mut header: Value) -> anyhow::Result<()> {
        let Spool { path, w, count, .. } = self;
        drop(w.into_inner().map_err(|e| e.into_error())?);
        header["quantity"] = json!(count);
        let mut line = serde_json::to_string(&header)?;
        if count > 0 {
            // Stream the spooled members into the line: memory stays flat however big it is.
            line.pop(); // the closing brace
            line.push_str(",\"member\":[");
            sink.put_streamed(
                "Group",
                &line,
                &mut BufReader::new(File::open(&path)?),
                "]}",
            )?;
        } else {
            sink.put_raw("Group", &line)?;
        }
        std::fs::remove_file(&path)?;
        Ok(())
    }
}

pub struct Groups {
    opt_out: Spool,
    atr: Vec<Spool>,
}

impl Groups {
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        Ok(Groups {
            opt_out: Spool::new(dir, OPT_OUT_GROUP)?,
            atr: ATR_ORGS
                .iter()
                .map(|o| Spool::new(dir, &atr_group_id(*o)))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// Opt-out effective day of an opted-out member (deterministic from the member).
    fn opt_out_day(p: &Person) -> i64 {
        as_of_day() - 20 - (p.idx as i64 * 37) % 700
    }

    pub fn add(&mut self, p: &Person) -> anyhow::Result<()> {
        if p.opted_out {
            let day = Self::opt_out_day(p);
            self.opt_out.push(&json!({
                "entity": {
                    "extension": [{ "url": "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/opt-out-details",
                        "valueString": format!("Member opted out of provider access data sharing on {}.", date(day)) }],
                    "reference": format!("Patient/{}", p.id),
                },
                "period": { "start": date(day) },
                "inactive": false,
            }))?;
        }
        let pcp_org = pool::practitioner_org(p.pcp);
        let current = p.coverage().end.is_none();
        if let Some(i) = ATR_ORGS.iter().position(|o| *o == pcp_org) {
            if p.opted_out {
                self.atr[i].opted_out += 1;
            } else if current {
                let change = if p.coverage().start > as_of_day() - 365 {
                    "new"
                } else {
                    "nochange"
                };
                self.atr[i].push(&json!({
                    "extension": [
                        { "url": "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/ext-changeType", "valueCode": change },
                        { "url": "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/ext-coverageReference",
                          "valueReference": { "reference": format!("Coverage/{}", p.coverage().id) } },
                        { "url": "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/ext-attributedProvider",
                          "valueReference": { "reference": format!("Practitioner/{}", pool::practitioner_id(p.pcp)) } },
                    ],
                    "entity": { "reference": format!("Patient/{}", p.id) },
                    "period": { "start": date(p.coverage().start) },
                }))?;
            }
        }
        Ok(())
    }

    pub fn finish(self, sink: &mut Sink) -> anyhow::Result<()> {
        let updated = instant(as_of_day() - 3, 5 * 3600);
        let opt_out = json!({
            "resourceType": "Group", "id": OPT_OUT_GROUP,
            "meta": { "lastUpdated": updated, "profile": ["http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-member-opt-out"] },
            "identifier": [{ "system": format!("{}/master-opt-out-list", pool::GROUP_ID_SYSTEM), "value": "MASTER-OPT-OUT" }],
            "active": true, "type": "person", "actual": true,
            "code": { "coding": [{ "system": "http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PdexMultiMemberMatchResultCS", "code": "consentconstraint", "display": "Consent Constraint" }] },
            "name": "Provider Access opt-out list",
            "managingEntity": pool::payer_ref(),
            "characteristic": [{
                "extension": [{ "url": "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/opt-out-reason",
                    "valueCodeableConcept": { "coding": [{ "system": "http://hl7.org/fhir/us/davinci-pdex/CodeSystem/opt-out-reason", "code": "member-choice", "display": "Member Choice" }] } }],
                "code": { "coding": [{ "system": "http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PdexMultiMemberMatchResultCS", "code": "consentconstraint", "display": "Consent Constraint" }] },
                "valueCodeableConcept": { "coding": [{ "system": "http://hl7.org/fhir/us/davinci-pdex/CodeSystem/opt-out-scope", "code": "global", "display": "Global Opt-Out" }] },
                "exclude": false,
            }],
        });
        self.opt_out.finish(sink, opt_out)?;
        for (spool, org) in self.atr.into_iter().zip(ATR_ORGS) {
            let (org_id, org_name, ..) = pool::PROVIDER_ORGS[*org];
            let opted_out = spool.opted_out;
            let header = json!({
                "resourceType": "Group", "id": atr_group_id(*org),
                "meta": { "lastUpdated": updated, "profile": ["http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-provider-group"] },
                "extension": [
                    { "url": "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/ext-attributionListStatus", "valueCode": "final" },
                    { "url": "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/ext-contractValidityPeriod",
                      "valuePeriod": { "start": "2026-01-01", "end": "2026-12-31" } },
                    { "url": "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/base-ext-members-opted-out",
                      "valueQuantity": { "value": opted_out } },
                ],
                "identifier": [
                    { "use": "official", "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NPI" }] },
                      "system": pool::NPI_SYSTEM, "value": pool::org_npi(*org) },
                    { "use": "official", "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "TAX" }] },
                      "system": pool::TIN_SYSTEM, "value": format!("{:02}-{:07}", 30 + org, 1_000_000 + org * 4_321) },
                ],
                "active": true, "type": "person", "actual": true,
                "code": { "coding": [{ "system": "http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PdexMemberAttributionCS", "code": "pdexprovidergroup", "display": "PDex Provider Group" }] },
                "name": format!("{org_name} attributed members"),
                "managingEntity": pool::payer_ref(),
                "characteristic": [{
                    "code": { "coding": [{ "system": "http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PdexMemberAttributionCS", "code": "pdexprovidergroup", "display": "PDex Provider Group" }] },
                    "valueReference": { "reference": format!("Organization/{org_id}"), "display": org_name },
                    "exclude": false,
                    "period": { "start": date(as_of_day() - 3) },
                }],
            });
            spool.finish(sink, header)?;
        }
        Ok(())
    }
}
