dp collect --task lift --episodes 300 --out data/lift.zarr --seed 100   # can, stack: 200 episodes each; door: 100 (seed 0)
dp train --data data/lift.zarr,data/can.zarr,data/stack.zarr,data/door.zarr --preset small --out runs/multi model.goal=lang data.pad_lowdim=true train.steps=5000 train.threads=1
dp eval runs/multi --task stack --episodes 50 --seed 5000 --json-out multitask_stack__mode.json
