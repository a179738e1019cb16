//! A small checker for the PDex profiles our result Groups and envelope must conform to: it
//! reads a StructureDefinition's differential and checks an instance against what the
//! differential says — fixed patterns (`patternCode`, `patternBoolean`, `patternString`),
//! minimum and maximum cardinalities (per parent instance), extension slices by profile URL,
//! `Parameters.parameter` slices by name (closed slicing, `value[x]` 0..0, resource type and
//! profile), required bindings to `PDexMultiMemberMatchResultVS`, and reference target types.
//! It is exercised on the IG's own examples (which must pass) and on broken copies (which must
//! fail), so it cannot silently accept everything.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::HashMap;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/pdex/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap()
}

pub fn load(name: &str) -> Value {
    fixture(name)
}

/// Values at `path` (dot-separated, below the root), arrays flattened.
fn values_at<'a>(root: &'a Value, path: &[&str]) -> Vec<&'a Value> {
    let mut current = vec![root];
    for step in path {
        let mut next = Vec::new();
        for v in current {
            match v.get(*step) {
                Some(Value::Array(items)) => next.extend(items.iter()),
                Some(x) => next.push(x),
                None => {}
            }
        }
        current = next;
    }
    current
}

/// The systems a value set includes.
fn value_set_systems(url: &str) -> Option<Vec<String>> {
    if url != "http://hl7.org/fhir/us/davinci-pdex/ValueSet/PDexMultiMemberMatchResultVS" {
        return None;
    }
    let vs = fixture("ValueSet-PDexMultiMemberMatchResultVS.json");
    Some(
        vs["compose"]["include"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["system"].as_str().unwrap().to_owned())
            .collect(),
    )
}

