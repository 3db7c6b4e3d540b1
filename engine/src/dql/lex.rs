//! The DQL lexer: statement text to tokens, one at a time.
//!
//! Tokens are produced on demand rather than all up front, so a hostile
//! megabyte of punctuation never becomes a megabyte-long token vector, and so
//! the error reported is always the first one in text order: a lexical error
//! surfaces only once the parser has accepted everything before it. A
//! lexical error becomes an [`Tok::Error`] token (which matches no rule) and
//! ends the stream. Positions count characters, not bytes, because that is
//! what an editor shows.

use super::ast::Pos;
use super::parse::ParseError;

/// Punctuation and operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sym {
    Comma,
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Colon,
    Semi,
    Star,
    Plus,
    Minus,
    Slash,
    Percent,
    Concat,
    Eq,
    EqEq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    /// A bare word: keyword or identifier, as written (keywords are matched
    /// case-insensitively by the parser, which alone knows the context).
    Word(String),
    /// A backtick-quoted name: never a keyword.
    Quoted(String),
    /// A string literal, escapes resolved.
    Str(String),
    /// An integer literal; its digits are the token's text. Range is checked
    /// by the parser, which knows whether a minus sign precedes it (so that
    /// `-9223372036854775808` is accepted).
    Int,
    /// A decimal or exponent literal (finite).
    Float(f64),
    Sym(Sym),
    Eof,
    Error(Box<ParseError>),
}

/// A token and where it is.
#[derive(Clone, Debug)]
pub(super) struct Token {
    pub kind: Tok,
    pub pos: Pos,
    /// Byte range in the text.
    pub start: usize,
    pub end: usize,
}

pub(super) struct Lexer<'a> {
    src: &'a str,
    i: usize,
    line: u32,
    column: u32,
    done: bool,
}

