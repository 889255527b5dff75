python bench/deploy.py --policy exported/lift --episodes 50 --seed 5000 --out deploy.json   # exported/lift: the quickstart's small lift policy; dp node runs it with RTI
