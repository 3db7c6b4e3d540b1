//! The DQL parser: statement text to [`Statement`].
//!
//! Hand-written recursive descent over the tokens of `lex`, one
//! function per grammar rule, so that every error can say where it is and
//! what would have been accepted there (`line 1, column 10: expected FROM,
//! found FORM`). The grammar is documented in `docs/dql.md`.
//!
//! The parser runs on text from untrusted peers and apps, so no input may
//! panic it, overflow its stack or make it loop: statements longer than
//! [`MAX_STATEMENT_BYTES`] are refused before lexing, and both the recursion
//! of the parser and the height of the expression tree it builds are bounded
//! by [`MAX_NESTING`] (the tree height matters too: `a OR b OR c ...` builds a
//! deep tree without deep recursion, and whoever walks the tree later, the
//! evaluator or plain `Drop`, recurses).

use super::ast::{
    BinaryOp, Conflict, CrdtType, Delete, Expr, InList, Insert, IsTest, Join, JoinKind, Mutation, OrderItem, Path, Pos,
    Segment, Select, SelectItem, Source, Statement, TypeDecl, UnaryOp, Update,
};
use super::lex::{Lexer, Sym, Tok, Token};
use crate::value::Value;
use std::collections::VecDeque;
use std::fmt;

/// Longest statement accepted, in bytes.
pub const MAX_STATEMENT_BYTES: usize = 1 << 20;

/// Deepest nesting accepted: of parentheses, arrays, objects, calls, and of
/// the expression tree (each operator is a level), and of `MAP` declarations.
pub const MAX_NESTING: usize = 128;

/// Why a text is not a DQL statement.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ParseError {
    /// Where the problem is (the offending token, or the start of an
    /// unterminated string or comment).
    pub pos: Pos,
    /// What would have been accepted there (`FROM`, `an expression`, ...).
    pub expected: String,
    /// What is there instead (`FORM`, `end of input`, `unterminated string`, ...).
    pub found: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: expected {}, found {}",
            self.pos.line, self.pos.column, self.expected, self.found
        )
    }
}

impl std::error::Error for ParseError {}

/// Parses one statement (an optional trailing `;` is allowed).
pub fn parse(text: &str) -> Result<Statement, ParseError> {
    if text.len() > MAX_STATEMENT_BYTES {
        return Err(ParseError {
            pos: Pos { line: 1, column: 1 },
            expected: format!("a statement of at most {MAX_STATEMENT_BYTES} bytes"),
            found: format!("{} bytes", text.len()),
        });
    }
    let mut p = Parser::new(text);
    let statement = p.statement()?;
    p.eat_sym(Sym::Semi);
    if p.at(0).kind != Tok::Eof {
        return p.fail("end of statement");
    }
    Ok(statement)
}

/// Words that cannot be bare field names, aliases or collection names (they
/// start clauses or are operators, so a bare use would be ambiguous).
/// Backticks lift the restriction: `` `order` ``.
#[rustfmt::skip]
pub const RESERVED: &[&str] = &[
    "ALTER", "AND", "ANY", "APPLY", "AS", "ASC", "BETWEEN", "CREATE", "DELETE", "DESC", "DISTINCT", "DOCUMENTS",
    "DROP", "END", "EVICT", "EXPLAIN", "FALSE", "FROM", "GROUP", "HAVING", "ILIKE", "IN", "INNER", "INSERT", "IS",
    "JOIN", "LEFT", "LIKE", "LIMIT", "MISSING", "NOT", "NULL", "OFFSET", "ON", "OR", "ORDER", "OUTER", "PROFILE",
    "RETURNING", "SATISFIES", "SELECT", "SET", "SHOW", "TRUE", "UNSET", "UPDATE", "USE", "WHERE",
];

fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

type Parsed<T> = Result<T, ParseError>;

/// An expression and the height of its tree, kept while building so that
/// bounding the height costs nothing.
struct Node {
    expr: Expr,
    height: usize,
}

fn leaf(expr: Expr) -> Node {
    Node { expr, height: 1 }
}

/// What kind of mutation a bare item of an `UPDATE` clause is.
#[derive(Clone, Copy)]
enum MutationClause {
    Set,
    Unset,
    Apply,
}

struct Parser<'a> {
    src: &'a str,
    lexer: Lexer<'a>,
    /// Lookahead; the grammar needs at most three tokens.
    ahead: VecDeque<Token>,
    /// Current recursion depth of nested rules.
    depth: usize,
}

