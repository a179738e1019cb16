//! Everything that belongs to one member, written as it is generated: Patient, Coverage(s),
//! encounters with their clinical resources (US Core shapes), claims (CARIN BB EOB types),
//! PDex prior authorizations, the sensitive episode (labelled in `meta.security`), the
//! member's treatment-relationship Group, and Provenance for all of it.

use base64::Engine;
use serde_json::{Value, json};

use super::dates::{as_of_day, date, instant, years_between};
use super::household::{GROUPS, Household, PLANS, Person};
use super::pool;
use super::rng::{Rng, tag};
use super::sink::Sink;
use super::tables::{
    self, ACTCODE, CONFIDENTIALITY, CPT, CVX, ICD10, LOINC, NDC, RXNORM, SNOMED, UCUM,
};

const US_CORE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/";
const CARIN: &str = "http://hl7.org/fhir/us/carin-bb/StructureDefinition/";
const ADJ: &str = "http://terminology.hl7.org/CodeSystem/adjudication";
const C4BB_ADJ: &str = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudication";

/// The data-absent-reason extension (FHIR R4 extension-data-absent-reason).
const DATA_ABSENT_REASON: &str = "http://hl7.org/fhir/StructureDefinition/data-absent-reason";

fn r(ty: &str, id: &str) -> Value {
    json!({ "reference": format!("{ty}/{id}") })
}

fn cc(system: &str, code: &str, display: &str) -> Value {
    json!({ "coding": [{ "system": system, "code": code, "display": display }], "text": display })
}

fn coding(system: &str, code: &str) -> Value {
    json!({ "coding": [{ "system": system, "code": code }] })
}

fn money(v: f64) -> Value {
    json!({ "value": (v * 100.0).round() / 100.0, "currency": "USD" })
}

fn round(v: f64, decimals: u32) -> f64 {
    let f = 10f64.powi(decimals as i32);
    (v * f).round() / f
}

/// What an encounter is about.
#[derive(Clone, Copy, PartialEq)]
enum Visit {
    Wellness,
    Acute,
    Chronic,
    Emergency,
    Inpatient,
}

/// Who authored an encounter's data: (provider organization, practitioner).
type Author = (usize, Option<usize>);

/// A sensitivity label set (index into `tables::SENSITIVE`).
type Sec = Option<usize>;

pub struct MemberGen<'a> {
    sink: &'a mut Sink,
    p: &'a Person,
    hh: &'a Household,
    r: Rng,
    as_of: i64,
    /// Practitioners the member saw (treatment relationships).
    seen: Vec<(usize, i64)>,
    /// Claims to cite in the member's claims Provenance.
    claims: Vec<String>,
    eob_n: u32,
    obs_n: u32,
    med_n: u32,
    doc_n: u32,
    /// Chronic conditions already on the problem list: (condition index, resource id).
    problems: Vec<(usize, String)>,
}

impl<'a> MemberGen<'a> {
    pub fn new(seed: u64, sink: &'a mut Sink, hh: &'a Household, p: &'a Person) -> Self {
        MemberGen {
            sink,
            p,
            hh,
            r: Rng::derive(seed, tag::CLINICAL, p.idx),
            as_of: as_of_day(),
            seen: Vec::new(),
            claims: Vec::new(),
            eob_n: 0,
            obs_n: 0,
            med_n: 0,
            doc_n: 0,
            problems: Vec::new(),
        }
    }

    fn id(&self, kind: &str, n: u32) -> String {
        format!("{}-{kind}-{n}", self.p.id)
    }

    /// `lastUpdated` a few days after `day`, never after the as-of date.
    fn updated(&mut self, day: i64) -> String {
        let d = (day + self.r.range(0, 21)).min(self.as_of);
        instant(d, self.r.below(86_400) as u32)
    }

    fn meta(&mut self, day: i64, profile: &str, sec: Sec) -> Value {
        let updated = self.updated(day);
        let mut m = json!({ "lastUpdated": updated, "profile": [profile] });
        if let Some(s) = sec {
            let s = &tables::SENSITIVE[s];
            m["security"] = json!([
                { "system": ACTCODE, "code": s.label, "display": s.label_display },
                { "system": CONFIDENTIALITY, "code": "R", "display": "restricted" }
            ]);
        }
        m
    }

    fn patient_ref(&self) -> Value {
        json!({ "reference": format!("Patient/{}", self.p.id) })
    }

    fn age_at(&self, day: i64) -> i64 {
        years_between(self.p.birth, day)
    }

    pub fn generate(mut self) -> anyhow::Result<()> {
        self.patient()?;
        self.coverages()?;
        let (start, end) = self.p.covered_span();
        let years = ((end - start) as f64 / 365.25).max(0.2);
        let n = ((years * (0.4 + self.r.unit() * 0.8)).round() as i64).clamp(1, 12);
        let mut days: Vec<i64> = (0..n)
            .map(|_| start + self.r.range(0, end - start))
            .collect();
        days.sort_unstable();
        let mut provenance_n = 0;
        for (i, day) in days.iter().enumerate() {
            let targets = self.encounter(i as u32 + 1, *day)?;
            provenance_n += 1;
            let (org, prac) = targets.1;
            self.provenance(provenance_n, *day, &targets.0, org, prac, "hl7ccda", None)?;
        }
        let once = self.member_level(start, end)?;
        if !once.is_empty() {
            provenance_n += 1;
            let pcp = self.p.pcp;
            self.provenance(
                provenance_n,
                end,
                &once,
                pool::practitioner_org(pcp),
                Some(pcp),
                "hl7ccda",
                None,
            )?;
        }
        if self.p.has_sensitive {
            let (sec, targets, org, prac) = self.sensitive(start, end)?;
            provenance_n += 1;
            self.provenance(
                provenance_n,
                end,
                &targets,
                org,
                Some(prac),
                "hl7ccda",
                Some(sec),
            )?;
        }
        self.prior_auths(start, end)?;
        if self.r.chance(0.4) && self.age_at(end) >= 2 {
            let day = start + self.r.range(0, end - start);
            self.oral_claim(day)?;
        }
        // Claims and member data come from the payer itself.
        let mut payer_targets = vec![format!("Patient/{}", self.p.id)];
        payer_targets.extend(
            self.p
                .coverages
                .iter()
                .map(|c| format!("Coverage/{}", c.id)),
        );
        payer_targets.append(&mut self.claims);
        provenance_n += 1;
        let updated_day = end;
        self.payer_provenance(provenance_n, updated_day, &payer_targets)?;
        self.treatment_group()?;
        Ok(())
    }

