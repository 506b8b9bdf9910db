//! Usage rows in process memory: the store without shared state.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use futures::future::BoxFuture;

use super::{Counts, Day, UsageBounds, UsageDelta, UsageQuery, UsageRow, UsageStore};
use crate::store::{Clock, StoreError};

/// One day's rows: key → model → (requested, counts). Nested maps so a lookup borrows the
/// delta's `&str`s at each level (a composite owned key would need an allocation per
/// request); the last level is a short list, since a (key, model) pair rarely has more than
/// one or two requested models. SipHash (std's default), not Fx: model ids can come from
/// clients (passthrough), so the maps must not be floodable.
#[derive(Default)]
struct DayRows {
    rows: usize,
    keys: HashMap<String, Models>,
}

/// A key's models on one day: model → (requested, counts).
type Models = HashMap<String, Vec<(Option<String>, Counts)>>;

impl DayRows {
    fn find_mut(&mut self, key: &str, model: &str, requested: Option<&str>) -> Option<&mut Counts> {
        let list = self.keys.get_mut(key)?.get_mut(model)?;
        list.iter_mut()
            .find(|(r, _)| r.as_deref() == requested)
            .map(|(_, c)| c)
    }

    fn insert(&mut self, key: &str, model: &str, requested: Option<&str>, counts: Counts) {
        self.keys
            .entry(key.to_owned())
            .or_default()
            .entry(model.to_owned())
            .or_default()
            .push((requested.map(str::to_owned), counts));
        self.rows += 1;
    }
}

#[derive(Default)]
struct Rows {
    days: BTreeMap<Day, DayRows>,
    rows: usize,
}

impl Rows {
    /// Drops the days before `oldest`.
    fn expire(&mut self, oldest: Day) {
        while let Some(entry) = self.days.first_entry() {
            if *entry.key() >= oldest {
                break;
            }
            self.rows -= entry.remove().rows;
        }
    }
}

/// The embedded default: rows in a map under one lock, bounded by
/// [`UsageBounds::max_rows`] and [`UsageBounds::retention_days`]. Recording into an existing
/// row takes the lock once and allocates nothing.
pub struct MemoryUsageStore {
    clock: Clock,
    bounds: UsageBounds,
    rows: Mutex<Rows>,
}

impl MemoryUsageStore {
    /// `clock` decides "today" for the retention. Bounds out of range are taken at their
    /// nearest valid value (at least one day, one row); [`UsageBounds::validate`] reports them
    /// at configuration time.
    pub fn new(clock: Clock, bounds: UsageBounds) -> Self {
        let bounds = UsageBounds {
            retention_days: bounds
                .retention_days
                .clamp(1, UsageBounds::MAX_RETENTION_DAYS),
            max_rows: bounds.max_rows.max(1),
        };
        Self {
            clock,
            bounds,
            rows: Mutex::new(Rows::default()),
        }
    }

    /// Rows held now, for a gauge.
    pub fn len(&self) -> usize {
        self.rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rows
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn oldest_kept(&self) -> Day {
        self.bounds.oldest_kept(Day::from_unix_ms((self.clock)()))
    }

    fn add(&self, d: &UsageDelta<'_>) -> Result<(), StoreError> {
        if d.counts.is_zero() {
            return Ok(());
        }
        let oldest = self.oldest_kept();
        let requested = d.requested();
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        rows.expire(oldest);
        if d.day < oldest {
            return Ok(());
        }
        if let Some(c) = rows
            .days
            .get_mut(&d.day)
            .and_then(|day| day.find_mut(d.key, d.model, requested))
        {
            c.add(&d.counts);
            return Ok(());
        }
        while rows.rows >= self.bounds.max_rows {
            // Evict the oldest day, but never the delta's own day or a later one: the newest
            // data is what is being reported on.
            match rows.days.first_entry() {
                Some(e) if *e.key() < d.day => {
                    rows.rows -= e.remove().rows;
                }
                _ => {
                    return Err(StoreError::Unavailable(format!(
                        "usage store full: {} rows, none older than {}",
                        self.bounds.max_rows, d.day
                    )));
                }
            }
        }
        rows.days
            .entry(d.day)
            .or_default()
            .insert(d.key, d.model, requested, d.counts);
        rows.rows += 1;
        Ok(())
    }

    fn read(&self, q: &UsageQuery) -> Vec<UsageRow> {
        let oldest = self.oldest_kept();
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        rows.expire(oldest);
        let mut out = Vec::new();
        for (day, day_rows) in rows.days.range(q.from()..=q.to()) {
            for (key, models) in &day_rows.keys {
                for (model, list) in models {
                    if !q.matches(key, model) {
                        continue;
                    }
                    out.extend(list.iter().map(|(requested, counts)| UsageRow {
                        day: *day,
                        key: key.clone(),
                        model: model.clone(),
                        requested: requested.clone(),
                        counts: *counts,
                        cost: None,
                    }));
                }
            }
        }
        drop(rows);
        UsageRow::sort(&mut out);
        out
    }
}

impl UsageStore for MemoryUsageStore {
    fn record<'a>(&'a self, delta: UsageDelta<'a>) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::ready(self.add(&delta)))
    }

    fn query<'a>(
        &'a self,
        query: &'a UsageQuery,
    ) -> BoxFuture<'a, Result<Vec<UsageRow>, StoreError>> {
        Box::pin(std::future::ready(Ok(self.read(query))))
    }
}

#[cfg(test)]
mod tests;
