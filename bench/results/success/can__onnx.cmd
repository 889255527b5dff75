dp eval --onnx exported/can --task can --episodes 50 --seed 5000 --json-out can__onnx.json
