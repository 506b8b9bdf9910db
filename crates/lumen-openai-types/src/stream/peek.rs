//! A single-pass scanner that checks a payload is one JSON object and finds the few top-level
//! members the gateway reads (`error`, `object`, `usage`, `choices`), skipping every other value
//! without building anything.
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
            self.value(1)?;
            let value = &self.b[start..self.i];
            match key {
                b"error" => m.error = Some(value),
                b"object" => m.object = Some(value),
                b"usage" => m.usage = Some(value),
                b"choices" => m.choices = Some(value),
                _ => {}
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
            // A plain search over the rest of the slice (no per-byte bounds checks): engine
            // strings are mostly short (ids, roles, single tokens), where a word-at-a-time or
            // SIMD skip measured slower on real chunks.
            let rest = &self.b[self.i..];
            let at = rest
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .ok_or(())?;
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

/// Calls `f(index, bytes)` for each choice of a stream event's `choices` array: how many bytes
/// of text the choice generated in this event, unescaped — chat's `delta.content`,
/// `reasoning_content`, `reasoning` and tool calls' `name` and `arguments`; completions' `text`.
/// The array was validated when the event was read, so the walk is lenient: anything
/// unexpected ends it.
pub(crate) fn choice_outputs(choices: &[u8], f: &mut dyn FnMut(u32, u64)) {
    let mut s = Scanner { b: choices, i: 0 };
    let _ = s.outputs(f);
}

/// Delta members whose strings are generated text.
const GENERATED: [&[u8]; 3] = [b"content", b"reasoning_content", b"reasoning"];
/// Members of a tool call (at any depth) whose strings are generated text.
const TOOL_TEXT: [&[u8]; 2] = [b"name", b"arguments"];

impl<'a> Scanner<'a> {
    fn outputs(&mut self, f: &mut dyn FnMut(u32, u64)) -> R<()> {
        self.eat(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() == Some(b'{') {
                let (index, bytes) = self.choice()?;
                f(index, bytes);
            } else {
                self.value(1)?;
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => return Ok(()),
                _ => return Err(()),
            }
        }
    }

    /// The members of the object at the current `{`: `member(key)` must consume each value.
    fn members(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> R<()>) -> R<()> {
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            // An escaped key is never one of the few read here; its value is skipped.
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

    /// One choice: its `index` and the bytes of text it carries.
    fn choice(&mut self) -> R<(u32, u64)> {
        let (mut index, mut bytes) = (0, 0);
        self.members(|s, key| match key {
            b"index" => {
                let start = s.i;
                s.value(2)?;
                index = std::str::from_utf8(&s.b[start..s.i])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                Ok(())
            }
            b"text" => s.text_len(2).map(|n| bytes += n),
            b"delta" if s.peek() == Some(b'{') => s.members(|s, key| {
                if GENERATED.contains(&key) {
                    s.text_len(3).map(|n| bytes += n)
                } else if key == b"tool_calls" {
                    s.tool_text(3).map(|n| bytes += n)
                } else {
                    s.value(3)
                }
            }),
            _ => s.value(2),
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

    /// The bytes of the tool-call strings named in [`TOOL_TEXT`] anywhere in this value.
    fn tool_text(&mut self, depth: usize) -> R<u64> {
        if depth >= MAX_NESTING {
            return Err(());
        }
        match self.peek() {
            Some(b'{') => {
                let mut n = 0;
                self.members(|s, key| {
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
            let unit = std::str::from_utf8(raw.get(i + 2..i + 6).unwrap_or_default())
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .unwrap_or(0);
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
