dp eval --onnx quickstart/exported/lift --task lift --episodes 50 --seed 5000 --rti --json-out lift__onnx_rti.json
