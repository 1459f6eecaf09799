mkdir -p webapp/src webapp/tests webapp/docs
: > webapp/src/__init__.py
printf '# webapp\n\nA new web application.\n' > webapp/README.md
find webapp
