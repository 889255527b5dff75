dp quickstart   # collects 100 lift demos, trains small 2000 steps x 64 (runs/lift), exports (exported/lift)
dp eval quickstart/runs/lift --task lift --episodes 50 --seed 5000 --json-out lift__torch.json
