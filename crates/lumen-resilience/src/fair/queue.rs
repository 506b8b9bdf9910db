//! The fair queue's state and its two decisions, apart from the async plumbing: which waiter
//! a freed slot goes to ([`Queue::pop_next`]) and whom to refuse when the queue is full
//! ([`Queue::victim`]). Both are plain functions over plain data, so they are tested without a
//! runtime; the handle a waiter is woken through is a type parameter for the same reason.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::time::Instant;

use super::Class;

/// One queued request.
#[derive(Debug)]
pub(super) struct Waiter<T> {
    /// Arrival order across the whole queue: FIFO within a flow, "newest" for shedding.
    pub seq: u64,
    /// Past it, the waiter is dropped rather than given a slot.
    pub deadline: Instant,
    /// How the waiter is told the outcome.
    pub tx: T,
}

/// One flow's waiters in one class, and its place in deficit round robin.
#[derive(Debug)]
struct Flow<T> {
    /// Dispatches per round (at least 1); the latest arrival's weight wins.
    weight: u32,
    /// Dispatches left in the flow's current turn; 0 = between turns (refilled to `weight`
    /// when it next reaches the front of the ring).
    deficit: u32,
    /// Ascending `seq`, so FIFO and a binary search by `seq` both work.
    waiters: VecDeque<Waiter<T>>,
}

/// The flows of one priority class, served by deficit round robin with a unit cost per request
/// (a request's size is unknown before it runs; slots, not tokens, are what is shared).
///
/// Only flows with waiters exist: a flow is created by its first waiter and removed with its
/// last, so memory is bounded by the queue size whatever flow names callers send.
#[derive(Debug)]
pub(super) struct ClassQueue<T> {
    flows: HashMap<Arc<str>, Flow<T>>,
    /// Active flows in service order; the front one is taking (or about to take) its turn.
    ring: VecDeque<Arc<str>>,
    /// How many flows became active and have not been served since, in arrival order, right
    /// after the turn in progress (see [`fresh_at`](Self::fresh_at)): a flow that had nothing
    /// waiting is served before the flows with a backlog take their next turn, as FQ-CoDel
    /// serves new flows first. A key that sends now and then waits for the next free slot,
    /// not behind one turn of every flood.
    fresh: usize,
    len: usize,
}

impl<T> Default for ClassQueue<T> {
    fn default() -> Self {
        Self {
            flows: HashMap::new(),
            ring: VecDeque::new(),
            fresh: 0,
            len: 0,
        }
    }
}

