mkdir -p artifacts
python3 -c '
import csv, json
json.dump(list(csv.DictReader(open("people.csv"))), open("artifacts/people.json", "w"))
'
