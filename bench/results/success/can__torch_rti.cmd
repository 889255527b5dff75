dp eval runs/can --task can --episodes 50 --seed 5000 --rti --json-out can__torch_rti.json   # RTI defaults: 1 step from sigma 1.0, every 4 steps
