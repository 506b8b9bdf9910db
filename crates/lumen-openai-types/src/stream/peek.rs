//! A single-pass scanner that checks a payload is one JSON object and finds the few top-level
//! members the gateway reads (`error`, `object`, `usage`, `choices`), skipping every other value
//! without building anything. On its way through `choices` it also counts the text each choice
//! generated ([`Outputs`]), so what a stream relayed is counted without walking the event twice.
//!
//! Why not serde: a derived struct deserialises every key through an identifier visitor and
//! re-validates strings, which was about 4,000 instructions per stream event, most of the cost
//! of relaying a stream. This scanner does the same validation (structure, literals, number
//! grammar, string escapes and control characters, UTF-8) in one forward pass: it accepts what
//! serde_json accepts when it skips values, within the nesting serde_json parses (the `peek`
//! fuzz target holds it to that, member by member). The member values it keeps are handed to
//! serde, which is cheap for those few bytes. A key written with escapes is unescaped by serde
//! before it is matched, so an unusual but valid payload is never misread.

/// Byte ranges of the members the gateway reads, each the raw JSON value.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Members<'a> {
    pub error: Option<&'a [u8]>,
    pub object: Option<&'a [u8]>,
    pub usage: Option<&'a [u8]>,
    pub choices: Option<&'a [u8]>,
    /// Each choice's generated text, counted on the way through `choices`.
    pub outputs: Outputs,
}

/// serde_json's own limit when it parses (rather than skips) a value: it refuses the 128th
/// nested array or object, the top-level object included.
pub(crate) const MAX_NESTING: usize = 127;

/// The members of one valid JSON object, or `None` when `raw` is not one (the last of
/// duplicate keys wins, as in serde_json's maps).
pub(crate) fn scan(raw: &[u8]) -> Option<Members<'_>> {
    let mut s = Scanner { b: raw, i: 0 };
    let m = s.top().ok()?;
    s.ws();
    (s.i == raw.len()).then_some(m)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

type R<T> = Result<T, ()>;

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> R<()> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    /// The top-level object.
    fn top(&mut self) -> R<Members<'a>> {
        let mut m = Members::default();
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(m);
        }
        loop {
            self.ws();
            let key_start = self.i;
            let (key, escaped) = self.string()?;
            let unescaped: String;
            let key = if escaped {
                // Rare: the key as serde reads it (which also refuses a lone surrogate).
                unescaped = serde_json::from_slice(&self.b[key_start..self.i]).map_err(|_| ())?;
                unescaped.as_bytes()
            } else {
                key
            };
            self.eat(b':')?;
            self.ws();
            let start = self.i;
            if key == b"choices" {
                m.outputs = self.choices()?;
                m.choices = Some(&self.b[start..self.i]);
            } else {
                self.value(1)?;
                let value = &self.b[start..self.i];
                match key {
                    b"error" => m.error = Some(value),
                    b"object" => m.object = Some(value),
                    b"usage" => m.usage = Some(value),
                    _ => {}
                }
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(m);
                }
                _ => return Err(()),
            }
        }
    }

    /// One value inside `depth` arrays and objects.
    fn value(&mut self, depth: usize) -> R<()> {
        let c = self.peek().ok_or(())?;
        if matches!(c, b'{' | b'[') && depth >= MAX_NESTING {
            return Err(());
        }
        match c {
            b'"' => self.string().map(|_| ()),
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.eat(b':')?;
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(()),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(()),
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(()),
        }
    }

    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(())
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, as JSON (and serde) require.
    fn number(&mut self) -> R<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(()),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits1()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digits1()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn digits1(&mut self) -> R<()> {
        let start = self.i;
        self.digits();
        if self.i > start { Ok(()) } else { Err(()) }
    }

    /// A string starting at the current `"`: its raw contents and whether it has escapes.
    /// Escapes must be valid and raw control characters are refused, as in serde_json.
    fn string(&mut self) -> R<(&'a [u8], bool)> {
        if self.peek() != Some(b'"') {
            return Err(());
        }
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            let rest = &self.b[self.i..];
            let at = special(rest).ok_or(())?;
            self.i += at;
            match rest[at] {
                b'"' => {
                    let s = &self.b[start..self.i];
                    // Outside strings any non-ASCII byte is already a syntax error; inside, it
                    // must be UTF-8 (an engine's broken bytes are an invalid answer, not text
                    // to relay). `is_ascii` is word-at-a-time, so ASCII strings cost nothing.
                    if !s.is_ascii() && std::str::from_utf8(s).is_err() {
                        return Err(());
                    }
                    self.i += 1;
                    return Ok((s, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match self.b.get(self.i + 1).copied().ok_or(())? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let hex = self.b.get(self.i + 2..self.i + 6).ok_or(())?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(());
                            }
                            self.i += 6;
                        }
                        _ => return Err(()),
                    }
                }
                _ => return Err(()),
            }
        }
    }
}

