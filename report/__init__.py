"""The last stage of the data path: the tidy results table and what is made of it.

`results`: one row per measured number (docs/evaluation.md, "The results"), read and written; `tables`:
the paper's tables, rendered as Markdown, LaTeX and CSV; `selection`: each method's candidate
chosen on the validation split; `metrics`: each metric's label, direction and tasks, declared
once for all of them (tables above selection above metrics: .importlinter). jobs/aggregate.py
calls these; the CLIs (`harness.tables`, `sdft tables`) only parse arguments and call them. No torch.
"""