// Token access and error helpers.
impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            src,
            lexer: Lexer::new(src),
            ahead: VecDeque::new(),
            depth: 0,
        }
    }

    fn at(&mut self, k: usize) -> &Token {
        while self.ahead.len() <= k {
            let t = self.lexer.next_token();
            self.ahead.push_back(t);
        }
        &self.ahead[k]
    }

    fn pos(&mut self) -> Pos {
        self.at(0).pos
    }

    /// Consumes the current token. Only called once the caller has checked
    /// what it is, so an error token is never consumed.
    fn bump(&mut self) -> Token {
        self.at(0);
        self.ahead.pop_front().unwrap_or_else(|| self.lexer.next_token())
    }

    fn at_sym(&mut self, k: usize, sym: Sym) -> bool {
        self.at(k).kind == Tok::Sym(sym)
    }

    fn eat_sym(&mut self, sym: Sym) -> bool {
        let yes = self.at_sym(0, sym);
        if yes {
            self.bump();
        }
        yes
    }

    fn expect_sym(&mut self, sym: Sym, shown: &str) -> Parsed<Pos> {
        if self.at_sym(0, sym) {
            return Ok(self.bump().pos);
        }
        self.fail(&format!("'{shown}'"))
    }

    fn at_kw(&mut self, k: usize, kw: &str) -> bool {
        matches!(&self.at(k).kind, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let yes = self.at_kw(0, kw);
        if yes {
            self.bump();
        }
        yes
    }

    fn expect_kw(&mut self, kw: &str) -> Parsed<Pos> {
        if self.at_kw(0, kw) {
            return Ok(self.bump().pos);
        }
        self.fail(kw)
    }

    /// Whether token `k` can be a name: a non-reserved word or backticks.
    fn at_name(&mut self, k: usize) -> bool {
        match &self.at(k).kind {
            Tok::Word(w) => !is_reserved(w),
            Tok::Quoted(_) => true,
            _ => false,
        }
    }

    /// A name (field, alias, collection, index); `what` is for the error.
    fn name(&mut self, what: &str) -> Parsed<String> {
        if !self.at_name(0) {
            return self.fail(what);
        }
        Ok(self.word_text())
    }

    /// Any word, reserved or not, or backticks (where no keyword can
    /// appear, e.g. after a dot, reserved words are fine as keys).
    fn any_word(&mut self, what: &str) -> Parsed<String> {
        if !matches!(self.at(0).kind, Tok::Word(_) | Tok::Quoted(_)) {
            return self.fail(what);
        }
        Ok(self.word_text())
    }

    fn word_text(&mut self) -> String {
        match self.bump().kind {
            Tok::Word(w) | Tok::Quoted(w) => w,
            _ => String::new(),
        }
    }

    /// The error for the current token, or the lexical error it stands for.
    fn fail<T>(&mut self, expected: &str) -> Parsed<T> {
        let src = self.src;
        let t = self.at(0);
        let found = match &t.kind {
            Tok::Error(e) => return Err((**e).clone()),
            Tok::Eof => "end of input".to_string(),
            Tok::Sym(_) => format!("'{}'", &src[t.start..t.end]),
            _ => shorten(&src[t.start..t.end]),
        };
        Err(ParseError {
            pos: t.pos,
            expected: expected.to_string(),
            found,
        })
    }

    /// Runs a nested rule, refusing to recurse past [`MAX_NESTING`].
    fn nested<T>(&mut self, what: &str, f: impl FnOnce(&mut Self) -> Parsed<T>) -> Parsed<T> {
        if self.depth >= MAX_NESTING {
            let pos = self.pos();
            return Err(too_deep(pos, what));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    /// Comma-separated items (at least one).
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Parsed<T>) -> Parsed<Vec<T>> {
        let mut out = vec![item(self)?];
        while self.eat_sym(Sym::Comma) {
            out.push(item(self)?);
        }
        Ok(out)
    }
}

/// The start of a token's text for an error message, on one line.
fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    let line = text.lines().next().unwrap_or("");
    let mut out: String = line.chars().take(MAX).collect();
    if out.len() < text.len() {
        out.push_str("...");
    }
    out
}

fn too_deep(pos: Pos, what: &str) -> ParseError {
    ParseError {
        pos,
        expected: format!("at most {MAX_NESTING} levels of nesting"),
        found: format!("{what} nested too deep"),
    }
}

