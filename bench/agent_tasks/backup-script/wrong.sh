mkdir -p artifacts
printf '#!/bin/bash\nmkdir -p "$2/backup"\ncp -r "$1"/* "$2/backup/"\necho done\n' > artifacts/backup.sh
