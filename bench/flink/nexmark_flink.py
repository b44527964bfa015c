"""Apache Flink (PyFlink, local mini-cluster) running runnel's Nexmark queries, for a
side-by-side throughput comparison with `runnel bench nexmark` on the same machine.

Extends ../shared/bench/flink/nexmark_flink.py (a bid table only) with person and
auction tables, so every query of `crates/runnel/src/cmd/nexmark/*.sql` runs in Flink
as written there (only the WITH keys are quoted for Flink).

Set-up (once):  python3 -m venv ~/.cache/runnel-bench/flink-venv
                ~/.cache/runnel-bench/flink-venv/bin/pip install apache-flink==2.3.0
Run:            flink-venv/bin/python bench/flink/nexmark_flink.py q4 --events 10000000 -p 2
Prints `flink QUERY p=P events=N seconds=S events_per_s=R` (job wall time from submit
to end, Flink's start-up included; run once with --events 1000 to see that cost).

The data: Flink's `datagen` connector, shaped like Nexmark's generator as runnel's
`nexmark` connector draws it: per 50 events 1 person, 3 auctions and 46 bids; event time
advances 0.1 ms per event (10 000 events/s); ids are sequences, and as in the
generator half the bids go to a hot auction (the newest multiple of 100), three in four
come from a hot bidder, half use one of 4 hot channels (else one of 10 000), prices are
log-uniform in 100..10^8, and other bids (and sellers) pick one of the last 100 auctions
(persons), so joins match. Values are random (not the generator's), so result sizes differ
somewhat from runnel's; throughput is compared, not results (results are checked
against a reference in runnel's own tests). datagen's cost is part of every figure, as
the generator's is in runnel's.
"""
import argparse
import pathlib
import re
import tempfile
import time

from pyflink.table import EnvironmentSettings, TableEnvironment

QUERIES = pathlib.Path(__file__).resolve().parents[2] / "crates/runnel/src/cmd/nexmark"
BASE_MS = 1767225600000  # 2026-01-01T00:00:00Z, as runnel's generator


def ts(seq_per_event):
    # event number ≈ seq * 50 / per_50; 0.1 ms per event
    return f"CAST(TO_TIMESTAMP_LTZ({BASE_MS} + seq * 5 / {seq_per_event}, 3) AS TIMESTAMP(3))"


