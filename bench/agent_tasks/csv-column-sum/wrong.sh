awk -F, 'NR>1 {s+=$4} END {printf "Total: %.2f\n", s}' expenses.csv
