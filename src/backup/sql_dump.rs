//! Reading a plain dump as SQL: splits pg_dump's output into statements and `COPY … FROM stdin`
//! data, so nexusd loads it over its own connection instead of piping it into `psql`.
//!
//! psql executes backslash meta-commands wherever they appear outside quotes — `\! sh` runs a
//! shell, `\o |cmd` pipes to one — and interpolates `:variables` (whose values, such as the last
//! error message, can carry meta-commands too). A dump someone altered in the bucket could run
//! commands as nexusd during a restore or the weekly verify. Loaded this way, a dump can only
//! ever be SQL sent to the server, and anything pg_dump would not write is refused: a backslash
//! outside quotes, comments and COPY data, except the `\restrict KEY` / `\unrestrict KEY` lines
//! pg_dump 15.14 and later write (they only concern psql, and are skipped).
//!
//! The splitter follows the server's lexical rules for what can hide a `;`: quotes (`'…'`,
//! `E'…'` with backslash escapes, `"…"`), dollar quotes (`$tag$…$tag$`, where `$` inside an
//! identifier does not start one), `--` and nested `/* */` comments, and the data lines of a COPY
//! up to `\.`. It works line by line, so a dump of any size streams through in constant memory
//! (but for the statement being read).

/// One thing to send to the server, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A statement with its `;`.
    Sql(String),
    /// `COPY … FROM stdin` follows: the statement that starts it.
    CopyStart(String),
    /// Data lines of the current COPY (each with its newline).
    CopyData(Vec<u8>),
    /// The `\.` line: the COPY's data is complete.
    CopyEnd,
}

/// Longest statement accepted (pg_dump's longest are function bodies and view definitions).
const MAX_STATEMENT: usize = 64 * 1024 * 1024;

/// What the current token is, for `$` (part of an identifier, or the start of a dollar quote)
/// and `E'` (an escape string only at the start of a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    None,
    /// An identifier or keyword (also a number followed by letters).
    Ident {
        length: usize,
    },
    /// A number, or a parameter `$1`.
    Number,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Sql,
    /// Inside `'…'`; `escapes` for `E'…'`; `backslash` after a backslash in one.
    Quote {
        escapes: bool,
        backslash: bool,
    },
    /// Just after the closing `'`: another `'` (a doubled quote) reopens the same kind.
    QuoteEnd {
        escapes: bool,
    },
    QuotedIdent,
    /// Inside `$tag$…$tag$`: the tag and how much of it has been matched at the end.
    Dollar {
        tag: Vec<u8>,
        matched: usize,
    },
    LineComment,
    BlockComment {
        depth: u32,
    },
    Copy,
}

/// The splitter: push the dump line by line, collect what it emits.
#[derive(Debug)]
pub struct Splitter {
    state: State,
    word: Word,
    /// A `$` that may open a dollar quote, with the tag bytes after it so far.
    tag: Option<Vec<u8>>,
    statement: Vec<u8>,
    /// The statement holds code, not only whitespace and comments.
    has_code: bool,
    previous: u8,
    /// The byte just taken must not pair with the next one (`/*/` is not a comment's end).
    unpaired: bool,
    line_no: u64,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter {
            state: State::Sql,
            word: Word::None,
            tag: None,
            statement: Vec::new(),
            has_code: false,
            previous: b'\n',
            unpaired: false,
            line_no: 0,
        }
    }
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn ident_cont(b: u8) -> bool {
    ident_start(b) || b.is_ascii_digit()
}

