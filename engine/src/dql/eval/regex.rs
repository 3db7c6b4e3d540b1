//! A small regular-expression engine for `regexp_like`, linear in the text.
//!
//! Written here rather than taken from a crate: the engine stays
//! dependency-light, and the property that matters for a database evaluating
//! user patterns over every row (no pattern takes exponential time) is plain
//! to see. A pattern compiles to a Thompson NFA, run as a Pike VM without
//! captures: each NFA state is visited at most once per text position, so a
//! match costs O(text length x program size) whatever the pattern, `(a*)*b`
//! included. Parsing and matching use explicit stacks, except the parser's
//! descent into groups, which is capped at [`MAX_NESTING`].
//!
//! Syntax: literals; `.` (any character but `\n`); `*`, `+`, `?`, `{n}`,
//! `{n,}`, `{n,m}` (a trailing `?` for laziness is accepted and changes
//! nothing, since only a yes/no answer is returned; a `{` that starts none
//! of these is a literal); alternation `|`; groups
//! `( )` and `(?: )`; anchors `^` and `$` (start and end of the whole text);
//! classes `[abc]`, `[a-z]`, `[^...]`; escapes `\d \D \w \W \s \S` (`\d` is
//! ASCII digits, `\w` Unicode alphanumerics and `_`, `\s` Unicode
//! whitespace), `\n \t \r`, and `\` before any punctuation for the character
//! itself. The match is a search: the pattern may match anywhere in the
//! text unless anchored.

/// Longest pattern accepted, in characters.
pub(crate) const MAX_PATTERN_CHARS: usize = 1000;
/// Largest compiled program: bounds the cost of a match per text character.
const MAX_PROGRAM: usize = 10_000;
/// Bounds the compiler's work (repetitions of empty groups emit nothing).
const MAX_COMPILE_STEPS: usize = 100_000;
/// Deepest group nesting.
const MAX_NESTING: usize = 32;
/// Largest count in `{n,m}`.
const MAX_COUNT: u32 = 1000;

/// A compiled pattern.
#[derive(Clone, Debug)]
pub(crate) struct Regex {
    prog: Vec<Inst>,
}

/// One NFA instruction.
#[derive(Clone, Debug)]
enum Inst {
    Char(char),
    Any,
    Class(Class),
    /// Continue at both targets.
    Split(usize, usize),
    Jmp(usize),
    /// `^`: only at the start of the text.
    Start,
    /// `$`: only at the end of the text.
    End,
    Match,
}

#[derive(Clone, Debug)]
struct Class {
    negated: bool,
    items: Vec<Item>,
}

#[derive(Clone, Copy, Debug)]
enum Item {
    Range(char, char),
    /// `\d` (or `\D` when negated).
    Digit(bool),
    Word(bool),
    Space(bool),
}

impl Item {
    fn matches(self, c: char) -> bool {
        match self {
            Item::Range(lo, hi) => lo <= c && c <= hi,
            Item::Digit(neg) => c.is_ascii_digit() != neg,
            Item::Word(neg) => (c.is_alphanumeric() || c == '_') != neg,
            Item::Space(neg) => c.is_whitespace() != neg,
        }
    }
}

impl Class {
    fn matches(&self, c: char) -> bool {
        self.items.iter().any(|i| i.matches(c)) != self.negated
    }
}

/// The parsed pattern.
#[derive(Clone, Debug)]
enum Node {
    Char(char),
    Any,
    Class(Class),
    Start,
    End,
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    /// Node, minimum, maximum (`None`: unbounded).
    Repeat(Box<Node>, u32, Option<u32>),
}

impl Regex {
    /// Compiles `pattern`; the error says what is wrong with it.
    pub(crate) fn new(pattern: &str) -> Result<Regex, String> {
        if pattern.chars().count() > MAX_PATTERN_CHARS {
            return Err(format!("pattern longer than {MAX_PATTERN_CHARS} characters"));
        }
        let mut parser = Parser {
            chars: pattern.chars().collect(),
            at: 0,
            depth: 0,
        };
        let node = parser.alternation()?;
        if parser.at < parser.chars.len() {
            return Err(format!("unmatched ')' at character {}", parser.at + 1));
        }
        let mut c = Compiler {
            prog: Vec::new(),
            steps: 0,
        };
        c.emit(&node)?;
        c.push(Inst::Match)?;
        Ok(Regex { prog: c.prog })
    }

