//! The seam of a continued stream: an engine asked to continue an answer may first repeat the
//! text it was given (llama.cpp does, unless told `continue_final_message`), and the caller
//! must not read that text twice. Pure decisions, so each case is tested on its own.

/// What to do with the next text of a continued part while it may still be a copy of the
/// text already sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// More of the copy (`matched` bytes of it so far): hold the chunk back.
    Copy { matched: usize },
    /// The copy ends inside this chunk: send only what follows byte `at`.
    Ends { at: usize },
    /// Not a copy after all: send what was held back, then this chunk, unchanged.
    NotACopy,
}

/// The next step, for a part whose first `matched` bytes of text repeated the start of `sent`
/// and whose next chunk carries `text` (not empty). A copy must be of all of `sent`: text that
/// merely begins like the answer and then goes elsewhere is the engine's own, and is sent.
pub(crate) fn step(sent: &str, matched: usize, text: &str) -> Step {
    let Some(rest) = sent.get(matched..).filter(|r| !r.is_empty()) else {
        return Step::NotACopy;
    };
    if text.len() < rest.len() {
        if rest.starts_with(text) {
            Step::Copy {
                matched: matched + text.len(),
            }
        } else {
            Step::NotACopy
        }
    } else if text.starts_with(rest) {
        Step::Ends { at: rest.len() }
    } else {
        Step::NotACopy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` through [`step`] and returns what the caller reads.
    fn read(sent: &str, chunks: &[&str]) -> String {
        let (mut out, mut held, mut matched) = (String::new(), String::new(), Some(0));
        for t in chunks {
            match matched.map(|m| step(sent, m, t)) {
                None => out.push_str(t),
                Some(Step::Copy { matched: m }) => {
                    held.push_str(t);
                    matched = Some(m);
                }
                Some(Step::Ends { at }) => {
                    out.push_str(&t[at..]);
                    held.clear();
                    matched = None;
                }
                Some(Step::NotACopy) => {
                    out.push_str(&std::mem::take(&mut held));
                    out.push_str(t);
                    matched = None;
                }
            }
        }
        out + &held
    }

    #[test]
    fn a_copy_is_dropped_however_it_is_split() {
        let sent = "Once upon a time, in the Caribbean.";
        let rest = " Then a storm came.";
        let whole = format!("{sent}{rest}");
        // Every way of cutting the repeated text and the rest into three chunks.
        for a in 1..whole.len() {
            for b in a + 1..whole.len() {
                let chunks = [&whole[..a], &whole[a..b], &whole[b..]];
                assert_eq!(read(sent, &chunks), rest, "{chunks:?}");
            }
        }
        assert_eq!(read(sent, &[sent, rest]), rest);
        assert_eq!(
            read(sent, &[&whole]),
            rest,
            "the copy and the first new token in one chunk"
        );
    }

    #[test]
    fn an_answer_that_only_begins_like_the_text_sent_is_kept() {
        let sent = "Once upon a time";
        assert_eq!(read(sent, &["Once", " more", "!"]), "Once more!");
        assert_eq!(
            read(sent, &[" upon", " a"]),
            " upon a",
            "the usual clean seam"
        );
        assert_eq!(
            read(sent, &["Once upon", " a", " dream"]),
            "Once upon a dream",
            "held text is sent once the copy diverges"
        );
    }

    #[test]
    fn multibyte_text_and_an_empty_answer_are_safe() {
        let sent = "héllo wörld";
        assert_eq!(read(sent, &["hé", "llo wö", "rld!", " ✓"]), "! ✓");
        assert_eq!(
            step("", 0, "x"),
            Step::NotACopy,
            "nothing sent, nothing to copy"
        );
        assert_eq!(step(sent, sent.len(), "x"), Step::NotACopy);
        assert_eq!(step(sent, 2, "x"), Step::NotACopy, "not at a char boundary");
    }
}
