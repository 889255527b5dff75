dp collect --task lift --episodes 200 --out data/lift.zarr --seed 0   # can, stack, door, square the same (their single-task stores)
dp train --data data/lift.zarr,data/can.zarr,data/stack.zarr,data/door.zarr,data/square.zarr --preset small --out runs/multi model.goal=lang data.pad_lowdim=true train.threads=1   # 9000 steps; 98 min wall sharing 2 cores with 3 other jobs, about 51 min alone
dp eval runs/multi --task door --split test --episodes 100 --json-out multitask_door__mode.json   # the final checkpoint, fixed before any evaluation
