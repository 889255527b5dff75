dp collect --task stack --episodes 200 --seed 0 --out data/stack_rule.zarr --workers 2   # the expert with its close-cube rule: 200/200 attempts (the old expert: 200/211)
dp train --data data/stack_rule.zarr --preset small --out runs/stack_rule train.threads=1 train.keep_checkpoints=10   # the preset as it stands: 9000 steps, fp32, 82 CPU-min of the training process
# validation, 50 episodes each (base seed 0): step 8000 / 9000 x exponential / fitted x a new chunk every 4 / 8 (the grid of the previous stack row; ablation_stack.json)
dp eval runs/stack_rule/checkpoints/step_0008000 --task stack --split val --episodes 50 --workers 2 --schedule exponential --replan-every 8   # 49/50: chosen
dp eval runs/stack_rule/checkpoints/step_0008000 --task stack --split val --episodes 100 --seed 1 --workers 2 --schedule exponential --replan-every 8   # 91/100 against the page's policy's 89: above it, the rule written beforehand, so it went to test
dp eval runs/stack_rule/checkpoints/step_0008000 --task stack --split test --episodes 100 --seed 0 --workers 2 --schedule exponential --replan-every 8 --json-out seed0.json   # 83/100
dp eval runs/stack_rule/checkpoints/step_0008000 --task stack --split test --episodes 100 --seed 1 --workers 2 --schedule exponential --replan-every 8 --json-out seed1.json   # 87/100
python bench/merge_evals.py seed0.json seed1.json --json-out stack__close_rule.json   # 170/200; the page's previous policy on the same starts: 180/200 (paired: 12 won, 22 lost, McNemar p = 0.12)
