use std::time::Duration;

use super::*;

fn t(id: &str) -> Ticket {
    Ticket {
        id: id.into(),
        key: format!("lumen:rl:{{k}}:req:{id}"),
    }
}

fn settle(id: &str, deltas: &[(&str, i64)], leases: &[&str]) -> Write {
    Write::Settle {
        ticket: t(id),
        deltas: deltas.iter().map(|(k, d)| ((*k).into(), *d)).collect(),
        leases: leases.iter().map(|k| (*k).into()).collect(),
    }
}

fn text(v: &[Vec<u8>]) -> Vec<String> {
    v.iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect()
}

#[test]
fn a_batch_of_writes_is_merged_per_key_with_exact_sums() {
    let batch = [
        settle("a", &[("tpm", -60)], &["conc"]),
        Write::Usage {
            hash: "day1".into(),
            expires_at: 100,
            fields: vec![("k|m|r".into(), 1), ("k|m|i".into(), 30)],
        },
        Write::Barrier,
        settle("b", &[("tpm", -40), ("day", 5)], &["conc"]),
        Write::Usage {
            hash: "day1".into(),
            expires_at: 100,
            fields: vec![("k|m|r".into(), 1), ("k|m|i".into(), 12)],
        },
    ];
    let inv = write_call("mark", 60_000, &batch).unwrap();
    assert_eq!(
        text(&inv.keys),
        [
            "mark",
            "lumen:rl:{k}:req:a",
            "lumen:rl:{k}:req:b",
            "conc",
            "day",
            "tpm",
            "day1"
        ]
    );
    assert_eq!(
        text(&inv.args),
        [
            "60000", "2", "1", "2", "1", // ttl; tickets, leases, windows, hashes
            "2", "a", "b", // conc: two slots
            "5", "-100", // day, tpm
            "100", "2", "k|m|i", "42", "k|m|r", "2", // day1
        ]
    );
}

#[test]
fn a_batch_with_nothing_to_write_sends_nothing() {
    assert_eq!(write_call("m", 1, &[Write::Barrier]), None);
    let zero = Write::Usage {
        hash: "d".into(),
        expires_at: 1,
        fields: vec![("f".into(), 0)],
    };
    assert_eq!(write_call("m", 1, &[zero, Write::Barrier]), None);
    // Deltas that cancel out still close their tickets.
    let inv = write_call(
        "m",
        1,
        &[
            settle("a", &[("tpm", 5)], &[]),
            settle("b", &[("tpm", -5)], &[]),
        ],
    );
    assert_eq!(text(&inv.unwrap().args)[1..5], ["2", "0", "0", "0"]);
}

#[test]
fn admissions_are_encoded_in_order_and_replies_read_per_request() {
    let counters = vec![
        Counter {
            key: "rpm".into(),
            limit: 10,
            cost: 1,
            expiry: Expiry::Window(Duration::from_secs(60)),
        },
        Counter {
            key: "conc".into(),
            limit: 2,
            cost: 1,
            expiry: Expiry::Lease(Duration::from_secs(30)),
        },
    ];
    let batch = [
        Admission {
            ticket: t("a"),
            counters: counters.clone(),
        },
        Admission {
            ticket: t("b"),
            counters: counters[..1].to_vec(),
        },
    ];
    let inv = acquire_call(60_000, &batch);
    assert_eq!(
        text(&inv.keys),
        [
            "lumen:rl:{k}:req:a",
            "rpm",
            "conc",
            "lumen:rl:{k}:req:b",
            "rpm"
        ]
    );
    assert_eq!(
        text(&inv.args),
        [
            "60000", "2", "a", "10", "1", "60000", "0", "2", "1", "30000", "1", "1", "b", "10",
            "1", "60000", "0"
        ]
    );
    assert_eq!(
        verdict(&[1, 3, 59_000, 1, 30_000], 2),
        Ok(Verdict::Admitted(vec![
            CounterState {
                value: 3,
                reset: Duration::from_millis(59_000)
            },
            CounterState {
                value: 1,
                reset: Duration::from_secs(30)
            },
        ]))
    );
    assert_eq!(
        verdict(&[0, 2, 2, -1], 2),
        Ok(Verdict::Refused {
            index: 1,
            state: CounterState {
                value: 2,
                reset: Duration::ZERO
            }
        })
    );
    assert!(verdict(&[2], 2).is_err(), "cancelled first");
    assert!(verdict(&[1, 3], 2).is_err(), "short reply");
}
