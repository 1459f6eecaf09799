echo "identical: chapter1.txt, chapter1-copy.txt, backup-ch1.txt, chapter2.txt"; echo "identical: outline.txt, plan.txt"
