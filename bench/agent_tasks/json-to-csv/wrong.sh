mkdir -p artifacts
python3 -c '
import json
items = json.load(open("inventory.json"))["items"]
lines = ["sku,name,stock"] + [",".join(str(i[k]) for k in ("sku", "name", "stock")) for i in items]
open("artifacts/inventory.csv", "w").write("\n".join(lines) + "\n")
'