    /// Whether the pattern matches somewhere in `text`.
    pub(crate) fn is_match(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let mut vm = Vm {
            prog: &self.prog,
            len: text.len(),
            stack: Vec::new(),
        };
        let mut current = Set::new(self.prog.len());
        let mut next = Set::new(self.prog.len());
        for at in 0..=text.len() {
            // A new attempt starts at every position: the match is a search.
            if vm.follow(0, at, &mut current) {
                return true;
            }
            let Some(&c) = text.get(at) else { break };
            next.clear();
            for &pc in &current.dense {
                if vm.consumes(pc, c) && vm.follow(pc + 1, at + 1, &mut next) {
                    return true;
                }
            }
            std::mem::swap(&mut current, &mut next);
        }
        false
    }
}

// ---- parsing ----

struct Parser {
    chars: Vec<char>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn alternation(&mut self) -> Result<Node, String> {
        let mut alts = vec![self.sequence()?];
        while self.eat('|') {
            alts.push(self.sequence()?);
        }
        Ok(if alts.len() == 1 {
            alts.swap_remove(0)
        } else {
            Node::Alt(alts)
        })
    }

    fn sequence(&mut self) -> Result<Node, String> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            items.push(self.repetition()?);
        }
        Ok(Node::Concat(items))
    }

    fn repetition(&mut self) -> Result<Node, String> {
        let mut node = self.atom()?;
        let mut quantifiers = 0;
        while let Some((min, max)) = self.quantifier()? {
            if matches!(node, Node::Start | Node::End) {
                return Err("nothing to repeat before a quantifier (an anchor cannot repeat)".into());
            }
            // `a*?` is allowed (laziness); longer chains only nest deeper.
            quantifiers += 1;
            if quantifiers > 2 {
                return Err(format!("too many quantifiers in a row at character {}", self.at));
            }
            node = Node::Repeat(Box::new(node), min, max);
        }
        Ok(node)
    }

    fn quantifier(&mut self) -> Result<Option<(u32, Option<u32>)>, String> {
        let q = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => return self.counted(),
            _ => return Ok(None),
        };
        self.at += 1;
        Ok(Some(q))
    }

    /// `{n}`, `{n,}` or `{n,m}`. A `{` that does not start one of these is
    /// a literal character (as in most engines), so nothing is consumed.
    fn counted(&mut self) -> Result<Option<(u32, Option<u32>)>, String> {
        let start = self.at;
        self.at += 1;
        let bounds = self.number().and_then(|min| {
            let max = if self.eat(',') { self.number() } else { Some(min) };
            self.eat('}').then_some((min, max))
        });
        let Some((min, max)) = bounds else {
            self.at = start;
            return Ok(None);
        };
        if max.is_some_and(|m| m < min) {
            return Err(format!(
                "repetition {{{min},{}}} has its bounds reversed",
                max.unwrap_or(0)
            ));
        }
        if min > MAX_COUNT || max.is_some_and(|m| m > MAX_COUNT) {
            return Err(format!("repetition counts above {MAX_COUNT} are not supported"));
        }
        Ok(Some((min, max)))
    }

    fn number(&mut self) -> Option<u32> {
        let start = self.at;
        let mut n: u32 = 0;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
            n = n.saturating_mul(10).saturating_add(d);
            self.at += 1;
        }
        (self.at > start).then_some(n)
    }

    fn atom(&mut self) -> Result<Node, String> {
        let c = self.bump().ok_or("unexpected end of pattern")?;
        Ok(match c {
            '(' => self.group()?,
            '[' => Node::Class(self.class()?),
            '.' => Node::Any,
            '^' => Node::Start,
            '$' => Node::End,
            '\\' => self.escape()?,
            '*' | '+' | '?' => return Err(format!("nothing to repeat before '{c}'")),
            c => Node::Char(c),
        })
    }

    fn group(&mut self) -> Result<Node, String> {
        if self.depth >= MAX_NESTING {
            return Err(format!("groups nested deeper than {MAX_NESTING}"));
        }
        if self.eat('?') && !self.eat(':') {
            return Err("only (?: ) groups are supported among (? ) forms".into());
        }
        self.depth += 1;
        let inner = self.alternation()?;
        self.depth -= 1;
        if !self.eat(')') {
            return Err("missing ')' to close a group".into());
        }
        Ok(inner)
    }

    fn escape(&mut self) -> Result<Node, String> {
        let c = self.bump().ok_or("pattern ends with a lone backslash")?;
        Ok(match shorthand(c) {
            Some(item) => Node::Class(Class {
                negated: false,
                items: vec![item],
            }),
            None => Node::Char(literal_escape(c)?),
        })
    }

    /// A class after its `[`. A `]` first in the class is literal, as is a
    /// `-` first or last.
    fn class(&mut self) -> Result<Class, String> {
        let negated = self.eat('^');
        let mut items = Vec::new();
        let mut first = true;
        loop {
            let c = self.bump().ok_or("missing ']' to close a character class")?;
            if c == ']' && !first {
                return Ok(Class { negated, items });
            }
            first = false;
            let lo = match c {
                '\\' => {
                    let e = self.bump().ok_or("pattern ends with a lone backslash")?;
                    if let Some(item) = shorthand(e) {
                        items.push(item);
                        continue;
                    }
                    literal_escape(e)?
                }
                c => c,
            };
            let range = self.peek() == Some('-') && self.chars.get(self.at + 1).is_some_and(|n| *n != ']');
            if !range {
                items.push(Item::Range(lo, lo));
                continue;
            }
            self.at += 1;
            let hi = match self.bump().ok_or("missing ']' to close a character class")? {
                '\\' => literal_escape(self.bump().ok_or("pattern ends with a lone backslash")?)?,
                h => h,
            };
            if hi < lo {
                return Err(format!("class range {lo}-{hi} is out of order"));
            }
            items.push(Item::Range(lo, hi));
        }
    }
}

