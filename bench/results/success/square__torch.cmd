dp collect --task square --episodes 200 --out data/square.zarr --seed 0
dp train --data data/square.zarr --preset small --out runs/square train.steps=3000 train.ckpt_every=500 train.val_every=500 train.keep_checkpoints=10 train.threads=1   # bf16 autocast (AMX), 1 thread, 17.3 min beside another training
dp eval runs/square/checkpoints/step_0002000 --task square --split val --episodes 50   # 5/50
dp eval runs/square/checkpoints/step_0003000 --task square --split val --episodes 50   # 7/50
dp eval runs/square/checkpoints/step_0003000 --task square --split test --episodes 100
