mkdir -p artifacts
python3 -c '
import csv, json
rows = [dict(r, age=int(r["age"])) for r in csv.DictReader(open("people.csv"))]
json.dump(rows, open("artifacts/people.json", "w"), indent=2)
'
echo "Saved artifacts/people.json"
