dp export quickstart/runs/lift --out exported/lift   # RTI 1 step from sigma 1.0, a new chunk every 4 steps
python bench/deploy.py --policy exported/lift --episodes 50 --seed 5000 --out deploy.json   # dp node runs it with RTI; each episode's first chunk is sampled while the robot holds
