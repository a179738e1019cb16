//! Cross-check: for many random stored ranges and random search values, the SQL the store
//! runs for each date prefix returns exactly the resources `fhir::datetime::matches` (the
//! reference semantics from the R4 prefix table) accepts. On every configured store.

mod common;

use common::{TestDb, backends};
use pdex::fhir::datetime::{self, Prefix};
use pdex::identity::AccessContext;
use pdex::search::query;
use pdex::store::{IdRule, Store, WriteKind, WriteOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A random FHIR date/dateTime of random precision between 2018 and 2022.
fn random_date(rng: &mut StdRng) -> String {
    let y = rng.random_range(2018..=2022);
    let m = rng.random_range(1..=12);
    let d = rng.random_range(1..=28);
    match rng.random_range(0..5) {
        0 => format!("{y}"),
        1 => format!("{y}-{m:02}"),
        2 => format!("{y}-{m:02}-{d:02}"),
        3 => format!(
            "{y}-{m:02}-{d:02}T{:02}:{:02}:00Z",
            rng.random_range(0..24),
            rng.random_range(0..60)
        ),
        _ => format!(
            "{y}-{m:02}-{d:02}T{:02}:30:15.250+05:00",
            rng.random_range(0..24)
        ),
    }
}

#[tokio::test]
async fn sql_date_prefixes_agree_with_the_reference_semantics() {
    for b in backends() {
        let db = TestDb::new(&b).await;
        let store = Store::open(&db.url, Default::default(), true)
            .await
            .unwrap();
        let mut rng = StdRng::seed_from_u64(20261122);
        let mut stored = Vec::new();
        let mut ops = Vec::new();
        for i in 0..60 {
            let (json, range) = if rng.random_bool(0.5) {
                let v = random_date(&mut rng);
                let r = datetime::parse(&v).unwrap();
                (
                    format!(
                        r#"{{"resourceType":"Observation","id":"o{i}","status":"final","code":{{"text":"x"}},"effectiveDateTime":"{v}"}}"#
                    ),
                    r,
                )
            } else {
                let a = datetime::parse(&random_date(&mut rng)).unwrap();
                let b = datetime::parse(&random_date(&mut rng)).unwrap();
                let (start, end) = if a.low <= b.low { (a, b) } else { (b, a) };
                let s = datetime::format_instant(start.low);
                let e = datetime::format_instant(end.high);
                let r = datetime::DateRange {
                    low: start.low,
                    high: end.high,
                };
                (
                    format!(
                        r#"{{"resourceType":"Observation","id":"o{i}","status":"final","code":{{"text":"x"}},"effectivePeriod":{{"start":"{s}","end":"{e}"}}}}"#
                    ),
                    r,
                )
            };
            stored.push((format!("o{i}"), range));
            ops.push(WriteOp::put(
                WriteKind::Import,
                store.prepare(&json, None, IdRule::FromBody).unwrap(),
            ));
        }
        store.write(ops).await.unwrap();
        let ctx = AccessContext::operator();
        // `ap` depends on the clock; the others are exact.
        let prefixes: Vec<(&str, Prefix)> = Prefix::ALL
            .into_iter()
            .filter(|(_, p)| *p != Prefix::Ap)
            .collect();
        for _ in 0..150 {
            let (text, prefix) = prefixes[rng.random_range(0..prefixes.len())];
            let value = random_date(&mut rng);
            let search = datetime::parse(&value).unwrap();
            let pairs = vec![
                ("date".to_owned(), format!("{text}{value}")),
                ("_count".to_owned(), "1000".to_owned()),
            ];
            let req = query::parse(
                &store.registry,
                "Observation",
                &pairs,
                "http://x/fhir",
                false,
            )
            .unwrap();
            let page = store.search(&ctx, &req).await.unwrap();
            let mut got: Vec<String> = page.matches.into_iter().map(|r| r.id).collect();
            got.sort();
            let mut want: Vec<String> = stored
                .iter()
                .filter(|(_, r)| datetime::matches(prefix, search, *r))
                .map(|(id, _)| id.clone())
                .collect();
            want.sort();
            assert_eq!(got, want, "date={text}{value} on {b:?}");
        }
        store.db.close().await;
        db.cleanup().await;
    }
}
