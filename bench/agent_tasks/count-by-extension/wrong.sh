for e in pdf jpg mp3 zip; do echo ".$e: $(ls downloads/*.$e 2>/dev/null | wc -l)"; done