impl<T> ClassQueue<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Waiters of `flow` in this class.
    pub fn flow_len(&self, flow: &str) -> usize {
        self.flows.get(flow).map_or(0, |f| f.waiters.len())
    }

    /// Where the fresh flows start in the ring: after the front flow when it is in the middle of
    /// its turn (a fresh flow has never been served, so it has no deficit), else at the front.
    fn fresh_at(&self) -> usize {
        let in_turn = self
            .ring
            .front()
            .and_then(|k| self.flows.get(k))
            .is_some_and(|f| f.deficit > 0);
        usize::from(in_turn)
    }

    /// Appends a waiter to its flow. A new flow joins the fresh flows (after those that became
    /// active before it): it waits for no turn of the flows with a backlog. Returns the flow's
    /// key, shared with the queue so the waiter can find itself again without another
    /// allocation.
    pub fn push(&mut self, flow: &str, weight: u32, waiter: Waiter<T>) -> Arc<str> {
        self.len += 1;
        let weight = weight.max(1);
        if let Some(key) = self.flows.get_key_value(flow).map(|(k, _)| k.clone()) {
            if let Some(f) = self.flows.get_mut(flow) {
                f.weight = weight;
                f.waiters.push_back(waiter);
            }
            return key;
        }
        let key: Arc<str> = Arc::from(flow);
        self.flows.insert(
            key.clone(),
            Flow {
                weight,
                deficit: 0,
                waiters: VecDeque::from([waiter]),
            },
        );
        let at = (self.fresh_at() + self.fresh).min(self.ring.len());
        self.ring.insert(at, key.clone());
        self.fresh += 1;
        key
    }

    /// Takes out one waiter (cancelled, timed out): O(log n) to find, and its flow goes with it
    /// when it was the last.
    pub fn remove(&mut self, flow: &str, seq: u64) -> Option<Waiter<T>> {
        let f = self.flows.get_mut(flow)?;
        let at = f.waiters.binary_search_by_key(&seq, |w| w.seq).ok()?;
        let w = f.waiters.remove(at)?;
        let emptied = f.waiters.is_empty();
        self.len -= 1;
        if emptied {
            self.forget(flow);
        }
        Some(w)
    }

    /// Takes out the newest waiter of `flow` (the one shed).
    pub fn pop_newest(&mut self, flow: &str) -> Option<Waiter<T>> {
        let f = self.flows.get_mut(flow)?;
        let w = f.waiters.pop_back()?;
        let emptied = f.waiters.is_empty();
        self.len -= 1;
        if emptied {
            self.forget(flow);
        }
        Some(w)
    }

    /// Removes an emptied flow and its ring entry (O(flows); flows are at most the queue size,
    /// and this runs only when a flow empties other than through dispatch).
    fn forget(&mut self, flow: &str) {
        let start = self.fresh_at();
        self.flows.remove(flow);
        if let Some(at) = self.ring.iter().position(|k| &**k == flow) {
            if (start..start + self.fresh).contains(&at) {
                self.fresh -= 1;
            }
            self.ring.remove(at);
        }
    }

    /// The next waiter by deficit round robin: the front flow takes `weight` dispatches per
    /// turn, then goes to the back of the ring. Waiters at the head of the chosen flow whose
    /// deadline has passed are handed to `expired` and not charged to the flow's turn.
    pub fn pop_next(
        &mut self,
        now: Instant,
        mut expired: impl FnMut(Waiter<T>),
    ) -> Option<Waiter<T>> {
        loop {
            let key = self.ring.front()?.clone();
            // The front flow is fresh when no turn is in progress and fresh flows wait: it is
            // served now, so it is fresh no longer.
            if self.fresh > 0 && self.fresh_at() == 0 {
                self.fresh -= 1;
            }
            let Some(f) = self.flows.get_mut(&key) else {
                // Unreachable while the ring and the map agree; recover rather than spin.
                self.ring.pop_front();
                continue;
            };
            while f.waiters.front().is_some_and(|w| w.deadline <= now) {
                if let Some(w) = f.waiters.pop_front() {
                    self.len -= 1;
                    expired(w);
                }
            }
            let Some(w) = f.waiters.pop_front() else {
                self.flows.remove(&key);
                self.ring.pop_front();
                continue;
            };
            self.len -= 1;
            if f.deficit == 0 {
                f.deficit = f.weight;
            }
            f.deficit -= 1;
            if f.waiters.is_empty() {
                // An emptied flow leaves with its deficit: an idle flow banks no credit.
                self.flows.remove(&key);
                self.ring.pop_front();
            } else if f.deficit == 0 {
                self.ring.rotate_left(1);
            }
            return Some(w);
        }
    }

    /// The flow that sheds first: the one with the most waiters (ties: the one whose newest
    /// waiter arrived last), with its length.
    pub fn fattest(&self) -> Option<(&Arc<str>, usize)> {
        self.flows
            .iter()
            .max_by_key(|(_, f)| (f.waiters.len(), f.waiters.back().map(|w| w.seq)))
            .map(|(k, f)| (k, f.waiters.len()))
    }
}

/// Whom a full queue refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Victim {
    /// The request asking to join.
    Newcomer,
    /// The newest waiter of this flow in this class.
    Queued { class: Class, flow: Arc<str> },
}

