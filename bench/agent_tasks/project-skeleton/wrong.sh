mkdir -p webapp/src webapp/tests
: > webapp/src/__init__.py
echo "# webapp" > webapp/README.md
