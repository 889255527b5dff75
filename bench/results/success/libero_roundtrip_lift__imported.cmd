dp export-data libero data/lift_cam.zarr --out libero_lift && dp import libero libero_lift --out data/lift_libero_back.zarr   # door the same
dp train --data data/lift_libero_back.zarr,data/door_libero_back.zarr --out runs/libero_back --preset small model.goal=lang data.pad_lowdim=true train.steps=2000 train.threads=1 data.obs_keys=[robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos,object]
dp eval runs/libero_back --task lift --split test --episodes 50 --seed 5000 --json-out libero_roundtrip_lift__imported.json