fn shorthand(c: char) -> Option<Item> {
    Some(match c {
        'd' => Item::Digit(false),
        'D' => Item::Digit(true),
        'w' => Item::Word(false),
        'W' => Item::Word(true),
        's' => Item::Space(false),
        'S' => Item::Space(true),
        _ => return None,
    })
}

/// The character an escape stands for. Unknown letter escapes are refused,
/// so that giving them a meaning later changes no existing query.
fn literal_escape(c: char) -> Result<char, String> {
    match c {
        'n' => Ok('\n'),
        't' => Ok('\t'),
        'r' => Ok('\r'),
        c if c.is_alphanumeric() => Err(format!("unsupported escape \\{c}")),
        c => Ok(c),
    }
}

// ---- compiling ----

struct Compiler {
    prog: Vec<Inst>,
    steps: usize,
}

const TOO_COMPLEX: &str = "pattern too complex (repetitions expand beyond the supported size)";

impl Compiler {
    fn push(&mut self, inst: Inst) -> Result<usize, String> {
        if self.prog.len() >= MAX_PROGRAM {
            return Err(TOO_COMPLEX.into());
        }
        self.prog.push(inst);
        Ok(self.prog.len() - 1)
    }

    fn set(&mut self, at: usize, inst: Inst) {
        if let Some(slot) = self.prog.get_mut(at) {
            *slot = inst;
        }
    }

    fn emit(&mut self, node: &Node) -> Result<(), String> {
        self.steps += 1;
        if self.steps > MAX_COMPILE_STEPS {
            return Err(TOO_COMPLEX.into());
        }
        match node {
            Node::Char(c) => self.push(Inst::Char(*c)).map(drop),
            Node::Any => self.push(Inst::Any).map(drop),
            Node::Class(c) => self.push(Inst::Class(c.clone())).map(drop),
            Node::Start => self.push(Inst::Start).map(drop),
            Node::End => self.push(Inst::End).map(drop),
            Node::Concat(items) => items.iter().try_for_each(|n| self.emit(n)),
            Node::Alt(alts) => self.alt(alts),
            Node::Repeat(inner, min, max) => self.repeat(inner, *min, *max),
        }
    }

