"""The ground layer: what a run is, how it is named, and where it is stored. No torch.

Each hyper-parameter declared once (`params`, and each method's beside its loss in `methods/`),
the grid file's schema (`config`, with command-line `overrides`), its expansion into run
specs (`grid`, `spec`) under a tuning budget (`budget`, `compute`), a run's id (the hash of
its spec), its references to other runs (`refs`) and its folder in the results store
(`store`). The launcher (harness/), the jobs (jobs/) and the report (report/) all stand on
it; it stands only on the science (models/), and only inside the methods' losses
(docs/architecture.md, "The layers").
"""
