//! Authorized representatives (Patient Access, PDex §pdex-114): RelatedPersons that let a
//! login act for a member. In each household the subscriber is the guardian (`GUARD`, and
//! parent) of every minor dependent, one RelatedPerson per child sharing the subscriber's
//! person identifier; and a spouse holds a durable power of attorney (`DPOWATT`) for a
//! subscriber aged 75 or more. Derived from the household alone (no random draws), so the
//! rest of the data set is unchanged by it.

use super::dates::{as_of_day, date, instant};
use super::household::{Household, Person};
use super::sink::Sink;
use serde_json::{Value, json};

/// The identifier system of the synthetic persons behind RelatedPersons.
pub const PERSON_SYSTEM: &str = "urn:pdex:synth:person";
const ROLE_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";

fn related_person(
    id: String,
    of: &Person,
    who: &Person,
    roles: &[(&str, &str)],
    day: i64,
) -> Value {
    json!({
        "resourceType": "RelatedPerson",
        "id": id,
        "meta": {"lastUpdated": instant(day, 9 * 3600)},
        "active": true,
        "patient": {"reference": format!("Patient/{}", of.id)},
        "relationship": roles.iter().map(|(code, display)| json!({
            "coding": [{"system": ROLE_CODE, "code": code, "display": display}]
        })).collect::<Vec<_>>(),
        "identifier": [{"system": PERSON_SYSTEM, "value": who.id}],
        "name": [{"family": who.family, "given": who.given}],
        "gender": who.gender,
        "birthDate": date(who.birth),
        "period": {"start": date(of.coverages[0].start.max(of.birth))},
    })
}

/// Writes the household's RelatedPersons; returns how many.
pub fn write(sink: &mut Sink, hh: &Household) -> anyhow::Result<u64> {
    let as_of = as_of_day();
    let Some(subscriber) = hh.members.iter().find(|m| m.relationship == "self") else {
        return Ok(0);
    };
    let mut n = 0;
    for child in hh
        .members
        .iter()
        .filter(|m| m.relationship == "child" && as_of - m.birth < 18 * 365)
    {
        let parent = if subscriber.gender == "female" {
            ("MTH", "mother")
        } else {
            ("FTH", "father")
        };
        let rp = related_person(
            format!("rp-{}-{}", subscriber.id, child.id),
            child,
            subscriber,
            &[("GUARD", "guardian"), parent],
            as_of - 30,
        );
        sink.put("RelatedPerson", &rp)?;
        n += 1;
    }
    if let Some(spouse) = hh.members.iter().find(|m| m.relationship == "spouse")
        && as_of - subscriber.birth >= 75 * 365
    {
        let rp = related_person(
            format!("rp-{}-{}", spouse.id, subscriber.id),
            subscriber,
            spouse,
            &[("DPOWATT", "durable power of attorney"), ("SPS", "spouse")],
            as_of - 30,
        );
        sink.put("RelatedPerson", &rp)?;
        n += 1;
    }
    Ok(n)
}
