//! Fair admission: the concurrency cap of [`Admission`](crate::Admission), with a queue per flow
//! and priority classes in front of it instead of one FIFO queue.
//!
//! With one FIFO queue, a key sending ten times the others' rate holds ten times their share of
//! the slots, and everyone else's requests wait behind its backlog. Here each *flow* (a key's
//! name, or whatever string the caller groups requests by) queues on its own, and a freed slot
//! goes to the next flow by deficit round robin with a per-flow weight, within the highest
//! priority class that has waiters. The scheme is work-conserving: a slot is never left idle
//! while anyone waits, so a lone flow gets the whole capacity.
//!
//! A freed slot is handed to exactly one waiter, under the lock, through its own channel: no
//! wake-up of every waiter to race for it, and nobody arriving meanwhile can take it first.
//! When the queue is full the lowest class sheds first (see [`Queue::victim`]); waiters past
//! their deadline are dropped, never given a slot; a waiter whose future is dropped takes its
//! place out of the queue at once.
//!
//! **Headroom for light flows.** A non-preemptive queue cannot do better than "the next slot
//! that frees": under a flood every slot is always busy, so a key that sends now and then
//! still waits for a release (on average a slot's service time over the number of slots, and
//! in the worst case the widest gap between releases, since a flood's requests keep the phases
//! they started with). A few slots above the cap ([`FairAdmission::with_headroom`]) remove
//! that wait for the flows that need it: a request whose flow has nothing running and nothing
//! waiting may take one of them at once. The flood cannot use them (it always has requests
//! running), a slot taken from the headroom is not handed on when it frees (dispatch fills only
//! up to the cap), and they are shared by all flows, so the engines see at most the cap plus
//! the headroom whatever the callers do.

mod queue;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};

use crate::admission::AdmissionError;
use queue::{Queue, Victim};

/// The same hint [`Admission`](crate::Admission) gives, so both answer alike.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How far "no queue timeout" reaches: far enough to never fire, near enough not to overflow.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// A request's priority class. Ordered: `Batch < Standard < Interactive`; a higher class is
/// always dispatched before a lower one.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Throughput work that can wait: served only when no one of a higher class waits.
    Batch,
    /// The default.
    #[default]
    Standard,
    /// A person is waiting on the answer.
    Interactive,
}

impl Class {
    const COUNT: usize = 3;
    /// Shedding order.
    const ASCENDING: [Class; Class::COUNT] = [Class::Batch, Class::Standard, Class::Interactive];
    /// Dispatch order.
    const DESCENDING: [Class; Class::COUNT] = [Class::Interactive, Class::Standard, Class::Batch];

    /// Every class, highest first.
    pub const ALL: [Class; Class::COUNT] = Class::DESCENDING;

    fn index(self) -> usize {
        match self {
            Class::Batch => 0,
            Class::Standard => 1,
            Class::Interactive => 2,
        }
    }

    /// The numeric form, lower = more urgent, as engines that schedule by priority read it
    /// (vLLM's `priority`): interactive 0, standard 1, batch 2.
    pub fn rank(self) -> u8 {
        match self {
            Class::Interactive => 0,
            Class::Standard => 1,
            Class::Batch => 2,
        }
    }

    /// The class of a rank (see [`rank`](Self::rank)); beyond 2, batch.
    pub fn from_rank(rank: u8) -> Self {
        match rank {
            0 => Class::Interactive,
            1 => Class::Standard,
            _ => Class::Batch,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Interactive => "interactive",
            Class::Standard => "standard",
            Class::Batch => "batch",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A class name that is none of `interactive`, `standard`, `batch` or their ranks `0`–`2`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority class {0:?} (expected interactive, standard, batch, or 0-2)")]
pub struct UnknownClass(pub String);

impl FromStr for Class {
    type Err = UnknownClass;

    /// Accepts the names (any case) and the ranks, so a request header may carry either.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Class::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s) || s == c.rank().to_string())
            .ok_or_else(|| UnknownClass(s.to_owned()))
    }
}

/// Who is asking, in what class, with what weight, until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket<'a> {
    /// The flow the request is queued and shared under. Only copied while the request waits.
    pub flow: &'a str,
    /// Dispatches per round relative to other flows of the same class (0 counts as 1).
    pub weight: u32,
    pub class: Class,
    /// The request's own deadline; the queue timeout applies too, whichever comes first.
    pub deadline: Option<Instant>,
}

impl<'a> Ticket<'a> {
    /// Weight 1, class standard, the queue timeout only.
    pub fn new(flow: &'a str) -> Self {
        Self {
            flow,
            weight: 1,
            class: Class::default(),
            deadline: None,
        }
    }

