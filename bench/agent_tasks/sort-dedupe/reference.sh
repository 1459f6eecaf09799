mkdir -p artifacts; sort -u guests.txt > artifacts/guests-clean.txt; cat artifacts/guests-clean.txt
