tr 'A-Z' 'a-z' < speech.txt | tr -cs 'a-z' '\n' | grep -v '^$' | sort | uniq -c | sort -rn | head -3 | awk '{print $2": "$1}'
