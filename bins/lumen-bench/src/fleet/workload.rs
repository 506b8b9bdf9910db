//! The fleet benchmark's three workloads, generated from a seed so that every policy sees the
//! same requests in the same order.
//!
//! Text is random lowercase words, which the simulator's tokenizer counts at about one token
//! per byte, so `*_tokens` sizes below are close to the engine's counts (the capacity estimate
//! tokenizes the real bodies, so it does not depend on the approximation).

use std::fmt::Write as _;

use serde_json::json;

/// Which workload.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Multi-turn chats sharing a few long system prompts.
    Chat,
    /// Many long documents, each asked several questions, interleaved.
    Docs,
    /// Unique prompts, no reuse.
    Unique,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Docs => "docs",
            Kind::Unique => "unique",
        }
    }
}

/// The sizes of the workloads.
#[derive(Debug, Clone)]
pub struct Shape {
    pub system_prompts: usize,
    pub system_tokens: usize,
    /// Conversations in progress at once; each arrival continues one of them at random.
    pub conversations: usize,
    pub turns: u32,
    pub user_tokens: usize,
    pub chat_answer_tokens: u32,
    /// Documents being asked about at once; each arrival asks one of them its next question.
    pub documents: usize,
    pub document_tokens: usize,
    pub questions: u32,
    pub question_tokens: usize,
    pub doc_answer_tokens: u32,
    pub unique_tokens: usize,
    pub unique_answer_tokens: u32,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            system_prompts: 4,
            system_tokens: 2000,
            conversations: 48,
            turns: 8,
            user_tokens: 150,
            chat_answer_tokens: 48,
            documents: 64,
            document_tokens: 2500,
            questions: 6,
            question_tokens: 30,
            doc_answer_tokens: 32,
            unique_tokens: 1000,
            unique_answer_tokens: 32,
        }
    }
}

impl Shape {
    /// The quick run's sizes: the same workloads at a quarter of the scale (with a quarter of
    /// the KV cache, see `fleet.rs`), so their caches reach a steady state within seconds
    /// instead of a minute. What matters for routing, the working set against one engine's
    /// cache and against the fleet's, keeps its proportions.
    pub fn quick() -> Self {
        Self {
            conversations: 12,
            documents: 16,
            ..Self::default()
        }
    }

    /// One line per workload, for the report.
    pub fn describe(&self, kind: Kind) -> String {
        match kind {
            Kind::Chat => format!(
                "{} system prompts of ~{} tokens; {} conversations in progress, each of {} turns \
                 (user ~{} tokens, answer {} tokens, the whole history resent each turn); each \
                 arrival continues a random conversation, a finished one is replaced by a new one",
                self.system_prompts,
                self.system_tokens,
                self.conversations,
                self.turns,
                self.user_tokens,
                self.chat_answer_tokens
            ),
            Kind::Docs => format!(
                "{} documents of ~{} tokens being asked about at once, {} questions each (~{} \
                 tokens, answer {} tokens) after a short shared system prompt; each arrival asks \
                 a random one of them its next question, a document asked everything is \
                 replaced by a new one",
                self.documents,
                self.document_tokens,
                self.questions,
                self.question_tokens,
                self.doc_answer_tokens
            ),
            Kind::Unique => format!(
                "unique prompts of ~{} tokens, answer {} tokens",
                self.unique_tokens, self.unique_answer_tokens
            ),
        }
    }
}

/// One request: its chat messages (JSON) and answer length.
pub struct Request {
    pub messages: String,
    pub max_tokens: u32,
}

impl Request {
    /// The streamed chat request's body (with usage, as the benchmark reads it).
    pub fn body(&self) -> String {
        format!(
            r#"{{"model":"m","messages":{},"max_tokens":{},"stream":true,"stream_options":{{"include_usage":true}}}}"#,
            self.messages, self.max_tokens
        )
    }
}

/// splitmix64: small, seedable, good enough for workloads and arrival times.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

/// Random lowercase words, about `bytes` long.
fn words(rng: &mut Rng, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 10);
    while out.len() < bytes {
        if !out.is_empty() {
            out.push(' ');
        }
        for _ in 0..2 + rng.below(7) {
            out.push((b'a' + rng.below(26) as u8) as char);
        }
    }
    out
}

struct Conversation {
    system: usize,
    /// The user turns so far (each answered with the simulator's answer).
    users: Vec<String>,
}

struct Document {
    text: String,
    asked: u32,
}

/// The request sequence of one workload.
pub struct Generator {
    kind: Kind,
    shape: Shape,
    rng: Rng,
    systems: Vec<String>,
    conversations: Vec<Conversation>,
    documents: Vec<Document>,
    chat_answer: String,
    issued: u64,
}

