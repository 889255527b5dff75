dp collect --task can --episodes 200 --out data/can_img.zarr --cameras agentview,robot0_eye_in_hand --seed 0 --workers 1   # 54 min, 12 frames/s (session 30)
dp train --data data/can_img.zarr --preset robosuite-image --out runs/can_image15k "data.privileged_keys=[object]" train.steps=15000 train.ckpt_every=1000   # one thread; resumed twice with --resume (sessions 30-31); 152 CPU-min, beside one-core jobs
dp eval runs/can_image15k/checkpoints/step_0015000 --task can --split test --episodes 50 --seed 0 --json-out can_image15k_test_seed0.json   # the final checkpoint, fixed before training
dp eval runs/can_image15k/checkpoints/step_0015000 --task can --split test --episodes 50 --seed 1 --json-out can_image15k_test_seed1.json   # the two halves at once, one core each
python bench/merge_evals.py can_image15k_test_seed0.json can_image15k_test_seed1.json --json-out can_image__image_preset_priv15k.json
