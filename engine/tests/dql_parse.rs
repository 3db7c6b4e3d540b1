//! The DQL parser: every construct of the grammar against the tree it must
//! build, errors that point at the right line and column and say what was
//! expected, and hostile input (random tokens, random bytes, deep nesting,
//! huge statements) that must give an error, never a panic or a hang.
//!
//! Cases are tables run through one `check` helper, so a new construct is one
//! more row.

use proptest::prelude::*;
use rhizome_engine::dql::ast::{
    BinaryOp, Conflict, CrdtType, Delete, Expr, InList, Insert, IsTest, Join, JoinKind, Mutation, OrderItem, Path, Pos,
    Segment, Select, SelectItem, Source, Statement, TypeDecl, UnaryOp, Update,
};
use rhizome_engine::dql::parse::{parse, ParseError, MAX_NESTING, MAX_STATEMENT_BYTES};
use rhizome_engine::value::Value;

/// What a statement must parse to.
enum Want {
    /// Exactly this tree.
    Ast(Statement),
    /// A tree for which the predicate holds (key fields only).
    Like(fn(&Statement) -> bool),
    /// An error at line, column, whose `expected` contains the text.
    Error(u32, u32, &'static str),
}

fn check(text: &str, want: Want) {
    let got = parse(text);
    match (want, got) {
        (Want::Ast(want), Ok(got)) => assert_eq!(got, want, "{text}"),
        (Want::Like(pred), Ok(got)) => assert!(pred(&got), "{text}\nparsed to {got:#?}"),
        (Want::Error(line, column, expected), Err(e)) => {
            assert_eq!((e.pos.line, e.pos.column), (line, column), "{text}\n{e}");
            assert!(
                e.expected.contains(expected),
                "{text}\n{e}\nwanted expected ~ {expected:?}"
            );
            assert!(
                e.to_string()
                    .starts_with(&format!("line {line}, column {column}: expected ")),
                "{e}"
            );
        }
        (Want::Error(..), Ok(got)) => panic!("{text}\nparsed, but should fail: {got:?}"),
        (_, Err(e)) => panic!("{text}\nfailed: {e}"),
    }
}

// Builders for expected trees.

fn at(line: u32, column: u32) -> Pos {
    Pos { line, column }
}

fn path(dotted: &str) -> Path {
    Path {
        segments: dotted.split('.').map(|k| Segment::Key(k.to_string())).collect(),
    }
}

fn field(dotted: &str) -> Expr {
    Expr::Field(path(dotted))
}

fn lit(v: impl Into<Value>) -> Expr {
    Expr::Literal(v.into())
}

fn bin(op: BinaryOp, l: Expr, r: Expr) -> Expr {
    Expr::Binary(op, Box::new(l), Box::new(r))
}

fn eq(l: Expr, r: Expr) -> Expr {
    bin(BinaryOp::Eq, l, r)
}

fn param(name: &str, line: u32, column: u32) -> Expr {
    Expr::Param {
        name: name.to_string(),
        pos: at(line, column),
    }
}

fn is_in(expr: Expr, list: InList, negated: bool) -> Expr {
    Expr::In {
        expr: Box::new(expr),
        list,
        negated,
    }
}

fn call(name: &str, args: Vec<Expr>, distinct: bool, column: u32) -> Expr {
    Expr::Call {
        name: name.to_string(),
        args,
        distinct,
        pos: at(1, column),
    }
}

fn item(expr: Expr, alias: Option<&str>) -> SelectItem {
    SelectItem::Expr {
        expr,
        alias: alias.map(str::to_string),
    }
}

fn source(collection: &str, alias: Option<&str>) -> Source {
    Source {
        collection: collection.to_string(),
        alias: alias.map(str::to_string),
    }
}

fn select(items: Vec<SelectItem>, from: &str) -> Select {
    Select {
        distinct: false,
        items,
        from: source(from, None),
        types: vec![],
        use_ids: None,
        joins: vec![],
        filter: None,
        group_by: vec![],
        having: None,
        order_by: vec![],
        limit: None,
        offset: None,
    }
}

/// `SELECT * FROM t WHERE <filter>`
fn select_where(filter: Expr) -> Statement {
    Statement::Select(Box::new(Select {
        filter: Some(filter),
        ..select(vec![SelectItem::All(None)], "t")
    }))
}

fn decl(field: &str, ty: CrdtType) -> TypeDecl {
    TypeDecl {
        field: field.to_string(),
        ty,
    }
}

/// The filter of a `SELECT`, for `Want::Like` predicates.
fn filter(s: &Statement) -> Option<&Expr> {
    match s {
        Statement::Select(s) => s.filter.as_ref(),
        _ => None,
    }
}

#[test]
fn select_statements() {
    let full = Select {
        distinct: true,
        items: vec![item(field("a.b"), Some("x")), SelectItem::All(Some("t".into()))],
        from: source("c", Some("t")),
        filter: Some(eq(field("a"), lit(1))),
        order_by: vec![
            OrderItem {
                expr: field("x"),
                desc: true,
            },
            OrderItem {
                expr: field("y"),
                desc: false,
            },
            OrderItem {
                expr: field("z"),
                desc: false,
            },
        ],
        limit: Some(lit(10)),
        offset: Some(param("o", 1, 97)),
        ..select(vec![], "c")
    };
    let grouped = Select {
        group_by: vec![field("s"), field("k")],
        having: Some(bin(BinaryOp::Gt, Expr::CountStar, lit(1))),
        ..select(
            vec![
                item(field("s"), None),
                item(Expr::CountStar, Some("n")),
                item(call("sum", vec![field("c")], false, 26), Some("total")),
                item(call("count", vec![field("p")], true, 43), Some("kinds")),
            ],
            "t",
        )
    };
    let joined = Select {
        joins: vec![
            Join {
                kind: JoinKind::Inner,
                source: source("owners", Some("o")),
                on: eq(field("o._id"), field("i.owner")),
            },
            Join {
                kind: JoinKind::Inner,
                source: source("x", None),
                on: lit(true),
            },
            Join {
                kind: JoinKind::Left,
                source: source("y", Some("yy")),
                on: lit(false),
            },
            Join {
                kind: JoinKind::Left,
                source: source("z", None),
                on: lit(true),
            },
        ],
        from: source("items", Some("i")),
        ..select(vec![SelectItem::All(None)], "items")
    };
    let typed = Select {
        types: vec![decl("views", CrdtType::Counter)],
        from: source("c", Some("x")),
        use_ids: Some(vec![lit("a"), param("ids", 1, 62)]),
        ..select(vec![SelectItem::All(None)], "c")
    };
    let table = vec![
        (
            "SELECT * FROM tasks",
            Want::Ast(Statement::Select(Box::new(select(vec![SelectItem::All(None)], "tasks")))),
        ),
        (
            "SELECT DISTINCT a.b AS x, t.* FROM c AS t WHERE a = 1 ORDER BY x DESC, y ASC, z LIMIT 10 OFFSET :o",
            Want::Ast(Statement::Select(Box::new(full))),
        ),
        (
            "SELECT s, COUNT(*) AS n, SUM(c) AS total, count(DISTINCT p) AS kinds FROM t GROUP BY s, k HAVING COUNT(*) > 1",
            Want::Ast(Statement::Select(Box::new(grouped))),
        ),
        (
            "SELECT * FROM items i JOIN owners o ON o._id = i.owner INNER JOIN x ON true \
             LEFT JOIN y AS yy ON false LEFT OUTER JOIN z ON true",
            Want::Ast(Statement::Select(Box::new(joined))),
        ),
        (
            "SELECT * FROM COLLECTION c (views PN_COUNTER) x USE IDS 'a', :ids",
            Want::Ast(Statement::Select(Box::new(typed))),
        ),
        (
            "select name, collection, paths from system:indexes;",
            Want::Ast(Statement::Select(Box::new(select(
                vec![item(field("name"), None), item(field("collection"), None), item(field("paths"), None)],
                "system:indexes",
            )))),
        ),
        (
            // A collection may be called `collection` when no declarations follow.
            "SELECT * FROM collection c",
            Want::Like(|s| matches!(s, Statement::Select(s) if s.from == source("collection", Some("c")))),
        ),
        (
            "SELECT * FROM `order` AS `my alias` WHERE `from`.`x y` = 1",
            Want::Like(|s| {
                matches!(s, Statement::Select(s) if s.from == source("order", Some("my alias"))
                    && s.filter == Some(eq(field("from.x y"), lit(1))))
            }),
        ),
        (
            "SELECT c * 2 AS double, s || '!' AS loud FROM t WHERE _id = 1",
            Want::Like(|s| matches!(s, Statement::Select(s) if s.items.len() == 2)),
        ),
        (
            "SELECT _id FROM t ORDER BY c DESC LIMIT :n OFFSET :o",
            Want::Like(|s| matches!(s, Statement::Select(s) if s.limit == Some(param("n", 1, 41)))),
        ),
    ];
    for (text, want) in table {
        check(text, want);
    }
}

#[test]
fn expressions() {
    use BinaryOp::*;
    let table = vec![
        // Precedence: OR < AND < NOT < comparison < || < + - < * / % < unary -.
        (
            "SELECT * FROM t WHERE NOT a = 1 OR b < 2 AND c || 'x' = d + 1 * -2",
            Want::Ast(select_where(bin(
                Or,
                Expr::Unary(UnaryOp::Not, Box::new(eq(field("a"), lit(1)))),
                bin(
                    And,
                    bin(Lt, field("b"), lit(2)),
                    eq(
                        bin(Concat, field("c"), lit("x")),
                        bin(Add, field("d"), bin(Mul, lit(1), lit(-2))),
                    ),
                ),
            ))),
        ),
        (
            "SELECT * FROM t WHERE a - b - c = a / b % c",
            Want::Ast(select_where(eq(
                bin(Sub, bin(Sub, field("a"), field("b")), field("c")),
                bin(Rem, bin(Div, field("a"), field("b")), field("c")),
            ))),
        ),
        (
            "SELECT * FROM t WHERE (a OR b) AND -x <> 1 AND y != 2 AND z == 3 AND p <= 4 AND q >= 5",
            Want::Like(|s| {
                let Some(Expr::Binary(And, l, r)) = filter(s) else {
                    return false;
                };
                matches!(&**r, Expr::Binary(Ge, _, _)) && format!("{l:?}").contains("Unary(Neg, Field")
            }),
        ),
        (
            "SELECT * FROM t WHERE x NOT IN (1, 'a') AND y IN :ids AND z IN [1, 2] AND w IN tags",
            Want::Ast(select_where(bin(
                And,
                bin(
                    And,
                    bin(
                        And,
                        is_in(field("x"), InList::List(vec![lit(1), lit("a")]), true),
                        is_in(field("y"), InList::Array(Box::new(param("ids", 1, 50))), false),
                    ),
                    is_in(
                        field("z"),
                        InList::Array(Box::new(Expr::Array(vec![lit(1), lit(2)]))),
                        false,
                    ),
                ),
                is_in(field("w"), InList::Array(Box::new(field("tags"))), false),
            ))),
        ),
        (
            "SELECT * FROM t WHERE p NOT BETWEEN 1 AND 2 + 3",
            Want::Ast(select_where(Expr::Between {
                expr: Box::new(field("p")),
                low: Box::new(lit(1)),
                high: Box::new(bin(Add, lit(2), lit(3))),
                negated: true,
            })),
        ),
        (
            "SELECT * FROM t WHERE s LIKE 'op%' OR s NOT ILIKE 'X_'",
            Want::Ast(select_where(bin(
                Or,
                Expr::Like {
                    expr: Box::new(field("s")),
                    pattern: Box::new(lit("op%")),
                    case_insensitive: false,
                    negated: false,
                },
                Expr::Like {
                    expr: Box::new(field("s")),
                    pattern: Box::new(lit("X_")),
                    case_insensitive: true,
                    negated: true,
                },
            ))),
        ),
        (
            "SELECT * FROM t WHERE p IS NULL AND q IS NOT MISSING",
            Want::Ast(select_where(bin(
                And,
                Expr::Is {
                    expr: Box::new(field("p")),
                    test: IsTest::Null,
                    negated: false,
                },
                Expr::Is {
                    expr: Box::new(field("q")),
                    test: IsTest::Missing,
                    negated: true,
                },
            ))),
        ),
        (
            "SELECT * FROM t WHERE ANY x IN tags SATISFIES x = 'y' END",
            Want::Ast(select_where(Expr::Any {
                var: "x".into(),
                array: Box::new(field("tags")),
                cond: Box::new(eq(field("x"), lit("y"))),
            })),
        ),
        (
            "SELECT * FROM t WHERE a[0]['k'].b[-1][\"c d\"] = `e f`.g",
            Want::Ast(select_where(eq(
                Expr::Field(Path {
                    segments: vec![
                        Segment::Key("a".into()),
                        Segment::Index(0),
                        Segment::Key("k".into()),
                        Segment::Key("b".into()),
                        Segment::Index(-1),
                        Segment::Key("c d".into()),
                    ],
                }),
                field("e f.g"),
            ))),
        ),
        (
            // After a dot any word is a key, reserved or not.
            "SELECT * FROM t WHERE a.from.select = 1",
            Want::Ast(select_where(eq(field("a.from.select"), lit(1)))),
        ),
        (
            "SELECT * FROM t WHERE o = {\"k\": [1, 2.5, -3e2, true, false, null], k2: {}, `k 3`: []}",
            Want::Ast(select_where(eq(
                field("o"),
                Expr::Object(vec![
                    (
                        "k".into(),
                        Expr::Array(vec![
                            lit(1),
                            lit(Value::Float(2.5)),
                            lit(Value::Float(-300.0)),
                            lit(true),
                            lit(false),
                            lit(Value::Null),
                        ]),
                    ),
                    ("k2".into(), Expr::Object(vec![])),
                    ("k 3".into(), Expr::Array(vec![])),
                ]),
            ))),
        ),
        (
            // A colon touching a word after an object key is still the key's
            // colon; a second colon makes a parameter.
            "SELECT * FROM t WHERE o = {\"a\":b, c::d, e: :f}",
            Want::Ast(select_where(eq(
                field("o"),
                Expr::Object(vec![
                    ("a".into(), field("b")),
                    ("c".into(), param("d", 1, 37)),
                    ("e".into(), param("f", 1, 44)),
                ]),
            ))),
        ),
        (
            "SELECT * FROM t WHERE length(_id) = 36 AND Lower(NAME) = now()",
            Want::Ast(select_where(bin(
                And,
                eq(call("length", vec![field("_id")], false, 23), lit(36)),
                eq(
                    call("lower", vec![field("NAME")], false, 44),
                    call("now", vec![], false, 58),
                ),
            ))),
        ),
        (
            "SELECT * FROM t WHERE a = -9223372036854775808 AND b = 9223372036854775807 AND c = 1.5E3 AND d = 2e-2",
            Want::Like(|s| {
                let text = format!("{:?}", filter(s));
                text.contains("Int(-9223372036854775808)")
                    && text.contains("Int(9223372036854775807)")
                    && text.contains("Float(1500.0)")
                    && text.contains("Float(0.02)")
            }),
        ),
        (
            r#"SELECT * FROM t WHERE s = 'a\n\t\\\'\"\u00e9\ud83d\ude00' AND d = "it's \"q\"""#,
            Want::Ast(select_where(bin(
                And,
                eq(field("s"), lit("a\n\t\\'\"é😀")),
                eq(field("d"), lit("it's \"q\"")),
            ))),
        ),
        (
            // Comments, odd spacing, keyword case, a trailing semicolon.
            "select -- first line\n  *\n/* block\ncomment */ from t\twhere a = :p ; ",
            Want::Ast(select_where(eq(field("a"), param("p", 4, 29)))),
        ),
        (
            "SELECT * FROM t WHERE - - x = 1",
            Want::Like(|s| {
                matches!(filter(s), Some(Expr::Binary(BinaryOp::Eq, l, _))
                    if matches!(&**l, Expr::Unary(UnaryOp::Neg, x) if matches!(&**x, Expr::Unary(UnaryOp::Neg, _))))
            }),
        ),
    ];
    for (text, want) in table {
        check(text, want);
    }
}

#[test]
fn insert_statements() {
    let plain = Insert {
        collection: "tasks".into(),
        types: vec![],
        initial: false,
        documents: vec![
            Expr::Object(vec![("_id".into(), lit("a")), ("n".into(), lit(1))]),
            param("doc", 1, 52),
            call("deserialize_json", vec![param("text", 1, 77)], false, 60),
        ],
        on_conflict: Conflict::Update,
        returning: Some(vec![item(field("_id"), None), SelectItem::All(None)]),
    };
    let typed = Insert {
        collection: "c".into(),
        types: vec![
            decl("meta", CrdtType::Register),
            decl("views", CrdtType::Counter),
            decl("pn", CrdtType::Counter),
            decl("photo", CrdtType::Attachment),
            decl(
                "m",
                CrdtType::Map(vec![decl("x", CrdtType::Counter), decl("y", CrdtType::Map(vec![]))]),
            ),
        ],
        initial: true,
        documents: vec![Expr::Object(vec![])],
        on_conflict: Conflict::Fail,
        returning: None,
    };
    let conflict = |c: Conflict| -> fn(&Statement) -> bool {
        match c {
            Conflict::Fail => |s| matches!(s, Statement::Insert(i) if i.on_conflict == Conflict::Fail),
            Conflict::Nothing => |s| matches!(s, Statement::Insert(i) if i.on_conflict == Conflict::Nothing),
            Conflict::Update => |s| matches!(s, Statement::Insert(i) if i.on_conflict == Conflict::Update),
            Conflict::UpdateLocalDiff => {
                |s| matches!(s, Statement::Insert(i) if i.on_conflict == Conflict::UpdateLocalDiff)
            }
        }
    };
    let table = vec![
        (
            "INSERT INTO tasks DOCUMENTS ({\"_id\": \"a\", n: 1}), (:doc), (deserialize_json(:text)) \
             ON ID CONFLICT DO UPDATE RETURNING _id, *",
            Want::Ast(Statement::Insert(Box::new(plain))),
        ),
        (
            "INSERT INTO COLLECTION c (meta REGISTER, views COUNTER, pn PN_COUNTER, photo ATTACHMENT, \
             m MAP (x COUNTER, y MAP)) INITIAL DOCUMENTS ({})",
            Want::Ast(Statement::Insert(Box::new(typed))),
        ),
        (
            "INSERT INTO c (n COUNTER) DOCUMENTS ({})",
            Want::Like(|s| matches!(s, Statement::Insert(i) if i.types == vec![decl("n", CrdtType::Counter)])),
        ),
        (
            "INSERT INTO COLLECTION c DOCUMENTS ({})",
            Want::Like(|s| matches!(s, Statement::Insert(i) if i.collection == "c" && i.types.is_empty())),
        ),
        (
            "INSERT INTO collection INITIAL DOCUMENTS ({})",
            Want::Like(|s| matches!(s, Statement::Insert(i) if i.collection == "collection" && i.initial)),
        ),
        (
            "INSERT INTO collection DOCUMENTS ({})",
            Want::Like(|s| matches!(s, Statement::Insert(i) if i.collection == "collection" && !i.initial)),
        ),
        ("INSERT INTO c DOCUMENTS ({})", Want::Like(conflict(Conflict::Fail))),
        (
            "INSERT INTO c DOCUMENTS ({}) ON ID CONFLICT FAIL",
            Want::Like(conflict(Conflict::Fail)),
        ),
        (
            "INSERT INTO c DOCUMENTS ({}) ON ID CONFLICT DO FAIL",
            Want::Like(conflict(Conflict::Fail)),
        ),
        (
            "INSERT INTO c DOCUMENTS ({}) on id conflict do nothing",
            Want::Like(conflict(Conflict::Nothing)),
        ),
        (
            "INSERT INTO c DOCUMENTS (:d) ON ID CONFLICT DO UPDATE_LOCAL_DIFF",
            Want::Like(conflict(Conflict::UpdateLocalDiff)),
        ),
    ];
    for (text, want) in table {
        check(text, want);
    }
}

#[test]
fn update_and_delete_statements() {
    let update = Update {
        collection: "c".into(),
        types: vec![],
        mutations: vec![
            Mutation::Set(path("a"), lit(1), at(1, 14)),
            Mutation::Unset(path("b"), at(1, 27)),
            Mutation::Increment(path("n"), lit(1), at(1, 35)),
            Mutation::Increment(path("m.k"), lit(-2), at(1, 53)),
            Mutation::Restart(path("r"), lit(0), at(1, 77)),
            Mutation::Unset(path("x"), at(2, 7)),
            Mutation::Unset(path("y"), at(2, 10)),
            Mutation::Set(path("z"), bin(BinaryOp::Add, field("z"), lit(1)), at(2, 16)),
        ],
        filter: Some(eq(field("_id"), lit("x"))),
        returning: Some(vec![item(field("n"), Some("count"))]),
    };
    let delete = Delete {
        collection: "c".into(),
        filter: Some(bin(BinaryOp::Gt, field("x"), lit(1))),
        use_ids: Some(vec![lit("a"), lit("b")]),
        returning: Some(vec![SelectItem::All(None)]),
    };
    let table = vec![
        (
            "UPDATE c SET a = 1, UNSET b APPLY n INCREMENT BY 1, m.k PN_INCREMENT BY -2, r RESTART WITH 0\n\
             UNSET x, y SET z = z + 1 WHERE _id = 'x' RETURNING n AS count",
            Want::Ast(Statement::Update(Box::new(update))),
        ),
        (
            "UPDATE COLLECTION c (meta REGISTER) SET meta = {\"b\": 2} WHERE _id = 1",
            Want::Like(|s| {
                matches!(s, Statement::Update(u) if u.collection == "c"
                    && u.types == vec![decl("meta", CrdtType::Register)] && u.mutations.len() == 1)
            }),
        ),
        (
            "UPDATE COLLECTION c SET a = 1",
            Want::Like(|s| matches!(s, Statement::Update(u) if u.collection == "c" && u.types.is_empty())),
        ),
        (
            // `collection` followed by a keyword is the collection's name.
            "UPDATE collection SET a = 1",
            Want::Like(|s| matches!(s, Statement::Update(u) if u.collection == "collection")),
        ),
        (
            "UPDATE tasks SET tags[0] = 'x', meta.`deep key` = 'y'",
            Want::Like(|s| {
                matches!(s, Statement::Update(u) if matches!(&u.mutations[0],
                    Mutation::Set(p, _, _) if p.segments == vec![Segment::Key("tags".into()), Segment::Index(0)]))
            }),
        ),
        (
            "DELETE FROM c USE IDS 'a', 'b' WHERE x > 1 RETURNING *",
            Want::Ast(Statement::Delete(Box::new(delete))),
        ),
        (
            "DELETE FROM c",
            Want::Like(|s| matches!(s, Statement::Delete(d) if d.filter.is_none() && d.use_ids.is_none())),
        ),
        (
            "EVICT FROM tasks WHERE _id = 'a' RETURNING title",
            Want::Like(|s| matches!(s, Statement::Evict(d) if d.collection == "tasks" && d.returning.is_some())),
        ),
        (
            "EVICT FROM tasks USE IDS :ids",
            Want::Like(|s| matches!(s, Statement::Evict(d) if d.use_ids == Some(vec![param("ids", 1, 26)]))),
        ),
    ];
    for (text, want) in table {
        check(text, want);
    }
}

#[test]
fn schema_system_and_wrappers() {
    let table = vec![
        (
            "CREATE INDEX IF NOT EXISTS t_s ON t (s, a.b[0])",
            Want::Ast(Statement::CreateIndex {
                name: "t_s".into(),
                collection: "t".into(),
                paths: vec![
                    path("s"),
                    Path {
                        segments: vec![Segment::Key("a".into()), Segment::Key("b".into()), Segment::Index(0)],
                    },
                ],
                if_not_exists: true,
            }),
        ),
        (
            "create index i on t (s)",
            Want::Like(|s| {
                matches!(
                    s,
                    Statement::CreateIndex {
                        if_not_exists: false,
                        ..
                    }
                )
            }),
        ),
        (
            "DROP INDEX IF EXISTS t_s",
            Want::Ast(Statement::DropIndex {
                name: "t_s".into(),
                if_exists: true,
            }),
        ),
        (
            "DROP INDEX t_s",
            Want::Ast(Statement::DropIndex {
                name: "t_s".into(),
                if_exists: false,
            }),
        ),
        (
            "ALTER SYSTEM SET dql_strict_mode = true",
            Want::Ast(Statement::AlterSystem {
                name: "DQL_STRICT_MODE".into(),
                value: lit(true),
            }),
        ),
        ("SHOW ALL", Want::Ast(Statement::Show { name: None })),
        (
            "show Dql_Strict_Mode",
            Want::Ast(Statement::Show {
                name: Some("DQL_STRICT_MODE".into()),
            }),
        ),
        (
            "EXPLAIN SELECT * FROM t",
            Want::Ast(Statement::Explain(Box::new(Statement::Select(Box::new(select(
                vec![SelectItem::All(None)],
                "t",
            )))))),
        ),
        (
            "PROFILE DELETE FROM t WHERE a = 1",
            Want::Like(|s| matches!(s, Statement::Profile(inner) if matches!(**inner, Statement::Delete(_)))),
        ),
    ];
    for (text, want) in table {
        check(text, want);
    }
}

/// Statements of the executor's scripts (`tests/dql/*.dql`), all of which
/// must parse.
#[test]
fn script_statements_parse() {
    let statements = [
        r#"INSERT INTO tasks DOCUMENTS ({"_id": "a", "title": "milk", "done": false, "n": 1}), ({"_id": "b", "title": "bike", "done": true, "n": 2})"#,
        "SELECT * FROM tasks ORDER BY _id",
        "UPDATE tasks SET done = true, n = n + 10 WHERE _id = 'a'",
        "UPDATE tasks SET meta.deep = 'x' UNSET extra WHERE done = true",
        "UPDATE tasks APPLY views PN_INCREMENT BY 3 WHERE _id = 'a'",
        "SELECT COUNT(*) AS n FROM tasks WHERE length(_id) = 36",
        "SELECT _id FROM t WHERE p IS NOT MISSING AND p IS NOT NULL ORDER BY _id",
        "SELECT _id FROM t WHERE s LIKE 'op%' AND NOT (p < 4) ORDER BY _id",
        "SELECT s, COUNT(*) AS n, SUM(c) AS total, AVG(c) AS mean, MIN(c) AS lo, MAX(c) AS hi FROM t GROUP BY s HAVING COUNT(*) > 1",
        r#"SELECT {"id": _id, "both": [s, p]} AS o FROM t WHERE _id = 2"#,
        "SELECT i._id AS item, o.name AS name FROM items i LEFT JOIN owners o ON o._id = i.owner ORDER BY item",
        r#"INSERT INTO COLLECTION c (meta REGISTER, views COUNTER) DOCUMENTS ({"_id":1,"meta":{"a":1},"views":5})"#,
        r#"UPDATE COLLECTION c (photo ATTACHMENT) SET photo = {"id":"blake3:ab","len":3} WHERE _id = 1"#,
        "ALTER SYSTEM SET DQL_STRICT_MODE = false",
        "EXPLAIN SELECT * FROM t WHERE s = 'open' ORDER BY c LIMIT 1",
        r#"INSERT INTO cfg INITIAL DOCUMENTS ({"_id":"x","v":1})"#,
    ];
    for text in statements {
        if let Err(e) = parse(text) {
            panic!("{text}\n{e}");
        }
    }
}

#[test]
fn errors_point_at_the_problem() {
    let table: &[(&str, u32, u32, &str)] = &[
        ("SELECT * FORM c", 1, 10, "FROM"),
        ("SELECT FROM c", 1, 8, "an expression"),
        ("SELECT * FROM c WHERE", 1, 22, "an expression"),
        ("SELECT * FROM c WHERE (a = 1 OR b = 2", 1, 38, "')'"),
        ("SELECT * FROM c WHERE f(a, b", 1, 29, "')'"),
        ("SELECT * FROM c LIMIT 12abc", 1, 23, "a number"),
        (
            "SELECT * FROM c WHERE a = 1.e5",
            1,
            27,
            "digits after the decimal point",
        ),
        ("SELECT * FROM c WHERE a = 1e", 1, 27, "digits in the exponent"),
        (
            "SELECT * FROM c WHERE a = 99999999999999999999",
            1,
            27,
            "an integer from",
        ),
        ("SELECT * FROM c WHERE a = 1e999", 1, 27, "range of a 64-bit float"),
        ("SELECT *\nFROM c\nWHERE a = 'abc\n\n", 3, 11, "a closing '"),
        ("SELECT * FROM c WHERE a = \"x", 1, 27, "a closing \""),
        ("SELECT * FROM c WHERE a = 'x\\q'", 1, 29, "an escape"),
        ("SELECT * FROM c WHERE a = '\\u12'", 1, 28, "four hex digits"),
        ("SELECT * FROM c WHERE a = '\\ud800'", 1, 28, "low surrogate"),
        ("SELECT * FROM c WHERE `a = 1", 1, 23, "a closing `"),
        ("SELECT * FROM c /* never\nclosed", 1, 17, "*/"),
        ("SELECT * FROM c WHERE a = @", 1, 27, "a name, literal"),
        ("SELECT * FROM c WHERE a = :", 1, 28, "a parameter name"),
        ("SELECT * FROM c WHERE a = : p", 1, 29, "a parameter name"),
        ("SELECT * FROM c WHERE a IS 5", 1, 28, "NULL or MISSING"),
        ("SELECT * FROM c WHERE a BETWEEN 1 OR 2", 1, 35, "AND"),
        (
            "SELECT * FROM c WHERE a[x] = 1",
            1,
            25,
            "an array index or a quoted key",
        ),
        ("SELECT * FROM c WHERE a.1 = 1", 1, 25, "a field name"),
        ("SELECT * FROM c WHERE ANY x IN t SATISFIES x = 1", 1, 49, "END"),
        ("SELECT * FROM c ORDER x", 1, 23, "BY"),
        ("SELECT * FROM order", 1, 15, "a collection name"),
        ("SELECT * FROM c extra junk", 1, 23, "end of statement"),
        ("SELECT a AS FROM c", 1, 13, "an output name"),
        ("SELECT * FROM c LEFT c2 ON true", 1, 22, "JOIN"),
        ("SELECT * FROM c JOIN d", 1, 23, "ON"),
        ("SELECT * FROM c; SELECT * FROM d", 1, 18, "end of statement"),
        (
            "INSERT INTO c DOCUMENTS ({}) ON ID CONFLICT DO REPLACE",
            1,
            48,
            "FAIL, NOTHING, UPDATE or UPDATE_LOCAL_DIFF",
        ),
        (
            "INSERT INTO c DOCUMENTS ({}) ON ID CONFLICT REPLACE",
            1,
            45,
            "DO or FAIL",
        ),
        ("INSERT INTO c DOCUMENTS {}", 1, 25, "'('"),
        ("INSERT INTO c VALUES ({})", 1, 15, "DOCUMENTS"),
        ("INSERT INTO c (a SET) DOCUMENTS ({})", 1, 18, "a type"),
        ("INSERT INTO c DOCUMENTS ({a 1})", 1, 29, "':'"),
        ("INSERT INTO c DOCUMENTS ({1: 1})", 1, 27, "an object key"),
        ("UPDATE c WHERE a = 1", 1, 10, "SET, UNSET or APPLY"),
        ("UPDATE c SET a 1", 1, 16, "'='"),
        (
            "UPDATE c APPLY n DECREMENT BY 1",
            1,
            18,
            "INCREMENT BY, PN_INCREMENT BY or RESTART WITH",
        ),
        ("UPDATE c APPLY n RESTART 1", 1, 26, "WITH"),
        ("DELETE c WHERE a = 1", 1, 8, "FROM"),
        ("CREATE INDEX i ON t s", 1, 21, "'('"),
        ("CREATE TABLE t", 1, 8, "INDEX"),
        ("DROP INDEX", 1, 11, "an index name"),
        ("ALTER SYSTEM x = 1", 1, 14, "SET"),
        ("EXPLAIN EXPLAIN SELECT * FROM t", 1, 9, "a statement to explain"),
        (
            "FROB",
            1,
            1,
            "a statement (SELECT, INSERT, UPDATE, DELETE, EVICT, CREATE, DROP, ALTER, SHOW, EXPLAIN",
        ),
        ("", 1, 1, "a statement"),
        ("-- only a comment\n", 2, 1, "a statement"),
        // Columns count characters, not bytes.
        ("SELECT 'é😀' FORM c", 1, 13, "FROM"),
        // The first error in text order wins, lexical or not.
        ("SELECT * FORM c WHERE 'never closed", 1, 10, "FROM"),
    ];
    for &(text, line, column, expected) in table {
        check(text, Want::Error(line, column, expected));
    }
}

#[test]
fn error_display_and_fields() {
    let e = parse("SELECT * FORM c").unwrap_err();
    assert_eq!(e.to_string(), "line 1, column 10: expected FROM, found FORM");
    let e = parse("SELECT *\nFROM c\nWHERE a = 'abc").unwrap_err();
    assert_eq!(e.found, "unterminated string");
    assert_eq!(
        e.to_string(),
        "line 3, column 11: expected a closing ', found unterminated string"
    );
    let e = parse("SELECT * FROM c WHERE (a").unwrap_err();
    assert_eq!(e.to_string(), "line 1, column 25: expected ')', found end of input");
    // Long tokens are shortened in messages.
    let long = format!("SELECT * FROM c {}", "x".repeat(500));
    let e: ParseError = parse(&format!("{long} y")).unwrap_err();
    assert!(e.found.len() < 60, "{e}");
}

#[test]
fn nesting_is_bounded() {
    let deep = |n: usize| format!("SELECT * FROM t WHERE {}a{}", "(".repeat(n), ")".repeat(n));
    assert!(parse(&deep(MAX_NESTING - 2)).is_ok());
    let e = parse(&deep(MAX_NESTING + 1)).unwrap_err();
    assert!(e.found.contains("nested too deep"), "{e}");
    let e = parse(&deep(100_000)).unwrap_err();
    assert!(e.found.contains("nested too deep"), "{e}");

    // Long operator chains build deep trees without deep recursion; they
    // are bounded too, since whoever walks the tree recurses.
    let chain = |n: usize| format!("SELECT * FROM t WHERE a{}", " OR a".repeat(n));
    assert!(parse(&chain(MAX_NESTING - 2)).is_ok());
    let e = parse(&chain(100_000)).unwrap_err();
    assert!(e.found.contains("expression nested too deep"), "{e}");
    assert_eq!(
        e.pos,
        Pos {
            line: 1,
            column: 25 + 5 * (MAX_NESTING as u32 - 1)
        }
    );

    for text in [
        format!("SELECT * FROM t WHERE {}a", "NOT ".repeat(100_000)),
        format!("SELECT * FROM t WHERE {}a", "- ".repeat(100_000)),
        format!(
            "SELECT * FROM t WHERE a = {}1{}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        format!("SELECT * FROM t WHERE a = {}", "{a:".repeat(100_000)),
        format!("SELECT * FROM t WHERE a = {}", "f(".repeat(100_000)),
        format!("INSERT INTO c (a {}) DOCUMENTS ({{}})", "MAP (a ".repeat(100_000)),
    ] {
        let e = parse(&text).unwrap_err();
        assert!(e.found.contains("nested too deep"), "{e}");
    }
}

#[test]
fn long_statements_are_refused_up_front() {
    let text = format!("SELECT * FROM t WHERE a = '{}'", "x".repeat(MAX_STATEMENT_BYTES));
    let e = parse(&text).unwrap_err();
    assert_eq!(e.pos, Pos { line: 1, column: 1 });
    assert!(e.expected.contains("at most"), "{e}");
    // Just under the limit is fine, and a long flat statement is fast.
    let ids = vec!["1"; (MAX_STATEMENT_BYTES - 64) / 3].join(", ");
    let text = format!("SELECT * FROM t WHERE a IN ({ids})");
    assert!(parse(&text).is_ok());
}

/// Tokens of DQL and near-DQL, for random statements.
const VOCABULARY: &[&str] = &[
    "SELECT",
    "DISTINCT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "IN",
    "BETWEEN",
    "LIKE",
    "ILIKE",
    "IS",
    "NULL",
    "MISSING",
    "TRUE",
    "FALSE",
    "ANY",
    "SATISFIES",
    "END",
    "AS",
    "JOIN",
    "LEFT",
    "OUTER",
    "INNER",
    "ON",
    "USE",
    "IDS",
    "GROUP",
    "BY",
    "HAVING",
    "ORDER",
    "ASC",
    "DESC",
    "LIMIT",
    "OFFSET",
    "INSERT",
    "INTO",
    "COLLECTION",
    "DOCUMENTS",
    "INITIAL",
    "ID",
    "CONFLICT",
    "DO",
    "FAIL",
    "NOTHING",
    "UPDATE",
    "UPDATE_LOCAL_DIFF",
    "RETURNING",
    "SET",
    "UNSET",
    "APPLY",
    "INCREMENT",
    "PN_INCREMENT",
    "RESTART",
    "WITH",
    "DELETE",
    "EVICT",
    "CREATE",
    "DROP",
    "INDEX",
    "IF",
    "EXISTS",
    "EXPLAIN",
    "PROFILE",
    "ALTER",
    "SYSTEM",
    "SHOW",
    "ALL",
    "REGISTER",
    "COUNTER",
    "PN_COUNTER",
    "MAP",
    "ATTACHMENT",
    "COUNT",
    "t",
    "a",
    "b_1",
    "_id",
    "system",
    "`odd name`",
    "``",
    "0",
    "1",
    "-1",
    "42",
    "9223372036854775807",
    "9223372036854775808",
    "1.5",
    "2e3",
    "1e",
    "1.",
    "'s'",
    "\"d\"",
    "'\\u00e9'",
    "'\\q'",
    "'open",
    ":p",
    ":",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    ";",
    "*",
    "+",
    "-",
    "/",
    "%",
    "||",
    "=",
    "==",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "--",
    "/*",
    "*/",
    "@",
    "é",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_token_sequences_never_panic(
        tokens in prop::collection::vec(prop::sample::select(VOCABULARY), 0..=60)
    ) {
        let text = tokens.join(" ");
        match parse(&text) {
            // The prepare-time checks answer every parsed statement too.
            Ok(statement) => {
                let _ = rhizome_engine::dql::eval::check(&statement);
            }
            Err(e) => {
                prop_assert!(e.pos.line >= 1 && e.pos.column >= 1);
                prop_assert!(!e.expected.is_empty() && !e.found.is_empty());
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = parse(&text) {
            prop_assert!(e.pos.line >= 1 && e.pos.column >= 1);
        }
    }

    #[test]
    fn valid_prefix_plus_random_tail_never_panics(
        tail in prop::collection::vec(prop::sample::select(VOCABULARY), 0..=30)
    ) {
        let text = format!("SELECT a, COUNT(*) FROM t WHERE x = {}", tail.join(" "));
        let _ = parse(&text);
    }
}
