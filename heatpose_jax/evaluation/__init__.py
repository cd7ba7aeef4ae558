"""Scores and what shows them: PCK/PCKh (`metrics`), the `Evaluator` of one
prediction pass (`evaluator`), the `config.evals` plug-ins (`evaluators/`), OKS by
pycocotools (`coco_eval`), community prediction files (`prediction_io`), skeleton
overlays (`visualize`). Imports `data`, `model`, `core` (docs/design.md, "Packages").
"""
