dp collect --task lift --episodes 100 --out data/lift_img.zarr --cameras agentview,robot0_eye_in_hand --seed 0
dp train --data data/lift_img.zarr --preset small --out runs/lift_img "data.obs_keys=[robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos,agentview_image,robot0_eye_in_hand_image]" train.steps=3000 train.batch_size=64 train.ckpt_every=1000 train.threads=1
dp train --data data/lift_img.zarr --preset small --out runs/lift_img_noaug "data.obs_keys=[robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos,agentview_image,robot0_eye_in_hand_image]" train.steps=3000 train.batch_size=64 train.ckpt_every=1000 train.threads=1 model.aug_shift=0
dp eval runs/RUN/checkpoints/STEP --task lift --split val --episodes 50   # each run at steps 2000 and 3000; the best of the four chosen
dp eval runs/lift_img_noaug/checkpoints/step_0002000 --task lift --split test --episodes 100 --json-out lift_image__torch.json
