dp export runs/pusht/checkpoints/step_0003000 --out exported/pusht
dp eval exported/pusht --task pusht --split test --episodes 100 --seed 0 --json-out pusht__onnx.json
