python3 -c 'import csv; print("Total: %.2f" % sum(float(r["amount"]) for r in csv.DictReader(open("expenses.csv"))))'
