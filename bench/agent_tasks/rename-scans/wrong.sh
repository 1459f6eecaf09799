cd scans
for f in IMG_*.JPG; do mv "$f" "photo-${f#IMG_}"; done
