for e in pdf jpg mp3 zip; do echo ".$e: $(find downloads -type f -name "*.$e" | wc -l)"; done
