"""Export: a trained policy into ONNX graphs and their description (`dp export`), beside the runtime
that runs them (:mod:`dp.infer`): the graphs (:mod:`.onnx_export`), their weights stored once
(:mod:`.onnx_weights`), their inputs (:mod:`.graph_inputs`) and the check against torch (:mod:`.export_check`)."""
