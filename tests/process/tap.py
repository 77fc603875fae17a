#!/usr/bin/env python3
"""A small Singer tap of the tests, for process.Downloader's edge cases.

Reads `--config <file>` (and `--state <file>` when given) and writes, for each stream
of `streams`, a SCHEMA (key property `id`), then the records `id` = last state + 1 ..
`rows` interleaved across streams, a STATE (`{"done": {stream: last id}}`) every
`state_every` records and at the end. The record of stream s and id i is a pure
function of (s, i): `amount` = i * 1.25 as a decimal, `at` a date-time, `note` text.

Knobs (config keys, or environment variables where said):
  malformed_at       write a line that is no JSON before the record with this id
  schema_change_at   from this id on, stream `a` gains the column `extra`
  crash_after        after this many records of this run, exit 3 (if CRASH_FLAG, an
                     environment variable, names a file: only while it exists, and it
                     is removed when the tap crashes)
  sleep_ms           per record, so that a test can kill the run in the middle
  stderr_env         write the value of this environment variable to stderr
"""

import json
import os
import sys
import time


def arg(name):
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    return None


def out(msg):
    sys.stdout.write(json.dumps(msg) + "\n")


def main():
    cfg = json.load(open(arg("--config"))) if arg("--config") else {}
    state = json.load(open(arg("--state"))) if arg("--state") else {}
    done = dict(state.get("done", {}))
    streams = cfg.get("streams", ["a", "b"])
    rows = int(os.environ.get("ROWS", cfg.get("rows", 10)))
    every = int(cfg.get("state_every", 3))
    crash_after = cfg.get("crash_after")
    flag = os.environ.get("CRASH_FLAG")
    if crash_after is not None and flag and not os.path.exists(flag):
        crash_after = None
    if cfg.get("stderr_env"):
        sys.stderr.write("token is %s\n" % os.environ.get(cfg["stderr_env"], "unset"))
    sys.stderr.write("tap starting with state %s\n" % json.dumps(done))

    def schema(s, extra):
        props = {
            "id": {"type": ["integer"]},
            "amount": {"type": ["number", "null"]},
            "at": {"type": ["string", "null"], "format": "date-time"},
            "note": {"type": ["string", "null"]},
        }
        if extra:
            props["extra"] = {"type": ["integer", "null"]}
        out({"type": "SCHEMA", "stream": s, "schema": {"type": "object", "properties": props},
             "key_properties": ["id"]})

    for s in streams:
        schema(s, False)
    sent = 0
    changed = False
    for i in range(1, rows + 1):
        for s in streams:
            if i <= done.get(s, 0):
                continue
            if cfg.get("malformed_at") == i and s == streams[0]:
                sys.stdout.write("this is not JSON {\n")
            if cfg.get("schema_change_at") == i and s == "a" and not changed:
                schema("a", True)
                changed = True
            rec = {"id": i, "amount": i * 1.25, "at": "2026-01-%02dT10:00:00+00:00" % (i % 28 + 1),
                   "note": "%s-%d" % (s, i)}
            if changed and s == "a":
                rec["extra"] = i * 10
            out({"type": "RECORD", "stream": s, "record": rec})
            done[s] = i
            sent += 1
            if cfg.get("sleep_ms"):
                sys.stdout.flush()
                time.sleep(cfg["sleep_ms"] / 1000.0)
            if sent % every == 0:
                out({"type": "STATE", "value": {"done": done}})
            if crash_after is not None and sent >= crash_after:
                sys.stdout.flush()
                sys.stderr.write("tap crashed after %d records\n" % sent)
                if flag:
                    os.remove(flag)
                sys.exit(3)
    out({"type": "STATE", "value": {"done": done}})


if __name__ == "__main__":
    main()
