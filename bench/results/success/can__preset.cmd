dp collect --task can --episodes 200 --out data/can.zarr --seed 0
dp train --data data/can.zarr --preset small --out runs/can_preset train.ckpt_every=1000 train.keep_checkpoints=20 train.threads=1   # the preset as it stands: 9000 steps; fp32 (a CPU without AMX), 1 thread beside another training: 115 min
dp eval runs/can_preset/checkpoints/step_0007000 --task can --split val --episodes 50   # 41/50 (validation loss 0.1348)
dp eval runs/can_preset/checkpoints/step_0008000 --task can --split val --episodes 50   # 46/50 (validation loss 0.1337): chosen
dp eval runs/can_preset/checkpoints/step_0009000 --task can --split val --episodes 50   # 45/50 (validation loss 0.1334)
dp eval runs/can_preset/checkpoints/step_0008000 --task can --split test --episodes 100   # 91/100; grasped 98, lifted 98; all 9 failures run out the 400 steps (the 5000-step every-4 row on the same seeds: 90/100)
dp eval runs/can_preset/checkpoints/step_0008000 --task can --split test --episodes 100 --seed 1   # 95/100 on 100 more test episodes (session 15); with the row above 186/200 = 93.0% (88.6-95.8%)
