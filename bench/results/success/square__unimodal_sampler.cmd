dp collect --task square --episodes 200 --seed 0 --expert-strategies first --out data/square_first.zarr   # one placement per initial state (200 of 206 attempts)
dp train --data data/square_first.zarr --preset small --out runs/square_first_s35 train.threads=2 train.keep_checkpoints=10   # the preset as it stands: 9000 steps, fp32, 88 min beside a one-thread `can` training
dp eval runs/square_first_s35/checkpoints/step_0008000 --task square --split val --episodes 50 --workers 2 --schedule exponential   # 44/50
dp eval runs/square_first_s35/checkpoints/step_0008000 --task square --split val --episodes 50 --workers 2 --schedule fitted        # 46/50
dp eval runs/square_first_s35/checkpoints/step_0009000 --task square --split val --episodes 50 --workers 2 --schedule exponential   # 46/50: chosen (a tie goes to the later step, then to the preset's schedule)
dp eval runs/square_first_s35/checkpoints/step_0009000 --task square --split val --episodes 50 --workers 2 --schedule fitted        # 45/50
dp eval runs/square_first_s35/checkpoints/step_0009000 --task square --split test --episodes 100 --seed 0 --workers 2 --schedule exponential --json-out square__unimodal_sampler.json
