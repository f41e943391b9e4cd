//! Model-based test of field-level last-write-wins: random sets of PUTs (JSON
//! objects), PATCHes (random fields, random `null`s) and DELETEs with distinct random
//! timestamps are delivered to a real in-process `Service` in several random orders,
//! each order on its own key. Every order must end in the same document, and that
//! document must be the model's: each field as the newest write that named it says (a
//! PUT or DELETE names every field), readable unless a DELETE is the newest whole-value
//! write and no newer PATCH touched a field — the rule as documented in
//! `src/guard/document.rs`, not its code.
//!
//! Runs on whichever engine `TIDEMARK_TEST_ENGINE` names (embedded by default).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tidemark::clock::ManualClock;
use tidemark::metrics::Metrics;
use tidemark::service::{Policy, Service, ServiceError, WriteOptions};
use tidemark::store::Durability;

const T0: u64 = 1_767_225_600_000_000;
const FIELDS: [&str; 4] = ["cart", "user", "flash", "theme"];
const ORDERS: usize = 4;

/// A field's value in a write: one of a few small JSON values, or `None` (absent from
/// a PUT, `null` in a PATCH).
type Members = BTreeMap<usize, Option<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Put(Members),
    Patch(Members),
    Delete,
}

fn value_of(v: u8) -> Value {
    match v {
        0 => json!(0),
        1 => json!("x"),
        2 => json!([1, 2]),
        _ => json!({"nested": v}),
    }
}

fn members() -> impl Strategy<Value = Members> {
    proptest::collection::btree_map(
        0..FIELDS.len(),
        proptest::option::of(0u8..4),
        0..=FIELDS.len(),
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => members().prop_map(|m| Op::Put(m.into_iter().filter(|(_, v)| v.is_some()).collect())),
        5 => members().prop_filter("a patch names a field", |m| !m.is_empty()).prop_map(Op::Patch),
        2 => Just(Op::Delete),
    ]
}

/// A set of writes with distinct timestamps, and `ORDERS` orders to deliver them in.
fn scenario() -> impl Strategy<Value = (Vec<(u64, Op)>, Vec<Vec<usize>>)> {
    proptest::collection::vec(op(), 1..9).prop_flat_map(|ops| {
        let n = ops.len();
        let stamps = Just((1..=n as u64).collect::<Vec<_>>()).prop_shuffle();
        let orders =
            proptest::collection::vec(Just((0..n).collect::<Vec<_>>()).prop_shuffle(), ORDERS);
        (Just(ops), stamps, orders).prop_map(|(ops, stamps, orders)| {
            let writes = stamps.into_iter().map(|s| T0 + s * 10).zip(ops).collect();
            (writes, orders)
        })
    })
}

/// What the model says the key ends as: `None` when it reads as absent, else the
/// document and its newest timestamp.
fn model(writes: &[(u64, Op)]) -> Option<(Value, u64)> {
    let base = writes
        .iter()
        .filter(|(_, op)| !matches!(op, Op::Patch(_)))
        .max_by_key(|(ts, _)| *ts);
    let base_ts = base.map_or(0, |(ts, _)| *ts);
    let mut doc = Map::new();
    let mut newest = base_ts;
    let mut patched_after_base = false;
    for (i, name) in FIELDS.iter().enumerate() {
        let winner = writes
            .iter()
            .filter(|(_, op)| !matches!(op, Op::Patch(m) if !m.contains_key(&i)))
            .max_by_key(|(ts, _)| *ts);
        let value = match winner {
            Some((ts, Op::Patch(m))) => {
                patched_after_base = true;
                newest = newest.max(*ts);
                m.get(&i).copied().flatten()
            }
            Some((_, Op::Put(m))) => m.get(&i).copied().flatten(),
            Some((_, Op::Delete)) | None => None,
        };
        if let Some(v) = value {
            doc.insert(name.to_string(), value_of(v));
        }
    }
    let readable = patched_after_base || matches!(base, Some((_, Op::Put(_))));
    readable.then_some((Value::Object(doc), newest))
}

