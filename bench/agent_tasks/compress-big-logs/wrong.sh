gzip -k app-logs/*.log
