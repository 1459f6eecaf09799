find app-logs -type f -size +1k -exec gzip {} \; ; ls -l app-logs
