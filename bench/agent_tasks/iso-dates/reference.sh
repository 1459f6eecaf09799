mkdir -p artifacts
sed -E 's#^([0-9]{2})/([0-9]{2})/([0-9]{4})#\3-\2-\1#' events.csv > artifacts/events.csv
cat artifacts/events.csv
