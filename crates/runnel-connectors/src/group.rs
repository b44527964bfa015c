//! Membership in a distributed pipeline's Kafka consumer group.
//!
//! Every process running a pipeline with `SET 'execution.mode' = 'distributed'` joins the
//! group `runnel-<pipeline>` as a member, subscribed to the pipeline's input topics. The
//! brokers' group coordinator decides who is in the group; the classic protocol's range
//! assignor (run by the group's leader) gives each member partitions, and gives partition
//! `p` of every input topic to the same member when the topics have as many partitions,
//! so a task (one partition of all inputs, the Kafka Streams unit) has one owner. This
//! module only follows that: it reads no records (assigned partitions are paused at once)
//! and publishes the partitions this member owns on a [`watch`] channel, for the runtime
//! to start and stop tasks. `group.instance.id` is the worker id (static membership: a
//! member restarted within the session timeout gets its partitions back without a
//! rebalance).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::ConnectorError;

/// How to join.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// The first Kafka source table (its brokers and `properties.*` reach the cluster).
    pub table: runnel_common::TableSpec,
    /// The group: `runnel-<pipeline>`.
    pub group: String,
    /// This member's stable identity (`--worker-id`).
    pub instance: String,
    /// The input topics.
    pub topics: Vec<String>,
    /// A member silent this long is out of the group and its partitions move.
    pub session_timeout: Duration,
}

/// What this member owns now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Counts the assignments received; a task fenced under one assignment is not
    /// restarted until a later one gives its partition again.
    pub epoch: u64,
    /// The (topic, partition)s this member owns.
    pub partitions: BTreeSet<(String, i32)>,
}

/// One member of the group, as the coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member's client id (its worker id).
    pub worker: String,
    /// The id the coordinator gave it.
    pub member_id: String,
    /// Where it connects from.
    pub host: String,
    /// The (topic, partition)s it owns.
    pub partitions: BTreeSet<(String, i32)>,
}

/// A joined member; leaves the group when dropped.
pub struct Membership {
    /// The partitions this member owns, updated after every rebalance.
    pub assignment: watch::Receiver<Assignment>,
    /// The group's members, refreshed every few seconds (empty when the brokers do not
    /// describe groups).
    pub members: Arc<Mutex<Vec<MemberInfo>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Joins the group; the assignment arrives on [`Membership::assignment`].
///
/// # Errors
/// Bad client settings; a build without the `kafka` feature.
#[cfg(feature = "kafka")]
pub fn join(config: GroupConfig) -> Result<Membership, ConnectorError> {
    imp::join(config)
}

/// Joins the group (not in this build).
///
/// # Errors
/// Always: the build has no Kafka client.
#[cfg(not(feature = "kafka"))]
pub fn join(_config: GroupConfig) -> Result<Membership, ConnectorError> {
    Err(ConnectorError::Other(
        "distributed mode needs the Kafka client: build with the `kafka` feature".into(),
    ))
}

/// A member's worker id: its client id, or (from brokers that do not report client
/// ids, as tansu) its member id without the `-<uuid>` the coordinator appended to the
/// `group.instance.id` or client id.
fn worker_of(client_id: &str, member_id: &str) -> String {
    if !client_id.is_empty() {
        return client_id.to_string();
    }
    match member_id.len().checked_sub(37) {
        Some(cut)
            if member_id.is_char_boundary(cut)
                && member_id[cut..].starts_with('-')
                && member_id[cut + 1..]
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == '-') =>
        {
            member_id[..cut].to_string()
        }
        _ => member_id.to_string(),
    }
}

