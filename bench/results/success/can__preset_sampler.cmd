dp collect --task can --episodes 200 --seed 0 --out data/can.zarr
dp train --data data/can.zarr --preset small --out runs/can_s35 train.threads=1 train.keep_checkpoints=10   # the preset as it stands: 9000 steps, fp32, 84 min on one thread beside a two-thread `square` training
# validation, 50 episodes each: step 8000 / 9000, exponential or fitted schedule, a new chunk every 4 (the preset) or every 8
dp eval runs/can_s35/checkpoints/step_0008000 --task can --split val --episodes 50 --workers 2 --schedule exponential                   # 31/50
dp eval runs/can_s35/checkpoints/step_0008000 --task can --split val --episodes 50 --workers 2 --schedule fitted                        # 40/50
dp eval runs/can_s35/checkpoints/step_0009000 --task can --split val --episodes 50 --workers 2 --schedule exponential                   # 30/50
dp eval runs/can_s35/checkpoints/step_0009000 --task can --split val --episodes 50 --workers 2 --schedule fitted                        # 37/50
dp eval runs/can_s35/checkpoints/step_0008000 --task can --split val --episodes 50 --workers 2 --schedule exponential --replan-every 8   # 44/50
dp eval runs/can_s35/checkpoints/step_0008000 --task can --split val --episodes 50 --workers 2 --schedule fitted --replan-every 8        # 49/50: chosen
dp eval runs/can_s35/checkpoints/step_0009000 --task can --split val --episodes 50 --workers 2 --schedule exponential --replan-every 8   # 48/50
dp eval runs/can_s35/checkpoints/step_0009000 --task can --split val --episodes 50 --workers 2 --schedule fitted --replan-every 8        # 47/50
dp eval runs/can_s35/checkpoints/step_0008000 --task can --split test --episodes 100 --seed 0 --workers 2 --schedule fitted --replan-every 8 --json-out can__preset_sampler.json
