dp collect --task can --episodes 200 --out data/can_img.zarr --cameras agentview,robot0_eye_in_hand --seed 0 --workers 2   # collected again (session 38): 200/200 attempts, 27 min beside other jobs
dp train --data data/can_img.zarr --preset robosuite-image --out runs/can_image15k_s38 "data.privileged_keys=[object]" train.steps=15000 train.ckpt_every=1000 train.threads=1   # the page's recipe again; resumed once with --resume (its machine stopped at step 12000); 100 CPU-min of the training process, beside one-core jobs
# the final checkpoint fixed before training; validation chooses the noise schedule and interval, 50 episodes each (base seed 0), written down before they ran:
dp eval runs/can_image15k_s38/checkpoints/step_0015000 --task can --split val --episodes 50 --workers 2 --replan-every 4 --schedule exponential   # 39/50 (the preset's setting)
dp eval runs/can_image15k_s38/checkpoints/step_0015000 --task can --split val --episodes 50 --workers 2 --replan-every 4 --schedule fitted        # 45/50: chosen (ties go to every 4)
dp eval runs/can_image15k_s38/checkpoints/step_0015000 --task can --split val --episodes 50 --workers 2 --replan-every 8 --schedule exponential   # 42/50
dp eval runs/can_image15k_s38/checkpoints/step_0015000 --task can --split val --episodes 50 --workers 2 --replan-every 8 --schedule fitted        # 45/50
dp eval runs/can_image15k_s38/checkpoints/step_0015000 --task can --split test --episodes 50 --seed 0 --workers 2 --replan-every 4 --schedule fitted --json-out seed0.json   # 44/50
dp eval runs/can_image15k_s38/checkpoints/step_0015000 --task can --split test --episodes 50 --seed 1 --workers 2 --replan-every 4 --schedule fitted --json-out seed1.json   # 46/50
python bench/merge_evals.py seed0.json seed1.json --json-out can_image__image_priv15k_sampler.json   # the page's 100 can image test starts
