mkdir -p artifacts; echo "2 30 * * 1-5 /usr/local/bin/nightly-backup.sh > /var/log/backup.log" > artifacts/crontab.txt
