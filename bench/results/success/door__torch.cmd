dp collect --task door --episodes 200 --out data/door.zarr --seed 0
dp train --data data/door.zarr --preset small --out runs/door train.steps=3000 train.ckpt_every=500 train.val_every=500 train.keep_checkpoints=10 train.threads=1   # bf16 autocast (AMX), 1 thread, 17.3 min beside another training
dp eval runs/door/checkpoints/step_0002000 --task door --split val --episodes 50   # 50/50
dp eval runs/door/checkpoints/step_0003000 --task door --split val --episodes 50   # 49/50
dp eval runs/door/checkpoints/step_0002000 --task door --split test --episodes 100
