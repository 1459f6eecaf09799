sed -i 's/^port = 5000/port = 8080/; s/^debug = true/debug = false/' app.ini; cat app.ini
