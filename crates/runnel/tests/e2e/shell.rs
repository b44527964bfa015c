//! `runnel sql`, driven through a pseudo-terminal (tmux) as a user types: multi-line
//! statements, SHOW / DESCRIBE, a live SELECT whose rows change in place as more data
//! arrives, INSERT submitting a pipeline, history; and from a file, in this process.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::TestDir;
use crate::log_cli::{Server, free_port, http};

/// A tmux session running one command in a 160×50 terminal; killed when dropped.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(dir: &Path, command: &str) -> Tmux {
        let name = format!("runnel-sql-{}-{}", std::process::id(), free_port());
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x", "160", "-y", "50"])
            .arg(command)
            .current_dir(dir)
            .status()
            .expect("running tmux (apt-get install tmux)");
        assert!(status.success(), "tmux new-session failed");
        Tmux { name }
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    /// Types `line` and presses Enter.
    fn line(&self, line: &str) {
        // tmux takes a `;` ending an argument for a command separator: escape it.
        let text = match line.strip_suffix(';') {
            Some(head) => format!("{head}\\;"),
            None => line.to_string(),
        };
        self.keys(&["-l", &text]);
        self.keys(&["Enter"]);
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name, "-S", "-300"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `want` (and, when given, no longer `gone`).
    fn wait_for(&self, want: &str, gone: Option<&str>) -> String {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let screen = self.screen();
            if screen.contains(want) && gone.is_none_or(|g| !screen.contains(g)) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the shell never showed {want:?}{}:\n{screen}",
                gone.map(|g| format!(" without {g:?}")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

fn post_sales(port: u16, rows: &str) {
    let (status, body) = http(
        port,
        "POST",
        "/v1/topics/sales/records",
        &[("Content-Type", "application/x-ndjson")],
        rows.as_bytes(),
    )
    .expect("POST sales");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn sql_shell_against_a_server_live_select_insert_and_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _server = Server::start(dir.path(), port, &["--auto-create"]);
    post_sales(
        port,
        "{\"shop\":\"north\",\"amount\":10}\n{\"shop\":\"south\",\"amount\":5}\n{\"shop\":\"north\",\"amount\":20}\n",
    );
    let shell = Tmux::start(
        dir.path(),
        &format!(
            "HOME={} RUNNEL_LOG=error {} sql --server http://127.0.0.1:{port}; sleep 30",
            dir.path().display(),
            env!("CARGO_BIN_EXE_runnel")
        ),
    );
    shell.wait_for("runnel>", None);
    // A statement over two lines.
    shell.line("CREATE TABLE sales (shop STRING, amount BIGINT)");
    shell.wait_for("     ->", None);
    shell.line("  WITH (connector = 'log', topic = 'sales', format = 'json');");
    shell.wait_for("[ok] table 'sales' created", None);
    shell.line("SHOW TABLES;");
    shell.wait_for("log topic", None);
    shell.line("DESCRIBE sales;");
    shell.wait_for("amount | BIGINT", None);
    shell.line("SELEC 1;");
    shell.wait_for("not a statement the shell knows", None);

    // A live, updating query: totals change in place as rows arrive.
    shell.line("SELECT shop, SUM(amount) AS total FROM sales GROUP BY shop;");
    shell.wait_for("north |    30", None);
    post_sales(
        port,
        "{\"shop\":\"north\",\"amount\":15}\n{\"shop\":\"east\",\"amount\":1}\n",
    );
    let screen = shell.wait_for("north |    45", Some("north |    30"));
    assert!(screen.contains("east  |     1"), "{screen}");
    assert!(screen.contains("3 rows"), "{screen}");
    shell.keys(&["C-c"]);
    shell.wait_for("(stopped; 3 rows)", None);

    // INSERT submits a pipeline that keeps running on the server.
    shell.line("SET 'pipeline.name' = 'big-sales';");
    shell.wait_for("[ok] setting kept", None);
    shell.line(
        "CREATE TABLE big (shop STRING, amount BIGINT) WITH (connector = 'log', topic = 'big', format = 'json');",
    );
    shell.wait_for("[ok] table 'big' created", None);
    shell.line("INSERT INTO big SELECT shop, amount FROM sales WHERE amount > 12;");
    shell.wait_for("[ok] submitted pipeline 'big-sales'", None);
    shell.line("SHOW PIPELINES;");
    shell.wait_for("big-sales | running", None);
    let (status, body) = http(port, "GET", "/api/pipelines/big-sales", &[], b"").expect("GET");
    assert_eq!(status, 200, "{body}");

    // History: the previous statement again with the up arrow.
    shell.line("HELP");
    shell.wait_for("STOP PIPELINE p", None);
    shell.keys(&["Up", "Up", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while shell.screen().matches("big-sales | running").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "history did not recall SHOW PIPELINES"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    shell.line("STOP PIPELINE big-sales;");
    shell.wait_for("[ok] pipeline 'big-sales' is stopped", None);
    shell.line("QUIT");
    // The history file is rewritten after every line: read it once it settles.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let history =
            std::fs::read_to_string(dir.path().join(".runnel_sql_history")).unwrap_or_default();
        if history.contains("SHOW PIPELINES;") && history.contains("QUIT") {
            break;
        }
        assert!(Instant::now() < deadline, "history file: {history}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sql_shell_runs_a_file_in_this_process() {
    let dir = TestDir::new();
    dir.write("shops.csv", "shop,amount\nnorth,10\nsouth,5\nnorth,20\n");
    dir.write(
        "session.sql",
        "CREATE TABLE shops (shop STRING, amount BIGINT)\n  WITH (connector = 'filesystem', path = 'shops.csv', format = 'csv');\n\
         SHOW TABLES;\nDESCRIBE shops;\nEXPLAIN SELECT shop, SUM(amount) FROM shops GROUP BY shop;\n\
         SELECT shop, SUM(amount) AS total FROM shops GROUP BY shop ORDER BY shop;\n\
         SELECT nope FROM shops;\n",
    );
    let out = dir.runnel(&["sql", "--data-dir", "data", "-f", "session.sql"]);
    out.assert_ok();
    let text = &out.stdout;
    assert!(text.contains("[ok] table 'shops' created"), "{text}");
    assert!(text.contains("shops | table"), "{text}");
    assert!(text.contains("amount | BIGINT"), "{text}");
    assert!(text.contains("north |    30"), "{text}");
    assert!(text.contains("south |     5"), "{text}");
    assert!(text.contains("the query ended"), "{text}");
    assert!(text.contains("error:") && text.contains("nope"), "{text}");
}
