//! Command-line definitions: every subcommand with its one-line help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Real-time stream processing in one binary: SQL pipelines over Arrow.
#[derive(Debug, Parser)]
#[command(name = "runnel", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: info, -vv: debug). RUNNEL_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// runnel's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The camera demo in one process: log, server, dashboard, 4 simulated cameras,
    /// classification and object detection (open the printed URL; Ctrl-C to stop)
    Demo(crate::cmd::demo::DemoArgs),
    /// Run a SQL pipeline until its bounded sources end (or Ctrl-C)
    Run(RunArgs),
    /// Ad-hoc bounded SQL over what runnel stored (log topics, Parquet directories, Delta
    /// tables), printed as a table, JSON or CSV
    Query(crate::cmd::query::QueryArgs),
    /// Plan a SQL pipeline and run every health check (inputs, log topics, checkpoint
    /// location) without running it; exit 0 when all pass, 1 otherwise
    Check(crate::cmd::check::CheckArgs),
    /// Manage distributed pipelines (`reset`: delete repartition topics and checkpoints)
    #[command(subcommand)]
    Pipeline(crate::cmd::pipeline::PipelineCommand),
    /// List the connectors and their WITH (…) options
    Connectors(crate::cmd::connectors::ListArgs),
    /// List the SET settings a script can use
    Settings(crate::cmd::connectors::ListArgs),
    /// Simulate cameras that POST a JPEG every 1/F seconds to a runnel server
    CameraSim(crate::cmd::camera_sim::CameraSimArgs),
    /// Measure speed: Nexmark queries, the log, HTTP ingest, image classification
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print records of a topic as NDJSON (from --data-dir or a server's --url)
    Consume(crate::cmd::consume::ConsumeArgs),
    /// Append records (JSON lines by default) from stdin or a file to a topic
    Produce(crate::cmd::produce::ProduceArgs),
    /// Serve the HTTP API, the page and the log in --data-dir, and host the pipelines
    /// submitted to it (POST /api/pipelines; kept in --data-dir and resumed at restart)
    Serve(crate::cmd::serve::ServeArgs),
    /// An interactive SQL shell: declare tables, submit pipelines, watch a SELECT's rows
    /// live (in this process on --data-dir, or on a server with --server)
    Sql(crate::cmd::sql::SqlArgs),
    /// Create, list and describe topics of the log (in --data-dir or on a server's --url)
    #[command(subcommand)]
    Topics(crate::cmd::topics::TopicsCommand),
}

/// `runnel run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The SQL script: CREATE TABLE / CREATE VIEW / INSERT INTO / SET statements
    pub pipeline: PathBuf,
    /// Subtasks per operator (default: SET 'parallelism.default', else the number of cores)
    #[arg(short, long)]
    pub parallelism: Option<usize>,
    /// Directory for runnel's files (log, checkpoints)
    #[arg(long, default_value = "runnel-data")]
    pub data_dir: PathBuf,
    /// Print the planned dataflow graph and exit without running it
    #[arg(long)]
    pub explain: bool,
    /// Also serve the HTTP ingest API on this address (e.g. 127.0.0.1:8080), so clients
    /// can POST records into the log topics the pipeline reads
    #[arg(long)]
    pub listen: Option<String>,
    /// Authentication and how the server is reached
    #[command(flatten)]
    pub http: HttpArgs,
    /// Ignore earlier checkpoints of this pipeline and start over
    #[arg(long)]
    pub from_scratch: bool,
    /// This member's stable identity in a distributed pipeline (SET 'execution.mode' =
    /// 'distributed'): a member restarted with the same id within the session timeout gets
    /// its partitions back (default: host name and process id)
    #[arg(long, value_name = "ID")]
    pub worker_id: Option<String>,
}