/// Problems of `instance` against the profile in fixture `sd_file`; empty when it conforms.
pub fn check(instance: &Value, sd_file: &str) -> Vec<String> {
    let sd = fixture(sd_file);
    let rtype = sd["type"].as_str().unwrap();
    let mut problems = Vec::new();
    if instance["resourceType"] != rtype {
        problems.push(format!("resourceType is not {rtype}"));
        return problems;
    }
    let elements = sd["differential"]["element"].as_array().unwrap();
    // Parameters slices by name: collect the declared names to check closed slicing.
    let mut parameter_slices: HashMap<String, &Value> = HashMap::new();
    for e in elements {
        let id = e["id"].as_str().unwrap();
        if let Some(name) = id.strip_prefix(&format!("{rtype}.parameter:"))
            && !name.contains('.')
        {
            parameter_slices.insert(name.to_owned(), e);
        }
    }
    for e in elements {
        let id = e["id"].as_str().unwrap();
        let path: Vec<&str> = e["path"].as_str().unwrap().split('.').skip(1).collect();
        if id.contains(".parameter:") {
            continue; // handled below
        }
        if let Some((before, _slice)) = id.split_once("extension:") {
            // extension slice: count extensions with the profile's URL under each parent
            let slice_profile = e["type"][0]["profile"][0].as_str().unwrap();
            let parent: Vec<&str> = before.trim_end_matches('.').split('.').skip(1).collect();
            for p in values_at(instance, &parent) {
                let n = p["extension"].as_array().map_or(0, |x| {
                    x.iter().filter(|x| x["url"] == slice_profile).count()
                });
                let min = e["min"].as_u64().unwrap_or(0) as usize;
                if n < min {
                    problems.push(format!("{id}: {n} extensions, at least {min} required"));
                }
                if let Some(max) = e["max"].as_str().and_then(|m| m.parse::<usize>().ok())
                    && n > max
                {
                    problems.push(format!("{id}: {n} extensions, at most {max} allowed"));
                }
                for x in p["extension"].as_array().into_iter().flatten() {
                    if x["url"] == slice_profile {
                        let r = x["valueReference"]["reference"].as_str().unwrap_or("");
                        if let Some(local) = r.strip_prefix('#') {
                            let found = instance["contained"]
                                .as_array()
                                .is_some_and(|c| c.iter().any(|c| c["id"] == local));
                            if !found {
                                problems.push(format!("{id}: #{local} is not contained"));
                            }
                        } else {
                            problems.push(format!(
                                "{id}: valueReference must point at a contained resource"
                            ));
                        }
                    }
                }
            }
            continue;
        }
        if id.contains(':') {
            continue; // type slices (value[x]:valueReference): nothing beyond the base rules
        }
        let (parents, last) = path.split_at(path.len() - 1);
        let parent_values = values_at(instance, parents);
        for p in &parent_values {
            let children = values_at(p, last);
            if let Some(min) = e["min"].as_u64()
                && (children.len() as u64) < min
            {
                problems.push(format!(
                    "{id}: {} present, at least {min} required",
                    children.len()
                ));
            }
        }
        let here = values_at(instance, &path);
        for (key, _) in e.as_object().unwrap() {
            if let Some(kind) = key.strip_prefix("pattern") {
                let _ = kind;
                for v in &here {
                    if **v != e[key] {
                        problems.push(format!("{id}: {v} is not the fixed {}", e[key]));
                    }
                }
            }
        }
        if e["binding"]["strength"] == "required"
            && let Some(systems) = value_set_systems(e["binding"]["valueSet"].as_str().unwrap())
        {
            for v in &here {
                let codings: Vec<&Value> = if v.get("coding").is_some() {
                    v["coding"].as_array().unwrap().iter().collect()
                } else {
                    vec![*v]
                };
                for c in codings {
                    if !systems.iter().any(|s| c["system"] == s.as_str()) {
                        problems.push(format!("{id}: {c} is not from the required value set"));
                    }
                }
            }
        }
        for t in e["type"].as_array().into_iter().flatten() {
            if t["code"] == "Reference"
                && let Some(target) = t["targetProfile"][0].as_str()
            {
                let target_type = target.rsplit('/').next().unwrap();
                for v in &here {
                    if let Some(r) = v["reference"].as_str()
                        && !r.starts_with(&format!("{target_type}/"))
                    {
                        problems.push(format!("{id}: {r} is not a {target_type} reference"));
                    }
                }
            }
        }
    }
    if rtype == "Parameters" && !parameter_slices.is_empty() {
        let closed = elements
            .iter()
            .any(|e| e["id"] == "Parameters.parameter" && e["slicing"]["rules"] == "closed");
        let params = instance["parameter"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for p in &params {
            let name = p["name"].as_str().unwrap_or("");
            if closed && !parameter_slices.contains_key(name) {
                problems.push(format!(
                    "parameter {name:?} is not allowed (closed slicing)"
                ));
            }
        }
        for (name, e) in &parameter_slices {
            let of_name: Vec<&Value> = params
                .iter()
                .filter(|p| p["name"] == name.as_str())
                .collect();
            let min = e["min"].as_u64().unwrap_or(0) as usize;
            if of_name.len() < min {
                problems.push(format!(
                    "parameter {name}: {} present, at least {min}",
                    of_name.len()
                ));
            }
            if let Some(max) = e["max"].as_str().and_then(|m| m.parse::<usize>().ok())
                && of_name.len() > max
            {
                problems.push(format!(
                    "parameter {name}: {} present, at most {max}",
                    of_name.len()
                ));
            }
            let prefix = format!("Parameters.parameter:{name}.");
            for sub in elements
                .iter()
                .filter(|x| x["id"].as_str().unwrap().starts_with(&prefix))
            {
                let field = &sub["id"].as_str().unwrap()[prefix.len()..];
                for p in &of_name {
                    if field == "value[x]"
                        && sub["max"] == "0"
                        && p.as_object()
                            .unwrap()
                            .keys()
                            .any(|k| k.starts_with("value"))
                    {
                        problems.push(format!("parameter {name}: value[x] is not allowed"));
                    }
                    if field == "resource" {
                        let want = sub["type"][0]["code"].as_str().unwrap();
                        if p["resource"]["resourceType"] != want {
                            problems.push(format!("parameter {name}: resource is not a {want}"));
                        }
                        if let Some(profile) = sub["type"][0]["profile"][0].as_str() {
                            let file = match profile.rsplit('/').next().unwrap() {
                                "pdex-member-match-group" => {
                                    Some("StructureDefinition-pdex-member-match-group.json")
                                }
                                "pdex-member-no-match-group" => {
                                    Some("StructureDefinition-pdex-member-no-match-group.json")
                                }
                                _ => None,
                            };
                            if let Some(file) = file {
                                for q in check(&p["resource"], file) {
                                    problems.push(format!("parameter {name}: {q}"));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    problems
}
