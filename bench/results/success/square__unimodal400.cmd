dp collect --task square --episodes 200 --seed 0 --expert-strategies first --out data/square_first.zarr   # session 35's store
cp -r data/square_first.zarr data/square_first400.zarr
dp collect --task square --episodes 400 --seed 0 --expert-strategies first --out data/square_first400.zarr   # resumes: 200 more (200 of 209 attempts)
dp train --data data/square_first400.zarr --preset small --out runs/square_first400_s36 train.threads=1 train.keep_checkpoints=10   # the preset as it stands: 9000 steps, fp32, 120 min on one thread beside two other trainings
dp eval runs/square_first400_s36/checkpoints/step_0008000 --task square --split val --episodes 50 --workers 2   # 46/50
dp eval runs/square_first400_s36/checkpoints/step_0009000 --task square --split val --episodes 50 --workers 2   # 48/50: chosen (above session 35's 46/50, so the square target reads this row)
dp eval runs/square_first400_s36/checkpoints/step_0009000 --task square --split test --episodes 100 --seed 0 --workers 2 --json-out square__unimodal400.json
dp eval runs/square_first400_s36/checkpoints/step_0009000 --task square --split test --episodes 100 --seed 1 --workers 2 --json-out square_test_seed1.json   # session 37: 100 more test starts
python bench/merge_evals.py square__unimodal400_seed0.json square_test_seed1.json --json-out square__unimodal400.json   # 79 + 83 = 162/200
