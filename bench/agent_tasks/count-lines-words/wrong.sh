echo "12 lines, 12 words"