async fn deliver(
    service: &Service,
    key: &[u8],
    timestamp: u64,
    op: &Op,
) -> Result<(), TestCaseError> {
    let object = |m: &Members| -> Map<String, Value> {
        m.iter()
            .map(|(i, v)| (FIELDS[*i].to_string(), v.map_or(Value::Null, value_of)))
            .collect()
    };
    let result = match op {
        Op::Put(m) => service
            .put(
                key.to_vec(),
                serde_json::to_vec(&Value::Object(object(m))).unwrap_or_default(),
                "application/json".into(),
                timestamp,
                None,
                WriteOptions::default(),
            )
            .await
            .map(drop),
        Op::Patch(m) => service
            .patch(
                key.to_vec(),
                object(m),
                timestamp,
                None,
                WriteOptions::default(),
            )
            .await
            .map(drop),
        Op::Delete => service
            .delete(key.to_vec(), timestamp, WriteOptions::default())
            .await
            .map(drop),
    };
    match result {
        Ok(()) | Err(ServiceError::Stale { .. } | ServiceError::PatchRefused(_)) => Ok(()),
        Err(other) => Err(TestCaseError::fail(format!(
            "{op:?} at {timestamp}: unexpected {other}"
        ))),
    }
}

async fn run(writes: Vec<(u64, Op)>, orders: Vec<Vec<usize>>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = Arc::new(Metrics::new());
    let store = common::open_store(dir.path(), Durability::Relaxed, metrics.clone()).await;
    let service = Service::new(
        store,
        Arc::new(ManualClock::new(T0)),
        Policy {
            max_key_bytes: 64,
            max_value_bytes: 1 << 16,
            grace_micros: 3_600_000_000,
            max_future_skew_micros: 0,
            max_lifetime_micros: None,
        },
        metrics,
    );
    let expected = model(&writes);
    for (n, order) in orders.iter().enumerate() {
        let key = format!("session:{n}");
        for &i in order {
            let (timestamp, op) = &writes[i];
            deliver(&service, key.as_bytes(), *timestamp, op).await?;
        }
        let got = service
            .get(key.clone().into_bytes())
            .await
            .map_err(|e| TestCaseError::fail(format!("get: {e}")))?
            .map(|entry| {
                let doc: Value = serde_json::from_slice(&entry.value).unwrap_or(Value::Null);
                (doc, entry.timestamp)
            });
        prop_assert_eq!(
            &got,
            &expected,
            "order {:?} of {:?} ended elsewhere than the model",
            order,
            writes
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_same_writes_in_any_order_end_in_the_same_document((writes, orders) in scenario()) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(run(writes, orders))?;
    }
}

/// The worked example of the issue: two overlapping requests change different fields.
#[tokio::test]
async fn overlapping_patches_of_different_fields_both_survive_a_whole_put_between_them() {
    let writes = vec![
        (
            T0 + 10,
            Op::Put([(0, Some(0)), (1, Some(1))].into_iter().collect()),
        ),
        (T0 + 20, Op::Patch([(0, Some(2))].into_iter().collect())),
        (
            T0 + 30,
            Op::Patch([(2, Some(3)), (1, None)].into_iter().collect()),
        ),
        (T0 + 15, Op::Put([(3, Some(1))].into_iter().collect())),
    ];
    let expected = model(&writes);
    assert_eq!(
        expected,
        Some((
            json!({"cart": [1, 2], "flash": {"nested": 3}, "theme": "x"}),
            T0 + 30
        )),
        "the model itself"
    );
    run(
        writes,
        vec![vec![0, 1, 2, 3], vec![3, 2, 1, 0], vec![2, 3, 0, 1]],
    )
    .await
    .expect("every order ends in the model's document");
}
