//! `$bulk-member-match` result Groups: built from per-member outcomes, checked against the PDex
//! profiles (`pdex-member-match-group`, `pdex-member-no-match-group`,
//! `pdex-parameters-multi-member-match-bundle-out`), the R4 JSON schema and the IG's example
//! Groups; and Group ownership in the store: a payer sees only its own Groups, on every read
//! path, on every configured database. These are store-level checks of the one access layer
//! with hand-built contexts (every read path at once); the same rule over HTTP with real
//! payer tokens is tested in `bulk_member_match.rs` and `bulk_member_match_export.rs`.

mod common;
#[path = "support/profile.rs"]
mod profile;

use common::{TestDb, backends};
use pdex::identity::{AccessContext, ClientKind, DataScope, OrgIdentifier};
use pdex::ops::bulk_member_match::{
    MatchedMember, MemberBundle, MemberOutcome, RequestLimits, parse_request,
};
use pdex::ops::groups::{self, GroupSettings, ResultGroups};
use pdex::search::query;
use pdex::store::{IdRule, Store, WriteKind, WriteOp};
use serde_json::{Value, json};

const MATCH_SD: &str = "StructureDefinition-pdex-member-match-group.json";
const NO_MATCH_SD: &str = "StructureDefinition-pdex-member-no-match-group.json";
const OUT_SD: &str = "StructureDefinition-pdex-parameters-multi-member-match-bundle-out.json";

fn npi(value: &str) -> OrgIdentifier {
    OrgIdentifier {
        system: "http://hl7.org/fhir/sid/us-npi".into(),
        value: value.into(),
    }
}

/// A request whose MemberPatients are the IG example Groups' contained Patients (1, 2, 3, 4),
/// patient 1 sent twice with two different coverages (§pdex-153).
fn ig_like_request() -> Value {
    let example = profile::load("Parameters-payer-multi-member-match-out.json");
    let mut patients: Vec<Value> = Vec::new();
    for p in example["parameter"].as_array().unwrap() {
        for c in p["resource"]["contained"].as_array().unwrap() {
            if c["resourceType"] == "Patient" {
                patients.push(c.clone());
            }
        }
    }
    assert_eq!(patients.len(), 4);
    let input = profile::load("Parameters-payer-multi-member-match-in.json");
    let parts = input["parameter"][0]["part"].as_array().unwrap().clone();
    let mut bundles = Vec::new();
    for (i, p) in patients.iter().enumerate() {
        let mut parts = parts.clone();
        parts[0]["resource"] = p.clone();
        bundles.push(json!({"name": "MemberBundle", "part": parts}));
        if i == 0 {
            // the same patient again, with a different coverage and a stored-copy meta
            let mut again = parts.clone();
            again[0]["resource"]["meta"] =
                json!({"versionId": "7", "lastUpdated": "2024-01-01T00:00:00Z"});
            again[1]["resource"]["id"] = json!("coverage-other");
            again[1]["resource"]["subscriberId"] = json!("999");
            bundles.push(json!({"name": "MemberBundle", "part": again}));
        }
    }
    json!({"resourceType": "Parameters", "parameter": bundles})
}

fn matched(patient_id: &str) -> MemberOutcome {
    MemberOutcome::Matched(MatchedMember {
        patient_id: patient_id.into(),
        umb: Some(json!({
            "type": {"coding": [{"system": "http://hl7.org/fhir/us/davinci-hrex/CodeSystem/hrex-temp", "code": "UMB"}]},
            "system": "http://example.org/old-payer/umb",
            "value": format!("UMB-{patient_id}"),
        })),
        consent_id: Some("c-1".into()),
        // 2024-03-31T23:59:59.999Z
        consent_end_ms: Some(1_711_929_599_999),
    })
}

fn build_ig_like() -> (Vec<MemberBundle>, ResultGroups) {
    let req = parse_request(&ig_like_request().to_string(), RequestLimits::default()).unwrap();
    assert!(req.rejected.is_empty());
    let outcomes = [
        matched("1001"),
        matched("1001"),
        matched("2002"),
        MemberOutcome::NonMatched,
        MemberOutcome::ConsentConstrained,
    ];
    let results: Vec<(&MemberBundle, MemberOutcome)> = req.members.iter().zip(outcomes).collect();
    let requester = npi("0123456789");
    let us = npi("9876543210");
    let groups = groups::build(
        &results,
        &GroupSettings {
            profiles: &pdex::ops::groups::PAYER_TO_PAYER,
            group_id: "07e72a15407547bf9d03f522aa536a72",
            requester: Some(&requester),
            us: Some(&us),
            us_display: Some("Old Health Plan"),
            // 2024-03-20T09:00:00Z
            match_time_ms: 1_710_925_200_000,
        },
    );
    (req.members.clone(), groups)
}

