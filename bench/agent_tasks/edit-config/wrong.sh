sed -i 's/port = [0-9]*/port = 8080/; s/^debug = true/debug = false/' app.ini
