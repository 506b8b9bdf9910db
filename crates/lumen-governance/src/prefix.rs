//! What cache-aware routing knows about a prompt, computed once per request in one pass.
//!
//! An engine reuses KV cache for the longest prefix of the prompt it has already seen, so the
//! router identifies prefixes, not prompts: the prompt as the engine will see it (shared
//! section first — system and developer messages, then the tools — then the messages in order)
//! is hashed as one stream, and a chain hash is taken at each block boundary. Two prompts that
//! share their first N bytes share every chain hash up to N, so a prefix match in the index is
//! a KV-cache match on the engine. Lumen does not tokenize: blocks are bytes (about four per
//! token), fine near the start where conversations diverge and growing by a quarter per block
//! further in, so a 100 KB document costs about 25 hashes rather than 400.
//!
//! Two keys place a request when the index knows nothing (see `policy/cache_aware.rs`): the
//! hash of the shared section alone (it identifies a document or a per-conversation system
//! prompt), and the conversation key — the section plus the first message after it, capped —
//! which every later turn of the same conversation repeats. A client's session hint, when it
//! sends one, replaces both.

use crate::hash::{self, Stream};

/// The first boundary, and the smallest distance between two.
pub const FIRST_BLOCK: u32 = 512;

/// The boundary after `pos`: every 512 bytes up to 2 KiB, then a quarter further each time.
pub(crate) fn next_boundary(pos: u32) -> u32 {
    pos.saturating_add(FIRST_BLOCK.max(pos / 4))
}

/// Domain tags, so a section hash can never equal a block hash of the same bytes.
const SECTION_TAG: u64 = 0x5EC7_10E0_0000_0001;
const SESSION_TAG: u64 = 0x5E55_1000_0000_0002;
const CONVERSATION_TAG: u64 = 0xC0E7_0000_0000_0003;

/// A prompt as the router sees it. Built by [`PromptHasher`]; cheap to keep with the request
/// (a few hundred bytes at most) and reused by every attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptKey {
    /// (end position in bytes, chain hash of everything before it), increasing.
    pub(crate) blocks: Vec<(u32, u64)>,
    /// Hash and length of the shared section (system and developer messages, tools).
    pub(crate) section: Option<(u64, u32)>,
    /// The section plus the first message after it (capped): the same for every turn of one
    /// conversation, and for every question about one document sent in that message.
    pub(crate) conversation: u64,
    /// A session hint from the client (header, `prompt_cache_key`, `user`), hashed.
    pub(crate) session: Option<u64>,
    /// More than one message after the shared section: a later turn of a conversation.
    pub(crate) history: bool,
    /// Length of the first message after the shared section.
    pub(crate) first_len: u32,
    /// Bytes of prompt as the engine renders it (what it must prefill, less its cache).
    pub(crate) len: u32,
}

impl PromptKey {
    /// Bytes of prompt the blocks cover (the last boundary).
    pub fn indexed_len(&self) -> u32 {
        self.blocks.last().map_or(0, |b| b.0)
    }

    /// Bytes of the whole prompt, hashed or not.
    pub fn prompt_len(&self) -> u32 {
        self.len
    }

    /// The key a request is placed by when nothing better is known: the session hint; else
    /// the shared section, when it is the bulk of what the requests after it share (it is at
    /// least as long as the first message after it — a document in the system prompt asked
    /// several questions) and not common to many conversations; else the conversation key.
    pub fn placement(&self, section_shared: bool) -> u64 {
        match (self.session, self.section) {
            (Some(s), _) => s,
            (None, Some((section, len))) if !section_shared && len >= self.first_len => section,
            _ => self.conversation,
        }
    }
}

/// Builds a [`PromptKey`] from the prompt's parts, in the order the engine renders them.
pub struct PromptHasher {
    stream: Stream,
    pos: u32,
    next: u32,
    max: u32,
    blocks: Vec<(u32, u64)>,
    section: Option<(u64, u32)>,
    /// The conversation key while its first message is being read.
    conversation: Option<Stream>,
    conversation_left: usize,
    conversation_done: Option<u64>,
    key_bytes: usize,
    in_message: bool,
    messages: u32,
    first_len: u32,
    /// Every byte written, past `max` too.
    total: u32,
}

