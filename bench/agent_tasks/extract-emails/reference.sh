mkdir -p artifacts
grep -oE '[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}' contacts.txt | LC_ALL=C sort -u > artifacts/emails.txt
cat artifacts/emails.txt
