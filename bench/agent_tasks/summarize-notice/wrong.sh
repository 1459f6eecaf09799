mkdir -p artifacts
echo "The data visualisation workshop was moved because the trainer travels; it is now in a bigger room and lunch is provided." > artifacts/summary.txt