impl Splitter {
    /// Takes the next line (with its newline, if it has one).
    pub fn push_line(&mut self, line: &[u8], out: &mut impl FnMut(Item)) -> Result<(), String> {
        self.line_no += 1;
        if self.state == State::Copy {
            if line.strip_suffix(b"\n").unwrap_or(line) == b"\\." {
                self.state = State::Sql;
                out(Item::CopyEnd);
            } else {
                out(Item::CopyData(line.to_vec()));
            }
            return Ok(());
        }
        if self.state == State::Sql && self.is_blank() && line.first() == Some(&b'\\') {
            return self.meta_line(line);
        }
        for &b in line {
            self.byte(b, out)?;
            self.previous = if std::mem::take(&mut self.unpaired) {
                0
            } else {
                b
            };
        }
        if self.statement.len() > MAX_STATEMENT {
            return Err(format!(
                "line {}: a statement longer than 64 MiB",
                self.line_no
            ));
        }
        Ok(())
    }

    /// The end of the dump: what is left must be whitespace or comments.
    pub fn finish(&mut self, out: &mut impl FnMut(Item)) -> Result<(), String> {
        match self.state {
            State::Copy => Err("the dump ends inside COPY data (truncated?)".to_string()),
            State::Quote { .. } | State::QuotedIdent | State::Dollar { .. } => {
                Err("the dump ends inside a quoted text (truncated?)".to_string())
            }
            _ if !self.has_code => Ok(()),
            _ => {
                let text = String::from_utf8_lossy(&self.statement).trim().to_string();
                self.statement.clear();
                out(Item::Sql(text));
                Ok(())
            }
        }
    }

    fn refuse(&self, what: &str) -> String {
        format!(
            "line {}: {what}; pg_dump does not write that, so the dump was altered and is not loaded",
            self.line_no
        )
    }

    /// Nothing but whitespace and comments in the statement so far.
    fn is_blank(&self) -> bool {
        !self.has_code
    }

    /// A line starting with a backslash between statements: pg_dump's `\restrict` pair only.
    fn meta_line(&self, line: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(line);
        let mut parts = text.split_whitespace();
        let allowed = matches!(parts.next(), Some("\\restrict" | "\\unrestrict"))
            && parts
                .next()
                .is_some_and(|key| key.bytes().all(|b| b.is_ascii_alphanumeric()))
            && parts.next().is_none();
        if allowed {
            Ok(())
        } else {
            Err(self.refuse("a psql meta-command"))
        }
    }

    fn byte(&mut self, b: u8, out: &mut impl FnMut(Item)) -> Result<(), String> {
        match &mut self.state {
            State::Sql => return self.sql(b, out),
            State::QuoteEnd { escapes } => {
                if b == b'\'' {
                    // A doubled quote: still inside the same string.
                    self.state = State::Quote {
                        escapes: *escapes,
                        backslash: false,
                    };
                } else {
                    self.state = State::Sql;
                    self.word = Word::None;
                    return self.sql(b, out);
                }
            }
            State::Quote { escapes, backslash } => {
                if *backslash {
                    *backslash = false;
                } else if *escapes && b == b'\\' {
                    *backslash = true;
                } else if b == b'\'' {
                    self.state = State::QuoteEnd { escapes: *escapes };
                }
            }
            State::QuotedIdent => {
                if b == b'"' {
                    self.state = State::Sql;
                }
            }
            State::Dollar { tag, matched } => {
                if b == tag[*matched] {
                    *matched += 1;
                } else {
                    *matched = usize::from(b == tag[0]);
                }
                if *matched == tag.len() {
                    self.state = State::Sql;
                    self.word = Word::None;
                }
            }
            State::LineComment => {
                if b == b'\n' {
                    self.state = State::Sql;
                }
            }
            State::BlockComment { depth } => {
                if self.previous == b'/' && b == b'*' {
                    *depth += 1;
                    // The `*` cannot also close it.
                    self.unpaired = true;
                } else if self.previous == b'*' && b == b'/' {
                    *depth -= 1;
                    self.unpaired = true;
                    if *depth == 0 {
                        self.state = State::Sql;
                    }
                }
            }
            State::Copy => {}
        }
        self.statement.push(b);
        Ok(())
    }