#[test]
fn the_profile_checker_accepts_the_ig_examples_and_rejects_broken_copies() {
    let matched = profile::load("Group-07e72a15407547bf9d03f522aa536a72.1.json");
    assert_eq!(profile::check(&matched, MATCH_SD), Vec::<String>::new());
    for f in [
        "Group-example-pdex-member-no-match-group.json",
        "Group-example-pdex-member-consent-constraint-group.json",
    ] {
        assert_eq!(
            profile::check(&profile::load(f), NO_MATCH_SD),
            Vec::<String>::new(),
            "{f}"
        );
    }
    let envelope = profile::load("Parameters-payer-multi-member-match-out.json");
    assert_eq!(profile::check(&envelope, OUT_SD), Vec::<String>::new());

    let mut broken = matched.clone();
    broken["type"] = json!("device");
    broken.as_object_mut().unwrap().remove("code");
    broken["member"][0]["entity"]
        .as_object_mut()
        .unwrap()
        .remove("extension");
    broken["characteristic"][0]["code"]["coding"][0]["code"] = json!("nomatch");
    broken["managingEntity"] = json!({"reference": "Patient/1"});
    let problems = profile::check(&broken, MATCH_SD);
    for needle in [
        "Group.type",
        "Group.code",
        "Group.member.entity.extension",
        "matchedMember",
        "Group.characteristic.code.coding.code",
        "Group.managingEntity",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle} not reported: {problems:#?}"
        );
    }
    let mut bad_code = matched.clone();
    bad_code["code"]["coding"][0]["system"] = json!("http://example.org/other");
    assert!(!profile::check(&bad_code, MATCH_SD).is_empty());
    let mut dangling = matched;
    dangling["member"][1]["entity"]["extension"][0]["valueReference"]["reference"] = json!("#9");
    assert!(!profile::check(&dangling, MATCH_SD).is_empty());
    let mut extra = envelope.clone();
    extra["parameter"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "Extra", "valueString": "x"}));
    extra["parameter"][0]["valueString"] = json!("x");
    let problems = profile::check(&extra, OUT_SD);
    assert!(
        problems.iter().any(|p| p.contains("closed slicing")),
        "{problems:#?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("value[x]")),
        "{problems:#?}"
    );
    let mut no_matched = envelope;
    no_matched["parameter"].as_array_mut().unwrap().remove(0);
    assert!(!profile::check(&no_matched, OUT_SD).is_empty());
}

