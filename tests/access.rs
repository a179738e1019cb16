//! The one access-control layer: a member-scoped context never reaches another member's
//! data through read, vread, history, search, chains or includes; a context without the
//! sensitive allowance never sees sensitive resources. On every configured store.

mod common;

use common::{TestDb, backends};
use pdex::identity::AccessContext;
use pdex::search::query;
use pdex::store::{IdRule, Store, WriteKind, WriteOp};

const SENSITIVE: &str = r#""meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PSY"}]}"#;

async fn load(store: &Store) {
    let docs = [
        r#"{"resourceType":"Patient","id":"alice","name":[{"family":"Alpha"}]}"#.to_owned(),
        r#"{"resourceType":"Patient","id":"bob","name":[{"family":"Beta"}]}"#.to_owned(),
        r#"{"resourceType":"Practitioner","id":"doc","name":[{"family":"Shared"}]}"#.to_owned(),
        r#"{"resourceType":"Observation","id":"a1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/alice"},"performer":[{"reference":"Practitioner/doc"}]}"#.to_owned(),
        format!(r#"{{"resourceType":"Observation","id":"a2",{SENSITIVE},"status":"final","code":{{"text":"x"}},"subject":{{"reference":"Patient/alice"}}}}"#),
        r#"{"resourceType":"Observation","id":"b1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/bob"}}"#.to_owned(),
        r#"{"resourceType":"Provenance","id":"pb","target":[{"reference":"Observation/b1"}],"recorded":"2020-01-01T00:00:00Z","agent":[{"who":{"reference":"Practitioner/doc"}}]}"#.to_owned(),
        // written before its target: its owner is resolved when the target arrives
        r#"{"resourceType":"Provenance","id":"pa","target":[{"reference":"Observation/a3"}],"recorded":"2020-01-01T00:00:00Z","agent":[{"who":{"reference":"Practitioner/doc"}}]}"#.to_owned(),
        r#"{"resourceType":"Provenance","id":"porg","target":[{"reference":"Practitioner/doc"}],"recorded":"2020-01-01T00:00:00Z","agent":[{"who":{"reference":"Practitioner/doc"}}]}"#.to_owned(),
        r#"{"resourceType":"Group","id":"g1","type":"person","actual":true,"member":[{"entity":{"reference":"Patient/bob"}}]}"#.to_owned(),
        r#"{"resourceType":"Coverage","id":"cov-b","status":"active","beneficiary":{"reference":"Patient/bob"},"subscriber":{"reference":"Patient/alice"},"payor":[{"reference":"Patient/alice"}]}"#.to_owned(),
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
    let late = r#"{"resourceType":"Observation","id":"a3","status":"final","code":{"text":"y"},"subject":{"reference":"Patient/alice"}}"#;
    let op = WriteOp::put(
        WriteKind::Import,
        store.prepare(late, None, IdRule::FromBody).unwrap(),
    );
    store.write(vec![op]).await.unwrap();
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

#[tokio::test]
async fn member_scope_and_sensitivity_are_enforced_on_every_read_path() {
    for b in backends() {
        let db = TestDb::new(&b).await;
        let store = Store::open(&db.url, Default::default(), true)
            .await
            .unwrap();
        load(&store).await;
        let alice = AccessContext::member("alice", false);
        let alice_all = AccessContext::member("alice", true);

        // read / vread / history of another member's data: as if it did not exist
        assert!(
            store
                .read(&alice, "Observation", "b1")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .read(&alice, "Patient", "bob")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .vread(&alice, "Observation", "b1", 1)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .history(&alice, "Observation", "b1")
                .await
                .unwrap()
                .is_empty()
        );
        // Coverage belongs to its beneficiary (bob), even though alice is the subscriber
        assert!(
            store
                .read(&alice, "Coverage", "cov-b")
                .await
                .unwrap()
                .is_none()
        );
        // own and shared data are visible
        assert!(
            store
                .read(&alice, "Observation", "a1")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .read(&alice, "Practitioner", "doc")
                .await
                .unwrap()
                .is_some()
        );
        // sensitive data only with the allowance
        assert!(
            store
                .read(&alice, "Observation", "a2")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .read(&alice_all, "Observation", "a2")
                .await
                .unwrap()
                .is_some()
        );

        // search: explicit other-patient parameters find nothing
        assert!(
            ids(&store, &alice, "Observation", &[("subject", "Patient/bob")])
                .await
                .is_empty()
        );
        assert_eq!(
            ids(&store, &alice, "Observation", &[]).await,
            vec!["Observation/a1", "Observation/a3"]
        );
        assert_eq!(
            ids(&store, &alice_all, "Observation", &[]).await,
            vec!["Observation/a1", "Observation/a2", "Observation/a3"]
        );
        assert_eq!(
            ids(&store, &alice, "Patient", &[]).await,
            vec!["Patient/alice"]
        );
        // chains cannot probe another member's attributes
        assert!(
            ids(
                &store,
                &alice,
                "Observation",
                &[("subject:Patient.family", "beta")]
            )
            .await
            .is_empty()
        );
        // includes and revincludes stay inside the scope
        assert_eq!(
            ids(
                &store,
                &alice,
                "Observation",
                &[
                    ("_include", "Observation:subject"),
                    ("_include", "Observation:performer")
                ]
            )
            .await,
            vec![
                "Observation/a1",
                "Observation/a3",
                "Patient/alice",
                "Practitioner/doc"
            ]
        );
        // Provenance follows its targets' owner; the Provenance of shared data is shared
        assert_eq!(
            ids(
                &store,
                &alice,
                "Provenance",
                &[("agent", "Practitioner/doc")]
            )
            .await,
            vec!["Provenance/pa", "Provenance/porg"]
        );
        // a Group lists members: not visible to a member context
        assert!(store.read(&alice, "Group", "g1").await.unwrap().is_none());
        let bob = AccessContext::member("bob", false);
        assert_eq!(
            ids(
                &store,
                &bob,
                "Observation",
                &[("_revinclude", "Provenance:target")]
            )
            .await,
            vec!["Observation/b1", "Provenance/pb"]
        );
        assert_eq!(
            ids(&store, &bob, "Coverage", &[]).await,
            vec!["Coverage/cov-b"]
        );
        // the operator sees everything
        let op = AccessContext::operator();
        assert_eq!(ids(&store, &op, "Observation", &[]).await.len(), 4);
        assert!(store.read(&op, "Group", "g1").await.unwrap().is_some());
        store.db.close().await;
        db.cleanup().await;
    }
}