    pub fn weight(self, weight: u32) -> Self {
        Self { weight, ..self }
    }

    pub fn class(self, class: Class) -> Self {
        Self { class, ..self }
    }

    pub fn deadline(self, deadline: Instant) -> Self {
        Self {
            deadline: Some(deadline),
            ..self
        }
    }
}

/// The concurrency cap with fair queues: a drop-in for [`Admission`](crate::Admission) whose
/// `acquire` takes a [`Ticket`]. Reconfigured in place with [`reconfigure`](Self::reconfigure),
/// keeping the queue and the slots in use.
pub struct FairAdmission {
    shared: Arc<Shared>,
}

/// Held for as long as the request (or its stream) runs; the slot goes to the next waiter when
/// it drops.
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct FairPermit {
    /// `None` once disarmed (a grant whose waiter had already gone).
    shared: Option<Arc<Shared>>,
    /// The flow it is counted under in [`State::running`].
    flow: Arc<str>,
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    /// `usize::MAX` when unlimited.
    capacity: usize,
    queue_size: usize,
    queue_timeout: Duration,
    in_flight: usize,
    /// Slots above `capacity` for a flow with nothing running and nothing waiting.
    headroom: usize,
    /// Requests in flight per flow; only flows with some are present, so it is bounded by
    /// the slots whatever flow names callers send.
    running: HashMap<Arc<str>, usize>,
    queue: Queue<Queued>,
}

/// A waiter's handle in the queue: how it is told, and its flow (to count its slot under).
struct Queued {
    tx: oneshot::Sender<Outcome>,
    flow: Arc<str>,
}

/// What a waiter is told.
enum Outcome {
    Granted(FairPermit),
    /// Displaced by a newcomer of a higher class, or by a smaller queue.
    Shed,
    /// Its deadline passed before a slot was free.
    Expired,
}

impl fmt::Debug for FairAdmission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("FairAdmission")
            .field("capacity", &st.capacity)
            .field("queue_size", &st.queue_size)
            .field("queue_timeout", &st.queue_timeout)
            .field("in_flight", &st.in_flight)
            .field("queued", &st.queue.len())
            .finish()
    }
}

impl fmt::Debug for FairPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FairPermit")
            .field("armed", &self.shared.is_some())
            .finish()
    }
}