def tables(events):
    persons = max(1, events // 50)
    auctions = max(1, events * 3 // 50)
    bids = max(1, events * 46 // 50)
    big = "'rows-per-second' = '1000000000'"
    return [
        f"""CREATE TABLE person (
            seq BIGINT, name STRING, email_address STRING, credit_card STRING, city STRING,
            st BIGINT, extra STRING,
            id AS seq + 1000,
            state AS CASE MOD(st, 6) WHEN 0 THEN 'OR' WHEN 1 THEN 'ID' WHEN 2 THEN 'CA'
                      WHEN 3 THEN 'WA' WHEN 4 THEN 'AZ' ELSE 'NY' END,
            date_time AS {ts(1)},
            WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND
        ) WITH ('connector' = 'datagen', {big},
            'fields.seq.kind' = 'sequence', 'fields.seq.start' = '0', 'fields.seq.end' = '{persons - 1}',
            'fields.name.length' = '10', 'fields.email_address.length' = '16',
            'fields.credit_card.length' = '19', 'fields.city.length' = '8',
            'fields.st.min' = '0', 'fields.st.max' = '5', 'fields.extra.length' = '80')""",
        f"""CREATE TABLE auction (
            seq BIGINT, item_name STRING, description STRING, initial_bid BIGINT, reserve BIGINT,
            back BIGINT, category BIGINT, life BIGINT, extra STRING,
            id AS seq + 1000,
            seller AS GREATEST(seq / 3 - back, 0) + 1000,
            date_time AS {ts(3)},
            expires AS {ts(3)} + INTERVAL '1' SECOND * life,
            WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND
        ) WITH ('connector' = 'datagen', {big},
            'fields.seq.kind' = 'sequence', 'fields.seq.start' = '0', 'fields.seq.end' = '{auctions - 1}',
            'fields.item_name.length' = '12', 'fields.description.length' = '40',
            'fields.initial_bid.min' = '1', 'fields.initial_bid.max' = '1000',
            'fields.reserve.min' = '1', 'fields.reserve.max' = '2000',
            'fields.back.min' = '0', 'fields.back.max' = '99',
            'fields.category.min' = '10', 'fields.category.max' = '14',
            'fields.life.min' = '1', 'fields.life.max' = '20', 'fields.extra.length' = '80')""",
        f"""CREATE TABLE bid (
            seq BIGINT, hot_a INT, hot_b INT, hot_c INT, bidder_back BIGINT, back BIGINT,
            pr BIGINT, ch BIGINT, u1 STRING, u2 STRING, u3 STRING, extra STRING,
            auction AS CASE WHEN hot_a = 1 THEN (seq * 3 / 46 / 100) * 100
                       ELSE GREATEST(seq * 3 / 46 - back, 0) END + 1000,
            bidder AS CASE WHEN hot_b > 0 THEN (seq / 46 / 100) * 100 + 1
                      ELSE GREATEST(seq / 46 - bidder_back, 0) END + 1000,
            price AS CAST(POWER(10, pr / 1000000.0 * 6) * 100 AS BIGINT),
            channel AS CASE WHEN hot_c = 1 THEN
                        CASE MOD(ch, 4) WHEN 0 THEN 'Google' WHEN 1 THEN 'Facebook'
                        WHEN 2 THEN 'Baidu' ELSE 'Apple' END
                        ELSE CONCAT('channel-', CAST(ch AS STRING)) END,
            url AS CONCAT('https://www.nexmark.com/', u1, '/', u2, '/', u3, '/item.htm?query=1',
                   CASE WHEN hot_c = 1 THEN '' ELSE CONCAT('&channel_id=', CAST(ch AS STRING)) END),
            date_time AS {ts(46)},
            WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND
        ) WITH ('connector' = 'datagen', {big},
            'fields.seq.kind' = 'sequence', 'fields.seq.start' = '0', 'fields.seq.end' = '{bids - 1}',
            'fields.hot_a.min' = '0', 'fields.hot_a.max' = '1',
            'fields.hot_b.min' = '0', 'fields.hot_b.max' = '3',
            'fields.hot_c.min' = '0', 'fields.hot_c.max' = '1',
            'fields.bidder_back.min' = '0', 'fields.bidder_back.max' = '99',
            'fields.back.min' = '0', 'fields.back.max' = '99',
            'fields.pr.min' = '0', 'fields.pr.max' = '1000000',
            'fields.ch.min' = '0', 'fields.ch.max' = '9999',
            'fields.u1.length' = '4', 'fields.u2.length' = '4', 'fields.u3.length' = '4',
            'fields.extra.length' = '80')""",
        "CREATE VIEW bid_p AS SELECT *, PROCTIME() AS p_time FROM bid",
    ]


def flink_text(sql):
    """runnel's query file with Flink's quoted option keys."""
    sql = re.sub(r"--[^\n]*", "", sql)
    sql = sql.replace("connector = 'blackhole'", "'connector' = 'blackhole'")
    return [s.strip() for s in sql.split(";") if s.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("query")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("-p", "--parallelism", type=int, default=2)
    a = ap.parse_args()
    name = a.query.replace("-", "_")
    text = (QUERIES / f"{name}.sql").read_text()
    # q13's side input (rows `i,i`, as nexmark-flink's SideInputGenerator) and q10's
    # partitions live in a scratch directory, as with `runnel bench nexmark`.
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="flink-nexmark-"))
    (scratch / "side_input.txt").write_text("".join(f"{i},{i}\n" for i in range(10_000)))
    text = text.replace("${SCRATCH_DIR}", str(scratch)).replace("${Q10_OUTPUT}", str(scratch / "q10"))
    # Flink 2.3 bundles no lookup source (its filesystem table is not one: "Temporal Table
    # Join requires primary key in versioned table"), so q13 runs as a regular join with
    # the same bounded side table there; the result is the same for a table that never
    # changes, the operator is not (Flink keeps the bids in join state).
    text = re.sub(r"FOR SYSTEM_TIME AS OF \S+ ", "", text)
    t = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    c = t.get_config()
    c.set("parallelism.default", str(a.parallelism))
    c.set("pipeline.object-reuse", "true")
    c.set("table.local-time-zone", "UTC")
    c.set("table.exec.mini-batch.enabled", "true")
    c.set("table.exec.mini-batch.allow-latency", "2 s")
    c.set("table.exec.mini-batch.size", "50000")
    c.set("taskmanager.memory.process.size", "4g")
    for ddl in tables(a.events):
        t.execute_sql(ddl)
    statements = flink_text(text)
    for s in statements[:-1]:
        t.execute_sql(s)
    start = time.perf_counter()
    t.execute_sql(statements[-1]).wait()
    s = time.perf_counter() - start
    print(f"flink {a.query} p={a.parallelism} events={a.events} seconds={s:.2f} events_per_s={a.events / s:.0f}")


if __name__ == "__main__":
    main()