/// Every class's flows, and the arrival counter.
#[derive(Debug)]
pub(super) struct Queue<T> {
    /// Indexed by [`Class::index`]: batch, standard, interactive.
    classes: [ClassQueue<T>; Class::COUNT],
    next_seq: u64,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            classes: std::array::from_fn(|_| ClassQueue::default()),
            next_seq: 0,
        }
    }
}

impl<T> Queue<T> {
    pub fn len(&self) -> usize {
        self.classes.iter().map(ClassQueue::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.iter().all(ClassQueue::is_empty)
    }

    pub fn class(&self, class: Class) -> &ClassQueue<T> {
        &self.classes[class.index()]
    }

    /// Whether `flow` has waiters in any class.
    pub fn has_flow(&self, flow: &str) -> bool {
        self.classes.iter().any(|c| c.flow_len(flow) > 0)
    }

    /// Distinct (class, flow) pairs with waiters.
    pub fn flows(&self) -> usize {
        self.classes.iter().map(ClassQueue::flows).sum()
    }

    /// Queues a request; returns its flow key and sequence number, which find it again.
    pub fn push(
        &mut self,
        class: Class,
        flow: &str,
        weight: u32,
        deadline: Instant,
        tx: T,
    ) -> (Arc<str>, u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = self.classes[class.index()].push(flow, weight, Waiter { seq, deadline, tx });
        (key, seq)
    }

    pub fn remove(&mut self, class: Class, flow: &str, seq: u64) -> Option<Waiter<T>> {
        self.classes[class.index()].remove(flow, seq)
    }

    pub fn pop_newest(&mut self, class: Class, flow: &str) -> Option<Waiter<T>> {
        self.classes[class.index()].pop_newest(flow)
    }

    /// The next waiter to get a slot: the highest class with waiters first (strict priority:
    /// a batch request waits as long as interactive ones keep arriving), fair between flows
    /// within it.
    pub fn pop_next(
        &mut self,
        now: Instant,
        mut expired: impl FnMut(Waiter<T>),
    ) -> Option<(Class, Waiter<T>)> {
        for class in Class::DESCENDING {
            if let Some(w) = self.classes[class.index()].pop_next(now, &mut expired) {
                return Some((class, w));
            }
        }
        None
    }

    /// Whom to refuse when the queue is full and `newcomer` (its class and flow) asks to join,
    /// or, with no newcomer, whom to shed to shrink the queue.
    ///
    /// The lowest class present loses first, so a higher-class newcomer displaces a queued
    /// lower-class waiter, and a newcomer below everything queued is refused itself. Within
    /// that class the flow with the most waiters loses its newest one (counting the newcomer as
    /// its flow's newest): a flood that fills the queue sheds its own requests rather than
    /// locking out a flow that has hardly any waiting. With equal lengths the newest loses,
    /// which is the newcomer when it ties. `None`: nothing to refuse.
    pub fn victim(&self, newcomer: Option<(Class, &str)>) -> Option<Victim> {
        let lowest = Class::ASCENDING
            .into_iter()
            .find(|c| !self.classes[c.index()].is_empty());
        let queued = |class: Class| {
            self.classes[class.index()]
                .fattest()
                .map(|(flow, len)| (class, flow.clone(), len))
        };
        match (lowest, newcomer) {
            (None, None) => None,
            (None, Some(_)) => Some(Victim::Newcomer),
            (Some(low), None) => queued(low).map(|(class, flow, _)| Victim::Queued { class, flow }),
            (Some(low), Some((class, flow))) => {
                if class < low {
                    return Some(Victim::Newcomer);
                }
                let (vclass, vflow, vlen) = queued(low)?;
                if class > low {
                    return Some(Victim::Queued {
                        class: vclass,
                        flow: vflow,
                    });
                }
                let mine = self.classes[class.index()].flow_len(flow) + 1;
                if mine >= vlen {
                    Some(Victim::Newcomer)
                } else {
                    Some(Victim::Queued {
                        class: vclass,
                        flow: vflow,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
