//! `rhizome exec` and `rhizome shell`: DQL against a store on disk.
//!
//! Results print as JSON lines, one document per line; mutations print
//! `{"mutated":[ids]}`. Errors go to stderr and the exit code is non-zero.

use rhizome_engine::dql::{self, exec::Output, Prepared};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::store::{Store, StoreConfig};
use rhizome_engine::value::Value;
use rhizome_lmdb::{LmdbConfig, LmdbKv};
use std::path::PathBuf;
use std::process::ExitCode;

/// Options shared by `exec` and `shell`.
pub struct Options {
    data: PathBuf,
    statement: Option<String>,
    args: Option<String>,
}

impl Options {
    /// Parses `--data DIR ["STATEMENT"] [--args JSON]`.
    pub fn parse(args: &[String], with_statement: bool) -> Result<Options, String> {
        let (mut data, mut statement, mut json) = (None, None, None);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--data" => data = Some(PathBuf::from(it.next().ok_or("--data needs a directory")?)),
                "--args" => json = Some(it.next().ok_or("--args needs a JSON object")?.clone()),
                s if with_statement && statement.is_none() && !s.starts_with("--") => statement = Some(s.to_string()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        let data = data.ok_or("--data DIR is required")?;
        if with_statement && statement.is_none() {
            return Err("a statement is required".into());
        }
        Ok(Options {
            data,
            statement,
            args: json,
        })
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Entropy for a new store's identity: the OS's, via the standard library's
/// randomly keyed hasher (no extra dependency), mixed with time and pid.
fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.write_u32(std::process::id());
    h.finish()
}

fn open(dir: &std::path::Path) -> Result<Store<LmdbKv>, String> {
    let kv = LmdbKv::open(dir, &LmdbConfig::default()).map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
    let seed = entropy();
    Store::open(kv, StoreConfig::default(), PeerId(seed | 1), seed).map_err(|e| e.to_string())
}

fn print(out: &Output) {
    for item in &out.items {
        println!("{item}");
    }
    if !out.mutated.is_empty() || out.items.is_empty() {
        let mutated = Value::Array(out.mutated.clone());
        if !out.mutated.is_empty() {
            println!("{{\"mutated\":{mutated}}}");
        }
    }
}

fn run_one(store: &Store<LmdbKv>, prepared: &Prepared, text: &str, args: Option<&str>) -> Result<Output, String> {
    let args = match args {
        Some(a) => Value::parse(a).map_err(|e| format!("--args: {e}"))?,
        None => Value::Null,
    };
    let params = dql::params_from_json(&args).map_err(|e| e.to_string())?;
    let stmt = prepared.get(text).map_err(|e| e.to_string())?;
    dql::execute(store, &stmt, &params, now_ms())
        .map(|(out, _)| out)
        .map_err(|e| e.to_string())
}

/// `rhizome exec --data DIR "STATEMENT" [--args JSON]`
pub fn exec(opts: &Options) -> ExitCode {
    let result = open(&opts.data).and_then(|store| {
        run_one(
            &store,
            &Prepared::new(),
            opts.statement.as_deref().unwrap_or(""),
            opts.args.as_deref(),
        )
    });
    match result {
        Ok(out) => {
            print(&out);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `rhizome shell --data DIR`: an interactive prompt with history, like
/// psql: a statement may span lines and runs when a line ends with `;`;
/// `.quit` leaves.
pub fn shell(opts: &Options) -> ExitCode {
    let store = match open(&opts.data) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let history = opts.data.join(".rhizome_history");
    let _ = editor.load_history(&history);
    let prepared = Prepared::new();
    println!(
        "rhizome shell on {} (peer {}). End statements with ';'. .quit to leave.",
        opts.data.display(),
        store.peer()
    );
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() { "dql> " } else { "...> " };
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(_) => break,
        };
        let t = line.trim();
        if pending.is_empty() && (t == ".quit" || t == ".exit") {
            break;
        }
        if t.is_empty() {
            continue;
        }
        pending.push_str(&line);
        pending.push('\n');
        if !t.ends_with(';') {
            continue;
        }
        let text = std::mem::take(&mut pending);
        let _ = editor.add_history_entry(text.trim());
        match run_one(&store, &prepared, text.trim().trim_end_matches(';'), None) {
            Ok(out) => {
                print(&out);
                if out.items.is_empty() && out.mutated.is_empty() {
                    println!("ok");
                }
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    let _ = editor.save_history(&history);
    ExitCode::SUCCESS
}
