dp export quickstart/runs/lift --out exported/lift   # re-exported: RTI 1 step from sigma 1.0, a new chunk every 4 steps
dp eval --onnx exported/lift --task lift --episodes 50 --seed 5000 --json-out lift__onnx.json
