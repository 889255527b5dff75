dp export runs/can --out exported/can   # RTI 1 step from sigma 1.0, a new chunk every 4 steps
dp eval --onnx exported/can --task can --episodes 50 --seed 5000 --rti --json-out can__onnx_rti.json
