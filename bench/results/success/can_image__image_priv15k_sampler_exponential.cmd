# the checkpoint of can_image__image_priv15k_sampler with the preset's setting (exponential schedule, a new chunk every 4), on the same 100 test starts: the paired comparison
dp eval runs/can_image15k_s38/checkpoints/step_0015000 --task can --split test --episodes 50 --seed 0 --workers 2 --replan-every 4 --schedule exponential --json-out seed0.json   # 41/50
dp eval runs/can_image15k_s38/checkpoints/step_0015000 --task can --split test --episodes 50 --seed 1 --workers 2 --replan-every 4 --schedule exponential --json-out seed1.json   # 42/50
python bench/merge_evals.py seed0.json seed1.json --json-out can_image__image_priv15k_sampler_exponential.json
python bench/paired_evals.py can_image__image_priv15k_sampler.json can_image__image_priv15k_sampler_exponential.json   # 8 won, 1 lost (exact McNemar p = 0.04)
