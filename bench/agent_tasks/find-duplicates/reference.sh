cd old-drafts
md5sum *.txt | sort | awk '{ if ($1 == h) { g = g ", " $2 } else { if (n > 1) print g; g = $2; n = 0 } h = $1; n++ } END { if (n > 1) print g }' | sed 's/^/identical: /'
