dp collect --task square --episodes 200 --out data/square.zarr --seed 0
dp train --data data/square.zarr --preset small --out runs/square train.steps=9000 train.ckpt_every=1000 train.val_every=1000 train.keep_checkpoints=20 train.threads=1   # bf16 (AMX), 1 thread: 51 min alone; a wall-clock limit stopped it at step 7000 beside other jobs, `--resume` finished it
dp eval runs/square/checkpoints/step_0007000 --task square --split val --episodes 50   # 20/50
dp eval runs/square/checkpoints/step_0008000 --task square --split val --episodes 50   # 22/50
dp eval runs/square/checkpoints/step_0009000 --task square --split val --episodes 50   # 21/50
dp eval runs/square/checkpoints/step_0008000 --task square --split val --episodes 50 --replan-every 4   # 40/50 (every 8: 22/50, RTI every 4: 34/50, every 2: 38/50): chosen
dp eval runs/square/checkpoints/step_0008000 --task square --split test --episodes 100 --replan-every 4 --seed 0   # and --seed 1: 200 test episodes
