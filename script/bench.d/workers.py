"""script/bench workers: scale-out of one anchovy over 1, 2, 4 and 8 workers.

The source is an SFTP server (OpenSSH, BENCH_SOURCE=sftp, the default) or S3 (moto,
BENCH_SOURCE=s3) behind a proxy that delays every byte by a fixed one-way latency
(BENCH_LATENCY_MS, default 15: 30 ms round trips, a server in another zone), so the work
is I/O-bound as in production. The datastore is a local directory (claims are OS locks)
or, with BENCH_DATASTORE=s3, moto behind the same kind of proxy (claims are
conditional requests; moto, one Python thread, then bounds the speed-up). 32 tables of
ROWS_PER_TABLE rows (10 objects each) and one table of 400 objects split into 8 parts;
every worker runs `--workers auto --max-concurrency 2` (one small machine each). For
each worker count: the wall time of all workers (median and range of BENCH_REPEAT runs),
the speed-up over one worker, and the coordination cost: requests to `$locks` (claims)
per claimed unit and the median time a worker spent taking a claim and catching up
with the commits (`claim_ms` of the task logs). Rows are verified after every run.

Run by script/bench (it starts moto and sshd); args: BIN ROWS_PER_TABLE WORKDIR.
"""
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import boto3

BIN, ROWS, WORK = sys.argv[1], int(sys.argv[2]), sys.argv[3]
MOTO = os.environ["AWS_ENDPOINT"]
LATENCY = float(os.environ.get("BENCH_LATENCY_MS", "15")) / 1000
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
COUNTS = [int(n) for n in os.environ.get("BENCH_WORKER_COUNTS", "1 2 4 8").split()]
SOURCE = os.environ.get("BENCH_SOURCE", "sftp")
DATASTORE = os.environ.get("BENCH_DATASTORE", "local")
TABLES, OBJECTS, MANY, MANY_ROWS, PARTS = 32, 10, 400, 250, 8

s3 = boto3.client("s3", endpoint_url=MOTO, region_name=os.environ.get("AWS_REGION", "us-east-1"),
                  aws_access_key_id="test", aws_secret_access_key="test")


def ensure_bucket(name):
    try:
        s3.create_bucket(Bucket=name)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass


def put_source(key, body):
    if SOURCE == "s3":
        s3.put_object(Bucket="bench-src", Key=key, Body=body)
    else:
        path = os.path.join(os.environ["SFTP_DIR"], "bench", key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(body)


def seed():
    ensure_bucket("bench-src")
    per = ROWS // OBJECTS
    i = 0
    for t in range(TABLES):
        for o in range(OBJECTS):
            body = "id,name,amount\n" + "".join(
                f"{i + k},customer {(i + k) % 9973},{(i + k) % 100000 / 100:.2f}\n" for k in range(per))
            i += per
            put_source(f"t{t:02}/part_{o:03}.csv", body.encode())
    for o in range(MANY):
        body = "id,name,amount\n" + "".join(f"{o * MANY_ROWS + k},m,{k}.5\n" for k in range(MANY_ROWS))
        put_source(f"many/f_{o:04}.csv", body.encode())
    if SOURCE == "sftp":
        subprocess.run(["chown", "-R", os.environ["SFTP_USER"], os.path.join(os.environ["SFTP_DIR"], "bench")], check=True)


class Proxy:
    """A TCP proxy that forwards every chunk after a fixed delay (in order, at full
    throughput) and counts the HTTP requests it sees, by the kind of key."""

    def __init__(self, target_port):
        self.target = target_port
        self.counts = {"all": 0, "locks": 0, "commits": 0}
        self.loop = asyncio.new_event_loop()
        self.port = None
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait()

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)

        async def start():
            server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await server.serve_forever()

        self.loop.run_until_complete(start())

    def reset(self):
        self.counts = {k: 0 for k in self.counts}

    def _count(self, data):
        for line in data.split(b"\r\n"):
            if line[:4] in (b"GET ", b"PUT ", b"POST", b"HEAD", b"DELE") and line.endswith(b"HTTP/1.1"):
                self.counts["all"] += 1
                if b"%24locks" in line or b"$locks" in line:
                    self.counts["locks"] += 1
                elif b"%24commits" in line or b"$commits" in line:
                    self.counts["commits"] += 1

    async def _pipe(self, reader, writer, count):
        q = asyncio.Queue()

        async def send():
            while True:
                at, data = await q.get()
                if data is None:
                    break
                delay = at + LATENCY - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if count:
                    self._count(data)
                q.put_nowait((time.monotonic(), data))
        except ConnectionError:
            pass
        q.put_nowait((time.monotonic(), None))
        await sender

    async def _client(self, creader, cwriter):
        try:
            sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(self._pipe(creader, swriter, True), self._pipe(sreader, cwriter, False),
                             return_exceptions=True)


def ds_objects(prefix, folder):
    """(key, bytes) of every object under a folder of the anchovy's area."""
    if DATASTORE == "s3":
        out = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench-ds", Prefix=f"{prefix}/prod/bench/{folder}/"):
            out += [(o["Key"], s3.get_object(Bucket="bench-ds", Key=o["Key"])["Body"].read()) for o in page.get("Contents", [])]
        return out
    root = os.path.join(WORK, prefix, "prod", "bench", folder)
    return [(n, open(os.path.join(root, n), "rb").read()) for n in sorted(os.listdir(root))] if os.path.isdir(root) else []


