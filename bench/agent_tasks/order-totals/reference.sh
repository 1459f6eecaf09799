mkdir -p artifacts
python3 -c '
import json
totals = {}
for o in json.load(open("orders.json")):
    totals[o["customer"]] = totals.get(o["customer"], 0) + o["quantity"] * o["unit_price"]
json.dump({k: round(v, 2) for k, v in totals.items()}, open("artifacts/totals.json", "w"))
'
cat artifacts/totals.json
