//! Usage accounting on Redis: one total across replicas.
//!
//! One hash per UTC day (`lumen:usage:YYYY-MM-DD`), one field per (key, model[, requested],
//! counter), e.g. `team-a|meta-llama/Llama-3.1-8B|i` for input tokens. A record goes with the
//! next batch of writes (`calls::WRITE`, one script call for the settlements and records of
//! every request that ended meanwhile): `HINCRBY`s of the merged fields plus an `EXPIREAT`.
//! Increments from any number of replicas add up exactly, a batch lands together or not at
//! all, and a batch that timed out is retried under its marker, so it counts once.
//! The hash expires at the end of the retention (an absolute time, so every replica sets the
//! same one). A query reads the days of its range with `HGETALL`, a few days per round trip.
//!
//! Names are escaped (`%` → `%25`, `|` → `%7C`) before they are joined with `|`: the encoding
//! is injective, so no key name or model id can collide with another or forge a separator.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use lumen_governance::accounting::{
    Counts, Day, UsageBounds, UsageDelta, UsageQuery, UsageRow, UsageStore,
};
use lumen_governance::store::StoreError;

use crate::RedisState;
use crate::calls::Write;

const USAGE_PREFIX: &str = "lumen:usage:";

/// Days read per round trip: each day's reply fits well within the operation deadline, and a
/// year is about 50 round trips.
const DAYS_PER_TRIP: usize = 7;

/// The counters' field suffixes, in [`Counts`] order.
const COUNTERS: [u8; 5] = [b'r', b'i', b'o', b'c', b'e'];

/// Usage rows in Redis, through the shared [`RedisState`] connection and its deadline.
pub struct RedisUsageStore {
    state: Arc<RedisState>,
    retention_days: u32,
}

impl RedisUsageStore {
    /// Rows of a day expire `retention_days` days after it starts (clamped to
    /// 1..=[`UsageBounds::MAX_RETENTION_DAYS`]); Redis has no row bound beyond that.
    pub fn new(state: Arc<RedisState>, retention_days: u32) -> Self {
        Self {
            state,
            retention_days: retention_days.clamp(1, UsageBounds::MAX_RETENTION_DAYS),
        }
    }

    /// When the hash of `day` expires (Unix seconds): the start of the first day past the
    /// retention, the moment the in-memory store drops the day too.
    fn expires_at(&self, day: Day) -> i64 {
        day.start_unix_secs() + i64::from(self.retention_days) * 86_400
    }
}

impl RedisUsageStore {
    /// The write that records `delta`; `None` for an all-zero one.
    fn write_of(&self, delta: &UsageDelta<'_>) -> Option<Write> {
        if delta.counts.is_zero() {
            return None;
        }
        let prefix = row_prefix(delta.key, delta.model, delta.requested());
        let fields = COUNTERS
            .iter()
            .zip(counter_values(&delta.counts))
            .filter(|(_, value)| *value != 0)
            .map(|(letter, value)| {
                let mut field = String::with_capacity(prefix.len() + 1);
                field.push_str(&prefix);
                field.push(char::from(*letter));
                (field, i64::try_from(value).unwrap_or(i64::MAX))
            })
            .collect();
        // Past the retention already (a late delta): Redis deletes the hash at once, so the
        // delta is dropped the way the in-memory store drops it.
        Some(Write::Usage {
            hash: day_key(delta.day),
            expires_at: self.expires_at(delta.day),
            fields,
        })
    }
}

fn day_key(day: Day) -> String {
    format!("{USAGE_PREFIX}{day}")
}

/// Appends `s` with `%` and `|` escaped.
fn escape_into(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '%' => out.push_str("%25"),
            '|' => out.push_str("%7C"),
            c => out.push(c),
        }
    }
}

