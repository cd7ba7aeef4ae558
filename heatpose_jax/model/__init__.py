"""The networks and the one prediction path: `models` (CoarseNet, the crop module,
FineNet, the cascades), `codec` (heat-map targets and decoding), `image_ops`,
`losses`, `inference`, `model_stats`. Imports `core` only (docs/design.md, "Packages").
"""