    fn patient(&mut self) -> anyhow::Result<()> {
        let p = self.p;
        let hh = self.hh;
        let (city, state, _) = tables::CITIES[hh.city];
        let updated_day = self.as_of - self.r.range(0, 4 * 365);
        let mut name = json!({ "use": "official", "family": p.family, "given": p.given });
        if let Some(s) = p.suffix {
            name["suffix"] = json!([s]);
        }
        let birthsex = if p.gender == "female" {
            ("F", "Female")
        } else {
            ("M", "Male")
        };
        let mut identifier = vec![
            json!({ "type": { "coding": [{ "system": "http://hl7.org/fhir/us/davinci-hrex/CodeSystem/hrex-temp", "code": "UMB", "display": "Member Number" }] },
                "system": pool::UMB_SYSTEM, "value": p.umb, "assigner": pool::payer_ref() }),
            json!({ "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB", "display": "Member Number" }] },
                "system": pool::MEMBER_ID_SYSTEM, "value": p.member_id, "assigner": pool::payer_ref() }),
        ];
        if p.ig_example {
            identifier.push(json!({ "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB" }] },
                "system": pool::IG_OLD_PAYER_SYSTEM, "value": p.member_id }));
        }
        let mut telecom = vec![json!({ "system": "phone", "value": hh.phone, "use": "home" })];
        if self.r.chance(0.6) && self.age_at(self.as_of) >= 18 {
            let local: String = p.given[0]
                .chars()
                .filter(|c| c.is_ascii_alphabetic())
                .collect::<String>()
                .to_lowercase();
            telecom.push(json!({ "system": "email", "value": format!("{local}.{}@example.com", p.idx), "use": "home" }));
        }
        let race = *self.r.pick(&[
            ("2106-3", "White"),
            ("2054-5", "Black or African American"),
            ("2028-9", "Asian"),
            ("2076-8", "Native Hawaiian or Other Pacific Islander"),
            ("1002-5", "American Indian or Alaska Native"),
        ]);
        let mut patient = json!({
            "resourceType": "Patient", "id": p.id,
            "meta": { "lastUpdated": instant(updated_day, self.r.below(86_400) as u32),
                "profile": [format!("{US_CORE}us-core-patient"), "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition/hrex-patient-demographics"] },
            "extension": [
                { "url": format!("{US_CORE}us-core-birthsex"), "valueCode": birthsex.0 },
                { "url": format!("{US_CORE}us-core-race"), "extension": [
                    { "url": "ombCategory", "valueCoding": { "system": "urn:oid:2.16.840.1.113883.6.238", "code": race.0, "display": race.1 } },
                    { "url": "text", "valueString": race.1 } ] },
            ],
            "identifier": identifier,
            "active": true,
            "name": [name],
            "telecom": telecom,
            "gender": p.gender,
            "birthDate": date(p.birth),
            "address": [{ "use": "home", "line": [hh.line], "city": city, "state": state, "postalCode": hh.zip, "country": "US" }],
            "communication": [{ "language": { "coding": [{ "system": "urn:ietf:bcp:47", "code": "en-US", "display": "English (United States)" }] } }],
            "generalPractitioner": [{ "reference": format!("Practitioner/{}", pool::practitioner_id(p.pcp)), "display": pool::practitioner_display(p.pcp) }],
            "managingOrganization": pool::payer_ref(),
        });
        // US Core "Missing Data": a language the member never stated is absent with the
        // reason (the data-absent-reason extension on the coded element), for about one
        // member in eight; never the HRex example member, whose data the demo reproduces.
        if !p.ig_example && super::rng::share(&format!("language|{}", p.id), 125) {
            patient["communication"] = json!([{ "language": { "extension": [
                { "url": DATA_ABSENT_REASON, "valueCode": "unknown" } ] } }]);
        }
        if birthsex.0 == "F" && self.r.chance(0.01) {
            patient["extension"][0] =
                json!({ "url": format!("{US_CORE}us-core-birthsex"), "valueCode": "UNK" });
        }
        self.sink.put("Patient", &patient)
    }

    fn coverages(&mut self) -> anyhow::Result<()> {
        let p = self.p;
        let subscriber = format!("Patient/{}", self.hh.members[0].id);
        for c in &p.coverages {
            let (group, group_name) = GROUPS[c.group];
            let (plan, plan_name) = PLANS[c.plan];
            let mut identifier = vec![json!({
                "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB", "display": "Member Number" }] },
                "system": pool::MEMBER_ID_SYSTEM, "value": p.member_id, "assigner": pool::payer_ref() })];
            let mut class = vec![
                json!({ "type": coding("http://terminology.hl7.org/CodeSystem/coverage-class", "group"), "value": group, "name": group_name }),
                json!({ "type": coding("http://terminology.hl7.org/CodeSystem/coverage-class", "plan"), "value": plan, "name": plan_name }),
            ];
            if c.ig_example {
                identifier.push(
                    json!({ "type": coding("http://terminology.hl7.org/CodeSystem/v2-0203", "MB"),
                    "system": pool::IG_OLD_PAYER_SYSTEM, "value": p.member_id }),
                );
                class.push(json!({ "type": coding("http://terminology.hl7.org/CodeSystem/coverage-class", "subplan"), "value": "P7" }));
                class.push(json!({ "type": coding("http://terminology.hl7.org/CodeSystem/coverage-class", "class"), "value": "SILVER" }));
            }
            let mut period = json!({ "start": date(c.start) });
            if let Some(end) = c.end {
                period["end"] = json!(date(end));
            }
            let updated = match c.end {
                Some(end) => end.min(self.as_of),
                None => c.start.max(self.as_of - self.r.range(0, 700)),
            };
            let rel_display = match p.relationship {
                "self" => "Self",
                "spouse" => "Spouse",
                _ => "Child",
            };
            let sopt = if group == "GRP12550" {
                ("9", "Private Insurance - Individual")
            } else {
                ("5", "PRIVATE HEALTH INSURANCE")
            };
            let _ = sopt;
            let mut cov = json!({
                "resourceType": "Coverage", "id": c.id,
                "meta": { "lastUpdated": instant(updated, self.r.below(86_400) as u32),
                    "profile": ["http://hl7.org/fhir/us/davinci-hrex/StructureDefinition/hrex-coverage", format!("{CARIN}C4BB-Coverage")] },
                "identifier": identifier,
                "status": c.status,
                "type": cc("https://nahdo.org/sopt", "5", "PRIVATE HEALTH INSURANCE"),
                "policyHolder": { "reference": subscriber },
                "subscriber": { "reference": subscriber },
                "subscriberId": self.hh.subscriber_id,
                "beneficiary": self.patient_ref(),
                "relationship": cc("http://terminology.hl7.org/CodeSystem/subscriber-relationship", p.relationship, rel_display),
                "period": period,
                "payor": [pool::payer_ref()],
                "class": class,
            });
            if p.dependent > 0 {
                cov["dependent"] = json!(format!("{:02}", p.dependent));
            }
            self.sink.put("Coverage", &cov)?;
        }
        Ok(())
    }

    /// Coverage in force on `day` (falls back to the latest).
    fn coverage_on(&self, day: i64) -> &str {
        self.p
            .coverages
            .iter()
            .find(|c| c.start <= day && c.end.is_none_or(|e| day <= e))
            .unwrap_or_else(|| self.p.coverage())
            .id
            .as_str()
    }

    fn see(&mut self, prac: usize, day: i64) {
        match self.seen.iter_mut().find(|(p, _)| *p == prac) {
            Some(s) => s.1 = s.1.min(day),
            None => self.seen.push((prac, day)),
        }
    }

    fn practitioner_in(&mut self, org: usize) -> usize {
        org * pool::PRACTITIONERS_PER_ORG
            + self.r.below(pool::PRACTITIONERS_PER_ORG as u64) as usize
    }

    /// Writes one encounter and what happened during it. Returns the targets for its
    /// Provenance and the (organization, practitioner) authoring them.
    fn encounter(&mut self, n: u32, day: i64) -> anyhow::Result<(Vec<String>, Author)> {
        let age = self.age_at(day);
        let roll = self.r.unit();
        let visit = if roll < 0.30 {
            Visit::Wellness
        } else if roll < 0.62 {
            Visit::Acute
        } else if roll < 0.90 {
            Visit::Chronic
        } else if roll < 0.97 {
            Visit::Emergency
        } else {
            Visit::Inpatient
        };
        let (org, prac) = match visit {
            Visit::Emergency | Visit::Inpatient => {
                (pool::ORG_HOSPITAL, self.practitioner_in(pool::ORG_HOSPITAL))
            }
            Visit::Chronic if self.r.chance(0.3) => {
                let org = *self
                    .r
                    .pick(&[pool::ORG_CARDIO, pool::ORG_ORTHO, pool::ORG_WOMEN]);
                let org = if org == pool::ORG_WOMEN && self.p.gender != "female" {
                    pool::ORG_CARDIO
                } else {
                    org
                };
                (org, self.practitioner_in(org))
            }
            _ => (pool::practitioner_org(self.p.pcp), self.p.pcp),
        };
        self.see(prac, day);
        let cond_idx = match visit {
            Visit::Wellness => 11,
            Visit::Chronic => {
                // Follow-up of a known problem, or a new chronic one.
                if !self.problems.is_empty() && self.r.chance(0.7) {
                    let i = self.r.below(self.problems.len() as u64) as usize;
                    self.problems[i].0
                } else {
                    *self.r.pick(&[0, 1, 2, 3, 9])
                }
            }
            Visit::Inpatient => *self.r.pick(&[4, 7, 8]),
            _ => *self.r.pick(&[4, 5, 6, 7, 8, 10]),
        };
        let cond = &tables::CONDITIONS[cond_idx];
        let enc_id = self.id("enc", n);
        let end_day = if visit == Visit::Inpatient {
            day + self.r.range(1, 6)
        } else {
            day
        };
        let mut targets = vec![format!("Encounter/{enc_id}")];
        let (class_code, class_display) = match visit {
            Visit::Emergency => ("EMER", "emergency"),
            Visit::Inpatient => ("IMP", "inpatient encounter"),
            _ => ("AMB", "ambulatory"),
        };
        let (visit_cpt, visit_display) = match visit {
            Visit::Emergency | Visit::Inpatient => tables::VISITS[3],
            Visit::Wellness => tables::VISITS[0],
            _ => *self.r.pick(&tables::VISITS[..3]),
        };
        let (org_id, org_name, ..) = pool::PROVIDER_ORGS[org];
        let start_secs = 8 * 3600 + self.r.below(9 * 3600) as u32;
        let meta = self.meta(end_day, &format!("{US_CORE}us-core-encounter"), None);
        let mut enc = json!({
            "resourceType": "Encounter", "id": enc_id, "meta": meta,
            "identifier": [{ "system": "https://pdex.example.org/fhir/sid/encounter-id", "value": enc_id }],
            "status": "finished",
            "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class_code, "display": class_display },
            "type": [cc(CPT, visit_cpt, visit_display)],
            "subject": self.patient_ref(),
            "participant": [{ "type": [cc("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "PPRF", "primary performer")],
                "individual": { "reference": format!("Practitioner/{}", pool::practitioner_id(prac)), "display": pool::practitioner_display(prac) } }],
            "period": { "start": instant(day, start_secs), "end": instant(end_day, start_secs + 1800) },
            "reasonCode": [cc(SNOMED, cond.snomed, cond.display)],
            "location": [{ "location": { "reference": format!("Location/{}", pool::location_id(org_id)), "display": org_name } }],
            "serviceProvider": { "reference": format!("Organization/{org_id}"), "display": org_name },
        });
        if visit == Visit::Inpatient {
            enc["hospitalization"] = json!({ "dischargeDisposition": cc("http://terminology.hl7.org/CodeSystem/discharge-disposition", "home", "Home") });
        }
        self.sink.put("Encounter", &enc)?;

        // Condition: chronic ones go on the problem list once, others are encounter diagnoses.
        let cond_id = if cond.chronic {
            if let Some((_, id)) = self.problems.iter().find(|(c, _)| *c == cond_idx) {
                id.clone()
            } else {
                let id = self.id("cond", n);
                self.condition(&id, cond, day, Some(&enc_id), true, None)?;
                self.problems.push((cond_idx, id.clone()));
                targets.push(format!("Condition/{id}"));
                id
            }
        } else {
            let id = self.id("cond", n);
            self.condition(&id, cond, day, Some(&enc_id), false, None)?;
            targets.push(format!("Condition/{id}"));
            id
        };
        let _ = cond_id;

        // Vitals at most visits.
        if visit != Visit::Inpatient || self.r.chance(0.5) {
            self.vitals(day, start_secs, &enc_id, age, &mut targets)?;
        }
        // Labs.
        let lab_chance = if matches!(visit, Visit::Chronic | Visit::Wellness) {
            0.45
        } else {
            0.15
        };
        if age >= 2 && self.r.chance(lab_chance) {
            self.labs(n, day, start_secs, &enc_id, prac, &mut targets)?;
        }
        // Medication.
        let mut claim_lines: Vec<(&str, &str, &str, f64)> =
            vec![(CPT, visit_cpt, visit_display, 0.0)];
        if let Some(mi) = tables::med_for_condition(cond_idx)
            && self.r.chance(0.75)
        {
            self.medication(day, &enc_id, prac, mi, None, &mut targets)?;
        }
        // Procedures.
        let proc_chance = match visit {
            Visit::Inpatient => 1.0,
            Visit::Wellness if age >= 45 => 0.25,
            Visit::Emergency => 0.4,
            _ => 0.05,
        };
        if self.r.chance(proc_chance) {
            let pi = match visit {
                Visit::Inpatient => 4,
                Visit::Emergency => *self.r.pick(&[2, 3]),
                _ => *self.r.pick(&[0, 1, 2]),
            };
            let pi = if pi == 1 && self.p.gender != "female" {
                0
            } else {
                pi
            };
            let (cpt, sct, display, lo, hi) = tables::PROCEDURES[pi];
            let id = self.id("proc", n);
            let meta = self.meta(day, &format!("{US_CORE}us-core-procedure"), None);
            self.sink.put("Procedure", &json!({
                "resourceType": "Procedure", "id": id, "meta": meta,
                "status": "completed",
                "code": { "coding": [{ "system": SNOMED, "code": sct, "display": display }, { "system": CPT, "code": cpt, "display": display }], "text": display },
                "subject": self.patient_ref(),
                "encounter": r("Encounter", &enc_id),
                "performedDateTime": instant(day, start_secs + 900),
                "performer": [{ "actor": { "reference": format!("Practitioner/{}", pool::practitioner_id(prac)) } }],
                "location": { "reference": format!("Location/{}", pool::location_id(org_id)) },
                "reasonReference": [r("Condition", &cond_id)],
            }))?;
            targets.push(format!("Procedure/{id}"));
            claim_lines.push((CPT, cpt, display, self.r.money(lo, hi)));
        }
        // Immunizations at wellness visits.
        if visit == Visit::Wellness && self.r.chance(0.6) {
            let peds = age < 12;
            let choices: Vec<usize> = (0..tables::VACCINES.len())
                .filter(|i| tables::VACCINES[*i].2 == peds)
                .collect();
            let (cvx, display, _) = tables::VACCINES[*self.r.pick(&choices)];
            let id = self.id("imm", n);
            let meta = self.meta(day, &format!("{US_CORE}us-core-immunization"), None);
            self.sink.put("Immunization", &json!({
                "resourceType": "Immunization", "id": id, "meta": meta,
                "status": "completed",
                "vaccineCode": cc(CVX, cvx, display),
                "patient": self.patient_ref(),
                "encounter": r("Encounter", &enc_id),
                "occurrenceDateTime": instant(day, start_secs + 1200),
                "primarySource": true,
                "lotNumber": format!("L{:06}", self.r.below(1_000_000)),
                "performer": [{ "actor": { "reference": format!("Practitioner/{}", pool::practitioner_id(prac)) } }],
            }))?;
            targets.push(format!("Immunization/{id}"));
            claim_lines.push((
                CPT,
                "90471",
                "Immunization administration",
                self.r.money(25, 180),
            ));
        }
        // Clinical note.
        if self.r.chance(0.4) || visit == Visit::Inpatient {
            let id = self.document(
                day,
                start_secs,
                &enc_id,
                prac,
                org_id,
                cond.display,
                visit == Visit::Inpatient,
                None,
            )?;
            targets.push(format!("DocumentReference/{id}"));
        }
        // An ECG read as a narrative report.
        if claim_lines.iter().any(|l| l.1 == "93000") {
            self.doc_n += 1;
            let id = self.id("dr-note", self.doc_n);
            let meta = self.meta(
                day,
                &format!("{US_CORE}us-core-diagnosticreport-note"),
                None,
            );
            let text = "12-lead ECG: normal sinus rhythm, no acute ST changes.";
            self.sink.put("DiagnosticReport", &json!({
                "resourceType": "DiagnosticReport", "id": id, "meta": meta,
                "status": "final",
                "category": [cc(LOINC, "LP29708-2", "Cardiology")],
                "code": cc(LOINC, "11524-6", "EKG study"),
                "subject": self.patient_ref(), "encounter": r("Encounter", &enc_id),
                "effectiveDateTime": instant(day, start_secs + 900), "issued": instant(day, start_secs + 3600),
                "performer": [{ "reference": format!("Practitioner/{}", pool::practitioner_id(prac)) }],
                "presentedForm": [{ "contentType": "text/plain", "data": base64::engine::general_purpose::STANDARD.encode(text), "title": "ECG report" }],
            }))?;
            targets.push(format!("DiagnosticReport/{id}"));
        }
        // The claim for the encounter.
        let claim_kind = match visit {
            Visit::Inpatient => Claim::Inpatient,
            Visit::Emergency => Claim::Outpatient,
            _ => Claim::Professional,
        };
        let diag = [(cond.icd, cond.display)];
        self.claim(
            claim_kind,
            day,
            end_day,
            org,
            prac,
            &claim_lines,
            &diag,
            Some(&enc_id),
            None,
        )?;
        Ok((targets, (org, Some(prac))))
    }

    fn condition(
        &mut self,
        id: &str,
        cond: &tables::Cond,
        day: i64,
        enc: Option<&str>,
        problem: bool,
        sec: Sec,
    ) -> anyhow::Result<()> {
        let profile = if problem {
            "us-core-condition-problems-health-concerns"
        } else {
            "us-core-condition-encounter-diagnosis"
        };
        let meta = self.meta(day, &format!("{US_CORE}{profile}"), sec);
        let (cat, cat_display) = if problem {
            ("problem-list-item", "Problem List Item")
        } else {
            ("encounter-diagnosis", "Encounter Diagnosis")
        };
        let resolved = !cond.chronic && day + 30 < self.as_of;
        let mut c = json!({
            "resourceType": "Condition", "id": id, "meta": meta,
            "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/condition-clinical", if resolved { "resolved" } else { "active" }, if resolved { "Resolved" } else { "Active" }),
            "verificationStatus": cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"),
            "category": [cc("http://terminology.hl7.org/CodeSystem/condition-category", cat, cat_display)],
            "code": { "coding": [{ "system": ICD10, "code": cond.icd, "display": cond.display }, { "system": SNOMED, "code": cond.snomed, "display": cond.display }], "text": cond.display },
            "subject": self.patient_ref(),
            "onsetDateTime": date(day),
            "recordedDate": date(day),
        });
        if let Some(e) = enc {
            c["encounter"] = r("Encounter", e);
        }
        if resolved {
            c["abatementDateTime"] = json!(date(day + 14));
        }
        self.sink.put("Condition", &c)
    }

    #[allow(clippy::too_many_arguments)]
    fn observation(
        &mut self,
        day: i64,
        secs: u32,
        enc: Option<&str>,
        profile: &str,
        category: &str,
        code: (&str, &str),
        value: Value,
        sec: Sec,
    ) -> anyhow::Result<String> {
        self.obs_n += 1;
        let id = self.id("obs", self.obs_n);
        let meta = self.meta(day, &format!("{US_CORE}{profile}"), sec);
        let cat_display = match category {
            "vital-signs" => "Vital Signs",
            "laboratory" => "Laboratory",
            _ => "Social History",
        };
        let mut o = json!({
            "resourceType": "Observation", "id": id, "meta": meta,
            "status": "final",
            "category": [cc("http://terminology.hl7.org/CodeSystem/observation-category", category, cat_display)],
            "code": cc(LOINC, code.0, code.1),
            "subject": self.patient_ref(),
            "effectiveDateTime": instant(day, secs),
        });
        if let Some(e) = enc {
            o["encounter"] = r("Encounter", e);
        }
        if let Value::Object(map) = value {
            for (k, v) in map {
                o[k] = v;
            }
        }
        self.sink.put("Observation", &o)?;
        Ok(id)
    }

    fn qty(v: f64, unit: &str) -> Value {
        json!({ "valueQuantity": { "value": v, "unit": unit, "system": UCUM, "code": unit } })
    }

    fn vitals(
        &mut self,
        day: i64,
        secs: u32,
        enc: &str,
        age: i64,
        targets: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let sys = self.r.range(100, 150) as f64;
        let dia = self.r.range(60, 95) as f64;
        let bp = json!({ "component": [
            { "code": cc(LOINC, "8480-6", "Systolic blood pressure"), "valueQuantity": { "value": sys, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]" } },
            { "code": cc(LOINC, "8462-4", "Diastolic blood pressure"), "valueQuantity": { "value": dia, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]" } } ] });
        if age >= 3 {
            let id = self.observation(
                day,
                secs,
                Some(enc),
                "us-core-blood-pressure",
                "vital-signs",
                ("85354-9", "Blood pressure panel with all children optional"),
                bp,
                None,
            )?;
            targets.push(format!("Observation/{id}"));
        }
        let hr = self.r.range(55, 100) as f64;
        let id = self.observation(
            day,
            secs,
            Some(enc),
            "us-core-heart-rate",
            "vital-signs",
            ("8867-4", "Heart rate"),
            Self::qty(hr, "/min"),
            None,
        )?;
        targets.push(format!("Observation/{id}"));
        let weight = if age >= 18 {
            round(55.0 + self.r.unit() * 50.0, 1)
        } else {
            round(3.5 + age as f64 * 3.2 + self.r.unit() * 4.0, 1)
        };
        let id = self.observation(
            day,
            secs,
            Some(enc),
            "us-core-body-weight",
            "vital-signs",
            ("29463-7", "Body weight"),
            Self::qty(weight, "kg"),
            None,
        )?;
        targets.push(format!("Observation/{id}"));
        // Pediatric observations.
        if age < 2 {
            let v = round(self.r.unit() * 100.0, 0);
            let id = self.observation(
                day,
                secs,
                Some(enc),
                "pediatric-weight-for-height",
                "vital-signs",
                ("77606-2", "Weight-for-length Per age and sex"),
                Self::qty(v, "%"),
                None,
            )?;
            targets.push(format!("Observation/{id}"));
        } else if age < 20 {
            let v = round(self.r.unit() * 100.0, 0);
            let id = self.observation(
                day,
                secs,
                Some(enc),
                "pediatric-bmi-for-age",
                "vital-signs",
                (
                    "59576-9",
                    "Body mass index (BMI) [Percentile] Per age and sex",
                ),
                Self::qty(v, "%"),
                None,
            )?;
            targets.push(format!("Observation/{id}"));
        }
        if age < 3 {
            let v = round(self.r.unit() * 100.0, 0);
            let id = self.observation(
                day,
                secs,
                Some(enc),
                "head-occipital-frontal-circumference-percentile",
                "vital-signs",
                ("8289-1", "Head Occipital-frontal circumference Percentile"),
                Self::qty(v, "%"),
                None,
            )?;
            targets.push(format!("Observation/{id}"));
        }
        Ok(())
    }

    fn labs(
        &mut self,
        n: u32,
        day: i64,
        secs: u32,
        enc: &str,
        prac: usize,
        targets: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let lab = self.r.below(pool::LABS.len() as u64) as usize;
        let mut results = Vec::new();
        for (code, display, unit, lo, hi, dec) in
            tables::LABS.iter().take(3 + self.r.below(3) as usize)
        {
            let value = if self.r.chance(0.04) {
                // Specimen problem or a result never reported: no value, with the reason
                // (Observation.dataAbsentReason).
                let (reason, display) =
                    if super::rng::share(&format!("lab|{}|{day}|{code}", self.p.id), 500) {
                        ("unknown", "Unknown")
                    } else {
                        ("error", "Error")
                    };
                json!({ "dataAbsentReason": cc("http://terminology.hl7.org/CodeSystem/data-absent-reason", reason, display) })
            } else {
                let v = round(lo + self.r.unit() * (hi - lo), *dec);
                json!({ "valueQuantity": { "value": v, "unit": unit, "system": UCUM, "code": unit },
                    "referenceRange": [{ "low": { "value": lo, "unit": unit, "system": UCUM, "code": unit }, "high": { "value": hi * 0.8, "unit": unit, "system": UCUM, "code": unit } }] })
            };
            let id = self.observation(
                day,
                secs + 600,
                Some(enc),
                "us-core-observation-lab",
                "laboratory",
                (code, display),
                value,
                None,
            )?;
            targets.push(format!("Observation/{id}"));
            results.push(r("Observation", &id));
        }
        let id = self.id("dr-lab", n);
        let meta = self.meta(
            day + 1,
            &format!("{US_CORE}us-core-diagnosticreport-lab"),
            None,
        );
        let (sys, code, display) = tables::LAB_PANEL;
        self.sink.put("DiagnosticReport", &json!({
            "resourceType": "DiagnosticReport", "id": id, "meta": meta,
            "status": "final",
            "category": [cc("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB", "Laboratory")],
            "code": cc(sys, code, display),
            "subject": self.patient_ref(), "encounter": r("Encounter", enc),
            "effectiveDateTime": instant(day, secs + 600), "issued": instant(day + 1, secs),
            "performer": [r("Organization", pool::LABS[lab].0)],
            "resultsInterpreter": [r("Practitioner", &pool::practitioner_id(prac))],
            "result": results,
        }))?;
        targets.push(format!("DiagnosticReport/{id}"));
        Ok(())
    }

    /// MedicationRequest, its dispenses and their pharmacy claims. `sens` = sensitive episode
    /// (RxNorm, display, NDC) instead of a catalogue Medication.
    fn medication(
        &mut self,
        day: i64,
        enc: &str,
        prac: usize,
        mi: usize,
        sens: Option<(usize, &str, &str, &str)>,
        targets: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        self.med_n += 1;
        let n = self.med_n;
        let id = self.id("medrx", n);
        let sec = sens.map(|s| s.0);
        let (rx, display, ndc) = match sens {
            Some((_, rx, d, ndc)) => (rx, d, ndc),
            None => tables::MEDICATIONS[mi],
        };
        let meta = self.meta(day, &format!("{US_CORE}us-core-medicationrequest"), sec);
        let chronic = sens.is_some() || matches!(mi, 0 | 1 | 2 | 4 | 7);
        let status = if chronic && day + 365 > self.as_of {
            "active"
        } else {
            "completed"
        };
        let mut req = json!({
            "resourceType": "MedicationRequest", "id": id, "meta": meta,
            "status": status, "intent": "order",
            "category": [cc("http://terminology.hl7.org/CodeSystem/medicationrequest-category", "community", "Community")],
            "subject": self.patient_ref(), "encounter": r("Encounter", enc),
            "authoredOn": date(day),
            "requester": { "reference": format!("Practitioner/{}", pool::practitioner_id(prac)), "display": pool::practitioner_display(prac) },
            "dosageInstruction": [{ "text": if chronic { "Take 1 tablet by mouth once daily" } else { "Take as directed for 10 days" } }],
            "dispenseRequest": { "numberOfRepeatsAllowed": if chronic { 5 } else { 0 }, "quantity": { "value": 30, "unit": "{tbl}", "system": UCUM, "code": "{tbl}" } },
        });
        // Half the catalogue drugs are referenced, the rest coded inline (both US Core shapes).
        if sens.is_none() && self.r.chance(0.5) {
            req["medicationReference"] = json!({ "reference": format!("Medication/{}", pool::medication_id(mi)), "display": display });
        } else {
            req["medicationCodeableConcept"] = json!({ "coding": [{ "system": RXNORM, "code": rx, "display": display }], "text": display });
        }
        self.sink.put("MedicationRequest", &req)?;
        targets.push(format!("MedicationRequest/{id}"));
        let fills = if chronic { 1 + self.r.below(3) } else { 1 };
        let pharm = self.r.below(pool::PHARMACIES.len() as u64) as usize;
        for f in 0..fills {
            let when = day + 1 + f as i64 * 30;
            if when > self.as_of {
                break;
            }
            let did = format!("{id}-disp-{}", f + 1);
            let meta = self.meta(
                when,
                "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-medicationdispense",
                sec,
            );
            let mut disp = json!({
                "resourceType": "MedicationDispense", "id": did, "meta": meta,
                "status": "completed",
                "medicationCodeableConcept": { "coding": [{ "system": RXNORM, "code": rx, "display": display }], "text": display },
                "subject": self.patient_ref(),
                "performer": [{ "actor": r("Organization", pool::PHARMACIES[pharm].0) }],
                "authorizingPrescription": [r("MedicationRequest", &id)],
                "type": cc("http://terminology.hl7.org/CodeSystem/v3-ActCode", if f == 0 { "FF" } else { "RF" }, if f == 0 { "First Fill" } else { "Refill" }),
                "quantity": { "value": 30, "unit": "{tbl}", "system": UCUM, "code": "{tbl}" },
                "daysSupply": { "value": 30, "unit": "d", "system": UCUM, "code": "d" },
                "whenHandedOver": instant(when, 15 * 3600),
            });
            if f > 0 {
                disp["extension"] = json!([{ "url": "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/DispenseRefill",
                    "extension": [{ "url": "dispenseNumber", "valueString": format!("{}", f + 1) }] }]);
            }
            self.sink.put("MedicationDispense", &disp)?;
            targets.push(format!("MedicationDispense/{did}"));
            let ndc = if ndc.is_empty() { "00000-0000-00" } else { ndc };
            let lines = [(NDC, ndc, display, self.r.money(8, 240))];
            self.claim(
                Claim::Pharmacy,
                when,
                when,
                pharm,
                prac,
                &lines,
                &[],
                None,
                sec,
            )?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn document(
        &mut self,
        day: i64,
        secs: u32,
        enc: &str,
        prac: usize,
        org_id: &str,
        about: &str,
        discharge: bool,
        sec: Sec,
    ) -> anyhow::Result<String> {
        self.doc_n += 1;
        let id = self.id("doc", self.doc_n);
        let meta = self.meta(day, &format!("{US_CORE}us-core-documentreference"), sec);
        let (code, display) = if discharge {
            ("18842-5", "Discharge summary")
        } else {
            ("11506-3", "Progress note")
        };
        let text = format!(
            "{display} for {} {} on {}. Assessment: {about}. Plan: continue current management, follow up as needed. Signed: {}.",
            self.p.given[0],
            self.p.family,
            date(day),
            pool::practitioner_display(prac)
        );
        self.sink.put("DocumentReference", &json!({
            "resourceType": "DocumentReference", "id": id, "meta": meta,
            "identifier": [{ "system": "urn:ietf:rfc:3986", "value": format!("urn:oid:2.25.{}{:04}", self.p.idx, self.doc_n) }],
            "status": "current",
            "type": cc(LOINC, code, display),
            "category": [cc("http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "clinical-note", "Clinical Note")],
            "subject": self.patient_ref(),
            "date": instant(day, secs + 2400),
            "author": [{ "reference": format!("Practitioner/{}", pool::practitioner_id(prac)) }],
            "custodian": r("Organization", org_id),
            "content": [{ "attachment": { "contentType": "text/plain", "language": "en-US",
                "data": base64::engine::general_purpose::STANDARD.encode(text.as_bytes()), "title": display, "creation": instant(day, secs + 2400) },
                "format": { "system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode", "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient", "display": "mimeType Sufficient" } }],
            "context": { "encounter": [r("Encounter", enc)], "period": { "start": instant(day, secs), "end": instant(day, secs + 2400) } },
        }))?;
        Ok(id)
    }

    /// One-per-member data: smoking status, allergies, care plan / team / goal for chronic
    /// problems, implanted devices. Returns the Provenance targets.
    fn member_level(&mut self, start: i64, end: i64) -> anyhow::Result<Vec<String>> {
        let mut targets = Vec::new();
        let pcp = self.p.pcp;
        if self.age_at(end) >= 13 {
            let (code, display) = *self.r.pick(&[
                ("266919005", "Never smoked tobacco"),
                ("266919005", "Never smoked tobacco"),
                ("8517006", "Ex-smoker"),
                ("77176002", "Smoker"),
            ]);
            let id = self.observation(
                end,
                10 * 3600,
                None,
                "us-core-smokingstatus",
                "social-history",
                ("72166-2", "Tobacco smoking status"),
                json!({ "valueCodeableConcept": cc(SNOMED, code, display) }),
                None,
            )?;
            targets.push(format!("Observation/{id}"));
        }
        if self.r.chance(0.3) {
            let (sys, code, display) = *self.r.pick(tables::ALLERGIES);
            let id = self.id("allergy", 1);
            let meta = self.meta(start, &format!("{US_CORE}us-core-allergyintolerance"), None);
            self.sink.put("AllergyIntolerance", &json!({
                "resourceType": "AllergyIntolerance", "id": id, "meta": meta,
                "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", "Active"),
                "verificationStatus": cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "confirmed", "Confirmed"),
                "type": "allergy", "category": [if code == "418689008" { "environment" } else if code == "91936005" { "medication" } else { "food" }],
                "criticality": "low",
                "code": cc(sys, code, display),
                "patient": self.patient_ref(),
                "recordedDate": date(start),
                "recorder": r("Practitioner", &pool::practitioner_id(pcp)),
                "reaction": [{ "manifestation": [cc(SNOMED, "271807003", "Eruption of skin")], "severity": "mild" }],
            }))?;
            targets.push(format!("AllergyIntolerance/{id}"));
        }
        if let Some((ci, cond_id)) = self.problems.first().cloned() {
            let cond = &tables::CONDITIONS[ci];
            let day = self.problems_day(end);
            let goal_id = self.id("goal", 1);
            let team_id = self.id("careteam", 1);
            let plan_id = self.id("careplan", 1);
            let meta = self.meta(day, &format!("{US_CORE}us-core-goal"), None);
            self.sink.put("Goal", &json!({
                "resourceType": "Goal", "id": goal_id, "meta": meta,
                "lifecycleStatus": "active",
                "description": { "text": format!("Keep {} under control", cond.display.to_lowercase()) },
                "subject": self.patient_ref(),
                "startDate": date(day),
                "target": [{ "dueDate": date(day + 365) }],
                "addresses": [r("Condition", &cond_id)],
            }))?;
            let meta = self.meta(day, &format!("{US_CORE}us-core-careteam"), None);
            self.sink.put("CareTeam", &json!({
                "resourceType": "CareTeam", "id": team_id, "meta": meta,
                "status": "active", "name": "Primary care team",
                "subject": self.patient_ref(),
                "participant": [
                    { "role": [cc("http://nucc.org/provider-taxonomy", "207Q00000X", "Family Medicine")], "member": { "reference": format!("Practitioner/{}", pool::practitioner_id(pcp)), "display": pool::practitioner_display(pcp) } },
                    { "role": [cc(SNOMED, "116154003", "Patient")], "member": self.patient_ref() },
                ],
                "managingOrganization": [r("Organization", pool::PROVIDER_ORGS[pool::practitioner_org(pcp)].0)],
            }))?;
            let meta = self.meta(day, &format!("{US_CORE}us-core-careplan"), None);
            self.sink.put("CarePlan", &json!({
                "resourceType": "CarePlan", "id": plan_id, "meta": meta,
                "text": { "status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">Care plan for {}: monitoring, medication adherence, follow-up every 3 months.</div>", cond.display) },
                "status": "active", "intent": "plan",
                "category": [cc("http://hl7.org/fhir/us/core/CodeSystem/careplan-category", "assess-plan", "Assessment and Plan of Treatment")],
                "subject": self.patient_ref(),
                "period": { "start": date(day) },
                "careTeam": [r("CareTeam", &team_id)],
                "addresses": [r("Condition", &cond_id)],
                "goal": [r("Goal", &goal_id)],
            }))?;
            targets.push(format!("Goal/{goal_id}"));
            targets.push(format!("CareTeam/{team_id}"));
            targets.push(format!("CarePlan/{plan_id}"));
        }
        if self.age_at(end) >= 55 && self.r.chance(0.08) {
            let (sys, code, display) = *self.r.pick(tables::DEVICES);
            let id = self.id("device", 1);
            let di = format!("{:014}", 10_884_521_000_000 + self.p.idx);
            let meta = self.meta(
                start,
                "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-device",
                None,
            );
            self.sink.put("Device", &json!({
                "resourceType": "Device", "id": id, "meta": meta,
                "udiCarrier": [{ "deviceIdentifier": di, "carrierHRF": format!("(01){di}(17)301231(10)A{:05}", self.p.idx % 100_000) }],
                "status": "active",
                "type": cc(sys, code, display),
                "patient": self.patient_ref(),
            }))?;
            targets.push(format!("Device/{id}"));
        }
        Ok(targets)
    }

    fn problems_day(&mut self, end: i64) -> i64 {
        (end - self.r.range(0, 200)).max(self.p.covered_span().0)
    }

    /// The sensitive episode: encounter, condition, medication, lab, note and claim, all labelled.
    fn sensitive(
        &mut self,
        start: i64,
        end: i64,
    ) -> anyhow::Result<(usize, Vec<String>, usize, usize)> {
        let si = self.r.below(tables::SENSITIVE.len() as u64) as usize;
        let s = &tables::SENSITIVE[si];
        let cond = if s.label == "SEX" && self.p.gender != "female" {
            &tables::SEX_MALE
        } else {
            &s.cond
        };
        let org = match s.label {
            "ETH" | "PSY" => pool::ORG_BEHAVIORAL,
            "SEX" if self.p.gender == "female" => pool::ORG_WOMEN,
            _ => 1,
        };
        let prac = self.practitioner_in(org);
        let day = start + self.r.range(0, end - start);
        self.see(prac, day);
        let (org_id, org_name, ..) = pool::PROVIDER_ORGS[org];
        let enc_id = self.id("enc-s", 1);
        let sec = Some(si);
        let meta = self.meta(day, &format!("{US_CORE}us-core-encounter"), sec);
        let visit = if s.label == "PSY" {
            ("90834", "Psychotherapy, 45 minutes with patient")
        } else {
            tables::VISITS[1]
        };
        self.sink.put("Encounter", &json!({
            "resourceType": "Encounter", "id": enc_id, "meta": meta,
            "status": "finished",
            "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory" },
            "type": [cc(CPT, visit.0, visit.1)],
            "subject": self.patient_ref(),
            "participant": [{ "individual": { "reference": format!("Practitioner/{}", pool::practitioner_id(prac)) } }],
            "period": { "start": instant(day, 10 * 3600), "end": instant(day, 11 * 3600) },
            "reasonCode": [cc(SNOMED, cond.snomed, cond.display)],
            "location": [{ "location": r("Location", &pool::location_id(org_id)) }],
            "serviceProvider": { "reference": format!("Organization/{org_id}"), "display": org_name },
        }))?;
        let mut targets = vec![format!("Encounter/{enc_id}")];
        let cond_id = self.id("cond-s", 1);
        self.condition(&cond_id, cond, day, Some(&enc_id), true, sec)?;
        targets.push(format!("Condition/{cond_id}"));
        if let Some((rx, display)) = s.med {
            self.medication(
                day,
                &enc_id,
                prac,
                0,
                Some((si, rx, display, tables::SENSITIVE_NDC[si])),
                &mut targets,
            )?;
        }
        if let Some((code, display, unit)) = s.lab {
            let v = self.r.range(20, 5_000) as f64;
            let id = self.observation(day, 10 * 3600, Some(&enc_id), "us-core-observation-lab", "laboratory", (code, display),
                json!({ "valueQuantity": { "value": v, "unit": unit, "system": UCUM, "code": unit } }), sec)?;
            targets.push(format!("Observation/{id}"));
        }
        let doc = self.document(
            day,
            10 * 3600,
            &enc_id,
            prac,
            org_id,
            cond.display,
            false,
            sec,
        )?;
        targets.push(format!("DocumentReference/{doc}"));
        let lines = [(CPT, visit.0, visit.1, 0.0)];
        self.claim(
            Claim::Professional,
            day,
            day,
            org,
            prac,
            &lines,
            &[(cond.icd, cond.display)],
            Some(&enc_id),
            sec,
        )?;
        Ok((si, targets, org, prac))
    }

    /// Provenance for clinical data: the provider organization authored it, we transmit it.
    #[allow(clippy::too_many_arguments)]
    fn provenance(
        &mut self,
        n: u32,
        day: i64,
        targets: &[String],
        org: usize,
        prac: Option<usize>,
        format: &str,
        sec: Sec,
    ) -> anyhow::Result<()> {
        let id = self.id("prov", n);
        let meta = self.meta(
            day,
            "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-provenance",
            sec,
        );
        let org_id = pool::PROVIDER_ORGS[org].0;
        let mut author = json!({
            "type": cc("http://terminology.hl7.org/CodeSystem/provenance-participant-type", "author", "Author"),
            "who": r("Organization", org_id),
        });
        if let Some(p) = prac {
            author["who"] = r("Practitioner", &pool::practitioner_id(p));
            author["onBehalfOf"] = r("Organization", org_id);
        }
        let recorded = instant((day + 2).min(self.as_of), 3 * 3600);
        self.sink.put("Provenance", &json!({
            "resourceType": "Provenance", "id": id, "meta": meta,
            "target": targets.iter().map(|t| json!({ "reference": t })).collect::<Vec<_>>(),
            "recorded": recorded,
            "agent": [author, Self::transmitter()],
            "entity": [{ "extension": [{ "url": "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/ProvenanceSourceFrom",
                "valueCodeableConcept": cc("http://hl7.org/fhir/us/davinci-pdex/CodeSystem/ProvenancePayerDataSource", format, "HL7 C-CDA") }],
                "role": "source", "what": { "display": "Clinical data received from the provider" } }],
        }))
    }

    fn transmitter() -> Value {
        json!({ "type": cc("http://hl7.org/fhir/us/core/CodeSystem/us-core-provenance-participant-type", "transmitter", "Transmitter"),
            "who": pool::payer_ref() })
    }

    /// Provenance for what the payer itself authored: Patient, Coverage, claims.
    fn payer_provenance(&mut self, n: u32, day: i64, targets: &[String]) -> anyhow::Result<()> {
        let id = self.id("prov", n);
        let meta = self.meta(
            day,
            "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-provenance",
            None,
        );
        self.sink.put("Provenance", &json!({
            "resourceType": "Provenance", "id": id, "meta": meta,
            "target": targets.iter().map(|t| json!({ "reference": t })).collect::<Vec<_>>(),
            "recorded": instant(day.min(self.as_of), 4 * 3600),
            "agent": [{ "type": cc("http://terminology.hl7.org/CodeSystem/provenance-participant-type", "author", "Author"), "who": pool::payer_ref() },
                Self::transmitter()],
            "entity": [{ "extension": [{ "url": "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/ProvenanceSourceFrom",
                "valueCodeableConcept": cc("http://hl7.org/fhir/us/davinci-pdex/CodeSystem/ProvenancePayerDataSource", "x12837", "X12 837") }],
                "role": "source", "what": { "display": "Payer claims and enrollment systems" } }],
        }))
    }

    /// A CARIN BB ExplanationOfBenefit. `org` indexes PROVIDER_ORGS except for pharmacy
    /// claims (PHARMACIES) and oral claims (ignored: the dental office).
    #[allow(clippy::too_many_arguments)]
    fn claim(
        &mut self,
        kind: Claim,
        day: i64,
        end_day: i64,
        org: usize,
        prac: usize,
        lines: &[(&str, &str, &str, f64)],
        diag: &[(&str, &str)],
        enc: Option<&str>,
        sec: Sec,
    ) -> anyhow::Result<()> {
        self.eob_n += 1;
        let id = self.id("eob", self.eob_n);
        let (type_code, type_display, profile) = match kind {
            Claim::Inpatient => (
                "institutional",
                "Institutional",
                "C4BB-ExplanationOfBenefit-Inpatient-Institutional",
            ),
            Claim::Outpatient => (
                "institutional",
                "Institutional",
                "C4BB-ExplanationOfBenefit-Outpatient-Institutional",
            ),
            Claim::Professional => (
                "professional",
                "Professional",
                "C4BB-ExplanationOfBenefit-Professional-NonClinician",
            ),
            Claim::Pharmacy => ("pharmacy", "Pharmacy", "C4BB-ExplanationOfBenefit-Pharmacy"),
            Claim::Oral => ("oral", "Oral", "C4BB-ExplanationOfBenefit-Oral"),
        };
        let processed = (end_day + self.r.range(7, 40)).min(self.as_of);
        let meta = self.meta(processed, &format!("{CARIN}{profile}"), sec);
        let provider_ref = match kind {
            Claim::Pharmacy => r("Organization", pool::PHARMACIES[org].0),
            Claim::Oral => r("Organization", pool::DENTAL_ORG.0),
            _ => r("Organization", pool::PROVIDER_ORGS[org].0),
        };
        let mut items = Vec::new();
        let (mut t_sub, mut t_elig, mut t_paid, mut t_member) = (0.0, 0.0, 0.0, 0.0);
        let copay: f64 = match kind {
            Claim::Pharmacy => 10.0,
            Claim::Professional => 25.0,
            Claim::Outpatient => 150.0,
            _ => 0.0,
        };
        for (i, (system, code, display, charge)) in lines.iter().enumerate() {
            let charge = if *charge > 0.0 {
                *charge
            } else {
                self.r.money(90, 320)
            };
            let charge = match kind {
                Claim::Inpatient => charge + self.r.money(4_000, 12_000),
                Claim::Outpatient => charge + self.r.money(600, 2_500),
                _ => charge,
            };
            let eligible = round(charge * (0.45 + self.r.unit() * 0.35), 2);
            let member = if i == 0 {
                copay.min(eligible)
            } else {
                round(eligible * 0.1, 2)
            };
            let paid = round(eligible - member, 2);
            t_sub += charge;
            t_elig += eligible;
            t_paid += paid;
            t_member += member;
            let mut item = json!({
                "sequence": i + 1,
                "productOrService": { "coding": [{ "system": system, "code": code, "display": display }], "text": display },
                "servicedDate": date(day),
                "quantity": { "value": 1 },
                "adjudication": [
                    { "category": cc(ADJ, "submitted", "Submitted Amount"), "amount": money(charge) },
                    { "category": cc(ADJ, "eligible", "Eligible Amount"), "amount": money(eligible) },
                    { "category": cc(ADJ, "copay", "CoPay"), "amount": money(member) },
                    { "category": cc(ADJ, "benefit", "Benefit Amount"), "amount": money(paid) },
                    { "category": cc(C4BB_ADJ, "memberliability", "Member liability"), "amount": money(member) },
                    { "category": cc(C4BB_ADJ, "paidtoprovider", "Paid to provider"), "amount": money(paid) },
                ],
            });
            match kind {
                Claim::Inpatient | Claim::Outpatient => {
                    let rev = if kind == Claim::Inpatient {
                        ("0120", "Room & Board - Semi-Private")
                    } else {
                        ("0450", "Emergency room - general")
                    };
                    item["revenue"] =
                        cc("https://www.nubc.org/CodeSystem/RevenueCodes", rev.0, rev.1);
                }
                Claim::Professional => {
                    item["careTeamSequence"] = json!([1]);
                    item["locationCodeableConcept"] = cc(
                        "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set",
                        "11",
                        "Office",
                    );
                }
                Claim::Pharmacy => {
                    item["quantity"] = json!({ "value": 30 });
                }
                Claim::Oral => {
                    item["careTeamSequence"] = json!([1]);
                }
            }
            items.push(item);
        }
        let mut supporting = vec![json!({
            "sequence": 1,
            "category": cc("http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBSupportingInfoType", "clmrecvddate", "Claim Received Date"),
            "timingDate": date((end_day + 2).min(processed)),
        })];
        match kind {
            Claim::Inpatient => {
                supporting.push(json!({ "sequence": 2, "category": cc("http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBSupportingInfoType", "admissionperiod", "Admission Period"),
                    "timingPeriod": { "start": date(day), "end": date(end_day) } }));
                supporting.push(json!({ "sequence": 3, "category": cc("http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBSupportingInfoType", "typeofbill", "Type of Bill"),
                    "code": cc("https://www.nubc.org/CodeSystem/TypeOfBill", "0111", "Hospital inpatient admit through discharge claim") }));
            }
            Claim::Outpatient => {
                supporting.push(json!({ "sequence": 2, "category": cc("http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBSupportingInfoType", "typeofbill", "Type of Bill"),
                    "code": cc("https://www.nubc.org/CodeSystem/TypeOfBill", "0131", "Hospital outpatient admit through discharge claim") }));
            }
            Claim::Pharmacy => {
                supporting.push(json!({ "sequence": 2, "category": cc("http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBSupportingInfoType", "dayssupply", "Days Supply"),
                    "valueQuantity": { "value": 30 } }));
                supporting.push(json!({ "sequence": 3, "category": cc("http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBSupportingInfoType", "refillnum", "Refill Number"),
                    "valueQuantity": { "value": 0 } }));
            }
            _ => {}
        }
        let care_team_prov = match kind {
            Claim::Pharmacy | Claim::Oral => provider_ref.clone(),
            _ => r("Practitioner", &pool::practitioner_id(prac)),
        };
        let role = match kind {
            Claim::Pharmacy => "prescribing",
            Claim::Inpatient | Claim::Outpatient => "attending",
            _ => "performing",
        };
        let care_team_prov = if kind == Claim::Pharmacy {
            r("Practitioner", &pool::practitioner_id(prac))
        } else {
            care_team_prov
        };
        let sub_type = match kind {
            Claim::Inpatient => Some(("inpatient", "Inpatient")),
            Claim::Outpatient => Some(("outpatient", "Outpatient")),
            _ => None,
        };
        let mut eob = json!({
            "resourceType": "ExplanationOfBenefit", "id": id, "meta": meta,
            "identifier": [{ "type": cc("http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBIdentifierType", "uc", "Unique Claim ID"),
                "system": pool::CLAIM_ID_SYSTEM, "value": format!("CLM{}{:04}", self.p.idx, self.eob_n) }],
            "status": "active",
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": type_code, "display": type_display }], "text": type_display },
            "use": "claim",
            "patient": self.patient_ref(),
            "billablePeriod": { "start": date(day), "end": date(end_day) },
            "created": instant(processed, 6 * 3600),
            "insurer": pool::payer_ref(),
            "provider": provider_ref,
            "outcome": "complete",
            "careTeam": [{ "sequence": 1, "provider": care_team_prov, "role": cc("http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBClaimCareTeamRole", role, role) }],
            "supportingInfo": supporting,
            "insurance": [{ "focal": true, "coverage": r("Coverage", self.coverage_on(day)) }],
            "item": items,
            "total": [
                { "category": cc(ADJ, "submitted", "Submitted Amount"), "amount": money(t_sub) },
                { "category": cc(ADJ, "eligible", "Eligible Amount"), "amount": money(t_elig) },
                { "category": cc(ADJ, "benefit", "Benefit Amount"), "amount": money(t_paid) },
                { "category": cc(C4BB_ADJ, "memberliability", "Member liability"), "amount": money(t_member) },
            ],
            "payment": { "type": cc("http://terminology.hl7.org/CodeSystem/ex-paymenttype", "complete", "Complete"),
                "date": date(processed), "amount": money(t_paid) },
        });
        if let Some((code, display)) = sub_type {
            eob["subType"] = cc(
                "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBInstitutionalClaimSubType",
                code,
                display,
            );
        }
        if !diag.is_empty() {
            eob["diagnosis"] = json!(diag.iter().enumerate().map(|(i, (code, display))| json!({
                "sequence": i + 1,
                "diagnosisCodeableConcept": { "coding": [{ "system": ICD10, "code": code, "display": display }] },
                "type": [cc("http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBClaimDiagnosisType", if i == 0 { "principal" } else { "secondary" }, if i == 0 { "Principal" } else { "Secondary" })],
            })).collect::<Vec<_>>());
        }
        if kind == Claim::Inpatient || kind == Claim::Outpatient {
            eob["facility"] = r("Location", &pool::location_id(pool::PROVIDER_ORGS[org].0));
        }
        let _ = enc;
        self.sink.put("ExplanationOfBenefit", &eob)?;
        if sec.is_none() {
            self.claims.push(format!("ExplanationOfBenefit/{id}"));
        }
        Ok(())
    }

    fn oral_claim(&mut self, day: i64) -> anyhow::Result<()> {
        let (code, display) = *self.r.pick(tables::DENTAL);
        let lines = [(
            "http://www.ada.org/cdt",
            code,
            display,
            self.r.money(60, 400),
        )];
        self.claim(
            Claim::Oral,
            day,
            day,
            0,
            self.p.pcp,
            &lines,
            &[],
            None,
            None,
        )
    }

    /// PDex prior authorizations: approved, denied, pended and expired.
    fn prior_auths(&mut self, start: i64, end: i64) -> anyhow::Result<()> {
        let n = *self.r.pick(&[0u32, 0, 1, 1, 2]);
        for i in 0..n {
            self.eob_n += 1;
            let id = format!("{}-pa-{}", self.p.id, i + 1);
            // Half of them recent (changed within the last year).
            let created = if self.r.chance(0.5) {
                (self.as_of - self.r.range(5, 330)).max(start)
            } else {
                start + self.r.range(0, (end - start).max(0))
            };
            let mut svc = self.r.below(tables::PA_SERVICES.len() as u64) as usize;
            if svc == 4 && !self.p.has_sensitive {
                // Psychotherapy authorizations are sensitive; only sensitive members have them.
                svc = 0;
            }
            let (cpt, display, st, st_display) = tables::PA_SERVICES[svc];
            let sec = if svc == 4 { Some(1) } else { None };
            let org = match svc {
                1 => pool::ORG_ORTHO,
                4 => pool::ORG_BEHAVIORAL,
                _ => pool::practitioner_org(self.p.pcp),
            };
            let prac = self.practitioner_in(org);
            let decided = (created + self.r.range(1, 10)).min(self.as_of);
            let roll = self.r.unit();
            // (status, outcome, review action, display)
            let (outcome, action, action_display, denied) =
                if decided + 3 > self.as_of || roll < 0.12 {
                    ("queued", "A4", "Pended", false)
                } else if roll < 0.3 {
                    ("complete", "A3", "Not Certified", true)
                } else {
                    ("complete", "A1", "Certified in total", false)
                };
            let auth_start = decided;
            let auth_end = auth_start + self.r.range(30, 180);
            let expired = outcome == "complete" && !denied && auth_end < self.as_of;
            let meta = self.meta(
                decided,
                "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-priorauthorization",
                sec,
            );
            let submitted = self.r.money(200, 9_000);
            let units = self.r.range(1, 12);
            let mut adjudication = vec![
                json!({ "category": cc(ADJ, "submitted", "Submitted Amount"), "amount": money(submitted) }),
            ];
            let mut review = json!([{ "url": "number", "valueString": format!("AUTH{}{:03}", self.p.idx, i + 1) },
                { "url": "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/extension-reviewActionCode",
                  "valueCodeableConcept": cc("https://codesystem.x12.org/005010/306", action, action_display) }]);
            if denied {
                adjudication.push(json!({ "category": coding("http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PDexAdjudicationDiscriminator", "denialreason"),
                    "reason": cc("https://x12.org/codes/claim-adjustment-reason-codes", "50", "These are non-covered services because this is not deemed a 'medical necessity' by the payer.") }));
                review.as_array_mut().expect("array").push(json!({ "url": "reasonCode",
                    "valueCodeableConcept": cc("https://codesystem.x12.org/external/886", "N", "Not medically necessary") }));
            } else if outcome == "complete" {
                adjudication.push(json!({ "category": cc(ADJ, "eligible", "Eligible Amount"), "amount": money(submitted * 0.7) }));
                adjudication.push(json!({ "category": coding("http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PDexAdjudicationDiscriminator", "allowedunits"), "value": units }));
                let used = if expired {
                    units
                } else {
                    self.r.range(0, units)
                };
                adjudication.push(json!({ "category": coding("http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PDexAdjudicationDiscriminator", "consumedunits"), "value": used }));
            }
            adjudication[0]["extension"] = json!([
                { "url": "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/extension-reviewAction", "extension": review },
                { "url": "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/base-ext-when-adjudicated", "valueDateTime": instant(decided, 14 * 3600) },
            ]);
            let urgent = self.r.chance(0.2);
            let mut pa = json!({
                "resourceType": "ExplanationOfBenefit", "id": id, "meta": meta,
                "extension": [{ "url": "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/extension-levelOfServiceCode",
                    "valueCodeableConcept": cc("https://codesystem.x12.org/005010/1338", if urgent { "U" } else { "E" }, if urgent { "Urgent" } else { "Elective" }) }],
                "identifier": [{ "system": pool::PRIOR_AUTH_ID_SYSTEM, "value": format!("PA{}{:03}", self.p.idx, i + 1) }],
                "status": "active",
                "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional" }], "text": "Professional" },
                "use": "preauthorization",
                "patient": self.patient_ref(),
                "billablePeriod": { "start": date(auth_start), "end": date(auth_end) },
                "created": instant(created, 9 * 3600),
                "insurer": pool::payer_ref(),
                "provider": r("Practitioner", &pool::practitioner_id(prac)),
                "priority": cc("http://terminology.hl7.org/CodeSystem/processpriority", if urgent { "stat" } else { "normal" }, if urgent { "Immediate" } else { "Normal" }),
                "outcome": outcome,
                "careTeam": [{ "sequence": 1, "provider": r("Practitioner", &pool::practitioner_id(prac)), "responsible": true }],
                "insurance": [{ "focal": true, "coverage": r("Coverage", self.coverage_on(created)) }],
                "item": [{
                    "sequence": 1,
                    "category": cc("https://x12.org/codes/service-type-codes", st, st_display),
                    "productOrService": cc(CPT, cpt, display),
                    "servicedPeriod": { "start": date(auth_start), "end": date(auth_end) },
                    "quantity": { "value": units },
                    "adjudication": adjudication,
                }],
                "total": [{ "category": cc("http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PriorAuthorizationValueCodes", "submitted", "Submitted Amount"), "amount": money(submitted) }],
            });
            if outcome == "complete" && !denied {
                pa["preAuthRef"] = json!([format!("AUTH{}{:03}", self.p.idx, i + 1)]);
                pa["preAuthRefPeriod"] =
                    json!([{ "start": date(auth_start), "end": date(auth_end) }]);
            }
            self.sink.put("ExplanationOfBenefit", &pa)?;
            if sec.is_none() {
                self.claims.push(format!("ExplanationOfBenefit/{id}"));
            }
        }
        Ok(())
    }

    /// The PDex MemberProviderTreatmentRelationship Group: one per member, keyed by the member,
    /// listing the practitioners who treated them.
    fn treatment_group(&mut self) -> anyhow::Result<()> {
        let id = format!("{}-trl", self.p.id);
        let since = self
            .seen
            .iter()
            .map(|s| s.1)
            .min()
            .unwrap_or(self.p.covered_span().0);
        let updated = self.as_of - self.r.range(0, 500);
        let mut seen = std::mem::take(&mut self.seen);
        seen.sort_unstable();
        let members: Vec<Value> = seen.iter().map(|(prac, day)| json!({
            "entity": { "extension": [{ "url": "http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/treatment-relationship-details",
                "valueString": format!("Treatment relationship established {} based on a claim for an office visit.", date(*day)) }],
                "reference": format!("Practitioner/{}", pool::practitioner_id(*prac)), "display": pool::practitioner_display(*prac) },
            "inactive": false,
        })).collect();
        self.sink.put("Group", &json!({
            "resourceType": "Group", "id": id,
            "meta": { "lastUpdated": instant(updated, 7_200), "profile": ["http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-treatment-relationship"] },
            "identifier": [{ "system": format!("{}/treatment-relationship-groups", pool::GROUP_ID_SYSTEM), "value": id }],
            "active": true, "type": "practitioner", "actual": true,
            "code": { "coding": [{ "system": "http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PdexMultiMemberMatchResultCS", "code": "match", "display": "Matched" }] },
            "managingEntity": pool::payer_ref(),
            "characteristic": [{ "code": { "coding": [{ "system": "http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PdexMemberAttributionCS", "code": "pdex-member", "display": "PDex Member" }] },
                "valueReference": self.patient_ref(), "exclude": false, "period": { "start": date(since) } }],
            "quantity": members.len(),
            "member": members,
        }))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Claim {
    Inpatient,
    Outpatient,
    Professional,
    Pharmacy,
    Oral,
}