#[test]
fn result_groups_follow_the_pdex_profiles_and_the_ig_examples() {
    let (members, g) = build_ig_like();
    assert_eq!(profile::check(&g.matched, MATCH_SD), Vec::<String>::new());
    let non = g.non_matched.as_ref().unwrap();
    let constrained = g.consent_constrained.as_ref().unwrap();
    assert_eq!(profile::check(non, NO_MATCH_SD), Vec::<String>::new());
    assert_eq!(
        profile::check(constrained, NO_MATCH_SD),
        Vec::<String>::new()
    );
    assert_eq!(profile::check(&g.envelope(), OUT_SD), Vec::<String>::new());

    for (ours, file) in [
        (&g.matched, "Group-07e72a15407547bf9d03f522aa536a72.1.json"),
        (non, "Group-example-pdex-member-no-match-group.json"),
        (
            constrained,
            "Group-example-pdex-member-consent-constraint-group.json",
        ),
    ] {
        assert_eq!(
            ours["meta"]["profile"],
            profile::load(file)["meta"]["profile"]
        );
    }
    // compare with the IG's own Groups, element by element
    let example = profile::load("Parameters-payer-multi-member-match-out.json");
    let ig = |name: &str| {
        example["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["resource"]
            .clone()
    };
    for (ours, theirs) in [
        (&g.matched, ig("MatchedMembers")),
        (non, ig("NonMatchedMembers")),
        (constrained, ig("ConsentConstrainedMembers")),
    ] {
        for key in ["type", "actual", "code", "identifier"] {
            assert_eq!(ours[key], theirs[key], "{key}");
        }
        assert_eq!(
            ours["managingEntity"]["identifier"],
            theirs["managingEntity"]["identifier"]
        );
        // each contained Patient is exactly the submitted one
        let patients = |g: &Value| -> Vec<Value> {
            g["contained"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["resourceType"] == "Patient")
                .cloned()
                .collect()
        };
        assert_eq!(patients(ours), patients(&theirs));
    }
    let entities = |g: &Value| -> Vec<String> {
        g["member"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["entity"]["reference"].as_str().unwrap().to_owned())
            .collect()
    };
    // patient 1 twice (two coverages), then patient 2
    assert_eq!(
        entities(&g.matched),
        ["Patient/1001", "Patient/1001", "Patient/2002"]
    );
    assert_eq!(entities(non), ["#3"]);
    assert_eq!(entities(constrained), ["#4"]);

    // §pdex-153: the same patient with two coverages carries matchedCoverage → the contained
    // Coverage it was sent with; the patient sent once has none
    let m = g.matched["member"].as_array().unwrap();
    let coverage_of = |i: usize| {
        m[i]["entity"]["extension"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["url"] == groups::EXT_MATCH_COVERAGE)
            .map(|x| {
                x["valueReference"]["reference"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
    };
    assert_eq!(coverage_of(0).as_deref(), Some("#coverage-1"));
    assert_eq!(coverage_of(1).as_deref(), Some("#coverage-other"));
    assert_eq!(coverage_of(2), None);
    let contained_coverage = g.matched["contained"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "coverage-other")
        .unwrap();
    let mut sent = members[1].coverage_to_match.clone().unwrap();
    sent.as_object_mut().unwrap().remove("meta");
    assert_eq!(*contained_coverage, sent);
    // the second copy of patient 1 had a stored meta: stripped, so it is contained once
    assert_eq!(
        g.matched["contained"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["resourceType"] == "Patient")
            .count(),
        2
    );

    // requester in characteristic, match date, validity; members' own periods and UMBs
    let ch = &g.matched["characteristic"][0];
    assert_eq!(ch["code"]["coding"][0]["code"], "match");
    assert_eq!(ch["valueReference"]["identifier"]["value"], "0123456789");
    assert_eq!(ch["exclude"], false);
    assert_eq!(
        ch["period"],
        json!({"start": "2024-03-20", "end": "2024-03-31"})
    );
    assert_eq!(
        m[2]["period"],
        json!({"start": "2024-03-20", "end": "2024-03-31"})
    );
    assert_eq!(m[2]["entity"]["identifier"]["value"], "UMB-2002");
    assert_eq!(g.matched["quantity"], 3);
    assert_eq!(
        constrained["characteristic"][0]["code"]["coding"][0]["code"],
        "consentconstraint"
    );
    assert_eq!(g.matched["id"], "07e72a15407547bf9d03f522aa536a72");
    assert_eq!(non["id"], "07e72a15407547bf9d03f522aa536a72-nomatch");

    // nothing of ours and no consent detail in the groups that are not matches (§pdex-154c)
    for gr in [non, constrained] {
        let text = gr.to_string();
        for needle in [
            "1001",
            "2002",
            "UMB",
            "period\":{\"start\":\"2024-03-20\",\"end",
        ] {
            assert!(!text.contains(needle), "{needle} in {text}");
        }
        assert!(gr["member"][0].get("period").is_none());
    }
}

#[test]
fn matched_is_always_emitted_even_empty_and_the_others_only_when_used() {
    let req = parse_request(&ig_like_request().to_string(), RequestLimits::default()).unwrap();
    let results: Vec<(&MemberBundle, MemberOutcome)> = req
        .members
        .iter()
        .map(|m| (m, MemberOutcome::NonMatched))
        .collect();
    let g = groups::build(
        &results,
        &GroupSettings {
            profiles: &pdex::ops::groups::PAYER_TO_PAYER,
            group_id: "g",
            requester: None,
            us: None,
            us_display: None,
            match_time_ms: 0,
        },
    );
    assert!(g.matched.get("member").is_none());
    assert_eq!(g.matched["quantity"], 0);
    assert!(g.consent_constrained.is_none());
    // patient 1 came twice with different coverages: two entries
    assert_eq!(g.non_matched.as_ref().unwrap()["quantity"], 5);
    assert_eq!(profile::check(&g.matched, MATCH_SD), Vec::<String>::new());
    assert_eq!(profile::check(&g.envelope(), OUT_SD), Vec::<String>::new());
    let envelope = g.envelope();
    let names: Vec<&str> = envelope["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["MatchedMembers", "NonMatchedMembers"]);
    assert_eq!(g.groups().len(), 2);
}

#[test]
fn result_groups_are_valid_r4_json() {
    let (_, g) = build_ig_like();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/fhir.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    for (ty, instance) in [
        ("Group", g.matched.clone()),
        ("Group", g.non_matched.clone().unwrap()),
        ("Group", g.consent_constrained.clone().unwrap()),
        ("Parameters", g.envelope()),
    ] {
        let mut s = schema.clone();
        s.as_object_mut().unwrap().remove("oneOf");
        s.as_object_mut().unwrap().remove("discriminator");
        s["$ref"] = Value::String(format!("#/definitions/{ty}"));
        // stand-ins for two definitions the official R4 schema refers to but lacks
        s["definitions"]["integer64"] = json!({"type": "string"});
        s["definitions"]["Resource"] = json!({"$ref": "#/definitions/ResourceList"});
        let validator = jsonschema::validator_for(&s).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .take(5)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{ty}: {errors:#?}");
        // the validator does reject what is wrong, nested resources included
        let mut bad = instance.clone();
        if ty == "Group" {
            bad["actual"] = json!("yes");
        } else {
            bad["parameter"][0]["resource"]["member"][0]["entity"]["reference"] = json!(5);
        }
        assert!(validator.iter_errors(&bad).count() >= 1, "{ty}");
    }
}

// ---------------------------------------------------------------------------------------------
// Ownership in the store

fn payer(org: Option<&str>, client: &str) -> AccessContext {
    AccessContext {
        client_id: Some(client.into()),
        kind: ClientKind::Payer,
        organization: org.map(npi),
        scopes: vec!["system/*.rs".into()],
        scope: DataScope::Patients(vec![]),
        allow_sensitive: false,
        can_write: false,
        cert_thumbprint: None,
        grant: Default::default(),
    }
}

async fn ids(store: &Store, ctx: &AccessContext, rtype: &str, q: &[(&str, &str)]) -> Vec<String> {
    let pairs: Vec<(String, String)> = q
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let req = query::parse(&store.registry, rtype, &pairs, "http://x/fhir", false).unwrap();
    let page = store.search(ctx, &req).await.unwrap();
    let mut out: Vec<String> = page
        .matches
        .iter()
        .chain(page.included.iter())
        .map(|r| format!("{}/{}", r.rtype, r.id))
        .collect();
    out.sort();
    out
}

fn match_group(id: &str, requester: &str) -> Value {
    let requester = npi(requester);
    let bundle = MemberBundle {
        index: 0,
        parameter_index: 0,
        patient: json!({"resourceType": "Patient", "id": "sent", "name": [{"family": "Alpha"}]}),
        coverage_to_match: None,
        coverage_to_link: None,
        consent: None,
        defects: vec![],
    };
    groups::build(
        &[(&bundle, matched("alice"))],
        &GroupSettings {
            profiles: &pdex::ops::groups::PAYER_TO_PAYER,
            group_id: id,
            requester: Some(&requester),
            us: Some(&npi("9876543210")),
            us_display: None,
            match_time_ms: 1_710_925_200_000,
        },
    )
    .matched
}

#[tokio::test]
async fn a_payer_sees_only_its_own_groups_on_every_read_path() {
    for b in backends() {
        let db = TestDb::new(&b).await;
        let store = Store::open(&db.url, Default::default(), true)
            .await
            .unwrap();
        let docs = [
            r#"{"resourceType":"Patient","id":"alice","name":[{"family":"Alpha"}]}"#,
            r#"{"resourceType":"Organization","id":"org","name":"Shared"}"#,
            // a Group of the plan's own (an opt-out list): no owner, invisible to payers
            r#"{"resourceType":"Group","id":"internal","type":"person","actual":true,"code":{"coding":[{"system":"http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PdexMultiMemberMatchResultCS","code":"match"}]},"member":[{"entity":{"reference":"Patient/alice"}}]}"#,
        ];
        let ops = docs
            .iter()
            .map(|d| {
                WriteOp::put(
                    WriteKind::Import,
                    store.prepare(d, None, IdRule::FromBody).unwrap(),
                )
            })
            .collect();
        store.write(ops).await.unwrap();

        let a1 = payer(Some("1111111111"), "a-client-1");
        let a2 = payer(Some("1111111111"), "a-client-2");
        let other = payer(Some("2222222222"), "b-client");
        let no_org = payer(None, "lonely-client");
        groups::save_owned_group(&store, &a1, &match_group("ga", "1111111111"))
            .await
            .unwrap();
        groups::save_owned_group(&store, &other, &match_group("gb", "2222222222"))
            .await
            .unwrap();
        groups::save_owned_group(&store, &no_org, &match_group("gc", "3333333333"))
            .await
            .unwrap();

        // read, vread, history
        for (ctx, own) in [(&a1, "ga"), (&a2, "ga"), (&other, "gb"), (&no_org, "gc")] {
            for g in ["ga", "gb", "gc", "internal"] {
                let visible = store.read(ctx, "Group", g).await.unwrap().is_some();
                assert_eq!(visible, g == own, "{:?} reading {g}", ctx.client_id);
                assert_eq!(
                    store.vread(ctx, "Group", g, 1).await.unwrap().is_some(),
                    g == own
                );
                assert_eq!(
                    !store.history(ctx, "Group", g).await.unwrap().is_empty(),
                    g == own
                );
            }
        }
        // search, with the PDex Group search parameters (§pdex-161)
        let code =
            "http://hl7.org/fhir/us/davinci-pdex/CodeSystem/PdexMultiMemberMatchResultCS|match";
        assert_eq!(ids(&store, &a1, "Group", &[]).await, ["Group/ga"]);
        assert_eq!(
            ids(&store, &a2, "Group", &[("code", code)]).await,
            ["Group/ga"]
        );
        assert_eq!(
            ids(&store, &other, "Group", &[("code", "match")]).await,
            ["Group/gb"]
        );
        assert_eq!(
            ids(&store, &a1, "Group", &[("characteristic", code)]).await,
            ["Group/ga"]
        );
        assert_eq!(
            ids(
                &store,
                &a1,
                "Group",
                &[("identifier", "http://hl7.org/fhir/sid/us-npi|1111111111")]
            )
            .await,
            ["Group/ga"]
        );
        // asking for another payer's Group by its own attributes finds nothing
        assert!(
            ids(
                &store,
                &a1,
                "Group",
                &[("identifier", "http://hl7.org/fhir/sid/us-npi|2222222222")]
            )
            .await
            .is_empty()
        );
        assert!(ids(&store, &a1, "Group", &[("_id", "gb")]).await.is_empty());
        assert!(ids(&store, &a1, "Group", &[("member", "Patient/alice")]).await == ["Group/ga"]);
        // the Group does not open the member's data: a payer context still sees only shared
        // resources outside its Groups
        assert!(store.read(&a1, "Patient", "alice").await.unwrap().is_none());
        assert!(
            store
                .read(&a1, "Organization", "org")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            ids(&store, &a1, "Group", &[("_include", "Group:member")]).await,
            ["Group/ga"]
        );

        // a payer context without member scope restriction still only sees its own Groups
        let mut wide = a1.clone();
        wide.scope = DataScope::All;
        assert_eq!(ids(&store, &wide, "Group", &[]).await, ["Group/ga"]);
        assert!(
            store
                .read(&wide, "Patient", "alice")
                .await
                .unwrap()
                .is_some()
        );
        // providers follow the same rule; the operator and admin see every Group
        let mut provider = a1.clone();
        provider.kind = ClientKind::Provider;
        provider.organization = Some(npi("4444444444"));
        provider.client_id = Some("prov".into());
        assert!(ids(&store, &provider, "Group", &[]).await.is_empty());
        let op = AccessContext::operator();
        assert_eq!(
            ids(&store, &op, "Group", &[]).await,
            ["Group/ga", "Group/gb", "Group/gc", "Group/internal"]
        );
        let mut admin = op.clone();
        admin.kind = ClientKind::Admin;
        assert_eq!(ids(&store, &admin, "Group", &[]).await.len(), 4);
        // a caller with neither organization nor client id owns nothing
        let mut anonymous = a1.clone();
        anonymous.organization = None;
        anonymous.client_id = None;
        assert!(ids(&store, &anonymous, "Group", &[]).await.is_empty());

        // the stored Group is what was built, with our identity
        let stored = store.read(&a1, "Group", "ga").await.unwrap().unwrap();
        let v: Value = serde_json::from_str(&stored.content).unwrap();
        assert_eq!(v["member"][0]["entity"]["reference"], "Patient/alice");
        assert_eq!(profile::check(&v, MATCH_SD), Vec::<String>::new());
        store.db.close().await;
        db.cleanup().await;
    }
}
