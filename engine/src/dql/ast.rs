//! The syntax tree of DQL statements.
//!
//! The parser (`parse.rs`) builds it, the planner and executor read it; it is
//! plain data so that prepared statements can be cached and shared. Positions
//! ([`Pos`]) are kept where a later error must point back into the text
//! (parameters, paths in mutations).

use crate::value::Value;

/// A position in the statement text: 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1 (in characters).
    pub column: u32,
}

/// One DQL statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    /// `SELECT ...`
    Select(Box<Select>),
    /// `INSERT INTO ...`
    Insert(Box<Insert>),
    /// `UPDATE coll SET ... WHERE ...`
    Update(Box<Update>),
    /// `DELETE FROM coll WHERE ...` (tombstones, syncs).
    Delete(Box<Delete>),
    /// `EVICT FROM coll WHERE ...` (local only).
    Evict(Box<Delete>),
    /// `CREATE INDEX [IF NOT EXISTS] name ON coll (path, ...)`
    CreateIndex {
        /// Index name.
        name: String,
        /// Collection.
        collection: String,
        /// Indexed paths, in order.
        paths: Vec<Path>,
        /// `IF NOT EXISTS` given.
        if_not_exists: bool,
    },
    /// `DROP INDEX [IF EXISTS] name`
    DropIndex {
        /// Index name.
        name: String,
        /// `IF EXISTS` given.
        if_exists: bool,
    },
    /// `EXPLAIN <statement>`: the plan, not run.
    Explain(Box<Statement>),
    /// `PROFILE <statement>`: run, with per-operator timings.
    Profile(Box<Statement>),
    /// `ALTER SYSTEM SET name = expr`
    AlterSystem {
        /// Setting name (upper case).
        name: String,
        /// New value.
        value: Expr,
    },
    /// `SHOW name` or `SHOW ALL`
    Show {
        /// Setting name (upper case); `None` for all.
        name: Option<String>,
    },
}

/// A field path: `a.b[0]['c d']`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Path {
    /// Segments from the document root.
    pub segments: Vec<Segment>,
}

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Segment {
    /// Object key.
    Key(String),
    /// Array index (negative counts from the end).
    Index(i64),
}

impl Path {
    /// The path of one key.
    pub fn key(k: &str) -> Path {
        Path {
            segments: vec![Segment::Key(k.to_string())],
        }
    }

    /// The keys, if the path has no array index (what a field write needs).
    pub fn keys(&self) -> Option<Vec<String>> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Key(k) => Some(k.clone()),
                Segment::Index(_) => None,
            })
            .collect()
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.segments.iter().enumerate() {
            match s {
                Segment::Key(k) if is_plain_ident(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => write!(f, "[{}]", Value::String(k.clone()))?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

fn is_plain_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|c| c.is_alphabetic() || c == '_') && c.all(|c| c.is_alphanumeric() || c == '_')
}

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A literal value.
    Literal(Value),
    /// `:name`
    Param {
        /// Name without the colon.
        name: String,
        /// Where it was written.
        pos: Pos,
    },
    /// A field of the current document (optionally qualified by a
    /// collection alias in joins: `t.a.b` with `t` an alias).
    Field(Path),
    /// `{ "k": expr, ... }`
    Object(Vec<(String, Expr)>),
    /// `[expr, ...]`
    Array(Vec<Expr>),
    /// Unary operator.
    Unary(UnaryOp, Box<Expr>),
    /// Binary operator.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `x [NOT] IN (a, b, ...)` or `x [NOT] IN :param` / `IN [..]`
    In {
        /// Tested value.
        expr: Box<Expr>,
        /// Candidates: a list of expressions, or one expression yielding an array.
        list: InList,
        /// `NOT IN`.
        negated: bool,
    },
    /// `x [NOT] BETWEEN lo AND hi`
    Between {
        /// Tested value.
        expr: Box<Expr>,
        /// Lower bound (inclusive).
        low: Box<Expr>,
        /// Upper bound (inclusive).
        high: Box<Expr>,
        /// `NOT BETWEEN`.
        negated: bool,
    },
    /// `x [NOT] LIKE p` / `ILIKE`
    Like {
        /// Tested value.
        expr: Box<Expr>,
        /// Pattern with `%` and `_`.
        pattern: Box<Expr>,
        /// `ILIKE`: case-insensitive.
        case_insensitive: bool,
        /// `NOT LIKE`.
        negated: bool,
    },
    /// `x IS [NOT] NULL` / `IS [NOT] MISSING`
    Is {
        /// Tested value.
        expr: Box<Expr>,
        /// What is tested.
        test: IsTest,
        /// `IS NOT`.
        negated: bool,
    },
    /// `ANY x IN array SATISFIES cond END`
    Any {
        /// Loop variable.
        var: String,
        /// The array.
        array: Box<Expr>,
        /// Condition over `var`.
        cond: Box<Expr>,
    },
    /// A function or aggregate call.
    Call {
        /// Lower-case name.
        name: String,
        /// Arguments.
        args: Vec<Expr>,
        /// `COUNT(DISTINCT x)`.
        distinct: bool,
        /// Where it was written.
        pos: Pos,
    },
    /// `COUNT(*)`
    CountStar,
}

