dp export runs/can_s35/checkpoints/step_0008000 --out runs/can_s35_onnx --schedule fitted --replan-every 8   # the setting chosen on validation (can__preset_sampler), written into policy.yaml
dp eval runs/can_s35_onnx --task can --split test --episodes 100 --seed 0 --workers 2 --json-out can__preset_sampler_onnx.json
