mkdir -p artifacts; python3 -m json.tool --indent 2 settings.min.json > artifacts/settings.json
