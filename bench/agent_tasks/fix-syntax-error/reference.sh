sed -i 's/print(f"{region:<6} {total(values):>5}"$/print(f"{region:<6} {total(values):>5}")/' tools/report.py
python3 tools/report.py