/// Candidates of `IN`.
#[derive(Clone, Debug, PartialEq)]
pub enum InList {
    /// `(a, b, c)`
    List(Vec<Expr>),
    /// An expression that must yield an array (`:ids`, `[1, 2]`, a field).
    Array(Box<Expr>),
}

/// What `IS` tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsTest {
    /// `IS NULL`
    Null,
    /// `IS MISSING`
    Missing,
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    /// `NOT`
    Not,
    /// `-`
    Neg,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `OR`
    Or,
    /// `AND`
    And,
    /// `=`
    Eq,
    /// `!=`, `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
    /// `||`
    Concat,
}

/// `SELECT`
#[derive(Clone, Debug, PartialEq)]
pub struct Select {
    /// `SELECT DISTINCT`.
    pub distinct: bool,
    /// What to return.
    pub items: Vec<SelectItem>,
    /// The collection read.
    pub from: Source,
    /// Declared CRDT types (`COLLECTION coll (...)`).
    pub types: Vec<TypeDecl>,
    /// `USE IDS a, b`: only these documents.
    pub use_ids: Option<Vec<Expr>>,
    /// Joined collections.
    pub joins: Vec<Join>,
    /// Filter.
    pub filter: Option<Expr>,
    /// `GROUP BY`.
    pub group_by: Vec<Expr>,
    /// `HAVING`.
    pub having: Option<Expr>,
    /// `ORDER BY`.
    pub order_by: Vec<OrderItem>,
    /// `LIMIT`.
    pub limit: Option<Expr>,
    /// `OFFSET`.
    pub offset: Option<Expr>,
}

/// A collection with an optional alias.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// Collection name (`system:indexes` for the catalogue).
    pub collection: String,
    /// `AS alias` or bare alias.
    pub alias: Option<String>,
}

/// One `JOIN`.
#[derive(Clone, Debug, PartialEq)]
pub struct Join {
    /// `INNER` or `LEFT`.
    pub kind: JoinKind,
    /// Joined collection.
    pub source: Source,
    /// `ON` condition.
    pub on: Expr,
}

/// Kinds of join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    /// Only matching pairs.
    Inner,
    /// Every left row, with nulls where nothing matches.
    Left,
}

/// One projection.
#[derive(Clone, Debug, PartialEq)]
pub enum SelectItem {
    /// `*` (or `alias.*`).
    All(Option<String>),
    /// `expr [AS name]`
    Expr {
        /// The expression.
        expr: Expr,
        /// Output name.
        alias: Option<String>,
    },
}

/// One `ORDER BY` term.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderItem {
    /// Sort key.
    pub expr: Expr,
    /// `DESC`.
    pub desc: bool,
}

/// CRDT type of a field, as declared.
#[derive(Clone, Debug, PartialEq)]
pub enum CrdtType {
    /// Last-writer-wins register (objects stored whole).
    Register,
    /// Map whose keys merge independently, with declared sub-fields.
    Map(Vec<TypeDecl>),
    /// PN-counter.
    Counter,
    /// Attachment token.
    Attachment,
}

/// `field TYPE`
#[derive(Clone, Debug, PartialEq)]
pub struct TypeDecl {
    /// The field (one key, relative to the enclosing map).
    pub field: String,
    /// Its type.
    pub ty: CrdtType,
}

/// `INSERT`
#[derive(Clone, Debug, PartialEq)]
pub struct Insert {
    /// Target collection.
    pub collection: String,
    /// Declared CRDT types.
    pub types: Vec<TypeDecl>,
    /// `INITIAL DOCUMENTS`: defaults that never override real edits.
    pub initial: bool,
    /// The documents.
    pub documents: Vec<Expr>,
    /// `ON ID CONFLICT`.
    pub on_conflict: Conflict,
    /// `RETURNING`.
    pub returning: Option<Vec<SelectItem>>,
}

/// `ON ID CONFLICT ...`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// `DO FAIL` (default).
    Fail,
    /// `DO NOTHING`.
    Nothing,
    /// `DO UPDATE`: every given field written.
    Update,
    /// `DO UPDATE_LOCAL_DIFF`: only fields whose value differs.
    UpdateLocalDiff,
}