type Lexed<T> = Result<T, ParseError>;

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer {
            src,
            i: 0,
            line: 1,
            column: 1,
            done: false,
        }
    }

    /// The next token; after an error or the end, `Eof` forever.
    pub fn next_token(&mut self) -> Token {
        let start_pos = self.pos();
        let start = self.i;
        if self.done {
            return self.token(Tok::Eof, start_pos, start);
        }
        match self.skip_trivia().and_then(|()| self.lex_one()) {
            Ok(t) => {
                if t.kind == Tok::Eof {
                    self.done = true;
                }
                t
            }
            Err(e) => {
                self.done = true;
                let pos = e.pos;
                self.token(Tok::Error(Box::new(e)), pos, self.i)
            }
        }
    }

    fn token(&self, kind: Tok, pos: Pos, start: usize) -> Token {
        Token {
            kind,
            pos,
            start,
            end: self.i,
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.i..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.src[self.i..].chars();
        it.next();
        it.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += c.len_utf8();
        if c == '\n' {
            self.line = self.line.saturating_add(1);
            self.column = 1;
        } else {
            self.column = self.column.saturating_add(1);
        }
        Some(c)
    }

    fn bump_while(&mut self, f: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&f) {
            self.bump();
        }
    }

    fn skip_trivia(&mut self) -> Lexed<()> {
        loop {
            match (self.peek(), self.peek2()) {
                (Some(c), _) if c.is_whitespace() => {
                    self.bump();
                }
                (Some('-'), Some('-')) => self.bump_while(|c| c != '\n'),
                (Some('/'), Some('*')) => self.block_comment()?,
                _ => return Ok(()),
            }
        }
    }

    fn block_comment(&mut self) -> Lexed<()> {
        let pos = self.pos();
        self.bump();
        self.bump();
        loop {
            match self.bump() {
                None => return Err(error(pos, "*/", "unterminated comment")),
                Some('*') if self.peek() == Some('/') => {
                    self.bump();
                    return Ok(());
                }
                Some(_) => {}
            }
        }
    }

    fn lex_one(&mut self) -> Lexed<Token> {
        let pos = self.pos();
        let start = self.i;
        let Some(c) = self.peek() else {
            return Ok(self.token(Tok::Eof, pos, start));
        };
        let kind = if c.is_ascii_alphabetic() || c == '_' {
            self.bump_while(is_ident_char);
            Tok::Word(self.src[start..self.i].to_string())
        } else if c.is_ascii_digit() {
            self.number(pos, start)?
        } else if c == '\'' || c == '"' {
            Tok::Str(self.string(pos, c)?)
        } else if c == '`' {
            Tok::Quoted(self.backticked(pos)?)
        } else {
            Tok::Sym(self.symbol(pos, c)?)
        };
        Ok(self.token(kind, pos, start))
    }

    fn symbol(&mut self, pos: Pos, c: char) -> Lexed<Sym> {
        self.bump();
        let next = self.peek();
        let (sym, two) = match (c, next) {
            ('=', Some('=')) => (Sym::EqEq, true),
            ('!', Some('=')) => (Sym::Ne, true),
            ('<', Some('>')) => (Sym::Ne, true),
            ('<', Some('=')) => (Sym::Le, true),
            ('>', Some('=')) => (Sym::Ge, true),
            ('|', Some('|')) => (Sym::Concat, true),
            (',', _) => (Sym::Comma, false),
            ('.', _) => (Sym::Dot, false),
            ('(', _) => (Sym::LParen, false),
            (')', _) => (Sym::RParen, false),
            ('[', _) => (Sym::LBracket, false),
            (']', _) => (Sym::RBracket, false),
            ('{', _) => (Sym::LBrace, false),
            ('}', _) => (Sym::RBrace, false),
            (':', _) => (Sym::Colon, false),
            (';', _) => (Sym::Semi, false),
            ('*', _) => (Sym::Star, false),
            ('+', _) => (Sym::Plus, false),
            ('-', _) => (Sym::Minus, false),
            ('/', _) => (Sym::Slash, false),
            ('%', _) => (Sym::Percent, false),
            ('=', _) => (Sym::Eq, false),
            ('<', _) => (Sym::Lt, false),
            ('>', _) => (Sym::Gt, false),
            _ => {
                return Err(error(
                    pos,
                    "a name, literal, parameter, operator or punctuation",
                    &format!("'{}'", c.escape_debug()),
                ))
            }
        };
        if two {
            self.bump();
        }
        Ok(sym)
    }

    fn number(&mut self, pos: Pos, start: usize) -> Lexed<Tok> {
        self.bump_while(|c| c.is_ascii_digit());
        let mut float = false;
        if self.peek() == Some('.') {
            self.bump();
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.bad_number(pos, start, "digits after the decimal point"));
            }
            self.bump_while(|c| c.is_ascii_digit());
            float = true;
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.bad_number(pos, start, "digits in the exponent"));
            }
            self.bump_while(|c| c.is_ascii_digit());
            float = true;
        }
        if self.peek().is_some_and(is_ident_char) {
            return Err(self.bad_number(pos, start, "a number"));
        }
        if !float {
            return Ok(Tok::Int);
        }
        let text = &self.src[start..self.i];
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Tok::Float(f)),
            _ => Err(error(pos, "a number within the range of a 64-bit float", text)),
        }
    }

    /// Swallows the rest of a malformed number so the error shows all of it.
    fn bad_number(&mut self, pos: Pos, start: usize, expected: &str) -> ParseError {
        self.bump_while(|c| is_ident_char(c) || c == '.');
        error(pos, expected, &self.src[start..self.i])
    }

    fn string(&mut self, pos: Pos, quote: char) -> Lexed<String> {
        self.bump();
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(error(pos, &format!("a closing {quote}"), "unterminated string")),
                Some(c) if c == quote => {
                    self.bump();
                    return Ok(out);
                }
                Some('\\') => out.push(self.escape()?),
                Some(c) => {
                    self.bump();
                    out.push(c);
                }
            }
        }
    }

    fn escape(&mut self) -> Lexed<char> {
        let pos = self.pos();
        self.bump();
        let c = match self.bump() {
            Some('n') => '\n',
            Some('t') => '\t',
            Some('r') => '\r',
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('0') => '\0',
            Some(c @ ('\\' | '\'' | '"' | '/')) => c,
            Some('u') => return self.unicode_escape(pos),
            Some(c) => {
                return Err(error(
                    pos,
                    "an escape (\\n \\t \\r \\\\ \\' \\\" \\uXXXX)",
                    &format!("\\{}", c.escape_debug()),
                ))
            }
            None => return Err(error(pos, "an escape", "end of input")),
        };
        Ok(c)
    }

    /// `\uXXXX`, with UTF-16 surrogate pairs written as two escapes (as in
    /// JSON, so JSON text pasted into a statement keeps its meaning).
    fn unicode_escape(&mut self, pos: Pos) -> Lexed<char> {
        let hi = self.hex4(pos)?;
        if !(0xD800..0xDC00).contains(&hi) {
            return char::from_u32(hi).ok_or_else(|| error(pos, "a valid \\u escape", &format!("\\u{hi:04X}")));
        }
        if self.peek() != Some('\\') || self.peek2() != Some('u') {
            return Err(error(
                pos,
                "a low surrogate \\uDC00-\\uDFFF after a high one",
                "a lone surrogate",
            ));
        }
        self.bump();
        self.bump();
        let lo = self.hex4(pos)?;
        if !(0xDC00..0xE000).contains(&lo) {
            return Err(error(
                pos,
                "a low surrogate \\uDC00-\\uDFFF after a high one",
                &format!("\\u{lo:04X}"),
            ));
        }
        let code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
        char::from_u32(code).ok_or_else(|| error(pos, "a valid \\u escape", "a bad surrogate pair"))
    }

    fn hex4(&mut self, pos: Pos) -> Lexed<u32> {
        let mut n = 0u32;
        for _ in 0..4 {
            let d = self.peek().and_then(|c| c.to_digit(16));
            let Some(d) = d else {
                return Err(error(pos, "four hex digits after \\u", &self.found_char()));
            };
            self.bump();
            n = n * 16 + d;
        }
        Ok(n)
    }

    fn found_char(&self) -> String {
        match self.peek() {
            Some(c) => format!("'{}'", c.escape_debug()),
            None => "end of input".to_string(),
        }
    }

    /// `` `any name` ``; a doubled backtick stands for one.
    fn backticked(&mut self, pos: Pos) -> Lexed<String> {
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(error(pos, "a closing `", "unterminated name")),
                Some('`') if self.peek() == Some('`') => {
                    self.bump();
                    out.push('`');
                }
                Some('`') if out.is_empty() => return Err(error(pos, "a name", "``")),
                Some('`') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }
}

pub(super) fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn error(pos: Pos, expected: &str, found: &str) -> ParseError {
    ParseError {
        pos,
        expected: expected.to_string(),
        found: found.to_string(),
    }
}
