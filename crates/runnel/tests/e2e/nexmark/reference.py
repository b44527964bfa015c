#!/usr/bin/env python3
"""Checks a Nexmark query's result against a reference computed by SQLite.

usage: reference.py EVENTS_DIR OUTPUT_JSONL REFERENCE_SQL

EVENTS_DIR holds bid.jsonl, auction.jsonl and person.jsonl: the generator's events,
as runnel's file sink wrote them. They are loaded into SQLite tables of the same
names, with every timestamp as epoch milliseconds. REFERENCE_SQL is one SELECT over
them giving the rows the query must end with (timestamps as epoch milliseconds).

OUTPUT_JSONL is runnel's changelog of the query (`op` per row: +I, -U, +U, -D); its
final state (after every retraction) must equal the reference, as a multiset, with
timestamps read as epoch milliseconds and numbers compared to 12 significant digits.

If REFERENCE_SQL has a line `-- output:`, the SELECT after it is run over the final
state (loaded as table `out`) and compared with the SELECT before it instead (for
queries whose exact rows depend on the wall clock, as q12's).

Python's standard library only: SQLite is an engine independent of runnel's.
"""

import json
import re
import sqlite3
import sys
from collections import Counter
from datetime import datetime, timezone

TS = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")


def to_ms(text):
    t = text.replace(" ", "T")
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    d = datetime.fromisoformat(t)
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return round(d.timestamp() * 1000)


def norm(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str) and TS.match(v):
        return to_ms(v)
    if isinstance(v, float):
        if v == int(v) and abs(v) < 2**53:
            return int(v)
        return float(f"{v:.12g}")
    return v


def load_rows(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def final_state(changelog):
    state = Counter()
    order = []
    for row in changelog:
        op = row.pop("op", "+I")
        key = json.dumps(row)
        if op in ("+I", "+U"):
            state[key] += 1
            order.append(key)
        elif op in ("-U", "-D"):
            if state[key] <= 0:
                raise SystemExit(f"retraction of a row that is not in the result: {key}")
            state[key] -= 1
        else:
            raise SystemExit(f"unknown op {op!r} in {row}")
    out = []
    for key, n in state.items():
        out.extend([json.loads(key)] * n)
    return out


def regexp_extract(s, pattern, group=0):
    if s is None or pattern is None:
        return None
    m = re.search(pattern, s)
    if m is None:
        return None
    return m.group(group)


def split_index(s, sep, i):
    if s is None:
        return None
    parts = s.split(sep)
    return parts[i] if 0 <= i < len(parts) else None


def connect():
    db = sqlite3.connect(":memory:")
    db.create_function("regexp_extract", 3, regexp_extract, deterministic=True)
    db.create_function("split_index", 3, split_index, deterministic=True)
    return db


def load_table(db, name, rows):
    if not rows:
        db.execute(f"CREATE TABLE {name} (dummy)")
        return
    cols = list(rows[0].keys())
    db.execute(f"CREATE TABLE {name} ({', '.join(cols)})")
    db.executemany(
        f"INSERT INTO {name} VALUES ({', '.join('?' * len(cols))})",
        [tuple(norm(r.get(c)) for c in cols) for r in rows],
    )


def key(row):
    return json.dumps([norm(v) for v in row])


def main():
    events, output, reference = sys.argv[1:4]
    db = connect()
    for t in ("bid", "auction", "person"):
        load_table(db, t, load_rows(f"{events}/{t}.jsonl"))
    state = final_state(load_rows(output))
    sql = open(reference, encoding="utf-8").read()
    if "-- output:" in sql:
        expected_sql, got_sql = sql.split("-- output:", 1)
        load_table(db, "out", state)
        got = Counter(key(r) for r in db.execute(got_sql))
    else:
        expected_sql = sql
        got = Counter(key(r.values()) for r in state)
    expected = Counter(key(r) for r in db.execute(expected_sql))
    if got == expected:
        print(f"ok: {sum(expected.values())} rows")
        return
    missing = expected - got
    extra = got - expected
    print(f"expected {sum(expected.values())} rows, got {sum(got.values())}")
    for title, rows in (("missing", missing), ("unexpected", extra)):
        print(f"{title} ({sum(rows.values())}):")
        for r in list(rows.elements())[:10]:
            print("  ", r)
    sys.exit(1)


if __name__ == "__main__":
    main()