/// The text each choice of a `choices` array generated in one event, in the order of the array:
/// `(index, unescaped bytes)`. Counted while [`scan`] validates the array, so the relayed-output
/// count costs no second walk over the event. The first choice is kept inline: engines send one
/// choice per event (even for `n` > 1), so the usual event allocates nothing here.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Outputs {
    first: Option<(u32, u64)>,
    more: Vec<(u32, u64)>,
}

impl Outputs {
    fn push(&mut self, choice: (u32, u64)) {
        if self.first.is_none() {
            self.first = Some(choice);
        } else {
            self.more.push(choice);
        }
    }

    /// Calls `f(index, bytes)` for each choice, in order.
    pub(crate) fn each(&self, f: &mut dyn FnMut(u32, u64)) {
        for &(index, bytes) in self.first.iter().chain(&self.more) {
            f(index, bytes);
        }
    }
}

/// The offset of the first byte in `rest` that ends a string's plain run: `"`, `\\` or a
/// control character. Eight bytes at a time (SWAR), reading past the string's end into the rest
/// of the payload, which is always there but for the last few bytes: engine strings are short
/// (ids, keys, single tokens), so a per-string bounded or SIMD search cost more in set-up than
/// it saved, and a per-byte search cost about 15 instructions a byte (2026-12-06 callgrind).
pub(super) fn special(rest: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    const QUOTE: u64 = ONES * b'"' as u64;
    const BACKSLASH: u64 = ONES * b'\\' as u64;
    const SPACE: u64 = ONES * 0x20;
    let mut words = rest.chunks_exact(8);
    let mut at = 0;
    for word in words.by_ref() {
        // Byte 0 in the low bits, whatever the target's order, so the lowest flag is the first.
        let w = match <[u8; 8]>::try_from(word) {
            Ok(w) => u64::from_le_bytes(w),
            Err(_) => unreachable!("chunks_exact yields 8 bytes"),
        };
        let (q, b) = (w ^ QUOTE, w ^ BACKSLASH);
        // `(x - 1) & !x & 0x80` per byte flags a zero byte (`x - 0x20`: a byte below 0x20).
        // Flags above the first true one may be false (a borrow), never below it.
        let hits = ((q.wrapping_sub(ONES) & !q)
            | (b.wrapping_sub(ONES) & !b)
            | (w.wrapping_sub(SPACE) & !w))
            & HIGH;
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| at + p)
}

/// Delta members whose strings are generated text.
const GENERATED: [&[u8]; 3] = [b"content", b"reasoning_content", b"reasoning"];
/// Members of a tool call (at any depth) whose strings are generated text.
const TOOL_TEXT: [&[u8]; 2] = [b"name", b"arguments"];

