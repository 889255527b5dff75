dp collect --task lift --episodes 100 --seed 7 --cameras agentview,robot0_eye_in_hand --image-size 64 --out data/lift_cam.zarr   # door the same
dp embed data/lift_cam.zarr data/door_cam.zarr
dp train --data data/lift_cam.zarr,data/door_cam.zarr --out runs/libero_orig --preset small model.goal=lang data.pad_lowdim=true train.steps=2000 train.threads=1 data.obs_keys=[robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos,object]
dp eval runs/libero_orig --task lift --split test --episodes 50 --seed 5000 --json-out libero_roundtrip_lift__original.json
