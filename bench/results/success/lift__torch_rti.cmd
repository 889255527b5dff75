dp eval quickstart/runs/lift --task lift --episodes 50 --seed 5000 --rti --json-out lift__torch_rti.json
