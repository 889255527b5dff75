dp import dp-zarr pusht_cchi_v7_replay.zarr --card datasets/pusht_keypoints.yaml --out data/pusht_kp.zarr
dp train --data data/pusht_kp.zarr --preset pusht --out runs/pusht   # stopped after step 3000 (60 min on a shared machine)
dp eval runs/pusht/checkpoints/step_0003000 --task pusht --split val --episodes 30   # checkpoint chosen on validation seeds
dp eval runs/pusht/checkpoints/step_0003000 --task pusht --split test --episodes 100 --seed 0 --json-out pusht__torch.json
