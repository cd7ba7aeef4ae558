"""Scores and what shows them: PCK/PCKh (`metrics`), the `Evaluator` of one
prediction pass (`evaluator`), the `config.evals` plug-ins (`evaluators/`), OKS by
pycocotools (`coco_eval`), OKS-NMS of top-down poses (`oks_nms`), community prediction files (`prediction_io`), skeleton
overlays (`visualize`). Imports `data`, `model`, `core` (docs/design.md, "Packages").
"""
