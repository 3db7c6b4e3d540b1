//! Merge rules of one document, case by case (the property tests in
//! `merge_laws.rs` check the algebra; these check the intent).

use rhizome_engine::doc::{Attachment, Doc, Inferred, Num, Op};
use rhizome_engine::hlc::{Hlc, PeerId, Stamp};
use rhizome_engine::value::Value;
use std::collections::BTreeMap;

struct Replica {
    peer: PeerId,
    next: u64,
    doc: Doc,
}

impl Replica {
    fn new(peer: u64) -> Replica {
        Replica {
            peer: PeerId(peer),
            next: 1,
            doc: Doc::new(),
        }
    }
    fn stamp(&mut self, at: u64) -> Stamp {
        self.next = self
            .next
            .max(at)
            .max(self.doc.vv.iter().map(|(_, h)| h.0 + 1).max().unwrap_or(0));
        let s = Stamp {
            hlc: Hlc(self.next),
            peer: self.peer,
        };
        self.next += 1;
        s
    }
    fn local(&mut self, at: u64, f: impl FnOnce(&Doc, Stamp, &mut Vec<Op>)) -> Vec<Op> {
        let s = self.stamp(at);
        let mut ops = Vec::new();
        f(&self.doc, s, &mut ops);
        for op in &ops {
            self.doc.apply(op);
        }
        ops
    }
    fn recv(&mut self, ops: &[Op]) {
        for op in ops {
            op.validate().unwrap();
            self.doc.apply(op);
        }
    }
    fn json(&self) -> Option<String> {
        self.doc.render().map(|o| Value::Object(o).to_string())
    }
}

fn p(s: &str) -> Vec<String> {
    s.split('.').map(str::to_string).collect()
}
fn v(s: &str) -> Value {
    Value::parse(s).unwrap()
}
fn obj(s: &str) -> BTreeMap<String, Value> {
    v(s).as_object().unwrap().clone()
}

