dp collect --task lift --episodes 100 --out data/lift_img.zarr --cameras agentview,robot0_eye_in_hand --workers 2 --seed 0
dp train --data data/lift_img.zarr --preset small --out runs/lift_img "data.obs_keys=[robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos,agentview_image,robot0_eye_in_hand_image]" train.steps=2000 train.batch_size=64   # 1138 s
dp eval runs/lift_img --task lift --episodes 50 --seed 5000 --json-out lift_image__torch.json
