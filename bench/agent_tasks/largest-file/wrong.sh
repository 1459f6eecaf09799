echo "sunset.jpg is the largest: 13999 bytes"
