dp collect --task stack --episodes 200 --out data/stack.zarr --seed 0
dp train --data data/stack.zarr --preset small --out runs/stack_preset train.ckpt_every=1000 train.keep_checkpoints=20 train.threads=1   # the preset as it stands: 9000 steps; fp32 (a CPU without AMX), 1 thread, 0.7 s a step: about 105 min; stopped and `--resume`d at steps 2000 and 3000 (a thread-count check)
dp eval runs/stack_preset/checkpoints/step_0007000 --task stack --split val --episodes 50   # 46/50 (validation loss 0.1276)
dp eval runs/stack_preset/checkpoints/step_0008000 --task stack --split val --episodes 50   # 45/50 (validation loss 0.1269)
dp eval runs/stack_preset/checkpoints/step_0009000 --task stack --split val --episodes 50   # 46/50 (validation loss 0.1267): chosen, the later one on a tie
dp eval runs/stack_preset/checkpoints/step_0009000 --task stack --split test --episodes 100   # 93/100; grasped 96, lifted 96 (the 3000-step, every-8 row on the same seeds: 90/100)
