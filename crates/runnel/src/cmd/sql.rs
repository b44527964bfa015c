//! `runnel sql`: an interactive SQL shell, as Flink's SQL client is one.
//!
//! Statements end with `;` and may span lines; the history is kept in
//! `~/.runnel_sql_history`. `SET` and `CREATE TABLE` / `CREATE VIEW` build up the
//! session; `INSERT INTO …` submits the session plus the insert as a pipeline; a bare
//! `SELECT …` runs as a temporary query whose rows are shown as a table that updates in
//! place (rows change and disappear as retractions arrive) until it ends or Ctrl-C.
//! `SHOW TABLES`, `SHOW PIPELINES`, `DESCRIBE t`, `EXPLAIN …`, `STOP PIPELINE p`,
//! `START PIPELINE p` and `HELP` do what they say.
//!
//! Without `--server` everything runs in this process on `--data-dir` (the same
//! pipelines a `runnel serve` on that directory hosts); with it, on that server.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use runnel_runtime::host::{Host, Hosted, QueryView};
use runnel_server::client::{ClientOptions, HttpClient, Trust};
use serde_json::Value;

/// `runnel sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// Work against this runnel server (`runnel serve`) instead of in this process
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token of --server
    #[arg(long, env = "RUNNEL_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Data directory when running in this process (log, pipelines, checkpoints)
    #[arg(long, default_value = "runnel-data")]
    pub data_dir: PathBuf,
    /// Run the statements of this file and exit instead of prompting
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Most rows a live query shows at once
    #[arg(long, default_value_t = 20)]
    pub max_rows: usize,
}

/// Runs the shell until `QUIT`, Ctrl-D, or the end of `--file`.
pub async fn sql(args: SqlArgs) -> anyhow::Result<()> {
    let backend = match &args.server {
        Some(url) => {
            let client = HttpClient::with_options(
                url,
                &ClientOptions {
                    token: args.auth_token.clone(),
                    trust: Trust::System,
                },
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let b = Backend::Remote(client);
            b.pipelines()
                .await
                .with_context(|| format!("cannot reach the runnel server at {url}"))?;
            b
        }
        None => {
            let mut resources = runnel_runtime::Resources::new(&args.data_dir);
            resources.open_log().await.with_context(|| {
                format!(
                    "opening the log in {} (a `runnel serve` on it? then use --server)",
                    args.data_dir.display()
                )
            })?;
            Backend::Embedded(Host::open(resources).await)
        }
    };
    let mut shell = Shell {
        backend,
        session: Vec::new(),
        max_rows: args.max_rows,
        live: std::io::stdout().is_terminal(),
    };
    if let Some(file) = &args.file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for statement in split_statements(&text).0 {
            println!("runnel> {statement}");
            if !shell.execute(&statement).await? {
                break;
            }
        }
        return Ok(());
    }
    println!(
        "runnel SQL shell ({}). Statements end with ';'. HELP; for help, QUIT; to leave.",
        match &args.server {
            Some(url) => format!("server {url}"),
            None => format!("in this process, data in {}", args.data_dir.display()),
        }
    );
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::channel::<Option<String>>(1);
    let (ask_tx, ask_rx) = std::sync::mpsc::channel::<&'static str>();
    // The line editor blocks: it runs on a thread of its own and is asked for a line
    // with the prompt to show.
    std::thread::spawn(move || read_lines(ask_rx, lines_tx));
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() {
            "runnel> "
        } else {
            "     -> "
        };
        if ask_tx.send(prompt).is_err() {
            break;
        }
        let Some(line) = lines_rx.recv().await.flatten() else {
            break;
        };
        if line == "\u{3}" {
            // Ctrl-C at the prompt: drop the statement being typed.
            pending.clear();
            continue;
        }
        if pending.is_empty() && is_bare_command(&line) {
            if !shell.execute(line.trim()).await? {
                break;
            }
            continue;
        }
        pending.push_str(&line);
        pending.push('\n');
        let (statements, rest) = split_statements(&pending);
        pending = rest;
        let mut quit = false;
        for statement in statements {
            if !shell.execute(&statement).await? {
                quit = true;
                break;
            }
        }
        if quit {
            break;
        }
    }
    Ok(())
}

