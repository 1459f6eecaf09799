tr -cs 'A-Za-z' '\n' < speech.txt | grep -v '^$' | sort | uniq -c | sort -rn | head -3 | awk '{print $2": "$1}'
