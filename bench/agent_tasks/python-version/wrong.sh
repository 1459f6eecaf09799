echo "Python 3.8.0"
