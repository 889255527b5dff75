dp collect --task lift --episodes 100 --out data/lift_img.zarr --cameras agentview,robot0_eye_in_hand --seed 0 --workers 1   # 25 min beside other one-core jobs
dp train --data data/lift_img.zarr --preset robosuite-image --out runs/lift_image train.steps=3000   # 37 min of wall time beside other one-core jobs
dp eval runs/lift_image/checkpoints/step_0003000 --task lift --split test --episodes 100 --json-out lift_image__image_preset.json   # the final checkpoint, fixed before any evaluation
