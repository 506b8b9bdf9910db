//! The responses a simulated engine keeps for its Responses API (as vLLM does with
//! `VLLM_ENABLE_RESPONSES_API_STORE`): bounded, the oldest forgotten first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

/// At most this many responses are kept.
const MAX_STORED: usize = 4096;

/// One kept response.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// The response object as answered.
    pub(crate) json: serde_json::Value,
    /// This turn's input items (`/input_items`).
    pub(crate) input: Vec<serde_json::Value>,
    /// Tokens of the whole conversation up to and including this answer: what a
    /// `previous_response_id` adds to the next prompt.
    pub(crate) tokens: u64,
}

#[derive(Default)]
pub(crate) struct StoredResponses {
    inner: Mutex<(HashMap<String, Stored>, VecDeque<String>)>,
}

impl StoredResponses {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Stored>, VecDeque<String>)> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, id: &str) -> Option<Stored> {
        self.lock().0.get(id).cloned()
    }

    pub(crate) fn put(&self, id: String, stored: Stored) {
        let mut guard = self.lock();
        let (map, order) = &mut *guard;
        if map.insert(id.clone(), stored).is_none() {
            order.push_back(id);
        }
        while map.len() > MAX_STORED {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Whether it was there.
    pub(crate) fn remove(&self, id: &str) -> bool {
        let mut guard = self.lock();
        let (map, order) = &mut *guard;
        order.retain(|o| o != id);
        map.remove(id).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().0.len()
    }
}
