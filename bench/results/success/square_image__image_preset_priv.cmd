dp collect --task square --episodes 200 --out data/square_img.zarr --cameras agentview,robot0_eye_in_hand --seed 0 --workers 1   # 45 min (niced, beside other jobs)
dp train --data data/square_img.zarr --preset robosuite-image --out runs/square_img6k train.steps=6000 train.threads=1 train.num_workers=0 'data.privileged_keys=[object]'   # 64 CPU-min beside other one-core jobs (load 2-4)
dp eval runs/square_img6k --task square --split test --episodes 100 --seed 0 --workers 2 --json-out square_image__image_preset_priv.json   # the final checkpoint, fixed before any evaluation
