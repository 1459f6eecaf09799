wc -l -w meeting-notes.txt | awk "{print \$1\" lines, \"\$2\" words\"}"