impl PromptHasher {
    /// Hashes at most `max_bytes` of prompt into blocks; the conversation key reads at most
    /// `key_bytes` of the first message after the shared section.
    pub fn new(max_bytes: usize, key_bytes: usize) -> Self {
        let max = u32::try_from(max_bytes).unwrap_or(u32::MAX);
        Self {
            stream: Stream::new(0),
            pos: 0,
            next: FIRST_BLOCK,
            max,
            blocks: Vec::with_capacity(16),
            section: None,
            conversation: None,
            conversation_left: 0,
            conversation_done: None,
            key_bytes,
            in_message: false,
            messages: 0,
            first_len: 0,
            total: 0,
        }
    }

    /// Content of the shared section: a system or developer message, or the tools. Only
    /// before the first [`message`](Self::message).
    pub fn shared(&mut self, role: &str, text: &[u8]) {
        if self.in_message {
            return self.message(role, text);
        }
        self.feed(role.as_bytes());
        self.feed(b":");
        self.feed(text);
        self.feed(b"\n");
        self.section = Some((self.stream.finish() ^ SECTION_TAG, self.pos));
    }

    /// One message after the shared section, in order. The first identifies the conversation.
    pub fn message(&mut self, role: &str, text: &[u8]) {
        self.in_message = true;
        self.messages += 1;
        let first = self.conversation_done.is_none() && self.conversation.is_none();
        if first {
            self.first_len = u32::try_from(text.len()).unwrap_or(u32::MAX);
            let seed = self.section.map_or(0, |s| s.0);
            let mut key = Stream::new(seed ^ CONVERSATION_TAG);
            key.write(role.as_bytes());
            self.conversation = Some(key);
            self.conversation_left = self.key_bytes;
        }
        self.feed(role.as_bytes());
        self.feed(b":");
        self.key_part(text);
        self.feed(text);
        self.feed(b"\n");
        if let Some(key) = self.conversation.take() {
            self.conversation_done = Some(key.finish());
        }
    }

    /// An unstructured prompt (completions): no shared section; its start is the
    /// conversation key.
    pub fn text(&mut self, text: &[u8]) {
        if self.conversation.is_none() && self.conversation_done.is_none() {
            self.conversation = Some(Stream::new(CONVERSATION_TAG));
            self.conversation_left = self.key_bytes;
        }
        self.in_message = true;
        self.key_part(text);
        self.feed(text);
    }

    fn key_part(&mut self, text: &[u8]) {
        if let Some(key) = &mut self.conversation {
            let take = text.len().min(self.conversation_left);
            key.write(&text[..take]);
            self.conversation_left -= take;
        }
    }

    /// Writes prompt bytes, taking the chain hash at every boundary they cross.
    fn feed(&mut self, mut bytes: &[u8]) {
        self.total = self
            .total
            .saturating_add(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        while !bytes.is_empty() && self.pos < self.max {
            let room = (self.next.min(self.max) - self.pos) as usize;
            let take = room.min(bytes.len());
            self.stream.write(&bytes[..take]);
            self.pos += take as u32;
            bytes = &bytes[take..];
            if self.pos == self.next {
                self.blocks.push((self.pos, self.stream.finish()));
                self.next = next_boundary(self.pos);
            }
        }
    }

    /// The key, with a client's session hint (any non-empty string) if there is one.
    pub fn finish(mut self, session: Option<&str>) -> PromptKey {
        if let Some(key) = self.conversation.take() {
            self.conversation_done = Some(key.finish());
        }
        let conversation = match self.conversation_done {
            Some(k) => k,
            // Only a shared section (or nothing): the section is the conversation.
            None => self.section.map_or(0, |s| s.0) ^ CONVERSATION_TAG,
        };
        PromptKey {
            blocks: self.blocks,
            section: self.section,
            conversation,
            session: session
                .filter(|s| !s.is_empty())
                .map(|s| hash::fnv1a(s.as_bytes()) ^ SESSION_TAG),
            history: self.messages > 1,
            first_len: self.first_len,
            len: self.total,
        }
    }
}

#[cfg(test)]
mod tests;
