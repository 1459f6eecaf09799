PATH=/usr/local/bin:/usr/bin:/bin python3 --version
