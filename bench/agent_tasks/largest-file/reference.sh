ls -lS photos | awk "NR==2 {print \$9\" is the largest: \"\$5\" bytes\"}"
