"""The MRF spatial model (paper §3.3): the model, its loss and fit
(`spatial_model`), and the same on a trained cascade: fit, save / load, the
selector of the prediction path (`spatial_training`). Imports `data`, `model`,
`core` (docs/design.md, "Packages").
"""
