du -sb quarterly-reports | cut -f1
