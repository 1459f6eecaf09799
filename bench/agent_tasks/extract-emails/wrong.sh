mkdir -p artifacts
grep -oE '[a-z.]+@[a-z.]+' contacts.txt > artifacts/emails.txt
