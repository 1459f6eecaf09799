cd scans
for f in IMG_*.JPG; do n=${f#IMG_}; mv "$f" "photo-${n%.JPG}.jpg"; done
ls
