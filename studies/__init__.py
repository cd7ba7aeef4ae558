"""Studies built on the library: the paper's experiments (`paper`), the device
benchmark (`benchmark`), the MRF person-selection study (`mrf_study`), the
input-pipeline and renderer benchmarks (`input_benchmark`, `render_synthetic`).

They import `heatpose_jax`; the library never imports them. The launchers in
`experiments/` parse flags and call one function here; docs/studies.md says
what each one measures and where its results go.
"""