/// `runnel bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Nexmark queries on the built-in generator; prints events_per_s= last
    Nexmark(NexmarkArgs),
    /// Embedded log append (fsync group commit) and read throughput; prints records_per_s= last
    Log(crate::cmd::bench_log::BenchLogArgs),
    /// HTTP ingest ack latency at a fixed rate (default 10 000 records/s); prints p99_us= last
    Ingest(crate::cmd::bench_log::BenchIngestArgs),
    /// Image classification (decode + resize + inference): images/s and latency
    Vision(crate::cmd::bench_vision::BenchVisionArgs),
    /// Parquet and Delta Lake: Nexmark bids written exactly once, rows/s and bytes/row,
    /// beside DuckDB's COPY to Parquet
    Warehouse(crate::cmd::bench_warehouse::BenchWarehouseArgs),
    /// Kafka: Nexmark bids produced into a topic, then copied at each delivery guarantee
    #[cfg(feature = "kafka")]
    Kafka(crate::cmd::bench_kafka::BenchKafkaArgs),
    /// PostgreSQL: Nexmark bids appended and upserted by the postgres sink, beside psql's COPY
    #[cfg(feature = "postgres")]
    Postgres(crate::cmd::bench_postgres::BenchPostgresArgs),
}

/// Nexmark queries `runnel bench nexmark` can run (their SQL: `src/cmd/nexmark/*.sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NexmarkQuery {
    /// Pass-through of bids
    Q0,
    /// Bid price converted to euros (DECIMAL)
    Q1,
    /// Bids on auctions whose id is a multiple of 123
    Q2,
    /// Local item suggestion: auctions joined with their sellers (regular join)
    Q3,
    /// Average winning price per category (join, aggregate over an updating aggregate)
    Q4,
    /// Hot items: bids per auction per HOP 10 s / 2 s window, keep each window's maximum
    Q5,
    /// Highest bid: bids joined with their 10 s window's maximum price
    Q7,
    /// Only the maximum price per 10 s window (the simplified q7 of earlier benchmarks)
    Q7Max,
    /// Monitor new users: people and their auctions in the same 10 s window (window join)
    Q8,
    /// Winning bids: join and ROW_NUMBER per auction
    Q9,
    /// Log to file system: every bid into day/minute partitions (PARTITIONED BY
    /// filesystem sink with _SUCCESS files; --output names the directory)
    Q10,
    /// User sessions: bids per bidder per 10 s-gap session (legacy SESSION group window)
    Q11,
    /// Bids per bidder per 10 s of processing time (PROCTIME window)
    Q12,
    /// Bounded side input join: bids enriched from a CSV file (lookup join, FOR
    /// SYSTEM_TIME AS OF PROCTIME)
    Q13,
    /// Calculation: filter, CASE over HOUR(), character counts
    Q14,
    /// Bidding statistics per day (COUNT DISTINCT with FILTER, updating)
    Q15,
    /// Channel statistics per day (COUNT DISTINCT with FILTER, updating)
    Q16,
    /// Auction statistics per day (counts, min, max, avg, sum, updating)
    Q17,
    /// Last bid per bidder and auction (deduplication)
    Q18,
    /// Top 10 bids per auction (Top-N)
    Q19,
    /// Bids joined with their auction, category 10 (regular join)
    Q20,
    /// Channel id from a CASE or REGEXP_EXTRACT
    Q21,
    /// URL directories with SPLIT_INDEX
    Q22,
    /// Count, sum and max of bids per auction per 10 s tumbling window
    Tumble,
    /// q0 with a CHECK rule on its sink (the cost of a validation rule)
    Q0Check,
    /// Keep-first deduplication on processing time per bidder and auction
    DedupFirst,
    /// z-score and moving average of each bid over its auction's last 20 bids (OVER)
    OverOutlier,
}

