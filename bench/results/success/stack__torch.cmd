dp collect --task stack --episodes 200 --out data/stack.zarr --workers 2 --seed 0
dp train --data data/stack.zarr --preset small --out runs/stack train.steps=3000   # 1438 s on this machine
dp eval runs/stack --task stack --episodes 50 --seed 5000 --json-out stack__torch.json
