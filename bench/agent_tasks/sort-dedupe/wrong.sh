mkdir -p artifacts; sort guests.txt > artifacts/guests-clean.txt