/// The inverse of [`escape_into`]; `None` for text it cannot have produced.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3)?;
        out.push(match esc {
            "%25" => '%',
            "%7C" => '|',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    if rest.contains('|') {
        return None;
    }
    out.push_str(rest);
    Some(out)
}

/// `key|model|` or `key|model|requested|`, escaped: the fields of one row without the counter.
fn row_prefix(key: &str, model: &str, requested: Option<&str>) -> String {
    let mut out = String::with_capacity(key.len() + model.len() + 16);
    escape_into(&mut out, key);
    out.push('|');
    escape_into(&mut out, model);
    out.push('|');
    if let Some(r) = requested {
        escape_into(&mut out, r);
        out.push('|');
    }
    out
}

/// A parsed field: (key, model, requested), and which counter.
type Field = ((String, String, Option<String>), usize);

fn parse_field(field: &[u8]) -> Option<Field> {
    let s = std::str::from_utf8(field).ok()?;
    let (row, counter) = s.rsplit_once('|')?;
    let counter = match counter.as_bytes() {
        [c] => COUNTERS.iter().position(|x| x == c)?,
        _ => return None,
    };
    let mut parts = row.split('|');
    let key = unescape(parts.next()?)?;
    let model = unescape(parts.next()?)?;
    let requested = parts.next().map(unescape);
    if parts.next().is_some() {
        return None;
    }
    let requested = match requested {
        None => None,
        Some(r) => Some(r?),
    };
    Some(((key, model, requested), counter))
}

fn counter_mut(c: &mut Counts, i: usize) -> Option<&mut u64> {
    Some(match i {
        0 => &mut c.requests,
        1 => &mut c.input_tokens,
        2 => &mut c.output_tokens,
        3 => &mut c.cached_tokens,
        4 => &mut c.errors,
        _ => return None,
    })
}

fn counter_values(c: &Counts) -> [u64; 5] {
    [
        c.requests,
        c.input_tokens,
        c.output_tokens,
        c.cached_tokens,
        c.errors,
    ]
}

impl UsageStore for RedisUsageStore {
    fn record<'a>(&'a self, delta: UsageDelta<'a>) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            match self.write_of(&delta) {
                Some(w) => self.state.write(w).await,
                None => Ok(()),
            }
        })
    }

    fn try_queue(&self, delta: &UsageDelta<'_>) -> bool {
        match self.write_of(delta) {
            Some(w) => self.state.send(w).is_ok(),
            None => true,
        }
    }

    fn query<'a>(
        &'a self,
        query: &'a UsageQuery,
    ) -> BoxFuture<'a, Result<Vec<UsageRow>, StoreError>> {
        Box::pin(async move {
            let days: Vec<Day> = query.days().collect();
            let mut out = Vec::new();
            let mut skipped = 0usize;
            for chunk in days.chunks(DAYS_PER_TRIP) {
                let mut pipe = redis::pipe();
                for day in chunk {
                    pipe.cmd("HGETALL").arg(day_key(*day));
                }
                let pipe = &pipe;
                let replies: Vec<Vec<(Vec<u8>, i64)>> = self
                    .state
                    .retried(|mut c| async move { pipe.query_async(&mut c).await })
                    .await?;
                for (day, fields) in chunk.iter().zip(replies) {
                    let mut rows: BTreeMap<(String, String, Option<String>), Counts> =
                        BTreeMap::new();
                    for (field, value) in fields {
                        let Some((row, counter)) = parse_field(&field) else {
                            skipped += 1;
                            continue;
                        };
                        if !query.matches(&row.0, &row.1) {
                            continue;
                        }
                        let counts = rows.entry(row).or_default();
                        if let Some(c) = counter_mut(counts, counter) {
                            *c = c.saturating_add(u64::try_from(value).unwrap_or(0));
                        }
                    }
                    out.extend(rows.into_iter().map(|((key, model, requested), counts)| {
                        UsageRow {
                            day: *day,
                            key,
                            model,
                            requested,
                            counts,
                            cost: None,
                        }
                    }));
                }
            }
            if skipped > 0 {
                tracing::warn!(skipped, "usage hashes hold fields Lumen did not write");
            }
            UsageRow::sort(&mut out);
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests;
