dp collect --task stack --episodes 200 --out data/stack.zarr --seed 0
dp train --data data/stack.zarr --preset small --out runs/stack train.steps=3000 train.ckpt_every=500 train.val_every=500 train.keep_checkpoints=10 train.threads=1   # bf16 autocast (AMX), 1 thread, 27.5 min beside two other trainings
dp eval runs/stack/checkpoints/step_0002000 --task stack --split val --episodes 50   # 47/50
dp eval runs/stack/checkpoints/step_0003000 --task stack --split val --episodes 50   # 46/50
dp eval runs/stack/checkpoints/step_0002000 --task stack --split test --episodes 100