def committed_rows(prefix):
    recs = [json.loads(b) for _, b in ds_objects(prefix, "$commits")]
    return sum(f["rows"] for r in recs for f in r["files"]), len(recs)


def claims(prefix):
    ms = []
    for _, b in ds_objects(prefix, "$results/workers"):
        r = json.loads(b)
        for batch in r["batches"]:
            ms += [t["data"]["claim_ms"] for t in batch["tasks"] if "claim_ms" in t.get("data", {})]
    return ms


def main():
    seed()
    ensure_bucket("bench-ds")
    moto_port = int(MOTO.rsplit(":", 1)[1])
    src_proxy = Proxy(moto_port if SOURCE == "s3" else int(os.environ["SFTP_PORT"]))
    ds_proxy = src_proxy if SOURCE == "s3" else Proxy(moto_port)
    proxies = [src_proxy] if ds_proxy is src_proxy else [src_proxy, ds_proxy]
    root = "s3://bench-src" if SOURCE == "s3" else os.path.join(os.environ["SFTP_DIR"], "bench")
    op = "blob.CsvDownloader" if SOURCE == "s3" else "sftp.CsvDownloader"
    cfg = os.path.join(WORK, "workers.yaml")
    with open(cfg, "w") as f:
        f.write("tbls:\n")
        for t in range(TABLES):
            f.write(f"  t{t:02}:\n    path: {root}/t{t:02}/*.csv\n    columns: {{id: int, amount: decimal}}\n")
        f.write(f"  many:\n    path: {root}/many/*.csv\n    parts: {PARTS}\n    columns: {{id: int}}\n")
    expected = TABLES * (ROWS // OBJECTS) * OBJECTS + MANY * MANY_ROWS
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACHVY_")}
    if SOURCE == "sftp":
        # The server's host key, under the proxy's port.
        known = os.path.join(WORK, "known_hosts_proxy")
        with open(known, "w") as f:
            for line in open(os.environ["SFTP_KNOWN_HOSTS"]):
                f.write(line.replace(f"]:{os.environ['SFTP_PORT']} ", f"]:{src_proxy.port} "))
        env.update({"ACHVY_CNXN__URI": f"sftp://{os.environ['SFTP_USER']}@127.0.0.1:{src_proxy.port}",
                    "ACHVY_CNXN__PPK_PATH": os.environ["SFTP_KEY"], "ACHVY_CNXN__KNOWN_HOSTS": known})
    env.update({"AWS_ENDPOINT": f"http://127.0.0.1:{ds_proxy.port}", "AWS_ALLOW_HTTP": "true",
                "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"), "ACHVY_PORT": "0",
                "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
                "ACHVY_LOG_LEVEL": "warn", "HOME": WORK})
    units = TABLES + PARTS
    print(f"workers: {TABLES} tables x {ROWS} rows ({OBJECTS} files each) + 1 table of {MANY} files in "
          f"{PARTS} parts = {expected} rows, {units} units; source {SOURCE}, datastore {DATASTORE}, "
          f"{LATENCY * 1000:.0f} ms one-way latency to the servers; --workers auto --max-concurrency 2; {REPEAT} runs each; "
          f"{BIN}; load before {open('/proc/loadavg').read().split()[:3]}")
    results = {}
    for rep in range(REPEAT):
        for n in COUNTS:
            prefix = f"r{int(time.time() * 1000)}-{n}-{rep}"
            for p in proxies:
                p.reset()
            t0 = time.monotonic()
            ds = f"s3://bench-ds/{prefix}" if DATASTORE == "s3" else os.path.join(WORK, prefix)
            kids = [subprocess.Popen([BIN, "start", "--prod", "-op", op, "--id", "bench",
                                      "-c", cfg, "--datastore", ds, "--workers", "auto",
                                      "--max-concurrency", "2", "--compact"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(n)]
            errs = [k.communicate()[1] for k in kids]
            wall = time.monotonic() - t0
            for k, e in zip(kids, errs):
                if k.returncode != 0:
                    sys.exit(f"a worker failed ({k.returncode}): {e.decode()[-2000:]}")
            rows, commits = committed_rows(prefix)
            if rows != expected:
                sys.exit(f"{n} workers: {rows} rows committed, expected {expected}")
            ms = claims(prefix)
            locks = ds_proxy.counts["locks"]
            results.setdefault(n, []).append((wall, locks, len(ms), ms, ds_proxy.counts["all"]))
            print(f"  run {rep + 1}: {n} workers {wall:6.1f} s, {rows} rows in {commits} commits, "
                  f"{len(ms)} claims, datastore requests {ds_proxy.counts['all']} ({locks} to $locks)")
            if DATASTORE == "local":
                subprocess.run(["rm", "-rf", ds])
    base = statistics.median(r[0] for r in results[COUNTS[0]])
    print(f"{'workers':>8} {'wall s (median, range)':>26} {'speed-up':>9} {'$locks req/unit':>16} {'claim ms (median)':>18}")
    for n in COUNTS:
        walls = [r[0] for r in results[n]]
        med = statistics.median(walls)
        claimed = sum(r[2] for r in results[n])
        locks = sum(r[1] for r in results[n])
        all_ms = [m for r in results[n] for m in r[3]]
        print(f"{n:>8} {med:10.1f} ({min(walls):.1f}-{max(walls):.1f}) {base / med:>12.2f}x "
              f"{locks / max(claimed, 1):>16.1f} {statistics.median(all_ms) if all_ms else 0:>18.1f}")
    print(f"target: >= 3x at 4 workers; load after {open('/proc/loadavg').read().split()[:3]}")


main()
