mkdir -p artifacts; echo "30 2 * * 1-5 /usr/local/bin/nightly-backup.sh >> /var/log/backup.log 2>&1" > artifacts/crontab.txt; cat artifacts/crontab.txt