// Statements.
impl Parser<'_> {
    fn statement(&mut self) -> Parsed<Statement> {
        if self.at_kw(0, "EXPLAIN") || self.at_kw(0, "PROFILE") {
            let explain = self.at_kw(0, "EXPLAIN");
            self.bump();
            // One level only: nesting them means nothing and would recurse.
            let inner = Box::new(self.plain_statement("a statement to explain or profile")?);
            return Ok(if explain {
                Statement::Explain(inner)
            } else {
                Statement::Profile(inner)
            });
        }
        self.plain_statement(
            "a statement (SELECT, INSERT, UPDATE, DELETE, EVICT, CREATE, DROP, ALTER, SHOW, EXPLAIN or PROFILE)",
        )
    }

    /// Any statement but `EXPLAIN` and `PROFILE`; `expected` is for the error.
    fn plain_statement(&mut self, expected: &str) -> Parsed<Statement> {
        let word = match &self.at(0).kind {
            Tok::Word(w) => w.to_ascii_uppercase(),
            _ => String::new(),
        };
        match word.as_str() {
            "SELECT" => Ok(Statement::Select(Box::new(self.select()?))),
            "INSERT" => Ok(Statement::Insert(Box::new(self.insert()?))),
            "UPDATE" => Ok(Statement::Update(Box::new(self.update()?))),
            "DELETE" => Ok(Statement::Delete(Box::new(self.delete()?))),
            "EVICT" => Ok(Statement::Evict(Box::new(self.delete()?))),
            "CREATE" => self.create_index(),
            "DROP" => self.drop_index(),
            "ALTER" => self.alter_system(),
            "SHOW" => self.show(),
            _ => self.fail(expected),
        }
    }

    fn select(&mut self) -> Parsed<Select> {
        self.expect_kw("SELECT")?;
        let distinct = self.eat_kw("DISTINCT");
        let items = self.items()?;
        self.expect_kw("FROM")?;
        let (from, types) = self.select_source()?;
        let use_ids = self.use_ids()?;
        let joins = self.joins()?;
        let filter = self.where_clause()?;
        let group_by = self.by_list("GROUP", Self::expr)?;
        let having = self.clause("HAVING")?;
        let order_by = self.by_list("ORDER", Self::order_item)?;
        let limit = self.clause("LIMIT")?;
        let offset = self.clause("OFFSET")?;
        Ok(Select {
            distinct,
            items,
            from,
            types,
            use_ids,
            joins,
            filter,
            group_by,
            having,
            order_by,
            limit,
            offset,
        })
    }

    fn items(&mut self) -> Parsed<Vec<SelectItem>> {
        self.list(Self::item)
    }

    fn item(&mut self) -> Parsed<SelectItem> {
        if self.eat_sym(Sym::Star) {
            return Ok(SelectItem::All(None));
        }
        if self.at_name(0) && self.at_sym(1, Sym::Dot) && self.at_sym(2, Sym::Star) {
            let alias = self.word_text();
            self.bump();
            self.bump();
            return Ok(SelectItem::All(Some(alias)));
        }
        let expr = self.expr()?;
        let alias = if self.eat_kw("AS") {
            Some(self.name("an output name")?)
        } else {
            None
        };
        Ok(SelectItem::Expr { expr, alias })
    }

    /// `FROM` of a `SELECT`: a source, or `COLLECTION coll (decls) [alias]`.
    fn select_source(&mut self) -> Parsed<(Source, Vec<TypeDecl>)> {
        // `collection` alone may be a collection's name; it is the keyword
        // only when a name and a declaration list follow.
        if self.at_kw(0, "COLLECTION") && self.at_name(1) && self.at_sym(2, Sym::LParen) {
            self.bump();
            let collection = self.collection_name()?;
            let types = self.decls()?;
            let alias = self.alias()?;
            return Ok((Source { collection, alias }, types));
        }
        Ok((self.source()?, Vec::new()))
    }

    fn source(&mut self) -> Parsed<Source> {
        let collection = self.collection_name()?;
        let alias = self.alias()?;
        Ok(Source { collection, alias })
    }

    fn alias(&mut self) -> Parsed<Option<String>> {
        if self.eat_kw("AS") {
            return Ok(Some(self.name("an alias")?));
        }
        if self.at_name(0) {
            return Ok(Some(self.word_text()));
        }
        Ok(None)
    }

    /// `name` or `name:name` (`system:indexes`).
    fn collection_name(&mut self) -> Parsed<String> {
        let mut name = self.name("a collection name")?;
        if self.eat_sym(Sym::Colon) {
            name.push(':');
            name.push_str(&self.any_word("a collection name after ':'")?);
        }
        Ok(name)
    }

    fn use_ids(&mut self) -> Parsed<Option<Vec<Expr>>> {
        if !self.eat_kw("USE") {
            return Ok(None);
        }
        self.expect_kw("IDS")?;
        Ok(Some(self.list(Self::expr)?))
    }

    fn joins(&mut self) -> Parsed<Vec<Join>> {
        let mut joins = Vec::new();
        loop {
            let kind = if self.eat_kw("LEFT") {
                self.eat_kw("OUTER");
                self.expect_kw("JOIN")?;
                JoinKind::Left
            } else if self.eat_kw("INNER") || self.at_kw(0, "JOIN") {
                self.expect_kw("JOIN")?;
                JoinKind::Inner
            } else {
                return Ok(joins);
            };
            let source = self.source()?;
            self.expect_kw("ON")?;
            let on = self.expr()?;
            joins.push(Join { kind, source, on });
        }
    }

    fn where_clause(&mut self) -> Parsed<Option<Expr>> {
        self.clause("WHERE")
    }

    /// `KEYWORD expr`, if the keyword is there.
    fn clause(&mut self, kw: &str) -> Parsed<Option<Expr>> {
        if !self.eat_kw(kw) {
            return Ok(None);
        }
        Ok(Some(self.expr()?))
    }

    /// `KEYWORD BY item, ...`, if the keyword is there.
    fn by_list<T>(&mut self, kw: &str, item: impl FnMut(&mut Self) -> Parsed<T>) -> Parsed<Vec<T>> {
        if !self.eat_kw(kw) {
            return Ok(Vec::new());
        }
        self.expect_kw("BY")?;
        self.list(item)
    }

    fn order_item(&mut self) -> Parsed<OrderItem> {
        let expr = self.expr()?;
        let desc = if self.eat_kw("DESC") {
            true
        } else {
            self.eat_kw("ASC");
            false
        };
        Ok(OrderItem { expr, desc })
    }

    fn returning(&mut self) -> Parsed<Option<Vec<SelectItem>>> {
        if !self.eat_kw("RETURNING") {
            return Ok(None);
        }
        Ok(Some(self.items()?))
    }

    fn insert(&mut self) -> Parsed<Insert> {
        self.expect_kw("INSERT")?;
        self.expect_kw("INTO")?;
        // `COLLECTION` followed by a name is the keyword, except in
        // `INSERT INTO collection INITIAL DOCUMENTS`.
        let initial_follows = self.at_kw(1, "INITIAL") && self.at_kw(2, "DOCUMENTS");
        if self.at_kw(0, "COLLECTION") && self.at_name(1) && !initial_follows {
            self.bump();
        }
        let collection = self.collection_name()?;
        let types = self.optional_decls()?;
        let initial = self.eat_kw("INITIAL");
        self.expect_kw("DOCUMENTS")?;
        let documents = self.list(Self::document)?;
        let on_conflict = self.on_conflict()?;
        let returning = self.returning()?;
        Ok(Insert {
            collection,
            types,
            initial,
            documents,
            on_conflict,
            returning,
        })
    }

    fn document(&mut self) -> Parsed<Expr> {
        self.expect_sym(Sym::LParen, "(")?;
        let doc = self.expr()?;
        self.expect_sym(Sym::RParen, ")")?;
        Ok(doc)
    }

    fn on_conflict(&mut self) -> Parsed<Conflict> {
        if !self.eat_kw("ON") {
            return Ok(Conflict::Fail);
        }
        self.expect_kw("ID")?;
        self.expect_kw("CONFLICT")?;
        if self.eat_kw("FAIL") {
            return Ok(Conflict::Fail);
        }
        if !self.eat_kw("DO") {
            return self.fail("DO or FAIL");
        }
        let actions = [
            ("FAIL", Conflict::Fail),
            ("NOTHING", Conflict::Nothing),
            ("UPDATE", Conflict::Update),
            ("UPDATE_LOCAL_DIFF", Conflict::UpdateLocalDiff),
        ];
        for (kw, action) in actions {
            if self.eat_kw(kw) {
                return Ok(action);
            }
        }
        self.fail("FAIL, NOTHING, UPDATE or UPDATE_LOCAL_DIFF")
    }

    fn update(&mut self) -> Parsed<Update> {
        self.expect_kw("UPDATE")?;
        // `UPDATE collection SET ...` names a collection `collection`.
        if self.at_kw(0, "COLLECTION") && self.at_name(1) {
            self.bump();
        }
        let collection = self.collection_name()?;
        let types = self.optional_decls()?;
        let mutations = self.mutations()?;
        let filter = self.where_clause()?;
        let returning = self.returning()?;
        Ok(Update {
            collection,
            types,
            mutations,
            filter,
            returning,
        })
    }

    /// `SET`, `UNSET` and `APPLY` clauses in any order, each a list.
    fn mutations(&mut self) -> Parsed<Vec<Mutation>> {
        let mut out = Vec::new();
        loop {
            let clause = if self.eat_kw("SET") {
                MutationClause::Set
            } else if self.eat_kw("UNSET") {
                MutationClause::Unset
            } else if self.eat_kw("APPLY") {
                MutationClause::Apply
            } else if out.is_empty() {
                return self.fail("SET, UNSET or APPLY");
            } else {
                return Ok(out);
            };
            out.extend(self.list(|p| p.mutation(clause))?);
        }
    }

    /// One item; `UNSET` and `APPLY` may also start an item of another
    /// clause (`SET a = 1, UNSET b`).
    fn mutation(&mut self, clause: MutationClause) -> Parsed<Mutation> {
        let clause = if self.eat_kw("UNSET") {
            MutationClause::Unset
        } else if self.eat_kw("APPLY") {
            MutationClause::Apply
        } else {
            clause
        };
        let pos = self.pos();
        let path = self.path()?;
        match clause {
            MutationClause::Unset => Ok(Mutation::Unset(path, pos)),
            MutationClause::Set => {
                self.expect_sym(Sym::Eq, "=")?;
                Ok(Mutation::Set(path, self.expr()?, pos))
            }
            MutationClause::Apply => self.apply(path, pos),
        }
    }

    fn apply(&mut self, path: Path, pos: Pos) -> Parsed<Mutation> {
        if self.eat_kw("INCREMENT") || self.eat_kw("PN_INCREMENT") {
            self.expect_kw("BY")?;
            return Ok(Mutation::Increment(path, self.expr()?, pos));
        }
        if self.eat_kw("RESTART") {
            self.expect_kw("WITH")?;
            return Ok(Mutation::Restart(path, self.expr()?, pos));
        }
        self.fail("INCREMENT BY, PN_INCREMENT BY or RESTART WITH")
    }

    fn delete(&mut self) -> Parsed<Delete> {
        self.bump(); // DELETE or EVICT, checked by the caller
        self.expect_kw("FROM")?;
        let collection = self.collection_name()?;
        let use_ids = self.use_ids()?;
        let filter = self.where_clause()?;
        let returning = self.returning()?;
        Ok(Delete {
            collection,
            filter,
            use_ids,
            returning,
        })
    }

    fn create_index(&mut self) -> Parsed<Statement> {
        self.expect_kw("CREATE")?;
        self.expect_kw("INDEX")?;
        let if_not_exists = self.at_kw(0, "IF") && self.at_kw(1, "NOT");
        if if_not_exists {
            self.bump();
            self.bump();
            self.expect_kw("EXISTS")?;
        }
        let name = self.name("an index name")?;
        self.expect_kw("ON")?;
        let collection = self.collection_name()?;
        self.expect_sym(Sym::LParen, "(")?;
        let paths = self.list(Self::path)?;
        self.expect_sym(Sym::RParen, ")")?;
        Ok(Statement::CreateIndex {
            name,
            collection,
            paths,
            if_not_exists,
        })
    }

    fn drop_index(&mut self) -> Parsed<Statement> {
        self.expect_kw("DROP")?;
        self.expect_kw("INDEX")?;
        let if_exists = self.at_kw(0, "IF") && self.at_kw(1, "EXISTS");
        if if_exists {
            self.bump();
            self.bump();
        }
        let name = self.name("an index name")?;
        Ok(Statement::DropIndex { name, if_exists })
    }

    fn alter_system(&mut self) -> Parsed<Statement> {
        self.expect_kw("ALTER")?;
        self.expect_kw("SYSTEM")?;
        self.expect_kw("SET")?;
        let name = self.any_word("a setting name")?.to_ascii_uppercase();
        self.expect_sym(Sym::Eq, "=")?;
        let value = self.expr()?;
        Ok(Statement::AlterSystem { name, value })
    }

    fn show(&mut self) -> Parsed<Statement> {
        self.expect_kw("SHOW")?;
        if self.eat_kw("ALL") {
            return Ok(Statement::Show { name: None });
        }
        let name = self.any_word("a setting name or ALL")?.to_ascii_uppercase();
        Ok(Statement::Show { name: Some(name) })
    }

    /// A path as a mutation or index target: starts with a name.
    fn path(&mut self) -> Parsed<Path> {
        let first = self.name("a field path")?;
        self.path_rest(first)
    }

    fn optional_decls(&mut self) -> Parsed<Vec<TypeDecl>> {
        if self.at_sym(0, Sym::LParen) {
            return self.decls();
        }
        Ok(Vec::new())
    }

    /// `(field TYPE, ...)`
    fn decls(&mut self) -> Parsed<Vec<TypeDecl>> {
        self.expect_sym(Sym::LParen, "(")?;
        let decls = self.list(Self::decl)?;
        self.expect_sym(Sym::RParen, ")")?;
        Ok(decls)
    }

    fn decl(&mut self) -> Parsed<TypeDecl> {
        let field = self.name("a field name")?;
        let ty = self.crdt_type()?;
        Ok(TypeDecl { field, ty })
    }

    fn crdt_type(&mut self) -> Parsed<CrdtType> {
        let simple = [
            ("REGISTER", CrdtType::Register),
            ("COUNTER", CrdtType::Counter),
            ("PN_COUNTER", CrdtType::Counter),
            ("ATTACHMENT", CrdtType::Attachment),
        ];
        for (kw, ty) in simple {
            if self.eat_kw(kw) {
                return Ok(ty);
            }
        }
        if !self.eat_kw("MAP") {
            return self.fail("a type (REGISTER, COUNTER, PN_COUNTER, ATTACHMENT or MAP)");
        }
        if !self.at_sym(0, Sym::LParen) {
            return Ok(CrdtType::Map(Vec::new()));
        }
        Ok(CrdtType::Map(self.nested("type declaration", Self::decls)?))
    }
}

