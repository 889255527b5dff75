# the policy of square__unimodal400 (runs/square_first400_s36, step 9000), acting the medoid of 5 chunks per plan
dp eval runs/square_first400_s36/checkpoints/step_0009000 --task square --split val --episodes 100 --seed 1 --workers 2   # 89/100: its own row on 100 other validation starts
dp eval runs/square_first400_s36/checkpoints/step_0009000 --task square --split val --episodes 100 --seed 1 --workers 2 --medoid 5   # 94/100: at least 94, the rule written beforehand, so it went to test
dp eval runs/square_first400_s36/checkpoints/step_0009000 --task square --split test --episodes 100 --seed 0 --workers 2 --medoid 5 --json-out square__medoid5.json
dp eval runs/square_first400_s36/checkpoints/step_0009000 --task square --split test --episodes 100 --seed 1 --workers 2 --medoid 5 --json-out square_medoid5_seed1.json   # the confirmation on new starts: 87 against one chunk's 83
python bench/merge_evals.py square__medoid5.json square_medoid5_seed1.json --json-out square__medoid5.json   # 87 + 87 = 174/200
