dp collect --task can --episodes 200 --out data/can.zarr --workers 2 --seed 0
dp train --data data/can.zarr --preset small --out runs/can train.steps=3000   # 1655 s on 2 busy cores
dp export runs/can --out exported/can
dp eval runs/can --task can --episodes 50 --seed 5000 --json-out can__torch.json
