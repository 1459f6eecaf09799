mkdir -p artifacts
cat > artifacts/summary.txt <<'TXT'
The data visualisation workshop moves from 3 March to 14 March (9:30-16:00), in the larger room B204 of the Library building. Cancel before 7 March if you cannot come; bring a laptop with Python 3.
TXT
cat artifacts/summary.txt
