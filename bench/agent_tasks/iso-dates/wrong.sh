mkdir -p artifacts
sed -E 's#^([0-9]{2})/([0-9]{2})/([0-9]{4})#\3-\1-\2#' events.csv > artifacts/events.csv
