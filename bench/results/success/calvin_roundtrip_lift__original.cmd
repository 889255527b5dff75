dp train --data data/lift_cam.zarr --out runs/calvin_orig --preset small model.goal=lang train.steps=1500 train.batch_size=64 train.threads=1 data.obs_keys=[robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos,object]
dp eval runs/calvin_orig --task lift --split test --episodes 50 --seed 5000 --json-out calvin_roundtrip_lift__original.json
