mkdir -p artifacts
python3 -c '
import csv
rows = list(csv.reader(open("planets.csv")))
out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
open("artifacts/planets.md", "w").write("\n".join(out) + "\n")
'
cat artifacts/planets.md
