"""Writes the local shop API's data (local/db.json): customers, orders, order lines."""
import json
import random
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
r = random.Random(1)
customers = [{"id": i, "name": f"Customer {i}", "email": f"c{i}@example.com",
              "updated_at": f"2024-05-{1 + i % 28:02d}T{i % 24:02d}:00:00Z"} for i in range(1, n + 1)]
orders, lines = [], []
for o in range(1, 2 * n + 1):
    items = [{"id": len(lines) + k + 1, "orderId": o, "sku": f"SKU-{r.randint(1, 99)}",
              "qty": r.randint(1, 5), "price": f"{r.randint(100, 9999) / 100:.2f}"} for k in range(r.randint(1, 3))]
    lines += items
    total = sum(int(i["price"].replace(".", "")) * i["qty"] for i in items)
    orders.append({"id": o, "customerId": r.randint(1, n), "total": f"{total / 100:.2f}",
                   "placed_at": f"2024-06-{1 + o % 28:02d}T10:{o % 60:02d}:00+02:00"})
json.dump({"customers": customers, "orders": orders, "lines": lines}, open(sys.argv[2] if len(sys.argv) > 2 else "local/db.json", "w"))