/// Asks the group's coordinator to rebalance: member `member_id` (this process's own)
/// leaves the group, so the coordinator starts a new generation, picks a leader among
/// the members that join it, and that leader assigns every partition. The client library
/// notices it was removed and joins again at once (its tasks restart from their
/// checkpoints).
///
/// Why: a coordinator must rebalance when a member's session times out, and Kafka's
/// does. tansu 0.6 (the Kafka-protocol broker the tests run) drops the silent member
/// but keeps the old assignment: the survivors keep their own partitions and the dead
/// member's are read by no one; and when the dead member was the leader, a new member
/// joining waits forever for it. A member leaving makes it pick the leader anew. The
/// runtime notices tasks whose owner is no longer in the group and calls this; against
/// a broker that rebalances by itself the situation does not last and this is never
/// called.
///
/// Speaks the Kafka protocol directly (FindCoordinator v1, LeaveGroup v1), over
/// plaintext only: the client library has no call for it.
///
/// # Errors
/// The table's cluster is reached over TLS or SASL; no broker or coordinator answers;
/// the coordinator refuses.
pub fn request_rebalance(config: &GroupConfig, member_id: &str) -> Result<(), ConnectorError> {
    let err = |m: String| ConnectorError::Other(format!("group '{}': {m}", config.group));
    let mut conn = coordinator(config)?;
    let mut body = Vec::new();
    wire::put_str(&mut body, &config.group);
    wire::put_str(&mut body, member_id);
    let answer = conn
        .call(13, 1, &body)
        .map_err(|e| err(format!("leaving to ask for a rebalance: {e}")))?;
    let mut r = wire::Reader(&answer);
    match (r.i32(), r.i16()) {
        (Some(_), Some(0)) => Ok(()),
        (_, code) => Err(err(format!(
            "leaving to ask for a rebalance: error {code:?}"
        ))),
    }
}

/// A connection to the group's coordinator (FindCoordinator v1 on the first bootstrap
/// server that answers), over plaintext only.
fn coordinator(config: &GroupConfig) -> Result<wire::Conn, ConnectorError> {
    let o = &config.table.options;
    let err = |m: String| ConnectorError::Other(format!("group '{}': {m}", config.group));
    if let Some(p) = o.get("properties.security.protocol")
        && !p.eq_ignore_ascii_case("plaintext")
    {
        return Err(err(format!(
            "talking to the coordinator needs a plaintext connection, the cluster uses {p}"
        )));
    }
    let bootstrap = o
        .get("properties.bootstrap.servers")
        .ok_or_else(|| err("no properties.bootstrap.servers".into()))?;
    let mut last = String::from("no bootstrap server");
    let mut conn = None;
    for server in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match wire::Conn::open(server) {
            Ok(c) => {
                conn = Some(c);
                break;
            }
            Err(e) => last = format!("{server}: {e}"),
        }
    }
    let mut conn = conn.ok_or_else(|| err(last))?;
    let mut body = Vec::new();
    wire::put_str(&mut body, &config.group);
    body.push(0); // key type: a group
    let answer = conn
        .call(10, 1, &body)
        .map_err(|e| err(format!("finding the coordinator: {e}")))?;
    let mut r = wire::Reader(&answer);
    let found = (|| {
        let _throttle = r.i32()?;
        let code = r.i16()?;
        let message = r.nullable_str()?;
        let _node = r.i32()?;
        let host = r.str()?;
        let port = r.i32()?;
        Some((code, message, format!("{host}:{port}")))
    })()
    .ok_or_else(|| err("a malformed FindCoordinator answer".into()))?;
    match found {
        (0, _, addr) if addr == conn.addr => Ok(conn),
        (0, _, addr) => wire::Conn::open(&addr).map_err(|e| err(format!("{addr}: {e}"))),
        (code, message, _) => Err(err(format!(
            "finding the coordinator: error {code} {}",
            message.unwrap_or_default()
        ))),
    }
}

/// The group's members as its coordinator describes them (DescribeGroups v0), for
/// brokers whose group listing leaves the group out (tansu lists only groups with
/// committed offsets).
///
/// # Errors
/// As [`request_rebalance`]; the coordinator does not know the group.
pub fn describe_members(config: &GroupConfig) -> Result<Vec<MemberInfo>, ConnectorError> {
    let err = |m: String| ConnectorError::Other(format!("group '{}': {m}", config.group));
    let mut conn = coordinator(config)?;
    let mut body = 1i32.to_be_bytes().to_vec();
    wire::put_str(&mut body, &config.group);
    let answer = conn
        .call(15, 0, &body)
        .map_err(|e| err(format!("describing: {e}")))?;
    let mut r = wire::Reader(&answer);
    let members = (|| {
        let mut out = Vec::new();
        for _ in 0..r.i32()? {
            let code = r.i16()?;
            let _group = r.str()?;
            let _state = r.str()?;
            let _protocol_type = r.str()?;
            let _protocol = r.str()?;
            for _ in 0..r.i32()? {
                let member = r.str()?;
                let client = r.str()?;
                let host = r.str()?;
                let _metadata = r.bytes()?;
                let assignment = r.bytes()?;
                let partitions = parse_assignment(&assignment)
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                    .collect();
                out.push(MemberInfo {
                    worker: worker_of(&client, &member),
                    member_id: member.clone(),
                    host: host.trim_start_matches('/').to_string(),
                    partitions,
                });
            }
            if code != 0 {
                return Some(Err(code));
            }
        }
        Some(Ok(out))
    })()
    .ok_or_else(|| err("a malformed DescribeGroups answer".into()))?;
    let mut members = members.map_err(|code| err(format!("describing: error {code}")))?;
    members.sort_by(|a, b| a.worker.cmp(&b.worker));
    Ok(members)
}

