#!/usr/bin/env python3
"""Deterministic orders CSV for benchmarks: id, customer, sku, qty, price, status, note,
updated_at. About 10% of notes contain commas, doubled quotes or newlines.

usage: gen_orders.py ROWS OUT.csv [--start N]
       gen_orders.py ROWS OUT.csv --delta-of N   (half updates of ids 1..N, half new ids after N)
"""
import csv
import random
import sys


def main() -> None:
    rows = int(sys.argv[1])
    out = sys.argv[2]
    start = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--start" else 1
    delta_of = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--delta-of" else 0
    rnd = random.Random(20261123 + start + delta_of)
    if delta_of:
        step = max(1, delta_of // (rows // 2))
        ids = [1 + k * step for k in range(rows // 2)] + list(range(delta_of + 1, delta_of + 1 + rows - rows // 2))
    else:
        ids = list(range(start, start + rows))
    statuses = ["new", "paid", "shipped", "returned", "cancelled"]
    with open(out, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "customer", "sku", "qty", "price", "status", "note", "updated_at"])
        for i in ids:
            r = rnd.random()
            if r < 0.04:
                note = f"call back, ask for {rnd.randint(1, 99)}"
            elif r < 0.07:
                note = f'said "ok" at {rnd.randint(1, 12)}pm'
            elif r < 0.10:
                note = f"line one\nline two {i}"
            else:
                note = ""
            w.writerow([
                i,
                f"cust-{rnd.randint(1, 50000):05d}",
                f"SKU-{rnd.randint(1, 2000):04d}",
                rnd.randint(1, 20),
                f"{rnd.randint(100, 100000) / 100:.2f}",
                "delta" if delta_of else statuses[rnd.randint(0, 4)],
                note,
                f"{2025 if delta_of else 2024}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00Z",
            ])


if __name__ == "__main__":
    main()
