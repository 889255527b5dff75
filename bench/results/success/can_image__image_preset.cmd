dp collect --task can --episodes 200 --out data/can_img.zarr --cameras agentview,robot0_eye_in_hand --seed 0 --workers 1   # 57 min, 12 frames/s
dp train --data data/can_img.zarr --preset robosuite-image --out runs/can_image   # 5000 steps, 57 CPU-min beside other one-core jobs
dp eval runs/can_image/checkpoints/step_0005000 --task can --split test --episodes 50 --seed 0 --json-out can_image_test_seed0.json   # the final checkpoint, fixed before any test evaluation
dp eval runs/can_image/checkpoints/step_0005000 --task can --split test --episodes 50 --seed 1 --json-out can_image_test_seed1.json   # the two halves at once, one core each
python bench/merge_evals.py can_image_test_seed0.json can_image_test_seed1.json --json-out can_image__image_preset.json
