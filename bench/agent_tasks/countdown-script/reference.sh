mkdir -p artifacts
printf '#!/bin/sh\nn=$1\nwhile [ "$n" -gt 0 ]; do\n    echo "$n"\n    n=$((n - 1))\ndone\necho liftoff\n' > artifacts/countdown.sh
echo "Saved artifacts/countdown.sh"
