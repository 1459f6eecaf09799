for level in ERROR WARNING INFO; do
    echo "$level: $(awk -v l=$level '$3 == l' server.log | wc -l)"
done
