dp train --data data/lift.zarr,data/can.zarr,data/stack.zarr,data/door.zarr,data/square.zarr --preset small --out runs/multi_sq3 model.goal=lang data.pad_lowdim=true train.steps=18000 train.ckpt_every=500 train.threads=2 "data.task_weights={square: 3}"   # 18,000 steps (the mode_square3 run)
cp -a runs/multi_sq3 runs/multi_sq3_bal && dp train --out runs/multi_sq3_bal --resume train.steps=24000 train.threads=1 "data.task_weights={square: 1}"   # the mode_square3_bal run
dp eval runs/multi_sq3_bal --task can --split val --episodes 50 --workers 2 --replan-every 8   # each task's interval chosen on its validation seeds (more successes; ties keep 4): 8 for can, door, lift, stack; 4 for square
dp export runs/multi_sq3_bal --replan-every can=8,door=8,lift=8,stack=8 --out runs/multi_pertask_onnx
dp eval runs/multi_pertask_onnx --task can --split test --episodes 100 --workers 2 --json-out multitask_can__mode_square3_bal_pertask_onnx.json   # the interval comes from policy.yaml
