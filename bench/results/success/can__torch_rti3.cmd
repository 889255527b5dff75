dp eval runs/can --task can --episodes 50 --seed 5000 --rti-steps 3 --rti-sigma 1.0 --json-out can__torch_rti3.json
