mkdir -p artifacts
python3 -c '
import csv, json
w = csv.writer(open("artifacts/inventory.csv", "w", newline=""))
w.writerow(["sku", "name", "stock"])
for i in json.load(open("inventory.json"))["items"]:
    w.writerow([i["sku"], i["name"], i["stock"]])
'
cat artifacts/inventory.csv