/// `UPDATE`
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// Target collection.
    pub collection: String,
    /// Declared CRDT types.
    pub types: Vec<TypeDecl>,
    /// Mutations, in order.
    pub mutations: Vec<Mutation>,
    /// Filter.
    pub filter: Option<Expr>,
    /// `RETURNING`.
    pub returning: Option<Vec<SelectItem>>,
}

/// One mutation of `UPDATE`.
#[derive(Clone, Debug, PartialEq)]
pub enum Mutation {
    /// `SET path = expr`
    Set(Path, Expr, Pos),
    /// `UNSET path`
    Unset(Path, Pos),
    /// `APPLY path INCREMENT BY expr` / `PN_INCREMENT BY`
    Increment(Path, Expr, Pos),
    /// `APPLY path RESTART WITH expr`
    Restart(Path, Expr, Pos),
}

/// `DELETE` / `EVICT`
#[derive(Clone, Debug, PartialEq)]
pub struct Delete {
    /// Target collection.
    pub collection: String,
    /// Filter.
    pub filter: Option<Expr>,
    /// `USE IDS`.
    pub use_ids: Option<Vec<Expr>>,
    /// `RETURNING`.
    pub returning: Option<Vec<SelectItem>>,
}

impl Expr {
    /// Calls `f` on each direct subexpression.
    pub fn for_children<'e>(&'e self, f: &mut dyn FnMut(&'e Expr)) {
        match self {
            Expr::Object(fields) => fields.iter().for_each(|(_, v)| f(v)),
            Expr::Array(items) | Expr::Call { args: items, .. } => items.iter().for_each(f),
            Expr::Unary(_, a) => f(a),
            Expr::Binary(_, a, b) => {
                f(a);
                f(b)
            }
            Expr::In { expr, list, .. } => {
                f(expr);
                match list {
                    InList::List(l) => l.iter().for_each(f),
                    InList::Array(a) => f(a),
                }
            }
            Expr::Between { expr, low, high, .. } => {
                f(expr);
                f(low);
                f(high)
            }
            Expr::Like { expr, pattern, .. } => {
                f(expr);
                f(pattern)
            }
            Expr::Is { expr, .. } => f(expr),
            Expr::Any { array, cond, .. } => {
                f(array);
                f(cond)
            }
            Expr::Literal(_) | Expr::Param { .. } | Expr::Field(_) | Expr::CountStar => {}
        }
    }
}

impl Statement {
    /// Calls `f` on every top-level expression of the statement (including
    /// those of an `EXPLAIN`ed or `PROFILE`d one).
    pub fn for_each_expr<'e>(&'e self, f: &mut dyn FnMut(&'e Expr)) {
        match self {
            Statement::Select(s) => s.for_each_expr(f),
            Statement::Insert(i) => {
                i.documents.iter().for_each(&mut *f);
                for_items(i.returning.as_deref(), f);
            }
            Statement::Update(u) => {
                for m in &u.mutations {
                    match m {
                        Mutation::Set(_, e, _) | Mutation::Increment(_, e, _) | Mutation::Restart(_, e, _) => f(e),
                        Mutation::Unset(..) => {}
                    }
                }
                u.filter.iter().for_each(&mut *f);
                for_items(u.returning.as_deref(), f);
            }
            Statement::Delete(d) | Statement::Evict(d) => {
                d.filter.iter().for_each(&mut *f);
                d.use_ids.iter().flatten().for_each(&mut *f);
                for_items(d.returning.as_deref(), f);
            }
            Statement::AlterSystem { value, .. } => f(value),
            Statement::Explain(inner) | Statement::Profile(inner) => inner.for_each_expr(f),
            Statement::CreateIndex { .. } | Statement::DropIndex { .. } | Statement::Show { .. } => {}
        }
    }
}

impl Select {
    fn for_each_expr<'e>(&'e self, f: &mut dyn FnMut(&'e Expr)) {
        for_items(Some(&self.items), f);
        self.use_ids.iter().flatten().for_each(&mut *f);
        self.joins.iter().for_each(|j| f(&j.on));
        self.filter.iter().for_each(&mut *f);
        self.group_by.iter().for_each(&mut *f);
        self.having.iter().for_each(&mut *f);
        self.order_by.iter().for_each(|o| f(&o.expr));
        self.limit.iter().chain(&self.offset).for_each(&mut *f);
    }
}

fn for_items<'e>(items: Option<&'e [SelectItem]>, f: &mut dyn FnMut(&'e Expr)) {
    for i in items.unwrap_or_default() {
        if let SelectItem::Expr { expr, .. } = i {
            f(expr);
        }
    }
}
