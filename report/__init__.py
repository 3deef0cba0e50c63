"""The last stage of the data path: the tidy results table and what is made of it.

`results`: one row per measured number (docs/evaluation.md, "The results"), read and written;
`tables`: the paper's tables; `differences`: the paired differences' tables; `table`: a table
rendered as Markdown, LaTeX and CSV; `curve`: the forgetting curve's table; `selection`: each
method's candidate chosen on the validation split; `metrics`: each metric's label, direction
and tasks, declared once for all of them (the tables above selection and the table form, above
metrics: .importlinter); `publish`, `readme`: the published results and the README's blocks;
`speed`: bench/'s goals and the GPU figures' table.
jobs/aggregate.py calls these; the CLIs (`harness.tables`, `sdft tables`) only parse arguments
and call them. No torch.
"""
