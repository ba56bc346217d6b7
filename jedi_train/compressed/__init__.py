"""PKD + WISE on compressed-domain video (../shared/METHOD.md section 2, arXiv 2407.02713).

One idea per module: `config` (typed settings), `data` (shards -> in-memory modality tensors), `nets`
(the three modality networks), `exits` (internal classifiers and their MAC costs), `pkd` (exit
training: cross-entropy or progressive KD), `wise` (weighted early-exit inference), `run` (one
dataset and seed end to end), `report` (the docs/results.md block and curve).
"""
