dp eval --onnx exported/can --task can --episodes 50 --seed 5000 --rti --json-out can__onnx_rti.json
