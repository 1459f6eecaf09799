find quarterly-reports -type f -printf "%s\n" | awk "{s+=\$1} END {print s\" bytes\"}"
