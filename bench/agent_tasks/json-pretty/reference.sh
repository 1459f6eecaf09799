mkdir -p artifacts; python3 -m json.tool --indent 2 --sort-keys settings.min.json > artifacts/settings.json; echo done