    /// `a|b|c`: split to each alternative, each jumping to the end.
    fn alt(&mut self, alts: &[Node]) -> Result<(), String> {
        let Some((last, init)) = alts.split_last() else {
            return Ok(());
        };
        let mut jumps = Vec::new();
        for a in init {
            let split = self.push(Inst::Split(0, 0))?;
            self.emit(a)?;
            jumps.push(self.push(Inst::Jmp(0))?);
            self.set(split, Inst::Split(split + 1, self.prog.len()));
        }
        self.emit(last)?;
        let end = self.prog.len();
        for j in jumps {
            self.set(j, Inst::Jmp(end));
        }
        Ok(())
    }

    /// `x{min,max}` as `min` copies of `x`, then `x*` or `max - min`
    /// optional copies (`x{0,3}` = `x?x?x?`, the same language).
    fn repeat(&mut self, inner: &Node, min: u32, max: Option<u32>) -> Result<(), String> {
        for _ in 0..min {
            self.emit(inner)?;
        }
        match max {
            None => {
                let split = self.push(Inst::Split(0, 0))?;
                self.emit(inner)?;
                self.push(Inst::Jmp(split))?;
                self.set(split, Inst::Split(split + 1, self.prog.len()));
            }
            Some(max) => {
                for _ in min..max {
                    let split = self.push(Inst::Split(0, 0))?;
                    self.emit(inner)?;
                    self.set(split, Inst::Split(split + 1, self.prog.len()));
                }
            }
        }
        Ok(())
    }
}

// ---- matching ----

/// A set of program counters: insertion order kept, membership in O(1).
struct Set {
    dense: Vec<usize>,
    member: Vec<bool>,
}

impl Set {
    fn new(n: usize) -> Set {
        Set {
            dense: Vec::with_capacity(n),
            member: vec![false; n],
        }
    }

    /// Adds `pc`; false if it was there already (or is out of range).
    fn insert(&mut self, pc: usize) -> bool {
        match self.member.get_mut(pc) {
            Some(m) if !*m => {
                *m = true;
                self.dense.push(pc);
                true
            }
            _ => false,
        }
    }

    fn clear(&mut self) {
        for pc in self.dense.drain(..) {
            if let Some(m) = self.member.get_mut(pc) {
                *m = false;
            }
        }
    }
}

struct Vm<'p> {
    prog: &'p [Inst],
    len: usize,
    stack: Vec<usize>,
}

impl Vm<'_> {
    /// Adds `pc` and every state reachable from it without consuming a
    /// character (at text position `at`) to `set`; true if `Match` is among
    /// them. States already in the set are not revisited, which is what
    /// makes empty loops like `(a*)*` terminate.
    fn follow(&mut self, pc: usize, at: usize, set: &mut Set) -> bool {
        self.stack.clear();
        self.stack.push(pc);
        while let Some(pc) = self.stack.pop() {
            if !set.insert(pc) {
                continue;
            }
            match self.prog.get(pc) {
                Some(Inst::Match) => return true,
                Some(Inst::Jmp(t)) => self.stack.push(*t),
                Some(Inst::Split(a, b)) => {
                    self.stack.push(*b);
                    self.stack.push(*a);
                }
                Some(Inst::Start) if at == 0 => self.stack.push(pc + 1),
                Some(Inst::End) if at == self.len => self.stack.push(pc + 1),
                _ => {}
            }
        }
        false
    }

    fn consumes(&self, pc: usize, c: char) -> bool {
        match self.prog.get(pc) {
            Some(Inst::Char(x)) => *x == c,
            Some(Inst::Any) => c != '\n',
            Some(Inst::Class(class)) => class.matches(c),
            _ => false,
        }
    }
}
