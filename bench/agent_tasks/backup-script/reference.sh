mkdir -p artifacts
cat > artifacts/backup.sh <<'SCRIPT'
#!/bin/bash
set -euo pipefail
src=$1 dest=$2
target="$dest/backup-$(date +%F)"
mkdir -p "$target"
n=0
for f in "$src"/*.txt; do
    [ -f "$f" ] || continue
    cp -- "$f" "$target/"
    n=$((n + 1))
done
echo "copied $n files to $target"
SCRIPT
echo "Saved artifacts/backup.sh"
