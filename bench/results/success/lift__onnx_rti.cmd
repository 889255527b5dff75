dp collect --task lift --episodes 200 --out data/lift.zarr --seed 0
dp train --data data/lift.zarr --preset small --out runs/lift train.steps=3000 train.ckpt_every=500 train.val_every=500 train.keep_checkpoints=10 train.threads=1   # bf16 autocast (AMX), 1 thread
dp eval runs/lift/checkpoints/step_0002000 --task lift --split val --episodes 50   # 49/50
dp eval runs/lift/checkpoints/step_0003000 --task lift --split val --episodes 50   # 49/50
# chosen: step 3000 (the later one on a tie)
dp export runs/lift/checkpoints/step_0003000 --out exported/lift   # RTI defaults: 1 step from sigma 1.0, every 4; first chunk fully sampled
dp eval exported/lift --task lift --split test --episodes 100 --rti