    fn sql(&mut self, b: u8, out: &mut impl FnMut(Item)) -> Result<(), String> {
        if let Some(tag) = self.tag.as_mut() {
            if b == b'$' {
                tag.push(b);
                let tag = self.tag.take().unwrap_or_default();
                self.statement.push(b);
                self.state = State::Dollar { tag, matched: 0 };
                return Ok(());
            }
            let first = tag.len() == 1;
            if (first && ident_start(b)) || (!first && ident_cont(b)) {
                tag.push(b);
                self.statement.push(b);
                return Ok(());
            }
            // `$1` (a parameter) or `$name` without a closing `$`: no dollar quote; psql and
            // the server read the `$` alone and go on.
            self.tag = None;
            self.word = if first && b.is_ascii_digit() {
                Word::Number
            } else if first {
                Word::None
            } else {
                Word::Ident { length: 1 }
            };
        }
        self.statement.push(b);
        match b {
            b'\\' => return Err(self.refuse("a backslash outside quotes (a psql meta-command)")),
            b'\'' => {
                let escapes = matches!(self.previous, b'E' | b'e')
                    && self.word == (Word::Ident { length: 1 });
                self.state = State::Quote {
                    escapes,
                    backslash: false,
                };
            }
            b'"' => self.state = State::QuotedIdent,
            b'$' if matches!(self.word, Word::Ident { .. }) => {}
            b'$' => {
                self.tag = Some(vec![b'$']);
                return Ok(());
            }
            b'-' if self.previous == b'-' => self.state = State::LineComment,
            b'*' if self.previous == b'/' => {
                self.state = State::BlockComment { depth: 1 };
                // The `*` cannot also close it.
                self.unpaired = true;
                self.word = Word::None;
                return Ok(());
            }
            b';' => self.end_of_statement(out),
            // `-` and `/` may open a comment: they alone do not make a statement.
            b if !b.is_ascii_whitespace() && b != b'-' && b != b'/' => self.has_code = true,
            _ => {}
        }
        self.word = match (b, self.word) {
            (b'$', word) => word,
            (b, Word::Ident { length }) if ident_cont(b) => Word::Ident { length: length + 1 },
            (b, Word::Number) if b.is_ascii_digit() => Word::Number,
            (b, _) if ident_start(b) => Word::Ident { length: 1 },
            (b, Word::None) if b.is_ascii_digit() => Word::Number,
            _ => Word::None,
        };
        Ok(())
    }

    /// A `;` outside quotes ends a statement; `COPY … FROM stdin` starts its data on the next
    /// line.
    fn end_of_statement(&mut self, out: &mut impl FnMut(Item)) {
        let text = String::from_utf8_lossy(&self.statement).trim().to_string();
        self.statement.clear();
        self.word = Word::None;
        if !std::mem::take(&mut self.has_code) {
            return;
        }
        if is_copy_from_stdin(&text) {
            self.state = State::Copy;
            out(Item::CopyStart(text));
        } else {
            out(Item::Sql(text));
        }
    }
}