impl FairAdmission {
    /// The same settings as [`Admission::new`](crate::Admission::new): `None` = unlimited, a
    /// cap of 0 counts as 1.
    pub fn new(max_concurrent: Option<usize>, queue_size: usize, queue_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    capacity: capacity(max_concurrent),
                    queue_size,
                    queue_timeout,
                    in_flight: 0,
                    headroom: 0,
                    running: HashMap::new(),
                    queue: Queue::default(),
                }),
            }),
        }
    }

    pub fn unlimited() -> Self {
        Self::new(None, 0, Duration::ZERO)
    }

    /// Slots above the cap for light flows (see the module's documentation); 0, the default,
    /// is a plain cap.
    pub fn with_headroom(self, headroom: usize) -> Self {
        self.set_headroom(headroom);
        self
    }

    /// Changes the headroom in place; slots taken from it stay taken until released.
    pub fn set_headroom(&self, headroom: usize) {
        let mut st = self.shared.lock();
        st.headroom = headroom;
    }

    /// Changes the settings in place. Slots in use stay in use (a smaller cap only stops
    /// dispatch until enough are released); a larger cap admits waiters at once; a smaller
    /// queue sheds its excess as when full; a new queue timeout applies to later arrivals.
    pub fn reconfigure(
        &self,
        max_concurrent: Option<usize>,
        queue_size: usize,
        queue_timeout: Duration,
    ) {
        let mut st = self.shared.lock();
        st.capacity = capacity(max_concurrent);
        st.queue_size = queue_size;
        st.queue_timeout = queue_timeout;
        while st.queue.len() > st.queue_size {
            let Some(Victim::Queued { class, flow }) = st.queue.victim(None) else {
                break;
            };
            if let Some(w) = st.queue.pop_newest(class, &flow) {
                let _ = w.tx.tx.send(Outcome::Shed);
            }
        }
        self.shared.dispatch(&mut st);
    }

    /// Requests waiting for a slot right now.
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Requests of `class` waiting right now.
    pub fn queued_in(&self, class: Class) -> usize {
        self.shared.lock().queue.class(class).len()
    }

    /// Flows with waiters right now (a flow waiting in two classes counts twice).
    pub fn flows(&self) -> usize {
        self.shared.lock().queue.flows()
    }

    /// Slots in use.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// Slots free right now (`usize::MAX` when unlimited).
    pub fn available(&self) -> usize {
        let st = self.shared.lock();
        st.capacity.saturating_sub(st.in_flight)
    }

    /// Takes a slot, queueing under the ticket's flow and class until one is handed over, the
    /// deadline (the ticket's or the queue timeout, whichever is first) passes
    /// ([`AdmissionError::QueueTimeout`]), or the queue is full or sheds this request
    /// ([`AdmissionError::QueueFull`]). Dropping the future leaves the queue at once.
    pub async fn acquire(&self, ticket: Ticket<'_>) -> Result<FairPermit, AdmissionError> {
        let (mut rx, flow, seq, deadline) = {
            let mut st = self.shared.lock();
            // The fast path: a free slot and nobody ahead; or a light flow and room above
            // the cap.
            if (st.in_flight < st.capacity && st.queue.is_empty()) || st.light(ticket.flow) {
                let flow = st.flow_key(ticket.flow);
                return Ok(self.shared.grant(&mut st, flow));
            }
            let now = Instant::now();
            let limit = now.checked_add(st.queue_timeout).unwrap_or(now + FOREVER);
            let deadline = ticket.deadline.map_or(limit, |d| d.min(limit));
            // Refusals first, as `Admission` orders them; only then may a waiter be displaced.
            let displace = if st.queue.len() >= st.queue_size {
                match st.queue.victim(Some((ticket.class, ticket.flow))) {
                    Some(Victim::Queued { class, flow }) => Some((class, flow)),
                    Some(Victim::Newcomer) | None => {
                        return Err(AdmissionError::QueueFull {
                            retry_after: RETRY_AFTER,
                        });
                    }
                }
            } else {
                None
            };
            if deadline <= now {
                return Err(AdmissionError::QueueTimeout {
                    retry_after: RETRY_AFTER,
                });
            }
            if let Some((class, flow)) = displace
                && let Some(w) = st.queue.pop_newest(class, &flow)
            {
                let _ = w.tx.tx.send(Outcome::Shed);
            }
            let (tx, rx) = oneshot::channel();
            let queued = Queued {
                tx,
                flow: st.flow_key(ticket.flow),
            };
            let (flow, seq) =
                st.queue
                    .push(ticket.class, ticket.flow, ticket.weight, deadline, queued);
            (rx, flow, seq, deadline)
        };
        let mut place = Place {
            shared: &self.shared,
            class: ticket.class,
            flow,
            seq,
            armed: true,
        };
        let outcome = match timeout_at(deadline, &mut rx).await {
            Ok(outcome) => outcome.ok(),
            // Our own timer fired: leave, unless a decision was made under the lock first
            // (then it is already in the channel, and is honoured).
            Err(_) if place.leave() => Some(Outcome::Expired),
            Err(_) => rx.try_recv().ok(),
        };
        place.armed = false;
        match outcome {
            Some(Outcome::Granted(permit)) => Ok(permit),
            Some(Outcome::Shed) => Err(AdmissionError::QueueFull {
                retry_after: RETRY_AFTER,
            }),
            // A sender dropped without a word cannot happen (every removal sends or is ours);
            // treat it as the wait ending.
            Some(Outcome::Expired) | None => Err(AdmissionError::QueueTimeout {
                retry_after: RETRY_AFTER,
            }),
        }
    }
}