/// The walk of `choices` that also counts each choice's text: how many bytes of text the choice
/// generated in this event, unescaped — chat's `delta.content`, `reasoning_content`,
/// `reasoning` and tool calls' `name` and `arguments`; completions' `text`. It validates exactly
/// what [`Scanner::value`] does (same grammar, every container at its true depth against
/// [`MAX_NESTING`]), only reading a few keys on the way.
impl<'a> Scanner<'a> {
    /// The value of the top-level `choices` member (inside the top object, so at depth 1).
    /// Anything but an array is skipped and has no outputs; an element that is not an object
    /// is skipped and counts as no choice.
    fn choices(&mut self) -> R<Outputs> {
        let mut out = Outputs::default();
        if self.peek() != Some(b'[') {
            self.value(1)?;
            return Ok(out);
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(out);
        }
        loop {
            self.ws();
            if self.peek() == Some(b'{') {
                out.push(self.choice()?);
            } else {
                self.value(2)?;
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(out);
                }
                _ => return Err(()),
            }
        }
    }

    /// The members of the object at the current `{`, itself at `depth`: `member(self, key)`
    /// must consume each value (at `depth + 1`). A key is matched as written: an escaped key is
    /// never one of the few read here, and its value is skipped.
    fn members(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, &'a [u8]) -> R<()>,
    ) -> R<()> {
        if depth >= MAX_NESTING || self.peek() != Some(b'{') {
            return Err(());
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let (key, _) = self.string()?;
            self.eat(b':')?;
            self.ws();
            member(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(()),
            }
        }
    }

    /// One choice (an element of `choices`, at depth 2): its `index` (0 when absent or not a
    /// `u32`) and the bytes of text it carries.
    fn choice(&mut self) -> R<(u32, u64)> {
        let (mut index, mut bytes) = (0, 0);
        self.members(2, |s, key| match key {
            b"index" => {
                let start = s.i;
                s.value(3)?;
                index = std::str::from_utf8(&s.b[start..s.i])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                Ok(())
            }
            b"text" => s.text_len(3).map(|n| bytes += n),
            b"delta" if s.peek() == Some(b'{') => s.members(3, |s, key| {
                if GENERATED.contains(&key) {
                    s.text_len(4).map(|n| bytes += n)
                } else if key == b"tool_calls" {
                    s.tool_text(4).map(|n| bytes += n)
                } else {
                    s.value(4)
                }
            }),
            _ => s.value(3),
        })?;
        Ok((index, bytes))
    }

    /// The unescaped length of the string here; 0 (and skipped) for any other value.
    fn text_len(&mut self, depth: usize) -> R<u64> {
        if self.peek() != Some(b'"') {
            return self.value(depth).map(|()| 0);
        }
        let (raw, escaped) = self.string()?;
        Ok(if escaped {
            unescaped_len(raw)
        } else {
            raw.len() as u64
        })
    }

    /// The bytes of the tool-call strings named in [`TOOL_TEXT`] anywhere in this value, at
    /// `depth`.
    fn tool_text(&mut self, depth: usize) -> R<u64> {
        match self.peek() {
            Some(b'{') => {
                let mut n = 0;
                self.members(depth, |s, key| {
                    let add = if TOOL_TEXT.contains(&key) && s.peek() == Some(b'"') {
                        s.text_len(depth + 1)?
                    } else {
                        s.tool_text(depth + 1)?
                    };
                    n += add;
                    Ok(())
                })?;
                Ok(n)
            }
            Some(b'[') => {
                if depth >= MAX_NESTING {
                    return Err(());
                }
                self.i += 1;
                let mut n = 0;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(0);
                }
                loop {
                    self.ws();
                    n += self.tool_text(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(n);
                        }
                        _ => return Err(()),
                    }
                }
            }
            _ => self.value(depth).map(|()| 0),
        }
    }
}

/// The UTF-8 length of a JSON string's raw (still escaped) contents.
fn unescaped_len(raw: &[u8]) -> u64 {
    let (mut n, mut i) = (0u64, 0);
    while i < raw.len() {
        if raw[i] != b'\\' {
            n += 1;
            i += 1;
            continue;
        }
        if raw.get(i + 1) == Some(&b'u') {
            let unit = crate::raw::escape_unit(raw, i).unwrap_or(0);
            // A surrogate is half of a 4-byte character.
            n += match unit {
                0..0x80 => 1,
                0x80..0x800 | 0xD800..=0xDFFF => 2,
                _ => 3,
            };
            i += 6;
        } else {
            n += 1;
            i += 2;
        }
    }
    n
}