/// Just enough of the Kafka wire protocol for [`request_rebalance`]: size-prefixed
/// requests with a v1 header, big-endian fields, `i16`-length strings.
mod wire {
    use std::io::{self, Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;

    const TIMEOUT: Duration = Duration::from_secs(5);
    /// Answers bigger than this are not ones we asked for.
    const MAX_ANSWER: usize = 1 << 20;

    pub(super) struct Conn {
        stream: TcpStream,
        pub(super) addr: String,
        correlation: i32,
    }

    impl Conn {
        pub(super) fn open(addr: &str) -> io::Result<Conn> {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            for a in addr.to_socket_addrs()? {
                match TcpStream::connect_timeout(&a, TIMEOUT) {
                    Ok(stream) => {
                        stream.set_read_timeout(Some(TIMEOUT))?;
                        stream.set_write_timeout(Some(TIMEOUT))?;
                        stream.set_nodelay(true)?;
                        return Ok(Conn {
                            stream,
                            addr: addr.to_string(),
                            correlation: 0,
                        });
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }

        /// Sends request `key` version `version`; the answer's body (after its
        /// correlation id).
        pub(super) fn call(&mut self, key: i16, version: i16, body: &[u8]) -> io::Result<Vec<u8>> {
            self.correlation += 1;
            let mut msg = Vec::with_capacity(body.len() + 32);
            msg.extend(key.to_be_bytes());
            msg.extend(version.to_be_bytes());
            msg.extend(self.correlation.to_be_bytes());
            put_str(&mut msg, "runnel-rebalance");
            msg.extend(body);
            let len = i32::try_from(msg.len()).map_err(io::Error::other)?;
            let mut frame = len.to_be_bytes().to_vec();
            frame.extend(msg);
            self.stream.write_all(&frame)?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len)?;
            let len = usize::try_from(i32::from_be_bytes(len)).unwrap_or(0);
            if !(4..=MAX_ANSWER).contains(&len) {
                return Err(io::Error::other(format!("an answer of {len} bytes")));
            }
            let mut answer = vec![0; len];
            self.stream.read_exact(&mut answer)?;
            let correlation = i32::from_be_bytes([answer[0], answer[1], answer[2], answer[3]]);
            if correlation != self.correlation {
                return Err(io::Error::other("an answer to another request"));
            }
            answer.drain(..4);
            Ok(answer)
        }
    }

    pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
        let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
        out.extend(len.to_be_bytes());
        out.extend(&s.as_bytes()[..len as usize]);
    }

    /// Reads fields off an answer; `None` when it is too short.
    pub(super) struct Reader<'a>(pub(super) &'a [u8]);

    impl Reader<'_> {
        fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
            let (head, rest) = self.0.split_at_checked(N)?;
            self.0 = rest;
            head.try_into().ok()
        }

        pub(super) fn i16(&mut self) -> Option<i16> {
            self.take::<2>().map(i16::from_be_bytes)
        }

        pub(super) fn i32(&mut self) -> Option<i32> {
            self.take::<4>().map(i32::from_be_bytes)
        }

        pub(super) fn nullable_str(&mut self) -> Option<Option<String>> {
            let len = self.i16()?;
            let Ok(len) = usize::try_from(len) else {
                return Some(None);
            };
            let (text, rest) = self.0.split_at_checked(len)?;
            self.0 = rest;
            Some(Some(String::from_utf8_lossy(text).into_owned()))
        }