/// `COPY name [(columns)] FROM stdin;`, the only form pg_dump writes (comments before it
/// allowed).
fn is_copy_from_stdin(statement: &str) -> bool {
    let code: String = statement
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join(" ");
    let words: Vec<String> = code
        .split_whitespace()
        .map(|w| w.trim_end_matches(';').to_ascii_lowercase())
        .collect();
    words.first().is_some_and(|w| w == "copy")
        && words.len() >= 4
        && words[words.len() - 2] == "from"
        && words[words.len() - 1] == "stdin"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(dump: &str) -> Result<Vec<Item>, String> {
        let mut splitter = Splitter::default();
        let mut items = Vec::new();
        for line in dump.split_inclusive('\n') {
            splitter.push_line(line.as_bytes(), &mut |i| items.push(i))?;
        }
        splitter.finish(&mut |i| items.push(i))?;
        Ok(items)
    }

    fn sql(items: &[Item]) -> Vec<&str> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Sql(s) | Item::CopyStart(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn statements_end_at_semicolons_outside_quotes_and_comments() {
        let items = split(
            "SET a = 'x;y';\n-- a comment; not a statement\nCREATE FUNCTION f() RETURNS text AS $_$ SELECT ';'; $_$;\n\
             /* one /* nested; */ comment; */ SELECT \"we;ird\", E'it\\'s; ok', $1;\n",
        )
        .unwrap();
        assert_eq!(
            sql(&items),
            [
                "SET a = 'x;y';",
                "-- a comment; not a statement\nCREATE FUNCTION f() RETURNS text AS $_$ SELECT ';'; $_$;",
                "/* one /* nested; */ comment; */ SELECT \"we;ird\", E'it\\'s; ok', $1;",
            ]
        );
    }

    #[test]
    fn copy_data_runs_to_its_terminator_whatever_it_holds() {
        let items = split(
            "COPY public.t (a, b) FROM stdin;\n1\t\\N\n2\tback\\\\slash; \\! not a command\n\\.\nSELECT 1;\n",
        )
        .unwrap();
        assert_eq!(
            items,
            [
                Item::CopyStart("COPY public.t (a, b) FROM stdin;".into()),
                Item::CopyData(b"1\t\\N\n".to_vec()),
                Item::CopyData(b"2\tback\\\\slash; \\! not a command\n".to_vec()),
                Item::CopyEnd,
                Item::Sql("SELECT 1;".into()),
            ]
        );
    }

    #[test]
    fn meta_commands_are_refused_but_pg_dumps_restrict_lines_are_skipped() {
        let ok = split("\\restrict aB3xYz\nSELECT 1;\n\\unrestrict aB3xYz\n").unwrap();
        assert_eq!(sql(&ok), ["SELECT 1;"]);
        for altered in [
            "SELECT 1;\n\\! touch /tmp/x\n",
            "SELECT 1; \\! touch /tmp/x\n",
            "SELECT 1 \\g |sh\n",
            "\\restrict key\n\\o |sh\n",
            "\\unrestrict key extra\n",
            "COPY t FROM stdin;\n1\n\\.\n\\! sh\n",
        ] {
            let e = split(altered).unwrap_err();
            assert!(e.contains("was altered"), "{altered:?}: {e}");
        }
    }

    #[test]
    fn a_dollar_inside_an_identifier_opens_no_quote() {
        // `a$b$` is one identifier: the `;` after it ends the statement.
        let items = split("SELECT a$b$;\nSELECT 2;\n").unwrap();
        assert_eq!(sql(&items), ["SELECT a$b$;", "SELECT 2;"]);
        // After a number or a parameter, `$x$` does open one.
        let items = split("SELECT 1$x$;$x$;\n").unwrap();
        assert_eq!(sql(&items), ["SELECT 1$x$;$x$;"]);
        let items = split("SELECT $1$x$;$x$;\n").unwrap();
        assert_eq!(sql(&items), ["SELECT $1$x$;$x$;"]);
    }

    #[test]
    fn escape_strings_only_at_the_start_of_a_token() {
        // In `abcE'…'` the quote is a standard string: the backslash is literal and `'` ends it.
        let items = split("SELECT abcE'x\\';\nSELECT 2;\n").unwrap();
        assert_eq!(sql(&items), ["SELECT abcE'x\\';", "SELECT 2;"]);
        // `E'…'` escapes a quote with a backslash.
        let items = split("SELECT E'x\\';y';\n").unwrap();
        assert_eq!(sql(&items), ["SELECT E'x\\';y';"]);
    }

    #[test]
    fn a_truncated_dump_is_an_error() {
        assert!(split("COPY t FROM stdin;\n1\n").is_err());
        assert!(split("SELECT 'unterminated\n").is_err());
    }
}
