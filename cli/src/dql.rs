//! `rhizome exec` and `rhizome shell`: DQL against a store on disk.
//!
//! Results print as JSON lines, one document per line; mutations print
//! `{"mutated":[ids]}`. Errors go to stderr and the exit code is non-zero.

use rhizome_engine::dql::{self, exec::Output, Prepared, Transaction};
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

fn print(out: &Output) -> Result<(), String> {
    for item in &out.items {
        println!("{}", item.to_json().map_err(|e| e.to_string())?);
    }
    if !out.mutated.is_empty() {
        println!("{{\"mutated\":{}}}", Value::Array(out.mutated.clone()));
    }
    Ok(())
}

/// The clock `PROFILE` times operators with: microseconds since start.
fn clock_us() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_micros() as u64
}

/// Runs a statement on its own, or inside the shell's open transaction.
fn run_one(
    store: &Store<LmdbKv>,
    tx: Option<&mut Transaction<'_, LmdbKv>>,
    prepared: &Prepared,
    text: &str,
    args: Option<&str>,
) -> Result<Output, String> {
    let args = match args {
        Some(a) => Value::parse(a).map_err(|e| format!("--args: {e}"))?,
        None => Value::Null,
    };
    let params = dql::params_from_json(&args).map_err(|e| e.to_string())?;
    let stmt = prepared.get(text).map_err(|e| e.to_string())?;
    let out = match tx {
        Some(tx) => tx.execute_with(&stmt, &params, Some(&clock_us)),
        None => dql::execute_with(store, &stmt, &params, now_ms(), Some(&clock_us)).map(|(out, _)| out),
    };
    out.map_err(|e| e.to_string())
}

/// A shell command that opens or ends a transaction.
#[derive(Clone, Copy, Debug, PartialEq)]
enum TxCommand {
    Begin,
    Commit,
    Rollback,
}

fn tx_command(text: &str) -> Option<TxCommand> {
    let words: Vec<String> = text.split_whitespace().map(str::to_ascii_uppercase).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["BEGIN"] | ["BEGIN", "TRANSACTION"] | ["START", "TRANSACTION"] => Some(TxCommand::Begin),
        ["COMMIT"] | ["COMMIT", "TRANSACTION"] | ["END"] => Some(TxCommand::Commit),
        ["ROLLBACK"] | ["ROLLBACK", "TRANSACTION"] | ["ABORT"] => Some(TxCommand::Rollback),
        _ => None,
    }
}

/// `rhizome exec --data DIR "STATEMENT" [--args JSON]`
pub fn exec(opts: &Options) -> ExitCode {
    let result = open(&opts.data).and_then(|store| {
        let out = run_one(
            &store,
            None,
            &Prepared::new(),
            opts.statement.as_deref().unwrap_or(""),
            opts.args.as_deref(),
        )?;
        print(&out)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `rhizome shell --data DIR`: an interactive prompt with history, like
/// psql: a statement may span lines and runs when a line ends with `;`;
/// `BEGIN;` ... `COMMIT;` (or `ROLLBACK;`) groups statements into one
/// atomic transaction; `.quit` leaves (rolling back an open transaction).
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
    let mut tx: Option<Transaction<'_, LmdbKv>> = None;
    loop {
        let prompt = match (pending.is_empty(), &tx) {
            (true, None) => "dql> ",
            (true, Some(t)) if t.is_aborted() => "dql!> ",
            (true, Some(_)) => "dql*> ",
            (false, _) => "...> ",
        };
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
        let statement = text.trim().trim_end_matches(';');
        if let Some(command) = tx_command(statement) {
            match shell_tx(&store, &mut tx, command) {
                Ok(note) => println!("{note}"),
                Err(e) => eprintln!("error: {e}"),
            }
            continue;
        }
        match run_one(&store, tx.as_mut(), &prepared, statement, None) {
            Ok(out) => {
                if let Err(e) = print(&out) {
                    eprintln!("error: {e}");
                }
                if out.items.is_empty() && out.mutated.is_empty() {
                    println!("ok");
                }
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    let _ = editor.save_history(&history);
    if tx.is_some() {
        println!("rolled back the open transaction");
    }
    ExitCode::SUCCESS
}

/// Carries out BEGIN, COMMIT or ROLLBACK in the shell.
fn shell_tx<'s>(
    store: &'s Store<LmdbKv>,
    tx: &mut Option<Transaction<'s, LmdbKv>>,
    command: TxCommand,
) -> Result<&'static str, String> {
    match (command, tx.take()) {
        (TxCommand::Begin, None) => {
            *tx = Some(Transaction::begin(store, now_ms()).map_err(|e| e.to_string())?);
            Ok("BEGIN")
        }
        (TxCommand::Begin, open) => {
            *tx = open;
            Err("a transaction is already open; COMMIT or ROLLBACK it first".into())
        }
        (TxCommand::Commit, Some(t)) => t
            .commit()
            .map(|_| "COMMIT")
            .map_err(|e| format!("{e}; nothing was written (ROLLBACK)")),
        (TxCommand::Rollback, Some(t)) => {
            t.rollback();
            Ok("ROLLBACK")
        }
        (_, None) => Err("no transaction is open (BEGIN starts one)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::{tx_command, TxCommand};

    #[test]
    fn transaction_commands_are_recognized_in_any_case() {
        assert_eq!(tx_command("begin"), Some(TxCommand::Begin));
        assert_eq!(tx_command("Begin Transaction"), Some(TxCommand::Begin));
        assert_eq!(tx_command("COMMIT"), Some(TxCommand::Commit));
        assert_eq!(tx_command("rollback"), Some(TxCommand::Rollback));
        assert_eq!(tx_command("SELECT * FROM begin"), None);
    }
}