impl Generator {
    pub fn new(kind: Kind, shape: Shape, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5EED_F1EE_7000_0000);
        let systems = match kind {
            Kind::Chat => (0..shape.system_prompts.max(1))
                .map(|i| {
                    format!(
                        "You are assistant {i}. {}",
                        words(&mut rng, shape.system_tokens)
                    )
                })
                .collect(),
            Kind::Docs => vec![format!(
                "Answer from the document only. {}",
                words(&mut rng, shape.system_tokens.min(40))
            )],
            Kind::Unique => Vec::new(),
        };
        let chat_answer = lumen_sim::answer(shape.chat_answer_tokens);
        let mut g = Self {
            kind,
            rng,
            systems,
            conversations: Vec::new(),
            documents: Vec::new(),
            chat_answer,
            issued: 0,
            shape,
        };
        match kind {
            Kind::Chat => {
                for _ in 0..g.shape.conversations.max(1) {
                    let c = g.new_conversation();
                    g.conversations.push(c);
                }
            }
            Kind::Docs => {
                for _ in 0..g.shape.documents.max(1) {
                    let d = g.new_document();
                    g.documents.push(d);
                }
            }
            Kind::Unique => {}
        }
        g
    }

    fn new_conversation(&mut self) -> Conversation {
        Conversation {
            system: self.rng.below(self.systems.len()),
            users: Vec::new(),
        }
    }

    fn new_document(&mut self) -> Document {
        Document {
            text: words(&mut self.rng, self.shape.document_tokens),
            asked: 0,
        }
    }

    /// The next request.
    pub fn next_request(&mut self) -> Request {
        self.issued += 1;
        match self.kind {
            Kind::Chat => self.chat(),
            Kind::Docs => self.docs(),
            Kind::Unique => {
                let text = words(&mut self.rng, self.shape.unique_tokens);
                let messages =
                    json!([{"role": "user", "content": format!("{} {text}", self.issued)}]);
                Request {
                    messages: messages.to_string(),
                    max_tokens: self.shape.unique_answer_tokens,
                }
            }
        }
    }

    fn chat(&mut self) -> Request {
        let i = self.rng.below(self.conversations.len());
        let user = words(&mut self.rng, self.shape.user_tokens);
        let c = &mut self.conversations[i];
        c.users.push(user);
        let mut messages = vec![json!({"role": "system", "content": self.systems[c.system]})];
        for (t, u) in c.users.iter().enumerate() {
            if t > 0 {
                messages.push(json!({"role": "assistant", "content": self.chat_answer}));
            }
            messages.push(json!({"role": "user", "content": u}));
        }
        if c.users.len() as u32 >= self.shape.turns {
            self.conversations[i] = self.new_conversation();
        }
        Request {
            messages: serde_json::Value::Array(messages).to_string(),
            max_tokens: self.shape.chat_answer_tokens,
        }
    }

    fn docs(&mut self) -> Request {
        let i = self.rng.below(self.documents.len());
        let question = words(&mut self.rng, self.shape.question_tokens);
        let d = &mut self.documents[i];
        d.asked += 1;
        let mut user = String::with_capacity(d.text.len() + question.len() + 32);
        let _ = write!(user, "Document:\n{}\n\nQuestion: {question}?", d.text);
        let done = d.asked >= self.shape.questions;
        if done {
            self.documents[i] = self.new_document();
        }
        let messages = json!([
            {"role": "system", "content": self.systems[0]},
            {"role": "user", "content": user},
        ]);
        Request {
            messages: messages.to_string(),
            max_tokens: self.shape.doc_answer_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_requests() {
        for kind in [Kind::Chat, Kind::Docs, Kind::Unique] {
            let mut a = Generator::new(kind, Shape::default(), 7);
            let mut b = Generator::new(kind, Shape::default(), 7);
            for _ in 0..50 {
                assert_eq!(a.next_request().messages, b.next_request().messages);
            }
        }
    }

    #[test]
    fn chats_resend_their_history_and_documents_their_text() {
        let shape = Shape {
            conversations: 1,
            turns: 3,
            documents: 1,
            questions: 2,
            ..Shape::default()
        };
        let mut g = Generator::new(Kind::Chat, shape.clone(), 1);
        let t1 = g.next_request().messages;
        let t2 = g.next_request().messages;
        let t3 = g.next_request().messages;
        let t4 = g.next_request().messages;
        // Turn 2 starts with turn 1's messages (without its closing bracket), then the answer.
        assert!(t2.starts_with(&t1[..t1.len() - 1]));
        assert!(t2.contains(&lumen_sim::answer(shape.chat_answer_tokens)));
        assert!(t3.starts_with(&t2[..t2.len() - 1]));
        // After three turns a new conversation starts.
        assert!(!t4.starts_with(&t3[..t3.len() - 1]));
        assert_eq!(t4.matches(r#""role":"user""#).count(), 1);

        let mut g = Generator::new(Kind::Docs, shape, 1);
        let q1 = g.next_request().messages;
        let q2 = g.next_request().messages;
        let q3 = g.next_request().messages;
        let doc = |m: &str| m.split("Question").next().unwrap().to_owned();
        assert_eq!(doc(&q1), doc(&q2));
        assert_ne!(q1, q2);
        assert_ne!(doc(&q2), doc(&q3), "asked twice, then replaced");
    }
}
