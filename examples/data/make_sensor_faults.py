#!/usr/bin/env python3
"""Writes sensor_faults.jsonl: an hour of readings from six temperature sensors, every 10 s,
with the faults a real fleet has injected at known places (see FAULTS below). Seeded,
so the file is the same on every run. `examples/sensors_quality.sql` cleans it.

    python3 examples/data/make_sensor_faults.py > examples/data/sensor_faults.jsonl
"""
import json
import math
import random
from datetime import datetime, timedelta, timezone

rng = random.Random(21)
START = datetime(2026, 11, 2, 8, 0, 0, tzinfo=timezone.utc)
SENSORS = [f"s-{i}" for i in range(1, 7)]
STEP = 10  # seconds
N = 360  # readings per sensor

# FAULTS (what the pipeline should find):
#  - s-2: 10 impossible temperatures (999.9 / -99), and its times as epoch ms
#  - s-3: 8 spikes of +12 °C (plausible values, outliers for their neighbours); times as dd/MM/yyyy
#  - s-4: stuck at exactly 21.5 from minute 20 to 40
#  - s-5: drifts +0.02 °C per reading from minute 10 on
#  - s-6: reports in Fahrenheit (unit 'F')
#  - 40 readings sent twice; 15 readings arrive 3 minutes late
#  - 5 readings without a sensor id, 4 with an unreadable time, 3 with humidity > 100 %
#  - 3 lines that are not JSON; sensor ids written ' S-1 ' (case and blanks) now and then


def fmt_time(sensor, t):
    if sensor == "s-2":
        return str(int(t.timestamp() * 1000))
    if sensor == "s-3":
        return t.strftime("%d/%m/%Y %H:%M:%S")
    if sensor == "s-1":
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    return t.strftime("%Y-%m-%d %H:%M:%S")


rows = []
spikes = set(rng.sample(range(30, N - 5), 8))
bad_s2 = set(rng.sample(range(10, N), 10))
for i in range(N):
    t = START + timedelta(seconds=i * STEP)
    for k, sensor in enumerate(SENSORS):
        temp = 20 + 0.5 * k + 0.3 * math.sin(i * STEP / 600) + rng.gauss(0, 0.15)
        unit = "C"
        if sensor == "s-3" and i in spikes:
            temp += 12
        if sensor == "s-4" and 120 <= i < 240:
            temp = 21.5
        if sensor == "s-5" and i >= 60:
            temp += 0.02 * (i - 60)
        if sensor == "s-2" and i in bad_s2:
            temp = rng.choice([999.9, -99.0])
        if sensor == "s-6":
            temp = temp * 9 / 5 + 32
            unit = "F"
        rec = {
            "sensor": sensor,
            "reading_time": fmt_time(sensor, t),
            "temperature": round(temp, 2),
            "unit": unit,
            "humidity": round(50 + 8 * math.sin(i / 40 + k) + rng.gauss(0, 1), 1),
        }
        rows.append(rec)

# Sensor ids with blanks and capitals (normalised by the pipeline).
for r in rng.sample(rows, 30):
    r["sensor"] = " " + r["sensor"].upper() + " "
for r in rng.sample(rows, 3):
    r["humidity"] = 120.0
for r in rng.sample(rows, 5):
    r["sensor"] = None
for r in rng.sample(rows, 4):
    r["reading_time"] = "sometime tuesday"

lines = [json.dumps(r) for r in rows]
# Resent readings: a copy a few lines later.
for idx in sorted(rng.sample(range(len(lines) - 20), 40), reverse=True):
    lines.insert(idx + rng.randint(2, 12), lines[idx])
# Late readings: moved 3 minutes (108 lines) further down.
for idx in sorted(rng.sample(range(200, len(lines) - 200), 15), reverse=True):
    line = lines.pop(idx)
    lines.insert(idx + 108, line)
for idx in rng.sample(range(len(lines)), 3):
    lines.insert(idx, '{"sensor": "s-1", "reading_time": "2026-11-02 08:00:00", "temp')
print("\n".join(lines))
