"""Training: the loop (:mod:`.trainer`), checkpoints (:mod:`.checkpoint`), data wiring (:mod:`.data`),
metrics (:mod:`.metrics`) and the `dp train` command (:mod:`.train_cmd`)."""
