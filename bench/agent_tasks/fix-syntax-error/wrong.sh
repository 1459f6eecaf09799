sed -i 's/print(f"{region:<6} {total(values):>5}"$/print(region, total(values))/' tools/report.py