/// `QUIT`, `EXIT` and `HELP` work without a `;`.
fn is_bare_command(line: &str) -> bool {
    let l = line.trim().trim_end_matches(';').to_ascii_uppercase();
    matches!(l.as_str(), "QUIT" | "EXIT" | "HELP" | "\\Q")
}

/// The line editor's thread: a line per prompt asked for; `None` at Ctrl-D, `"\u{3}"` at
/// Ctrl-C.
fn read_lines(
    asks: std::sync::mpsc::Receiver<&'static str>,
    lines: tokio::sync::mpsc::Sender<Option<String>>,
) {
    let history = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".runnel_sql_history"))
        .unwrap_or_else(|| PathBuf::from(".runnel_sql_history"));
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("runnel sql: no line editor ({e})");
            let _ = lines.blocking_send(None);
            return;
        }
    };
    let _ = editor.load_history(&history);
    while let Ok(prompt) = asks.recv() {
        let line = match editor.readline(prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                    let _ = editor.save_history(&history);
                }
                Some(line)
            }
            Err(rustyline::error::ReadlineError::Interrupted) => Some("\u{3}".into()),
            Err(_) => None,
        };
        let end = line.is_none();
        if lines.blocking_send(line).is_err() || end {
            return;
        }
    }
}

/// Splits `text` into complete statements (each ending with `;`, outside quotes and
/// comments; returned without it) and what is left over.
pub(crate) fn split_statements(text: &str) -> (Vec<String>, String) {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    let mut quote: Option<char> = None;
    while let Some((i, c)) = chars.next() {
        match quote {
            Some('-') => {
                if c == '\n' {
                    quote = None;
                }
            }
            Some('*') => {
                if c == '*' && chars.peek().is_some_and(|(_, n)| *n == '/') {
                    chars.next();
                    quote = None;
                }
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' | '`' => quote = Some(c),
                '-' if chars.peek().is_some_and(|(_, n)| *n == '-') => quote = Some('-'),
                '/' if chars.peek().is_some_and(|(_, n)| *n == '*') => {
                    chars.next();
                    quote = Some('*');
                }
                ';' => {
                    let statement = text[start..i].trim();
                    if !strip_comments(statement).is_empty() {
                        out.push(statement.to_string());
                    }
                    start = i + 1;
                }
                _ => {}
            },
        }
    }
    let rest = text[start..].trim_start();
    let rest = if strip_comments(rest).is_empty() {
        String::new()
    } else {
        rest.to_string()
    };
    (out, rest)
}

/// `text` without `--` comment lines, trimmed.
fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// The statement's first `n` words, upper-cased.
fn words(statement: &str, n: usize) -> Vec<String> {
    strip_comments(statement)
        .split_whitespace()
        .take(n)
        .map(|w| w.trim_end_matches(';').to_ascii_uppercase())
        .collect()
}

/// Where the shell's statements go: this process, or a server.
enum Backend {
    Embedded(Host),
    Remote(HttpClient),
}

impl Backend {
    async fn call(
        &self,
        method: &str,
        path: &str,
        ty: &str,
        body: String,
    ) -> anyhow::Result<Value> {
        let Backend::Remote(client) = self else {
            bail!("not a server");
        };
        let method = hyper::Method::from_bytes(method.as_bytes()).context("an HTTP method")?;
        let answer = client
            .request(method, path, &[("Content-Type", ty)], body)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if !answer.is_success() {
            let json = answer.json();
            let detail = json["detail"]
                .as_str()
                .map_or_else(|| answer.text(), str::to_string);
            bail!("{detail}");
        }
        Ok(answer.json())
    }

    async fn submit(&self, script: &str, name: Option<&str>) -> anyhow::Result<Hosted> {
        match self {
            Backend::Embedded(host) => Ok(host.submit(script, name).await?),
            Backend::Remote(_) => {
                let mut body = serde_json::json!({ "sql": script });
                if let Some(name) = name {
                    body["name"] = name.into();
                }
                let body = body.to_string();
                let v = self
                    .call("POST", "/api/pipelines", "application/json", body)
                    .await?;
                Ok(serde_json::from_value(v).context("the server's answer")?)
            }
        }
    }

    async fn control(&self, name: &str, action: &str) -> anyhow::Result<Hosted> {
        match self {
            Backend::Embedded(host) => Ok(match action {
                "stop" => host.stop(name, None).await?,
                _ => host.start(name, None).await?,
            }),
            Backend::Remote(_) => {
                let v = self
                    .call(
                        "POST",
                        &format!("/api/pipelines/{name}/{action}"),
                        "text/plain",
                        String::new(),
                    )
                    .await?;
                Ok(serde_json::from_value(v).context("the server's answer")?)
            }
        }
    }

    /// Name, state and a note per pipeline.
    async fn pipelines(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        match self {
            Backend::Embedded(host) => Ok(host
                .list()
                .await
                .into_iter()
                .map(|h| {
                    let note = h.error.or(h.savepoint.map(|s| format!("savepoint {s}")));
                    (h.name, h.state, note.unwrap_or_default())
                })
                .collect()),
            Backend::Remote(_) => {
                let v = self
                    .call("GET", "/api/pipelines", "text/plain", String::new())
                    .await?;
                Ok(v["pipelines"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .map(|p| {
                                let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                                let note = match (p["error"].as_str(), p["savepoint"].as_str()) {
                                    (Some(e), _) => e.to_string(),
                                    (None, Some(sp)) => format!("savepoint {sp}"),
                                    _ => String::new(),
                                };
                                (s("name"), s("state"), note)
                            })
                            .collect()
                    })
                    .unwrap_or_default())
            }
        }
    }

    async fn topics(&self) -> anyhow::Result<Vec<String>> {
        match self {
            Backend::Embedded(_) => Ok(Vec::new()),
            Backend::Remote(_) => {
                let v = self
                    .call("GET", "/v1/topics", "text/plain", String::new())
                    .await?;
                Ok(v["topics"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .filter_map(|t| t["name"].as_str().or(t.as_str()).map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default())
            }
        }
    }

    async fn query(&self, script: &str) -> anyhow::Result<QueryView> {
        match self {
            Backend::Embedded(host) => Ok(host.query(script).await?),
            Backend::Remote(_) => {
                let v = self
                    .call("POST", "/api/queries", "text/plain", script.to_string())
                    .await?;
                Ok(serde_json::from_value(v).context("the server's answer")?)
            }
        }
    }

    async fn view(&self, id: u64, max_rows: usize) -> anyhow::Result<QueryView> {
        match self {
            Backend::Embedded(host) => Ok(host.query_view(id, max_rows)?),
            Backend::Remote(_) => {
                let v = self
                    .call(
                        "GET",
                        &format!("/api/queries/{id}?max_rows={max_rows}"),
                        "text/plain",
                        String::new(),
                    )
                    .await?;
                Ok(serde_json::from_value(v).context("the server's answer")?)
            }
        }
    }

    async fn cancel(&self, id: u64) {
        match self {
            Backend::Embedded(host) => {
                let _ = host.cancel_query(id);
            }
            Backend::Remote(_) => {
                let _ = self
                    .call(
                        "DELETE",
                        &format!("/api/queries/{id}"),
                        "text/plain",
                        String::new(),
                    )
                    .await;
            }
        }
    }
}

/// The shell's state: where statements go and the session's SET / CREATE statements.
struct Shell {
    backend: Backend,
    /// (kind, name, statement) in the order given: kind is `set`, `table` or `view`.
    session: Vec<(String, String, String)>,
    max_rows: usize,
    /// Redraw live results in place (stdout is a terminal).
    live: bool,
}

const HELP: &str = "\
Statements end with ';' and may span lines.
  SET 'key' = 'value';          a setting for the pipelines and queries of this session
  SET;  RESET;                  show / clear the session's settings
  CREATE TABLE … WITH (…);      declare a table (CREATE VIEW … AS SELECT … too)
  DROP TABLE t;                 forget a table or view of the session
  SHOW TABLES;                  the session's tables and views, and the log's topics
  DESCRIBE t;                   a table's columns and types
  EXPLAIN <INSERT or SELECT>;   the planned dataflow
  INSERT INTO t SELECT …;       submit the session and the insert as a pipeline
  SELECT …;                     run a temporary query, its rows live (Ctrl-C ends it)
  SHOW PIPELINES;               the submitted pipelines and their state
  STOP PIPELINE p;              take a savepoint and stop it;  START PIPELINE p; resume it
  QUIT                          leave (Ctrl-D too)
Tables the session does not declare are looked up among the log's topics.";

impl Shell {
    /// The session's statements as a script, each ending with `;`.
    fn script(&self) -> String {
        self.session
            .iter()
            .map(|(_, _, s)| format!("{s};\n"))
            .collect()
    }

    /// Runs one statement; `false` to quit. Errors of a statement are printed, not
    /// returned: the shell goes on.
    async fn execute(&mut self, statement: &str) -> anyhow::Result<bool> {
        match self.dispatch(statement).await {
            Ok(go_on) => Ok(go_on),
            Err(e) => {
                println!("error: {e:#}");
                Ok(true)
            }
        }
    }

    async fn dispatch(&mut self, statement: &str) -> anyhow::Result<bool> {
        let w = words(statement, 3);
        let w: Vec<&str> = w.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["QUIT" | "EXIT" | "\\Q", ..] => return Ok(false),
            ["HELP", ..] => println!("{HELP}"),
            ["SHOW", "TABLES", ..] => self.show_tables().await?,
            ["SHOW", "PIPELINES" | "JOBS", ..] => self.show_pipelines().await?,
            ["DESCRIBE" | "DESC", ..] => {
                let name = statement.split_whitespace().nth(1).unwrap_or_default();
                self.describe(name.trim_end_matches(';')).await?;
            }
            ["EXPLAIN", ..] => self.explain(statement)?,
            ["SET"] => {
                for (kind, _, s) in &self.session {
                    if kind == "set" {
                        println!("{s};");
                    }
                }
            }
            ["RESET", ..] => {
                self.session.retain(|(kind, _, _)| kind != "set");
                println!("the session's settings are cleared");
            }
            ["SET", ..] => {
                let script = format!("{}{statement};\n", self.script());
                let statements = runnel_sql::parse_script(&script)?;
                runnel_runtime::Settings::from_statements(&statements)?;
                self.session
                    .push(("set".into(), String::new(), statement.to_string()));
                println!("[ok] setting kept for this session");
            }
            ["CREATE", ..] => self.create(statement).await?,
            ["DROP", "TABLE" | "VIEW", ..] => {
                let name = statement
                    .split_whitespace()
                    .nth(2)
                    .unwrap_or_default()
                    .trim_end_matches(';')
                    .trim_matches('`')
                    .to_string();
                let before = self.session.len();
                self.session
                    .retain(|(kind, n, _)| kind == "set" || !n.eq_ignore_ascii_case(&name));
                if self.session.len() == before {
                    bail!("the session has no table or view '{name}'");
                }
                println!("[ok] '{name}' dropped from the session");
            }
            ["INSERT" | "EXECUTE", ..] => self.insert(statement).await?,
            ["STOP", "PIPELINE" | "JOB", ..] | ["START", "PIPELINE" | "JOB", ..] => {
                let name = statement
                    .split_whitespace()
                    .nth(2)
                    .unwrap_or_default()
                    .trim_end_matches(';')
                    .trim_matches(['\'', '`', '"']);
                let action = if w[0] == "STOP" { "stop" } else { "start" };
                let h = self.backend.control(name, action).await?;
                println!(
                    "[ok] pipeline '{}' is {}{}",
                    h.name,
                    h.state,
                    h.savepoint
                        .filter(|_| action == "stop")
                        .map(|s| format!(" (savepoint {s})"))
                        .unwrap_or_default()
                );
            }
            ["SELECT" | "WITH" | "VALUES", ..] => self.select(statement).await?,
            _ => bail!(
                "not a statement the shell knows: {}… (HELP; lists them)",
                statement.chars().take(30).collect::<String>()
            ),
        }
        Ok(true)
    }

    async fn create(&mut self, statement: &str) -> anyhow::Result<()> {
        let mut tokens = statement.split_whitespace().map(|t| t.to_ascii_uppercase());
        tokens.next();
        let mut kind = tokens.next().unwrap_or_default();
        if kind == "TEMPORARY" {
            kind = tokens.next().unwrap_or_default();
        }
        let kind = match kind.as_str() {
            "TABLE" => "table",
            "VIEW" => "view",
            other => bail!("CREATE {other} is not supported here; CREATE TABLE or CREATE VIEW"),
        };
        let name = statement
            .split_whitespace()
            .skip_while(|t| !t.eq_ignore_ascii_case(kind))
            .skip(1)
            .find(|t| {
                !["IF", "NOT", "EXISTS"]
                    .iter()
                    .any(|k| t.eq_ignore_ascii_case(k))
            })
            .unwrap_or_default()
            .split('(')
            .next()
            .unwrap_or_default()
            .trim_matches('`')
            .to_string();
        if name.is_empty() {
            bail!("CREATE {kind} needs a name");
        }
        if self
            .session
            .iter()
            .any(|(k, n, _)| k != "set" && n.eq_ignore_ascii_case(&name))
        {
            bail!("the session has a table or view '{name}' already (DROP TABLE {name}; first)");
        }
        // Planned with a query over it: a bad option or column is reported now.
        let script = format!("{}{statement};\nSELECT * FROM `{name}`;\n", self.script());
        self.plan_query(&script)?;
        self.session
            .push((kind.into(), name.clone(), statement.to_string()));
        println!("[ok] {kind} '{name}' created");
        Ok(())
    }

    /// Plans a query script locally (the tables it reads must be declared, or be topics
    /// of the embedded log) and returns its result table's columns.
    fn plan_query(&self, script: &str) -> anyhow::Result<Vec<(String, String)>> {
        let (data_dir, log) = self.local();
        let mut options = runnel_runtime::PrepareOptions::new("session", data_dir);
        options.from_scratch = true;
        let prepared = runnel_runtime::prepare_query(script, &options, log)?;
        let table = prepared
            .graph
            .query
            .as_ref()
            .map(|q| q.table.clone())
            .unwrap_or_default();
        Ok(prepared
            .tables()
            .find(|(t, _)| t.name == table)
            .map(|(t, _)| {
                t.schema
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), sql_type(f.data_type())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The data directory and log to plan with locally.
    fn local(&self) -> (PathBuf, Option<std::sync::Arc<runnel_log::Log>>) {
        match &self.backend {
            Backend::Embedded(host) => (host.data_dir().to_path_buf(), host.log()),
            Backend::Remote(_) => (std::env::temp_dir(), None),
        }
    }

    async fn show_tables(&self) -> anyhow::Result<()> {
        let mut rows: Vec<Vec<String>> = self
            .session
            .iter()
            .filter(|(k, _, _)| k != "set")
            .map(|(k, n, _)| vec![n.clone(), k.clone()])
            .collect();
        let topics = match &self.backend {
            Backend::Embedded(host) => host.log().map(|l| l.topics()).unwrap_or_default(),
            Backend::Remote(_) => self.backend.topics().await?,
        };
        let mut topics: Vec<String> = topics;
        topics.sort();
        rows.extend(topics.into_iter().map(|t| vec![t, "log topic".into()]));
        print_table(&["name", "kind"], &[false, false], &rows, rows.len());
        Ok(())
    }

    async fn show_pipelines(&self) -> anyhow::Result<()> {
        let rows: Vec<Vec<String>> = self
            .backend
            .pipelines()
            .await?
            .into_iter()
            .map(|(n, s, note)| vec![n, s, note])
            .collect();
        print_table(&["name", "state", "note"], &[false; 3], &rows, rows.len());
        Ok(())
    }

    async fn describe(&self, name: &str) -> anyhow::Result<()> {
        if name.is_empty() {
            bail!("DESCRIBE needs a table name");
        }
        let script = format!(
            "{}SELECT * FROM `{}`;\n",
            self.script(),
            name.trim_matches('`')
        );
        let columns = match self.plan_query(&script) {
            Ok(c) => c,
            Err(e) if matches!(self.backend, Backend::Remote(_)) => {
                // A topic of the server's log: the server infers its columns.
                let view = self.backend.query(&script).await.map_err(|_| e)?;
                self.backend.cancel(view.id).await;
                view.columns
                    .into_iter()
                    .zip(view.numeric)
                    .map(|(c, n)| (c, if n { "numeric" } else { "—" }.to_string()))
                    .collect()
            }
            Err(e) => return Err(e),
        };
        let rows: Vec<Vec<String>> = columns.into_iter().map(|(c, t)| vec![c, t]).collect();
        print_table(&["column", "type"], &[false, false], &rows, rows.len());
        Ok(())
    }

    fn explain(&self, statement: &str) -> anyhow::Result<()> {
        let inner = strip_comments(statement);
        let inner = inner["EXPLAIN".len()..].trim_start();
        let inner = inner
            .strip_prefix("PLAN FOR")
            .or_else(|| inner.strip_prefix("plan for"))
            .unwrap_or(inner)
            .trim();
        let script = format!("{}{inner};\n", self.script());
        let (data_dir, log) = self.local();
        let mut options = runnel_runtime::PrepareOptions::new("session", data_dir);
        options.from_scratch = true;
        let first = words(inner, 1);
        let prepared = if matches!(
            first.first().map(String::as_str),
            Some("INSERT" | "EXECUTE")
        ) {
            runnel_runtime::prepare(&script, &options)?
        } else {
            runnel_runtime::prepare_query(&script, &options, log)?
        };
        print!("{}", prepared.explain());
        Ok(())
    }

    async fn insert(&self, statement: &str) -> anyhow::Result<()> {
        let script = format!("{}{statement};\n", self.script());
        // Named by the session's SET 'pipeline.name', else after the time.
        let named = self
            .session
            .iter()
            .any(|(kind, _, s)| kind == "set" && s.contains("pipeline.name"));
        let name = format!("shell-{}", runnel_common::time::now_ms() / 1000);
        let h = self
            .backend
            .submit(&script, (!named).then_some(name.as_str()))
            .await?;
        println!(
            "[ok] submitted pipeline '{}' ({}); SHOW PIPELINES; follows it, STOP PIPELINE {}; \
             stops it",
            h.name, h.state, h.name
        );
        Ok(())
    }

    async fn select(&self, statement: &str) -> anyhow::Result<()> {
        let script = format!("{}{statement};\n", self.script());
        let mut view = self.backend.query(&script).await?;
        let id = view.id;
        let mut shown = 0usize;
        let stop = tokio::signal::ctrl_c();
        tokio::pin!(stop);
        let mut interrupted = false;
        loop {
            if self.live {
                shown = redraw(&view, self.max_rows, shown);
            }
            if view.state != "running" || interrupted {
                break;
            }
            tokio::select! {
                _ = &mut stop => interrupted = true,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            view = match self.backend.view(id, self.max_rows).await {
                Ok(v) => v,
                Err(e) => {
                    self.backend.cancel(id).await;
                    return Err(e);
                }
            };
        }
        self.backend.cancel(id).await;
        if !self.live {
            print_view(&view, self.max_rows);
        }
        match (&view.error, interrupted) {
            (Some(e), _) => println!("error: {e}"),
            (None, true) => println!("(stopped; {} rows)", view.total),
            (None, false) => println!("({} rows; the query ended)", view.total),
        }
        Ok(())
    }
}

/// Prints `view` over the `shown` lines printed last time; returns the lines printed.
fn redraw(view: &QueryView, max_rows: usize, shown: usize) -> usize {
    let mut out = std::io::stdout().lock();
    if shown > 0 {
        // Up to the first line of the last drawing, and clear to the end of the screen.
        let _ = write!(out, "\x1b[{shown}F\x1b[J");
    }
    let _ = out.flush();
    drop(out);
    print_view(view, max_rows) + 1
}

/// Prints a view's table and its status line; returns the lines of the table.
fn print_view(view: &QueryView, max_rows: usize) -> usize {
    let cols: Vec<&str> = view.columns.iter().map(String::as_str).collect();
    let lines = print_table(&cols, &view.numeric, &view.rows, view.total.min(max_rows));
    let more = view.total.saturating_sub(view.rows.len().min(max_rows));
    println!(
        "{} row{}{} · {}",
        view.total,
        if view.total == 1 { "" } else { "s" },
        if more > 0 {
            format!(" ({more} not shown)")
        } else {
            String::new()
        },
        match view.state.as_str() {
            "running" => "running, Ctrl-C to stop",
            other => other,
        }
    );
    let _ = std::io::stdout().flush();
    lines
}

/// Prints an aligned table of the first `limit` rows; returns the lines printed.
fn print_table(columns: &[&str], numeric: &[bool], rows: &[Vec<String>], limit: usize) -> usize {
    let lines = crate::cmd::query::table_lines(columns, numeric, &rows[..rows.len().min(limit)]);
    for line in &lines {
        println!("{line}");
    }
    lines.len()
}

/// An Arrow type as SQL names it.
fn sql_type(t: &arrow::datatypes::DataType) -> String {
    use arrow::datatypes::DataType as D;
    match t {
        D::Utf8 | D::LargeUtf8 | D::Utf8View => "STRING".into(),
        D::Int8 => "TINYINT".into(),
        D::Int16 => "SMALLINT".into(),
        D::Int32 => "INT".into(),
        D::Int64 => "BIGINT".into(),
        D::Float32 => "FLOAT".into(),
        D::Float64 => "DOUBLE".into(),
        D::Boolean => "BOOLEAN".into(),
        D::Binary | D::LargeBinary | D::BinaryView => "BYTES".into(),
        D::Date32 => "DATE".into(),
        D::Timestamp(_, None) => "TIMESTAMP(3)".into(),
        D::Timestamp(_, Some(_)) => "TIMESTAMP_LTZ(3)".into(),
        D::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        D::List(f) | D::LargeList(f) => format!("ARRAY<{}>", sql_type(f.data_type())),
        D::Struct(fields) => format!(
            "ROW<{}>",
            fields
                .iter()
                .map(|f| format!("{} {}", f.name(), sql_type(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        D::Map(..) => "MAP".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_outside_quotes_and_comments() {
        let (s, rest) = split_statements(
            "SET 'a' = 'x;y';\n-- a comment; with a semicolon\nSELECT `b;c` FROM t /* ; */;\nSELECT 1",
        );
        assert_eq!(
            s,
            vec![
                "SET 'a' = 'x;y'",
                "-- a comment; with a semicolon\nSELECT `b;c` FROM t /* ; */"
            ]
        );
        assert_eq!(rest, "SELECT 1");
        let (s, rest) = split_statements("-- only a comment\n");
        assert!(s.is_empty() && rest.is_empty());
    }

    #[test]
    fn first_words_skip_comments() {
        assert_eq!(words("-- hi\nshow tables;", 2), vec!["SHOW", "TABLES"]);
    }
}
