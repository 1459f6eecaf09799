mkdir -p artifacts
sed 's/,/ | /g; s/^/| /; s/$/ |/' planets.csv > artifacts/planets.md
