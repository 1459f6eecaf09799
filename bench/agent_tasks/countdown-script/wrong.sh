mkdir -p artifacts
printf '#!/bin/sh\nseq 1 "$1"\necho liftoff\n' > artifacts/countdown.sh
