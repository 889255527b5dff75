dp eval runs/pusht/checkpoints/step_0003000 --task pusht --split val --episodes 30 --rti-steps 3 --rti-sigma 2.0 --rti-every 8   # best of 4 settings on validation seeds
dp export runs/pusht/checkpoints/step_0003000 --out exported/pusht_rti --rti-steps 3 --rti-sigma 2.0 --rti-every 8 --first-steps 10 --first-sigma 80
dp eval exported/pusht_rti --task pusht --split test --episodes 100 --seed 0 --rti --json-out pusht__onnx_rti.json
