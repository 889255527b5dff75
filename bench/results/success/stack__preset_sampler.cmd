dp collect --task stack --episodes 200 --seed 0 --out data/stack.zarr
dp train --data data/stack.zarr --preset small --out runs/stack_s35 train.threads=2 train.keep_checkpoints=10   # the preset as it stands: 9000 steps, fp32; started on two threads, resumed with --resume and train.threads=1 from step 1000 beside two one-thread trainings
# validation, 50 episodes each: step 8000 / 9000, exponential or fitted schedule, a new chunk every 4 (the preset) or every 8
dp eval runs/stack_s35/checkpoints/step_0008000 --task stack --split val --episodes 50 --workers 2 --schedule exponential --replan-every 4   # 43/50
dp eval runs/stack_s35/checkpoints/step_0008000 --task stack --split val --episodes 50 --workers 2 --schedule fitted --replan-every 4        # 44/50
dp eval runs/stack_s35/checkpoints/step_0009000 --task stack --split val --episodes 50 --workers 2 --schedule exponential --replan-every 4   # 43/50
dp eval runs/stack_s35/checkpoints/step_0009000 --task stack --split val --episodes 50 --workers 2 --schedule fitted --replan-every 4        # 42/50
dp eval runs/stack_s35/checkpoints/step_0008000 --task stack --split val --episodes 50 --workers 2 --schedule exponential --replan-every 8   # 47/50: chosen
dp eval runs/stack_s35/checkpoints/step_0008000 --task stack --split val --episodes 50 --workers 2 --schedule fitted --replan-every 8        # 44/50
dp eval runs/stack_s35/checkpoints/step_0009000 --task stack --split val --episodes 50 --workers 2 --schedule exponential --replan-every 8   # 46/50
dp eval runs/stack_s35/checkpoints/step_0009000 --task stack --split val --episodes 50 --workers 2 --schedule fitted --replan-every 8        # 44/50
dp eval runs/stack_s35/checkpoints/step_0008000 --task stack --split test --episodes 100 --seed 0 --workers 2 --schedule exponential --replan-every 8 --json-out stack__preset_sampler.json