#[test]
fn concurrent_edits_of_different_fields_at_any_depth_both_survive() {
    let mut a = Replica::new(1);
    let base = a.local(10, |d, s, o| {
        d.ops_replace(&obj(r#"{"x":1,"m":{"a":1,"b":{"c":1}}}"#), s, &Inferred, o)
    });
    let mut b = Replica::new(2);
    b.recv(&base);
    let ea = a.local(20, |d, s, o| d.ops_set(&p("m.b.c"), &v("2"), s, &Inferred, o));
    let eb = b.local(21, |d, s, o| d.ops_set(&p("m.a"), &v("\"two\""), s, &Inferred, o));
    a.recv(&eb);
    b.recv(&ea);
    assert_eq!(a.json().unwrap(), r#"{"m":{"a":"two","b":{"c":2}},"x":1}"#);
    assert_eq!(a.doc, b.doc);
}

#[test]
fn same_field_last_writer_wins_with_peer_tiebreak() {
    let mut a = Replica::new(1);
    let mut b = Replica::new(2);
    let ea = a.local(50, |d, s, o| d.ops_set(&p("f"), &v("\"a\""), s, &Inferred, o));
    let eb = b.local(50, |d, s, o| d.ops_set(&p("f"), &v("\"b\""), s, &Inferred, o));
    a.recv(&eb);
    b.recv(&ea);
    assert_eq!(a.json().unwrap(), r#"{"f":"b"}"#, "equal HLC: higher peer id wins");
    assert_eq!(a.doc, b.doc);
}

#[test]
fn setting_an_object_replaces_older_keys_but_keeps_concurrent_newer_ones() {
    let mut a = Replica::new(1);
    let mut b = Replica::new(2);
    let base = a.local(10, |d, s, o| d.ops_set(&p("m"), &v(r#"{"old":1}"#), s, &Inferred, o));
    b.recv(&base);
    let ea = a.local(20, |d, s, o| d.ops_set(&p("m"), &v(r#"{"new":1}"#), s, &Inferred, o));
    let eb = b.local(30, |d, s, o| d.ops_set(&p("m.late"), &v("1"), s, &Inferred, o));
    a.recv(&eb);
    b.recv(&ea);
    assert_eq!(a.json().unwrap(), r#"{"m":{"late":1,"new":1}}"#);
    assert_eq!(a.doc, b.doc);
}

#[test]
fn concurrent_creation_of_one_document_keeps_both_peers_fields() {
    // Two peers insert the same `_id` offline: neither saw the other's
    // fields, so neither insert removes them (whatever the clocks say).
    let mut a = Replica::new(1);
    let mut b = Replica::new(2);
    let ea = a.local(10, |d, s, o| {
        d.ops_replace(&obj(r#"{"x":1,"m":{"p":1}}"#), s, &Inferred, o)
    });
    let eb = b.local(90, |d, s, o| {
        d.ops_replace(&obj(r#"{"y":2,"m":{"q":2}}"#), s, &Inferred, o)
    });
    a.recv(&eb);
    b.recv(&ea);
    assert_eq!(a.json().unwrap(), r#"{"m":{"p":1,"q":2},"x":1,"y":2}"#);
    assert_eq!(a.doc, b.doc);
}

#[test]
fn replacing_an_object_removes_only_what_its_writer_saw() {
    let mut a = Replica::new(1);
    let mut b = Replica::new(2);
    let base = a.local(10, |d, s, o| d.ops_set(&p("m"), &v(r#"{"seen":1}"#), s, &Inferred, o));
    b.recv(&base);
    // b adds a key a has not seen, with an *older* clock than a's replace.
    let eb = b.local(11, |d, s, o| d.ops_set(&p("m.unseen"), &v("1"), s, &Inferred, o));
    let ea = a.local(50, |d, s, o| d.ops_set(&p("m"), &v(r#"{"new":1}"#), s, &Inferred, o));
    a.recv(&eb);
    b.recv(&ea);
    assert_eq!(a.json().unwrap(), r#"{"m":{"new":1,"unseen":1}}"#);
    assert_eq!(a.doc, b.doc);
    // Unsetting removes what the writer sees, nested counters included.
    let inc = a.local(60, |d, s, o| d.ops_increment(&p("m.n"), Num::Int(3), s, o));
    b.recv(&inc);
    let un = b.local(70, |d, s, o| d.ops_unset(&p("m"), s, o));
    a.recv(&un);
    assert_eq!(a.doc.get(&p("m")), None, "m and the counter below it are gone");
    assert_eq!(a.doc, b.doc);
}

#[test]
fn scalar_over_map_and_newer_child_turns_it_back_into_a_map() {
    let mut a = Replica::new(1);
    let mut b = Replica::new(2);
    let base = a.local(10, |d, s, o| d.ops_set(&p("m"), &v(r#"{"k":1}"#), s, &Inferred, o));
    b.recv(&base);
    let ea = a.local(20, |d, s, o| d.ops_set(&p("m"), &v("7"), s, &Inferred, o));
    b.recv(&ea);
    assert_eq!(b.json().unwrap(), r#"{"m":7}"#);
    let eb = b.local(30, |d, s, o| d.ops_set(&p("m.z"), &v("1"), s, &Inferred, o));
    a.recv(&eb);
    assert_eq!(
        a.json().unwrap(),
        r#"{"m":{"z":1}}"#,
        "the replaced key k does not come back"
    );
}

#[test]
fn unset_is_a_tombstone_that_merges_like_a_write() {
    let mut a = Replica::new(1);
    let mut b = Replica::new(2);
    let base = a.local(10, |d, s, o| d.ops_replace(&obj(r#"{"f":1,"g":2}"#), s, &Inferred, o));
    b.recv(&base);
    let ea = a.local(20, |d, s, o| d.ops_unset(&p("f"), s, o));
    let eb = b.local(15, |d, s, o| d.ops_set(&p("f"), &v("5"), s, &Inferred, o));
    a.recv(&eb);
    b.recv(&ea);
    assert_eq!(a.json().unwrap(), r#"{"g":2}"#);
    assert_eq!(a.doc, b.doc);
}

#[test]
fn delete_wins_over_seen_writes_and_keeps_concurrent_unseen_fields() {
    let mut a = Replica::new(1);
    let mut b = Replica::new(2);
    let base = a.local(10, |d, s, o| {
        d.ops_replace(&obj(r#"{"f":1,"g":2,"h":3}"#), s, &Inferred, o)
    });
    b.recv(&base);
    // b edits g concurrently, at an *earlier* wall time than the delete.
    let eb = b.local(11, |d, s, o| d.ops_set(&p("g"), &v("20"), s, &Inferred, o));
    let ea = a.local(100, |d, s, o| d.ops_delete(s, o));
    assert!(a.json().is_none());
    a.recv(&eb);
    b.recv(&ea);
    assert_eq!(a.json().unwrap(), r#"{"g":20}"#, "the unseen update survives, alone");
    assert_eq!(a.doc, b.doc);
    // A write after seeing the delete brings the document back with just that field.
    let mut c = Replica::new(3);
    c.recv(&base);
    c.recv(&ea);
    assert!(c.json().is_none());
    let ec = c.local(200, |d, s, o| d.ops_set(&p("h"), &v("30"), s, &Inferred, o));
    a.recv(&ec);
    assert_eq!(a.json().unwrap(), r#"{"g":20,"h":30}"#);
}

#[test]
fn deleted_values_are_not_kept() {
    let mut a = Replica::new(1);
    a.local(10, |d, s, o| d.ops_replace(&obj(r#"{"secret":"x"}"#), s, &Inferred, o));
    a.local(20, |d, s, o| d.ops_delete(s, o));
    assert!(!format!("{:?}", a.doc).contains("\"x\""));
}

#[test]
fn counters_add_concurrent_increments() {
    let mut a = Replica::new(1);
    let mut b = Replica::new(2);
    let mut all = Vec::new();
    all.extend(a.local(10, |d, s, o| d.ops_increment(&p("n"), Num::Int(1), s, o)));
    all.extend(a.local(11, |d, s, o| d.ops_increment(&p("n"), Num::Int(2), s, o)));
    all.extend(b.local(10, |d, s, o| d.ops_increment(&p("n"), Num::Int(10), s, o)));
    all.extend(b.local(12, |d, s, o| d.ops_increment(&p("n"), Num::Float(0.5), s, o)));
    a.recv(&all);
    b.recv(&all);
    assert_eq!(a.json().unwrap(), r#"{"n":13.5}"#);
    assert_eq!(a.doc, b.doc);
}

#[test]
fn counter_restart_and_concurrent_increment_counts_only_the_delta() {
    let mut a = Replica::new(1);
    let mut b = Replica::new(2);
    let e1 = a.local(10, |d, s, o| d.ops_increment(&p("n"), Num::Int(5), s, o));
    b.recv(&e1);
    let e2 = b.local(20, |d, s, o| d.ops_restart(&p("n"), Num::Int(100), s, o));
    let e3 = a.local(30, |d, s, o| d.ops_increment(&p("n"), Num::Int(1), s, o));
    a.recv(&e2);
    b.recv(&e3);
    assert_eq!(a.json().unwrap(), r#"{"n":101}"#);
    assert_eq!(a.doc, b.doc);
}

#[test]
fn incrementing_a_plain_number_starts_from_its_value() {
    let mut a = Replica::new(1);
    a.local(9, |d, s, o| d.ops_replace(&BTreeMap::new(), s, &Inferred, o));
    a.local(10, |d, s, o| d.ops_set(&p("n"), &v("40"), s, &Inferred, o));
    a.local(11, |d, s, o| d.ops_increment(&p("n"), Num::Int(2), s, o));
    assert_eq!(a.json().unwrap(), r#"{"n":42}"#);
    a.local(12, |d, s, o| d.ops_unset(&p("n"), s, o));
    assert_eq!(a.json().unwrap(), "{}");
    a.local(13, |d, s, o| d.ops_increment(&p("n"), Num::Int(1), s, o));
    assert_eq!(a.json().unwrap(), r#"{"n":1}"#);
}

#[test]
fn attachment_tokens_are_registers() {
    let mut a = Replica::new(1);
    let tok = Attachment {
        id: "blake3:ab".into(),
        len: 3,
        meta: obj(r#"{"name":"x.png"}"#),
    };
    a.local(10, |d, s, o| d.ops_attach(&p("photo"), tok, s, o));
    assert_eq!(
        a.json().unwrap(),
        r#"{"photo":{"_type":"attachment","id":"blake3:ab","len":3,"meta":{"name":"x.png"}}}"#
    );
}

#[test]
fn delta_since_ships_only_newer_writes() {
    let mut a = Replica::new(1);
    let mut b = Replica::new(2);
    let base = a.local(10, |d, s, o| {
        d.ops_replace(&obj(r#"{"f":1,"g":2,"h":{"i":3}}"#), s, &Inferred, o)
    });
    b.recv(&base);
    let seen = b.doc.vv.clone();
    a.local(20, |d, s, o| d.ops_set(&p("h.i"), &v("4"), s, &Inferred, o));
    let delta = a.doc.delta_since(&seen);
    assert_eq!(delta.len(), 1, "{delta:?}");
    b.recv(&delta);
    assert_eq!(a.doc, b.doc);
    assert!(a.doc.delta_since(&a.doc.vv).is_empty());
}

#[test]
fn hostile_ops_are_refused() {
    let s = Stamp {
        hlc: Hlc(5),
        peer: PeerId(1),
    };
    let bad = [
        Op::Set {
            path: vec!["_id".into()],
            stamp: s,
            val: rhizome_engine::doc::RegVal::Value(v("1")),
        },
        Op::Set {
            path: vec![],
            stamp: s,
            val: rhizome_engine::doc::RegVal::Value(v("1")),
        },
        Op::Set {
            path: vec!["a".into(); 100],
            stamp: s,
            val: rhizome_engine::doc::RegVal::Absent,
        },
        Op::Count {
            path: p("n"),
            stamp: Stamp {
                hlc: Hlc(0),
                peer: PeerId(1),
            },
            total: Num::Int(1),
        },
        Op::Count {
            path: p("n"),
            stamp: s,
            total: Num::Float(f64::NAN),
        },
    ];
    for op in bad {
        assert!(op.validate().is_err(), "{op:?}");
    }
}