/// `runnel bench nexmark`.
#[derive(Debug, Args)]
pub struct NexmarkArgs {
    /// Which query
    #[arg(long, value_enum)]
    pub query: NexmarkQuery,
    /// Generator events (person, auction and bid together, 1:3:46)
    #[arg(long, default_value_t = 10_000_000)]
    pub events: u64,
    /// Subtasks per operator
    #[arg(short, long, default_value_t = 2)]
    pub parallelism: usize,
    /// Take checkpoints this often (e.g. '10 s'); default: none
    #[arg(long)]
    pub checkpoint_interval: Option<String>,
    /// Events per second of event time in the generator
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Write the query's results (as a JSON changelog) to this file instead of
    /// discarding them (q10: the directory of its partitions)
    #[arg(long, value_name = "PATH")]
    pub output: Option<std::path::PathBuf>,
    /// Print the pipeline's SQL and exit
    #[arg(long)]
    pub print_sql: bool,
    /// Run Flink's own Nexmark SQL from this directory instead (nexmark-flink's
    /// `src/main/resources/queries`: ddl_gen.sql, ddl_views.sql and qN.sql, unchanged;
    /// their ${…} variables are filled in from --events and --rate)
    #[arg(long, value_name = "DIR")]
    pub flink_queries: Option<std::path::PathBuf>,
}

/// How the HTTP server is protected and reached (`run --listen`, `serve`, `demo`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HttpArgs {
    /// Require this bearer token (at least 16 characters) on every API, ingest and
    /// dashboard request; needed to listen on a non-loopback address
    #[arg(long, env = "RUNNEL_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// The URL users reach the server at (behind a proxy or under a DNS name): its host
    /// is accepted in Host headers besides loopback names and the bound address
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key; both are read again
    /// on SIGHUP)
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Serve HTTPS with a certificate generated at start for localhost (prints its
    /// SHA-256 fingerprint; for trying TLS out)
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self_signed: bool,
}

impl HttpArgs {
    /// The server's settings.
    pub fn config(&self) -> runnel_server::HttpConfig {
        use runnel_server::tls::TlsSource;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ if self.tls_self_signed => Some(TlsSource::SelfSigned),
            _ => None,
        };
        runnel_server::HttpConfig {
            token: self.auth_token.clone(),
            public_url: self.public_url.clone(),
            tls,
        }
    }
}

/// How a client command reaches a server's `--url`: its token and, over `https://`, which
/// certificates it trusts (`topics`, `produce`, `consume`, `cameras`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// Bearer token of a server started with --auth-token
    #[arg(long, env = "RUNNEL_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// For an https:// URL: trust the certificates in this PEM file (a CA, or the
    /// server's own certificate) instead of the system's CAs
    #[arg(long, value_name = "PEM", env = "RUNNEL_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// For an https:// URL: trust the server's certificate by its SHA-256 fingerprint (the
    /// one a --tls-self-signed server prints)
    #[arg(
        long,
        value_name = "HEX",
        env = "RUNNEL_TLS_FINGERPRINT",
        conflicts_with = "tls_ca"
    )]
    pub tls_fingerprint: Option<String>,
}

impl ClientArgs {
    /// The client's settings.
    pub fn options(&self) -> runnel_server::client::ClientOptions {
        use runnel_server::client::Trust;
        let trust = match (&self.tls_ca, &self.tls_fingerprint) {
            (Some(path), _) => Trust::CaFile(path.clone()),
            (None, Some(hex)) => Trust::Fingerprint(hex.clone()),
            (None, None) => Trust::System,
        };
        runnel_server::client::ClientOptions {
            token: self.auth_token.clone(),
            trust,
        }
    }

    /// A client for `url` with these settings.
    pub fn client(&self, url: &str) -> anyhow::Result<runnel_server::client::HttpClient> {
        runnel_server::client::HttpClient::with_options(url, &self.options())
            .map_err(|e| anyhow::anyhow!("--url {url}: {e}"))
    }
}

/// Prints where a started server listens, with its certificate's fingerprint under TLS.
pub fn announce(server: &runnel_server::Server, what: &str) {
    eprintln!("runnel: {what} on {}", server.url());
    if let Some(tls) = &server.tls {
        eprintln!("runnel: TLS certificate SHA-256 {}", tls.fingerprint());
    }
}