        /// `i32`-length bytes (null as empty).
        pub(super) fn bytes(&mut self) -> Option<Vec<u8>> {
            let Ok(len) = usize::try_from(self.i32()?) else {
                return Some(Vec::new());
            };
            let (bytes, rest) = self.0.split_at_checked(len)?;
            self.0 = rest;
            Some(bytes.to_vec())
        }

        pub(super) fn str(&mut self) -> Option<String> {
            self.nullable_str()?.or(Some(String::new()))
        }
    }
}

/// A consumer-protocol assignment (`MemberAssignment` bytes): topic → partitions.
pub fn parse_assignment(bytes: &[u8]) -> Option<BTreeMap<String, Vec<i32>>> {
    fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
        let (head, rest) = b.split_at_checked(N)?;
        *b = rest;
        head.try_into().ok()
    }
    let mut b = bytes;
    let mut out = BTreeMap::new();
    if b.is_empty() {
        return Some(out);
    }
    let _version = i16::from_be_bytes(take::<2>(&mut b)?);
    let topics = i32::from_be_bytes(take::<4>(&mut b)?);
    for _ in 0..topics.max(0) {
        let len = i16::from_be_bytes(take::<2>(&mut b)?);
        let (name, rest) = b.split_at_checked(usize::try_from(len).ok()?)?;
        b = rest;
        let name = String::from_utf8_lossy(name).into_owned();
        let n = i32::from_be_bytes(take::<4>(&mut b)?);
        let mut parts = Vec::new();
        for _ in 0..n.max(0) {
            parts.push(i32::from_be_bytes(take::<4>(&mut b)?));
        }
        out.insert(name, parts);
    }
    Some(out)
}

/// The partition counts of `topics` on the brokers `table` reaches (a topic that does
/// not exist is missing from the answer).
///
/// # Errors
/// The brokers cannot be reached; a build without the `kafka` feature.
pub fn partition_counts(
    table: &runnel_common::TableSpec,
    topics: &[String],
) -> Result<BTreeMap<String, i32>, ConnectorError> {
    #[cfg(feature = "kafka")]
    {
        imp::partition_counts(table, topics)
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = (table, topics);
        Err(ConnectorError::Other(
            "built without the `kafka` feature".into(),
        ))
    }
}

/// Creates the topics of `topics` that do not exist, with `partitions` partitions each.
///
/// # Errors
/// The brokers refused; a build without the `kafka` feature.
pub fn create_topics(
    table: &runnel_common::TableSpec,
    topics: &[String],
    partitions: i32,
) -> Result<(), ConnectorError> {
    #[cfg(feature = "kafka")]
    {
        imp::create_topics(table, topics, partitions)
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = (table, topics, partitions);
        Err(ConnectorError::Other(
            "built without the `kafka` feature".into(),
        ))
    }
}

/// Deletes `topics` (those that exist).
///
/// # Errors
/// The brokers refused; a build without the `kafka` feature.
pub fn delete_topics(
    table: &runnel_common::TableSpec,
    topics: &[String],
) -> Result<(), ConnectorError> {
    #[cfg(feature = "kafka")]
    {
        imp::delete_topics(table, topics)
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = (table, topics);
        Err(ConnectorError::Other(
            "built without the `kafka` feature".into(),
        ))
    }
}

#[cfg(feature = "kafka")]
mod imp {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use rdkafka::ClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
    use tokio::sync::watch;

    use super::{Assignment, GroupConfig, MemberInfo, Membership, parse_assignment};
    use crate::ConnectorError;
    use crate::source::kafka::{KafkaConfig, Quiet};

    /// Follows rebalances and publishes the assignment.
    struct GroupContext {
        quiet: Quiet,
        group: String,
        tx: watch::Sender<Assignment>,
        epoch: AtomicU64,
    }

    impl ClientContext for GroupContext {
        fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
            self.quiet.log(level, fac, message);
        }

        fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
            self.quiet.error(error, reason);
        }
    }

    impl ConsumerContext for GroupContext {
        fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
            match rebalance {
                Rebalance::Assign(tpl) => {
                    // Membership only: the tasks read the records.
                    if let Err(e) = consumer.pause(tpl) {
                        tracing::debug!(group = %self.group, "pausing the assignment: {e}");
                    }
                    let partitions = tpl
                        .elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition()))
                        .collect();
                    let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
                    self.tx.send_replace(Assignment { epoch, partitions });
                }
                Rebalance::Revoke(_) => {
                    // An eager rebalance revokes everything before the new assignment: the
                    // tasks keep running until it arrives (those that move are fenced by
                    // their new owner). Only a lost assignment (this member was thrown
                    // out of the group) stops them at once.
                    if consumer.assignment_lost() {
                        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::warn!(group = %self.group,
                            "this member lost its partitions (the coordinator removed it from the group: \
                             out of touch for longer than the session timeout, or asked to \
                             rebalance); stopping its tasks");
                        self.tx.send_replace(Assignment {
                            epoch,
                            partitions: Default::default(),
                        });
                    }
                }
                Rebalance::Error(e) => {
                    tracing::warn!(group = %self.group, "rebalance failed: {e}");
                }
            }
        }
    }

    pub(super) fn join(config: GroupConfig) -> Result<Membership, ConnectorError> {
        let kafka = KafkaConfig::try_new(&config.table)?;
        let (tx, rx) = watch::channel(Assignment::default());
        let session_ms = config.session_timeout.as_millis().max(1000);
        let context = GroupContext {
            quiet: Quiet::new(&kafka, &config.table.name),
            group: config.group.clone(),
            tx,
            epoch: AtomicU64::new(0),
        };
        let consumer: BaseConsumer<GroupContext> = kafka
            .client()
            .set("group.id", &config.group)
            .set("group.instance.id", &config.instance)
            .set("client.id", &config.instance)
            .set("session.timeout.ms", session_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (session_ms / 4).max(250).to_string(),
            )
            .set(
                "max.poll.interval.ms",
                (session_ms * 3).max(30_000).to_string(),
            )
            .set("partition.assignment.strategy", "range")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create_with_context(context)
            .map_err(|e| {
                ConnectorError::Other(format!(
                    "joining group '{}': Kafka client settings: {e}",
                    config.group
                ))
            })?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| {
            ConnectorError::Other(format!(
                "group '{}': subscribing to {}: {e}",
                config.group,
                config.topics.join(", ")
            ))
        })?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let members: Arc<Mutex<Vec<MemberInfo>>> = Arc::default();
        let thread = {
            let (stop, members) = (stop.clone(), members.clone());
            let group = config.group.clone();
            let config = config.clone();
            std::thread::Builder::new()
                .name("runnel-group".into())
                .spawn(move || {
                    let mut described = Instant::now() - Duration::from_secs(60);
                    while !stop.load(Ordering::Relaxed) {
                        // Heartbeats and rebalances happen in the client; polling serves
                        // its callbacks. Paused partitions deliver nothing.
                        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
                            tracing::debug!(%group, "group poll: {e}");
                        }
                        if described.elapsed() >= Duration::from_secs(3) {
                            described = Instant::now();
                            let list = describe(&consumer, &group)
                                .or_else(|| super::describe_members(&config).ok());
                            if let Some(list) = list
                                && let Ok(mut m) = members.lock()
                            {
                                *m = list;
                            }
                        }
                    }
                    // Dropping the consumer closes it (a static member does not leave:
                    // a restart within the session timeout keeps its partitions).
                    drop(consumer);
                })
                .map_err(|e| ConnectorError::Other(format!("starting the group thread: {e}")))?
        };
        Ok(Membership {
            assignment: rx,
            members,
            stop,
            thread: Some(thread),
        })
    }

    const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

    fn admin(
        table: &runnel_common::TableSpec,
    ) -> Result<
        (
            KafkaConfig,
            rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>,
        ),
        ConnectorError,
    > {
        let kafka = KafkaConfig::try_new(table)?;
        let admin = kafka.client().create().map_err(|e| {
            ConnectorError::Other(format!(
                "table '{}': Kafka client settings: {e}",
                table.name
            ))
        })?;
        Ok((kafka, admin))
    }

    fn run<F: std::future::Future>(f: F) -> Result<F::Output, ConnectorError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ConnectorError::Other(format!("starting a Kafka admin runtime: {e}")))?;
        Ok(rt.block_on(f))
    }

    pub(super) fn partition_counts(
        table: &runnel_common::TableSpec,
        topics: &[String],
    ) -> Result<std::collections::BTreeMap<String, i32>, ConnectorError> {
        let (kafka, admin) = admin(table)?;
        let metadata = admin
            .inner()
            .fetch_metadata(None, ADMIN_TIMEOUT)
            .map_err(|e| {
                ConnectorError::Other(format!("cannot reach Kafka at {}: {e}", kafka.bootstrap))
            })?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| topics.iter().any(|x| x == t.name()))
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect())
    }

    pub(super) fn create_topics(
        table: &runnel_common::TableSpec,
        topics: &[String],
        partitions: i32,
    ) -> Result<(), ConnectorError> {
        use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
        let have = partition_counts(table, topics)?;
        let missing: Vec<NewTopic<'_>> = topics
            .iter()
            .filter(|t| !have.contains_key(*t))
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let (kafka, admin) = admin(table)?;
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results = run(admin.create_topics(missing.iter(), &options))?.map_err(|e| {
            ConnectorError::Other(format!("creating topics at {}: {e}", kafka.bootstrap))
        })?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, e)) => {
                    return Err(ConnectorError::Other(format!(
                        "creating topic '{topic}' at {}: {e}",
                        kafka.bootstrap
                    )));
                }
            }
        }
        Ok(())
    }

    pub(super) fn delete_topics(
        table: &runnel_common::TableSpec,
        topics: &[String],
    ) -> Result<(), ConnectorError> {
        use rdkafka::admin::AdminOptions;
        let have = partition_counts(table, topics)?;
        let names: Vec<&str> = topics
            .iter()
            .filter(|t| have.contains_key(*t))
            .map(String::as_str)
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let (kafka, admin) = admin(table)?;
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results = run(admin.delete_topics(&names, &options))?.map_err(|e| {
            ConnectorError::Other(format!("deleting topics at {}: {e}", kafka.bootstrap))
        })?;
        for r in results {
            if let Err((topic, e)) = r {
                return Err(ConnectorError::Other(format!(
                    "deleting topic '{topic}' at {}: {e}",
                    kafka.bootstrap
                )));
            }
        }
        Ok(())
    }

    /// The group's members and what each owns, when the brokers say.
    fn describe(consumer: &BaseConsumer<GroupContext>, group: &str) -> Option<Vec<MemberInfo>> {
        let list = consumer
            .fetch_group_list(Some(group), Duration::from_secs(2))
            .ok()?;
        let g = list.groups().iter().find(|g| g.name() == group)?;
        let mut out: Vec<MemberInfo> = g
            .members()
            .iter()
            .map(|m| MemberInfo {
                worker: super::worker_of(m.client_id(), m.id()),
                member_id: m.id().to_string(),
                host: m.client_host().to_string(),
                partitions: m
                    .assignment()
                    .and_then(parse_assignment)
                    .map(|a| {
                        a.into_iter()
                            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        out.sort_by(|a, b| a.worker.cmp(&b.worker));
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_parse() {
        // version 0, one topic "in" with partitions 1 and 3, no user data.
        let mut b = vec![0, 0, 0, 0, 0, 1, 0, 2, b'i', b'n', 0, 0, 0, 2];
        b.extend(1i32.to_be_bytes());
        b.extend(3i32.to_be_bytes());
        b.extend([0, 0, 0, 0]);
        let a = parse_assignment(&b).unwrap();
        assert_eq!(a.get("in"), Some(&vec![1, 3]));
        assert!(parse_assignment(&b[..9]).is_none());
        assert!(parse_assignment(&[]).unwrap().is_empty());
    }

    #[test]
    fn workers_are_named_by_client_id_or_member_id() {
        assert_eq!(worker_of("a", "whatever"), "a");
        assert_eq!(
            worker_of("", "node-2-3417eea6-71f8-41e6-9d08-629dfbf8f179"),
            "node-2"
        );
        assert_eq!(worker_of("", "short"), "short");
        assert_eq!(
            worker_of("", "é-not-a-uuid-at-the-end-of-this-member-id"),
            "é-not-a-uuid-at-the-end-of-this-member-id"
        );
    }
}