// Expressions, from the lowest precedence to the highest.
impl Parser<'_> {
    fn expr(&mut self) -> Parsed<Expr> {
        Ok(self.expr_node()?.expr)
    }

    fn expr_node(&mut self) -> Parsed<Node> {
        self.nested("expression", Self::or)
    }

    /// Wraps `expr` one level above its deepest child, if that is allowed.
    fn node(&self, expr: Expr, child_height: usize, pos: Pos) -> Parsed<Node> {
        let height = child_height + 1;
        if height > MAX_NESTING {
            return Err(too_deep(pos, "expression"));
        }
        Ok(Node { expr, height })
    }

    fn binary(&self, op: BinaryOp, lhs: Node, rhs: Node, pos: Pos) -> Parsed<Node> {
        let h = lhs.height.max(rhs.height);
        self.node(Expr::Binary(op, Box::new(lhs.expr), Box::new(rhs.expr)), h, pos)
    }

    /// A left-associative chain `next (op next)*`.
    fn chain(&mut self, next: fn(&mut Self) -> Parsed<Node>, op: fn(&mut Self) -> Option<BinaryOp>) -> Parsed<Node> {
        let mut lhs = next(self)?;
        while let Some(op) = op(self) {
            let pos = self.bump().pos;
            let rhs = next(self)?;
            lhs = self.binary(op, lhs, rhs, pos)?;
        }
        Ok(lhs)
    }

    fn or(&mut self) -> Parsed<Node> {
        self.chain(Self::and, |p| p.at_kw(0, "OR").then_some(BinaryOp::Or))
    }

    fn and(&mut self) -> Parsed<Node> {
        self.chain(Self::not, |p| p.at_kw(0, "AND").then_some(BinaryOp::And))
    }

    fn not(&mut self) -> Parsed<Node> {
        if !self.at_kw(0, "NOT") {
            return self.comparison();
        }
        let pos = self.bump().pos;
        let inner = self.nested("expression", Self::not)?;
        self.node(Expr::Unary(UnaryOp::Not, Box::new(inner.expr)), inner.height, pos)
    }

    fn comparison(&mut self) -> Parsed<Node> {
        let mut lhs = self.concat()?;
        loop {
            let pos = self.pos();
            if let Some(op) = self.comparison_op() {
                self.bump();
                let rhs = self.concat()?;
                lhs = self.binary(op, lhs, rhs, pos)?;
            } else if self.at_kw(0, "IS") {
                lhs = self.is_test(lhs, pos)?;
            } else if let Some(negated) = self.at_predicate() {
                if negated {
                    self.bump();
                }
                lhs = self.predicate(lhs, negated, pos)?;
            } else {
                return Ok(lhs);
            }
        }
    }

    fn comparison_op(&mut self) -> Option<BinaryOp> {
        match self.at(0).kind {
            Tok::Sym(Sym::Eq | Sym::EqEq) => Some(BinaryOp::Eq),
            Tok::Sym(Sym::Ne) => Some(BinaryOp::Ne),
            Tok::Sym(Sym::Lt) => Some(BinaryOp::Lt),
            Tok::Sym(Sym::Le) => Some(BinaryOp::Le),
            Tok::Sym(Sym::Gt) => Some(BinaryOp::Gt),
            Tok::Sym(Sym::Ge) => Some(BinaryOp::Ge),
            _ => None,
        }
    }

    /// `Some(negated)` if `[NOT] IN|BETWEEN|LIKE|ILIKE` comes next.
    fn at_predicate(&mut self) -> Option<bool> {
        let negated = self.at_kw(0, "NOT");
        let k = usize::from(negated);
        let yes = ["IN", "BETWEEN", "LIKE", "ILIKE"].iter().any(|kw| self.at_kw(k, kw));
        yes.then_some(negated)
    }

    fn predicate(&mut self, lhs: Node, negated: bool, pos: Pos) -> Parsed<Node> {
        if self.eat_kw("IN") {
            return self.in_list(lhs, negated, pos);
        }
        if self.eat_kw("BETWEEN") {
            let low = self.concat()?;
            self.expect_kw("AND")?;
            let high = self.concat()?;
            let h = lhs.height.max(low.height).max(high.height);
            let expr = Expr::Between {
                expr: Box::new(lhs.expr),
                low: Box::new(low.expr),
                high: Box::new(high.expr),
                negated,
            };
            return self.node(expr, h, pos);
        }
        let case_insensitive = self.at_kw(0, "ILIKE");
        self.bump(); // LIKE or ILIKE, checked by `at_predicate`
        let pattern = self.concat()?;
        let h = lhs.height.max(pattern.height);
        let expr = Expr::Like {
            expr: Box::new(lhs.expr),
            pattern: Box::new(pattern.expr),
            case_insensitive,
            negated,
        };
        self.node(expr, h, pos)
    }

    /// After `IN`: `(a, b, ...)` is a list, anything else one array.
    fn in_list(&mut self, lhs: Node, negated: bool, pos: Pos) -> Parsed<Node> {
        let (list, h) = if self.eat_sym(Sym::LParen) {
            let items = self.list(Self::expr_node)?;
            self.expect_sym(Sym::RParen, ")")?;
            let h = items.iter().map(|n| n.height).max().unwrap_or(0);
            (InList::List(items.into_iter().map(|n| n.expr).collect()), h)
        } else {
            let array = self.concat()?;
            (InList::Array(Box::new(array.expr)), array.height)
        };
        let h = h.max(lhs.height);
        let expr = Expr::In {
            expr: Box::new(lhs.expr),
            list,
            negated,
        };
        self.node(expr, h, pos)
    }

    fn is_test(&mut self, lhs: Node, pos: Pos) -> Parsed<Node> {
        self.bump(); // IS
        let negated = self.eat_kw("NOT");
        let test = if self.eat_kw("NULL") {
            IsTest::Null
        } else if self.eat_kw("MISSING") {
            IsTest::Missing
        } else {
            return self.fail("NULL or MISSING");
        };
        let h = lhs.height;
        let expr = Expr::Is {
            expr: Box::new(lhs.expr),
            test,
            negated,
        };
        self.node(expr, h, pos)
    }

    fn concat(&mut self) -> Parsed<Node> {
        self.chain(Self::additive, |p| p.at_sym(0, Sym::Concat).then_some(BinaryOp::Concat))
    }

    fn additive(&mut self) -> Parsed<Node> {
        self.chain(Self::multiplicative, |p| match p.at(0).kind {
            Tok::Sym(Sym::Plus) => Some(BinaryOp::Add),
            Tok::Sym(Sym::Minus) => Some(BinaryOp::Sub),
            _ => None,
        })
    }

    fn multiplicative(&mut self) -> Parsed<Node> {
        self.chain(Self::unary, |p| match p.at(0).kind {
            Tok::Sym(Sym::Star) => Some(BinaryOp::Mul),
            Tok::Sym(Sym::Slash) => Some(BinaryOp::Div),
            Tok::Sym(Sym::Percent) => Some(BinaryOp::Rem),
            _ => None,
        })
    }

    fn unary(&mut self) -> Parsed<Node> {
        if !self.at_sym(0, Sym::Minus) {
            return self.primary();
        }
        let pos = self.bump().pos;
        // A negative literal is a literal (so the planner sees a constant,
        // and so i64::MIN can be written at all).
        if matches!(self.at(0).kind, Tok::Int | Tok::Float(_)) {
            let token = self.bump();
            return Ok(leaf(Expr::Literal(self.number(&token, true)?)));
        }
        let inner = self.nested("expression", Self::unary)?;
        self.node(Expr::Unary(UnaryOp::Neg, Box::new(inner.expr)), inner.height, pos)
    }

    fn number(&self, token: &Token, negative: bool) -> Parsed<Value> {
        let digits = &self.src[token.start..token.end];
        match token.kind {
            Tok::Float(f) => Ok(Value::Float(if negative { -f } else { f })),
            _ => parse_int(digits, negative).ok_or_else(|| ParseError {
                pos: token.pos,
                expected: format!("an integer from {} to {}", i64::MIN, i64::MAX),
                found: shorten(&format!("{}{digits}", if negative { "-" } else { "" })),
            }),
        }
    }

    fn primary(&mut self) -> Parsed<Node> {
        let kind = self.at(0).kind.clone();
        match kind {
            Tok::Int | Tok::Float(_) => {
                let token = self.bump();
                Ok(leaf(Expr::Literal(self.number(&token, false)?)))
            }
            Tok::Str(s) => {
                self.bump();
                Ok(leaf(Expr::Literal(Value::String(s))))
            }
            Tok::Word(w) => self.word_primary(&w),
            Tok::Quoted(name) => {
                self.bump();
                Ok(leaf(Expr::Field(self.path_rest(name)?)))
            }
            Tok::Sym(Sym::Colon) => self.param(),
            Tok::Sym(Sym::LParen) => {
                self.bump();
                let inner = self.expr_node()?;
                self.expect_sym(Sym::RParen, ")")?;
                Ok(inner)
            }
            Tok::Sym(Sym::LBracket) => self.array(),
            Tok::Sym(Sym::LBrace) => self.object(),
            _ => self.fail("an expression"),
        }
    }

    fn word_primary(&mut self, word: &str) -> Parsed<Node> {
        let literal = match word.to_ascii_uppercase().as_str() {
            "TRUE" => Some(Value::Bool(true)),
            "FALSE" => Some(Value::Bool(false)),
            "NULL" => Some(Value::Null),
            "ANY" => return self.any(),
            _ if is_reserved(word) => return self.fail("an expression"),
            _ => None,
        };
        if let Some(v) = literal {
            self.bump();
            return Ok(leaf(Expr::Literal(v)));
        }
        if self.at_sym(1, Sym::LParen) {
            return self.call();
        }
        let first = self.word_text();
        Ok(leaf(Expr::Field(self.path_rest(first)?)))
    }

    /// `:name`; the colon must touch the name (`{"a":b}` is a key and a field).
    fn param(&mut self) -> Parsed<Node> {
        let colon = self.bump();
        let next = self.at(0);
        let touching = next.start == colon.end;
        match &next.kind {
            Tok::Word(name) if touching => {
                let name = name.clone();
                self.bump();
                Ok(leaf(Expr::Param { name, pos: colon.pos }))
            }
            _ => self.fail("a parameter name right after ':'"),
        }
    }

    /// `.key`, `[index]`, `['key']` after the first key of a path.
    fn path_rest(&mut self, first: String) -> Parsed<Path> {
        let mut segments = vec![Segment::Key(first)];
        loop {
            if self.eat_sym(Sym::Dot) {
                segments.push(Segment::Key(self.any_word("a field name")?));
            } else if self.eat_sym(Sym::LBracket) {
                segments.push(self.bracket_segment()?);
                self.expect_sym(Sym::RBracket, "]")?;
            } else {
                return Ok(Path { segments });
            }
        }
    }

    fn bracket_segment(&mut self) -> Parsed<Segment> {
        let negative = self.at_sym(0, Sym::Minus) && self.at(1).kind == Tok::Int;
        if negative {
            self.bump();
        }
        match self.at(0).kind.clone() {
            Tok::Str(key) if !negative => {
                self.bump();
                Ok(Segment::Key(key))
            }
            Tok::Int => {
                let token = self.bump();
                match self.number(&token, negative)? {
                    Value::Int(i) => Ok(Segment::Index(i)),
                    _ => self.fail("an array index"),
                }
            }
            _ => self.fail("an array index or a quoted key"),
        }
    }

    fn call(&mut self) -> Parsed<Node> {
        let name_token = self.bump();
        let pos = name_token.pos;
        let name = match name_token.kind {
            Tok::Word(w) => w.to_ascii_lowercase(),
            _ => String::new(),
        };
        self.bump(); // (
        if name == "count" && self.at_sym(0, Sym::Star) && self.at_sym(1, Sym::RParen) {
            self.bump();
            self.bump();
            return Ok(leaf(Expr::CountStar));
        }
        let distinct = self.eat_kw("DISTINCT");
        let args = if self.at_sym(0, Sym::RParen) && !distinct {
            Vec::new()
        } else {
            self.list(Self::expr_node)?
        };
        self.expect_sym(Sym::RParen, ")")?;
        let h = args.iter().map(|n| n.height).max().unwrap_or(0);
        let args = args.into_iter().map(|n| n.expr).collect();
        self.node(
            Expr::Call {
                name,
                args,
                distinct,
                pos,
            },
            h,
            pos,
        )
    }

    /// `ANY var IN array SATISFIES cond END`
    fn any(&mut self) -> Parsed<Node> {
        let pos = self.bump().pos;
        let var = self.name("a variable name")?;
        self.expect_kw("IN")?;
        let array = self.expr_node()?;
        self.expect_kw("SATISFIES")?;
        let cond = self.expr_node()?;
        self.expect_kw("END")?;
        let h = array.height.max(cond.height);
        let expr = Expr::Any {
            var,
            array: Box::new(array.expr),
            cond: Box::new(cond.expr),
        };
        self.node(expr, h, pos)
    }

    fn array(&mut self) -> Parsed<Node> {
        let pos = self.bump().pos;
        let items = if self.at_sym(0, Sym::RBracket) {
            Vec::new()
        } else {
            self.list(Self::expr_node)?
        };
        self.expect_sym(Sym::RBracket, "]")?;
        let h = items.iter().map(|n| n.height).max().unwrap_or(0);
        self.node(Expr::Array(items.into_iter().map(|n| n.expr).collect()), h, pos)
    }

    fn object(&mut self) -> Parsed<Node> {
        let pos = self.bump().pos;
        let fields = if self.at_sym(0, Sym::RBrace) {
            Vec::new()
        } else {
            self.list(Self::object_field)?
        };
        self.expect_sym(Sym::RBrace, "}")?;
        let h = fields.iter().map(|(_, n)| n.height).max().unwrap_or(0);
        let fields = fields.into_iter().map(|(k, n)| (k, n.expr)).collect();
        self.node(Expr::Object(fields), h, pos)
    }

    fn object_field(&mut self) -> Parsed<(String, Node)> {
        let key = match self.at(0).kind.clone() {
            Tok::Str(s) | Tok::Word(s) | Tok::Quoted(s) => {
                self.bump();
                s
            }
            _ => return self.fail("an object key (a string or a name)"),
        };
        self.expect_sym(Sym::Colon, ":")?;
        Ok((key, self.expr_node()?))
    }
}

/// Digits to an integer, with the sign applied first so that the most
/// negative integer fits.
fn parse_int(digits: &str, negative: bool) -> Option<Value> {
    let digits = digits.trim_start_matches('0');
    let n: i128 = if digits.is_empty() {
        0
    } else if digits.len() > 19 {
        return None;
    } else {
        digits.parse().ok()?
    };
    let n = if negative { -n } else { n };
    i64::try_from(n).ok().map(Value::Int)
}
