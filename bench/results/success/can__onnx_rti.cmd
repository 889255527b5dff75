dp collect --task can --episodes 200 --out data/can.zarr --workers 2 --seed 0
dp train --data data/can.zarr --preset small --out runs/can train.steps=5000 train.ckpt_every=500 train.val_every=500 train.keep_checkpoints=10 train.threads=1   # 42.4 min, 1 thread
dp eval runs/can/checkpoints/step_0003000 --task can --split val --episodes 50   # 41/50
dp eval runs/can/checkpoints/step_0005000 --task can --split val --episodes 50   # 46/50: chosen
dp eval runs/can/checkpoints/step_0005000 --task can --split val --episodes 50 --rti-steps 3 --rti-sigma 2.0 --rti-every 8   # 48/50, best of 3 settings
dp export runs/can/checkpoints/step_0005000 --out exported/can --rti-steps 3 --rti-sigma 2.0 --rti-every 8
dp eval exported/can --task can --split test --episodes 100 --rti --first-chunk short --json-out can__onnx_rti.json   # first chunk: 1 step from sigma 1.0 (the default at the time)
