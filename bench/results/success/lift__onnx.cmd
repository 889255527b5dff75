dp eval --onnx quickstart/exported/lift --task lift --episodes 50 --seed 5000 --json-out lift__onnx.json
