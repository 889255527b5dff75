# two runs at once (real time, 10 Hz), each 50 test episodes: base seeds 0 and 1 (ONNX + RTI on the same seeds: 0.932, 41/100)
dp launch launch/pusht_deploy.yaml --set policy=exported/pusht_rti --set episodes=50 --set seed=0 --set port=5640 --json-out deploy_seed0.json
dp launch launch/pusht_deploy.yaml --set policy=exported/pusht_rti --set episodes=50 --set seed=1 --set port=5630 --json-out deploy_seed1.json
