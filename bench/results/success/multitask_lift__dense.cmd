dp train --data data/lift.zarr,data/can.zarr,data/stack.zarr,data/door.zarr --preset small --out runs/multi_dense --experts 1 model.goal=lang data.pad_lowdim=true train.steps=5000 train.threads=1
dp eval runs/multi_dense --task lift --episodes 50 --seed 5000 --json-out multitask_lift__dense.json