fn capacity(max_concurrent: Option<usize>) -> usize {
    max_concurrent.map_or(usize::MAX, |n| n.max(1))
}

impl State {
    /// Whether a request of `flow` may take a slot above the cap now: there is headroom left,
    /// and the flow has nothing running and nothing waiting (a flood always has both).
    fn light(&self, flow: &str) -> bool {
        self.headroom > 0
            && self.in_flight < self.capacity.saturating_add(self.headroom)
            && !self.running.contains_key(flow)
            && !self.queue.has_flow(flow)
    }

    /// The flow's shared name: the running entry's when it has one, else a new one.
    fn flow_key(&self, flow: &str) -> Arc<str> {
        self.running
            .get_key_value(flow)
            .map_or_else(|| Arc::from(flow), |(k, _)| k.clone())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements; a panic elsewhere must not wedge admission.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a slot as taken by `flow` and makes its permit.
    fn grant(self: &Arc<Self>, st: &mut State, flow: Arc<str>) -> FairPermit {
        st.in_flight += 1;
        *st.running.entry(flow.clone()).or_insert(0) += 1;
        FairPermit {
            shared: Some(self.clone()),
            flow,
        }
    }

    /// Gives back a slot of `flow` (the permit's, or a grant whose waiter had gone).
    fn untake(st: &mut State, flow: &str) {
        st.in_flight -= 1;
        if let Some(n) = st.running.get_mut(flow) {
            *n -= 1;
            if *n == 0 {
                st.running.remove(flow);
            }
        }
    }

    fn release(self: &Arc<Self>, flow: &str) {
        let mut st = self.lock();
        Self::untake(&mut st, flow);
        self.dispatch(&mut st);
    }

    /// Hands free slots to waiters in schedule order until either runs out.
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        if st.queue.is_empty() || st.in_flight >= st.capacity {
            return;
        }
        let now = Instant::now();
        while st.in_flight < st.capacity {
            let expired = |w: queue::Waiter<Queued>| {
                let _ = w.tx.tx.send(Outcome::Expired);
            };
            let Some((_, waiter)) = st.queue.pop_next(now, expired) else {
                break;
            };
            let Queued { tx, flow } = waiter.tx;
            let permit = self.grant(st, flow);
            if let Err(Outcome::Granted(mut permit)) = tx.send(Outcome::Granted(permit)) {
                // The waiter's future was dropped between closing its channel and leaving the
                // queue: take the slot back here (dropping the permit would re-enter the lock).
                permit.shared = None;
                Self::untake(st, &permit.flow);
            }
        }
    }
}

impl Drop for FairPermit {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.release(&self.flow);
        }
    }
}

/// A waiter's place in the queue, taken out however the wait ends: a place held by a future
/// nobody polls any more would block its flow and count against the queue size for ever.
struct Place<'a> {
    shared: &'a Arc<Shared>,
    class: Class,
    flow: Arc<str>,
    seq: u64,
    armed: bool,
}

impl Place<'_> {
    /// Leaves the queue; false when the waiter was already taken out (granted, shed, expired).
    fn leave(&mut self) -> bool {
        self.armed = false;
        self.shared
            .lock()
            .queue
            .remove(self.class, &self.flow, self.seq)
            .is_some()
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Any outcome already sent sits in the waiter's channel and is dropped with it,
            // after this lock is released: a granted permit then frees its slot normally.
            self.leave();
        }
    }
}

#[cfg(test)]
mod tests;
